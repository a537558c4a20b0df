"""MixUp and CutMix on a batch already on the device, as plain functions (no Trainer).

MixUp (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018,
https://arxiv.org/abs/1710.09412) replaces a sample and its target by a convex combination
with a partner: ``lam * x_i + (1 - lam) * x_j``. CutMix (Yun et al., "CutMix: Regularization
Strategy to Train Strong Classifiers with Localizable Features", ICCV 2019,
https://arxiv.org/abs/1905.04899) pastes a box of the partner into the sample instead and mixes
the targets by the area kept, ``lam = 1 - box_area / image_area``.

The semantics follow timm's ``timm.data.Mixup`` so that recipes transfer: sample ``i`` is paired
with sample ``N - 1 - i`` (the flipped batch), with one draw per ``batch``, ``pair`` or ``elem``.
Unlike timm, any batch size works: with an odd batch the middle sample is its own partner and
stays as it is (in ``pair`` mode it is also excluded from the draws).

:func:`draw_mix_params` draws every random number on the host from a CPU ``torch.Generator`` (a
few dozen per batch), so branching on them is free and the sequence is the same on any
accelerator; :func:`mix_inputs_` and :func:`mix_targets` apply them on the batch's device, in
place where possible, after one small non-blocking copy. Nothing reads a device value back to
the host, except the optional label-range check.

Example::

    settings = MixSettings(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem")
    generator = torch.Generator().manual_seed(0)
    images, soft_targets, params = mix_batch(images, labels, num_classes=10, settings=settings,
                                             generator=generator)

The public names are re-exported by :mod:`stoker.transforms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stoker.transforms.mix_settings import MixMode, MixSettings


@dataclass(frozen=True)
class MixParams:
    """What was drawn for one batch; sample ``i`` is mixed with sample ``N - 1 - i``.

    All tensors are on the CPU, one row per sample, already expanded from the per-batch or
    per-pair draws (the device side uses ``mode`` only for batch mode's scalar fast path).

    Attributes:
        lam: float64 ``[N]``, the weight each sample keeps of itself (CutMix: the area kept).
        use_cutmix: bool ``[N]``, CutMix (a pasted box) rather than MixUp (a blend).
        boxes: int64 ``[N, 4]`` as ``(top, bottom, left, right)``, half-open; zeros where unused.
        mode: The mode the parameters were drawn in.
    """

    lam: torch.Tensor
    use_cutmix: torch.Tensor
    boxes: torch.Tensor
    mode: MixMode

    @property
    def applied(self) -> bool:
        """Whether any sample is mixed (a host-side check: the tensors live on the CPU)."""
        return bool((self.lam < 1.0).any())


def _draw_count(batch_size: int, mode: MixMode) -> int:
    return {"batch": 1, "pair": batch_size // 2, "elem": batch_size}[mode]


def _sample_beta(alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    # torch.distributions.Beta takes no generator, so the Beta draws come from NumPy's public Generator,
    # seeded by the next number of the torch stream: the whole draw stays a function of `generator`.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    concentration = alpha.double().numpy()
    lam = torch.from_numpy(np.random.default_rng(seed).beta(concentration, concentration))
    # With a tiny alpha the draw can degenerate; treat that as "not mixed".
    return torch.nan_to_num(lam, nan=1.0).clamp_(0.0, 1.0)


def _uniform_int(high: torch.Tensor, generator: torch.Generator, low: torch.Tensor | int = 0) -> torch.Tensor:
    # Integers in [low, high) with per-row bounds (torch.randint takes scalar bounds only).
    span = (high - low).clamp(min=1)
    draw = torch.rand(span.shape, generator=generator, dtype=torch.float64)
    return (draw * span).floor().long() + low


def cutmix_boxes(
    lam: torch.Tensor,
    size: tuple[int, int],
    *,
    minmax: tuple[float, float] | None = None,
    generator: torch.Generator,
) -> torch.Tensor:
    """Random CutMix boxes ``(top, bottom, left, right)``, clipped to a ``size = (H, W)`` plane.

    Without ``minmax`` each box has sides ``sqrt(1 - lam)`` of the plane's and a centre drawn
    uniformly over it (the CutMix paper's sampler), so it is clipped where it crosses the border.
    With ``minmax`` the sides are drawn between those fractions and the box lies inside.

    Args:
        lam: float ``[K]`` lambdas drawn from the Beta distribution.
        size: Height and width of the plane being cut (the last two dims of the batch).
        minmax: Side fractions ``(min, max)``; see :class:`MixSettings`.
        generator: CPU generator the positions (and sizes) are drawn from.

    Returns:
        int64 ``[K, 4]`` boxes.
    """
    height, width = size
    count = lam.shape[0]
    if minmax is not None:
        cut_h = _uniform_int(torch.full((count,), int(height * minmax[1])), generator, int(height * minmax[0]))
        cut_w = _uniform_int(torch.full((count,), int(width * minmax[1])), generator, int(width * minmax[0]))
        top = _uniform_int(height - cut_h + 1, generator)
        left = _uniform_int(width - cut_w + 1, generator)
        return torch.stack([top, top + cut_h, left, left + cut_w], dim=1)
    ratio = (1.0 - lam.double()).clamp(min=0.0).sqrt()
    cut_h, cut_w = (height * ratio).floor().long(), (width * ratio).floor().long()
    centre_y = _uniform_int(torch.full((count,), height), generator)
    centre_x = _uniform_int(torch.full((count,), width), generator)
    top = (centre_y - cut_h // 2).clamp(0, height)
    bottom = (centre_y + (cut_h + 1) // 2).clamp(0, height)
    left = (centre_x - cut_w // 2).clamp(0, width)
    right = (centre_x + (cut_w + 1) // 2).clamp(0, width)
    return torch.stack([top, bottom, left, right], dim=1)


def box_area_fraction(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Fraction of a ``size = (H, W)`` plane that each ``(top, bottom, left, right)`` box covers."""
    area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2])
    return area.double() / float(size[0] * size[1])


def draw_mix_params(
    batch_size: int, size: tuple[int, int], settings: MixSettings, generator: torch.Generator
) -> MixParams:
    """Draw lambdas, methods and boxes for one batch, on the host.

    Args:
        batch_size: Samples in the batch (any size, odd included).
        size: ``(H, W)`` of the plane CutMix cuts (the last two dims of the inputs).
        settings: The hyperparameters.
        generator: A CPU ``torch.Generator``; the draws depend only on its state.

    Returns:
        Per-sample :class:`MixParams`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    count = _draw_count(batch_size, settings.mode)
    mixed = torch.rand(count, generator=generator, dtype=torch.float64) < settings.prob
    if settings.mixup_on and settings.cutmix_on:
        use_cutmix = torch.rand(count, generator=generator, dtype=torch.float64) < settings.switch_prob
    else:
        use_cutmix = torch.full((count,), settings.cutmix_on)
    # With cutmix_minmax and no alpha the drawn lambda is replaced by the box area anyway.
    cut_alpha = settings.cutmix_alpha if settings.cutmix_alpha > 0 else 1.0
    alpha = torch.where(use_cutmix, cut_alpha, settings.mixup_alpha if settings.mixup_on else 1.0)
    lam = _sample_beta(alpha.double(), generator)
    boxes = torch.zeros(count, 4, dtype=torch.long)
    if settings.cutmix_on:
        boxes = cutmix_boxes(lam, size, minmax=settings.cutmix_minmax, generator=generator)
        if settings.correct_lam or settings.cutmix_minmax is not None:
            lam = torch.where(use_cutmix, 1.0 - box_area_fraction(boxes, size), lam)
    use_cutmix = use_cutmix & mixed
    lam = torch.where(mixed, lam, 1.0)
    boxes = torch.where(use_cutmix[:, None], boxes, 0)
    return _expand(lam, use_cutmix, boxes, batch_size, settings.mode)


def _expand(
    lam: torch.Tensor, use_cutmix: torch.Tensor, boxes: torch.Tensor, batch_size: int, mode: MixMode
) -> MixParams:
    if mode == "batch":
        return MixParams(lam.expand(batch_size).clone(), use_cutmix.expand(batch_size).clone(),
                         boxes.expand(batch_size, 4).clone(), mode)
    if mode == "pair":
        # Pair (i, N-1-i) shares one draw; the middle of an odd batch is its own partner, unmixed.
        middle = batch_size % 2
        lam = torch.cat([lam, torch.ones(middle, dtype=lam.dtype), lam.flip(0)])
        use_cutmix = torch.cat([use_cutmix, torch.zeros(middle, dtype=torch.bool), use_cutmix.flip(0)])
        boxes = torch.cat([boxes, torch.zeros(middle, 4, dtype=boxes.dtype), boxes.flip(0)])
    return MixParams(lam, use_cutmix, boxes, mode)


def check_inputs(inputs: Any, key: str = "input") -> torch.Tensor:
    """Check that a batch can be mixed: a float tensor of at least three dims.

    Raises:
        TypeError: For a non-tensor, uint8 images (not normalized yet) or integer tokens.
        ValueError: For fewer than three dims (nothing for CutMix to cut).
    """
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"MixUp/CutMix needs a tensor under {key!r}, got {type(inputs).__name__}")
    if inputs.dtype == torch.uint8:
        raise TypeError(
            f"MixUp/CutMix got integer images (torch.uint8) under {key!r}: normalize them to float first "
            "(a stoker DataModule does this on the device in on_after_batch_transfer when mean/std are set)"
        )
    if not inputs.is_floating_point():
        raise TypeError(
            f"MixUp/CutMix cannot mix integer inputs ({inputs.dtype}) under {key!r}: token ids have no convex "
            "combination; mix images or spectrograms, or mix embeddings inside the model instead"
        )
    if inputs.ndim < 3:
        raise ValueError(
            f"MixUp/CutMix expects images [N, C, H, W] or spectrograms [N, F, T] / [N, 1, F, T] under {key!r}, "
            f"got shape {tuple(inputs.shape)}; turn raw audio into a spectrogram first"
        )
    return inputs


def _upload(params: MixParams, device: torch.device) -> torch.Tensor:
    # One small copy instead of three; float32 holds box corners exactly and runs on every backend.
    packed = torch.cat([params.lam[:, None], params.use_cutmix[:, None].double(), params.boxes.double()], dim=1)
    packed = packed.float()
    if device.type == "cuda":
        packed = packed.pin_memory()
    return packed.to(device, non_blocking=True)


def _keep_weight(inputs: torch.Tensor, packed: torch.Tensor, any_cutmix: bool) -> torch.Tensor:
    """Per-sample (and, with CutMix, per-position) weight of each sample's own values."""
    n, height, width = inputs.shape[0], inputs.shape[-2], inputs.shape[-1]
    # Weights stay float32 even for half-precision inputs, so images and targets use the same lambda.
    lam = packed[:, 0]
    middle = (1,) * (inputs.ndim - 3)
    if not any_cutmix:
        return lam.view(n, *middle, 1, 1)
    rows = torch.arange(height, device=inputs.device, dtype=packed.dtype)[None, :, None]
    cols = torch.arange(width, device=inputs.device, dtype=packed.dtype)[None, None, :]
    top, bottom, left, right = (packed[:, k, None, None] for k in range(2, 6))
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    use_cutmix = packed[:, 1, None, None] > 0.5
    keep = torch.where(use_cutmix, (~inside).to(packed.dtype), lam[:, None, None])
    return keep.view(n, *middle, height, width)


def mix_inputs_(inputs: torch.Tensor, params: MixParams) -> torch.Tensor:
    """Mix ``inputs`` (``[N, ..., H, W]``, float, any device) with their flipped batch, in place.

    Args:
        inputs: Images ``[N, C, H, W]`` or spectrograms ``[N, F, T]``/``[N, 1, F, T]``; CutMix boxes
            cover the last two dims.
        params: From :func:`draw_mix_params` for this batch size.

    Returns:
        ``inputs``, modified in place.
    """
    check_inputs(inputs)
    if params.lam.shape[0] != inputs.shape[0]:
        raise ValueError(f"params were drawn for {params.lam.shape[0]} samples, the inputs hold {inputs.shape[0]}")
    return _mix_inputs_checked_(inputs, params)


def _mix_inputs_checked_(inputs: torch.Tensor, params: MixParams) -> torch.Tensor:
    # The work of mix_inputs_, on inputs a public entry point has validated.
    if not params.applied:
        return inputs
    if params.mode == "batch":
        # One lambda for all: plain slicing and scalar maths, no weight tensor.
        if bool(params.use_cutmix[0]):
            top, bottom, left, right = params.boxes[0].tolist()
            inputs[..., top:bottom, left:right] = inputs[..., top:bottom, left:right].flip(0)
        else:
            lam = float(params.lam[0])
            # The flipped copy must be taken before the in-place scaling of the batch.
            partner = inputs.flip(0).mul_(1.0 - lam)
            inputs.mul_(lam).add_(partner)
        return inputs
    return _blend_(inputs, params, _upload(params, inputs.device))


def _blend_(inputs: torch.Tensor, params: MixParams, packed: torch.Tensor) -> torch.Tensor:
    keep = _keep_weight(inputs, packed, bool(params.use_cutmix.any()))
    partner = inputs.flip(0).mul_(1.0 - keep)
    return inputs.mul_(keep).add_(partner)


def mix_targets(
    target: torch.Tensor,
    num_classes: int,
    lam: torch.Tensor | float,
    *,
    label_smoothing: float = 0.0,
    check_range: bool = True,
    key: str = "label",
) -> torch.Tensor:
    """Soft targets ``[N, C]``: the smoothed targets mixed with those of the flipped batch.

    Args:
        target: Integer labels ``[N]`` or float class probabilities ``[N, C]``.
        num_classes: ``C``.
        lam: Weight each sample keeps of its own target: ``[N]`` or one float.
        label_smoothing: Mass spread uniformly over the classes before mixing.
        check_range: Check that labels lie in ``[0, C)``; on an accelerator this reads one value
            back to the host, so a caller may check the first batch only.
        key: Batch key named in error messages.

    Raises:
        ValueError: For labels outside ``[0, num_classes)`` or targets of the wrong shape.
        TypeError: For boolean targets.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if target.is_floating_point() and target.ndim == 2:
        if target.shape[1] != num_classes:
            raise ValueError(
                f"soft targets under {key!r} have {target.shape[1]} classes, expected num_classes={num_classes}"
            )
        own = target.float() * (1.0 - label_smoothing) + label_smoothing / num_classes
    else:
        own = _smoothed_one_hot(target, num_classes, label_smoothing, check_range, key)
    if isinstance(lam, torch.Tensor):
        weight = lam.to(device=own.device, dtype=own.dtype, non_blocking=True)[:, None]
        return own.mul(weight).add_(own.flip(0).mul_(1.0 - weight))
    return own.mul(lam).add_(own.flip(0).mul_(1.0 - lam))


def _smoothed_one_hot(target: torch.Tensor, num_classes: int, smoothing: float, check: bool, key: str) -> torch.Tensor:
    if target.dtype == torch.bool or target.is_floating_point() or target.ndim != 1:
        raise TypeError(
            f"targets under {key!r} must be integer class labels [N] or float probabilities [N, C], got "
            f"{target.dtype} of shape {tuple(target.shape)}"
        )
    if check and target.numel():
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"label {bad} under {key!r} is outside [0, {num_classes}): num_classes={num_classes} is too small "
                "for these labels; pass the right num_classes or fix the labels"
            )
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, dtype=torch.float32, device=target.device)
    return out.scatter_(1, target.long()[:, None], 1.0 - smoothing + off)


def mix_batch(
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int,
    settings: MixSettings,
    generator: torch.Generator,
    check_range: bool = True,
    input_key: str = "input",
    target_key: str = "label",
) -> tuple[torch.Tensor, torch.Tensor, MixParams]:
    """Draw parameters and mix a batch: inputs in place, targets into soft targets ``[N, C]``.

    Args:
        inputs: Float images or spectrograms, batch first.
        target: Integer labels ``[N]`` or probabilities ``[N, C]``.
        num_classes: Number of classes of the soft targets.
        settings: The hyperparameters.
        generator: CPU generator the draws come from.
        check_range: Check label range (see :func:`mix_targets`).
        input_key: Name of the inputs in error messages.
        target_key: Name of the targets in error messages.

    Returns:
        ``(inputs, soft_targets, params)``; ``inputs`` is the same tensor, mixed in place.
    """
    check_inputs(inputs, input_key)
    if not isinstance(target, torch.Tensor) or target.ndim == 0 or target.shape[0] != inputs.shape[0]:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(
            f"targets under {target_key!r} ({shape}) must hold one row per sample of {input_key!r} "
            f"({inputs.shape[0]} samples)"
        )
    params = draw_mix_params(inputs.shape[0], (inputs.shape[-2], inputs.shape[-1]), settings, generator)
    smoothing = settings.label_smoothing
    if params.mode == "batch" or not params.applied:
        # A scalar lambda keeps batch mode free of any upload.
        soft = mix_targets(target, num_classes, float(params.lam[0]), label_smoothing=smoothing,
                           check_range=check_range, key=target_key)
        _mix_inputs_checked_(inputs, params)
        return inputs, soft, params
    packed = _upload(params, inputs.device)
    soft = mix_targets(target, num_classes, packed[:, 0], label_smoothing=smoothing, check_range=check_range,
                       key=target_key)
    _blend_(inputs, params, packed)
    return inputs, soft, params

