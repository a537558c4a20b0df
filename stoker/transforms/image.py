"""torchvision v2 presets for uint8 image tensors, and input settings read from timm.

The presets never convert to float or normalize: CPU workers hand uint8 to the device, where
:func:`stoker.io.image.normalize_uint8` finishes the job (4x fewer bytes through worker IPC,
pinning and the host-to-device copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

AutoAugment = Literal["none", "randaugment", "trivialaugment", "autoaugment"]


@dataclass(frozen=True)
class InputConfig:
    """What a model expects as input: square size, normalization and eval crop fraction."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float
    interpolation: str = "bilinear"


def timm_input_config(model_name: str) -> InputConfig:
    """Input size, mean, std, crop fraction and interpolation from a timm model's pretrained config.

    Reads timm's bundled metadata only: no weights are created or downloaded.

    Raises:
        ValueError: When timm does not know the model name.
    """
    import timm

    if not timm.is_model(model_name):
        raise ValueError(f"timm does not know a model named {model_name!r}; see timm.list_models()")
    cfg = timm.get_pretrained_cfg(model_name)
    if cfg is None:
        raise ValueError(f"timm model {model_name!r} has no pretrained data config to read input settings from")
    data = cfg.to_dict()
    interpolation = str(data.get("interpolation") or "bilinear")
    return InputConfig(
        image_size=int(data["input_size"][-1]),
        mean=tuple(float(v) for v in data["mean"]),
        std=tuple(float(v) for v in data["std"]),
        crop_pct=float(data.get("crop_pct") or 0.875),
        interpolation=interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bilinear",
    )


class RandomResizedCrop(v2.RandomResizedCrop):
    """torchvision's ``v2.RandomResizedCrop``, with the crop resized in channels-last memory.

    Same parameters, same random draws, same kind of output. Why it exists: torchvision's
    decoders return images whose memory is interleaved (HWC). A crop of such an image is no
    longer contiguous, so ``v2`` copies it to planar CHW and PyTorch takes its planar uint8
    resize kernel; making the crop channels-last contiguous first keeps the interleaved AVX2
    kernel, about 2.5x faster per crop on the benchmark machine (benchmarks/image_pipeline.py).
    Anything other than a plain CPU uint8 image tensor goes through torchvision unchanged.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        fast = (
            type(inpt) is torch.Tensor and inpt.ndim == 3 and inpt.dtype == torch.uint8 and inpt.device.type == "cpu"
            and self.interpolation in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
        )
        if not fast:
            return super().transform(inpt, params)
        top, left, height, width = params["top"], params["left"], params["height"], params["width"]
        crop = inpt[:, top : top + height, left : left + width].unsqueeze(0)
        crop = crop.contiguous(memory_format=torch.channels_last)
        out = F.interpolate(crop, size=list(self.size), mode=self.interpolation.value, align_corners=False,
                            antialias=bool(self.antialias))
        return out[0]


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError as err:
        raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'nearest', got {name!r}") from err


def train_transform(
    image_size: int,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    auto_augment: AutoAugment = "none",
    random_erasing: float = 0.0,
    interpolation: str = "bilinear",
) -> v2.Compose:
    """RandomResizedCrop + horizontal flip (+ RandAugment / TrivialAugmentWide / RandomErasing).

    Args:
        image_size: Output side in pixels.
        scale: Range of the crop's area relative to the image.
        ratio: Range of the crop's aspect ratio.
        hflip: Probability of a horizontal flip.
        auto_augment: Policy applied after the crop; all of them work on uint8 tensors.
        random_erasing: Probability of erasing a random rectangle (0 turns it off).
        interpolation: Resampling filter for the resize.
    """
    if not 0.0 <= hflip <= 1.0 or not 0.0 <= random_erasing <= 1.0:
        raise ValueError(f"hflip and random_erasing are probabilities in [0, 1], got {hflip} and {random_erasing}")
    steps: list[v2.Transform] = [
        RandomResizedCrop(image_size, scale=scale, ratio=ratio, interpolation=_interpolation(interpolation),
                          antialias=True),
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    policies: dict[str, v2.Transform] = {
        "randaugment": v2.RandAugment(),
        "trivialaugment": v2.TrivialAugmentWide(),
        "autoaugment": v2.AutoAugment(),
    }
    if auto_augment != "none":
        if auto_augment not in policies:
            raise ValueError(f"auto_augment must be one of {['none', *policies]}, got {auto_augment!r}")
        steps.append(policies[auto_augment])
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=0))
    return v2.Compose(steps)


def eval_transform(image_size: int, *, crop_pct: float = 0.875, interpolation: str = "bilinear") -> v2.Compose:
    """Resize the shorter side to ``image_size / crop_pct``, then center-crop ``image_size``."""
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    resize = int(round(image_size / crop_pct))
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=_interpolation(interpolation), antialias=True),
            v2.CenterCrop(image_size),
        ]
    )


def normalize_uint8(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, channels_last: bool = False
) -> torch.Tensor:
    """Convert a ``uint8 [N, C, H, W]`` batch to normalized float32 on its own device.

    ``mean`` and ``std`` are per-channel, in the 0-1 range (ImageNet's ``(0.485, 0.456, 0.406)``).
    The division by 255 is folded into the statistics, so it costs one conversion and two
    in-place arithmetic kernels on the device.

    Raises:
        ValueError: When ``images`` is not uint8 ``[N, C, H, W]`` or channels disagree with ``mean``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 batch [N, C, H, W], got {images.dtype} of shape {tuple(images.shape)}")
    if images.shape[1] != mean.numel() or mean.numel() != std.numel():
        raise ValueError(
            f"images have {images.shape[1]} channels but mean/std have {mean.numel()}/{std.numel()} values"
        )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = images.to(dtype=torch.float32, memory_format=memory_format)
    out.sub_((mean * 255.0).view(1, -1, 1, 1)).div_((std * 255.0).view(1, -1, 1, 1))
    return out
