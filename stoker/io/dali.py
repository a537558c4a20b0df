"""NVIDIA DALI pipelines for image folders, and a Lightning-friendly iterable over them.

Framework-light: nothing here needs a Trainer. A stoker sampler decides which files each rank reads
in each epoch (the same arithmetic and seeds as the torchvision path); :func:`build_image_pipeline`
defines the DALI graph (a file reader over exactly those files, decode on the GPU with
``device="mixed"`` or on the CPU, resize, crop and flip); :class:`~stoker.io.dali_batches.DALIBatches`
runs a pipeline for one epoch at a time and yields stoker's dict batches.

``nvidia.dali`` is imported inside the functions that need it, so importing this module is free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stoker.seeds import derive_seed

# DALI's image decoders read JPEG, PNG, BMP, TIFF, PNM, JPEG 2000 and WebP, but not GIF, which the
# torchvision path accepts. DALI cannot skip a sample mid-epoch, so such files are excluded up front.
_DALI_UNREADABLE_SUFFIXES: frozenset[str] = frozenset({".gif"})

# nvJPEG scratch buffers sized for ImageNet-scale JPEGs, the values NVIDIA's own ResNet-50 example
# uses: preallocating them avoids reallocations (and synchronizations) in the first iterations.
_DEVICE_MEMORY_PADDING = 211_025_920
_HOST_MEMORY_PADDING = 140_544_512

# Names of the external sources: encoded bytes (build_encoded_pipeline), and each training sample's draws.
ENCODED_INPUT = "encoded"
DRAWS_INPUT = "draws"


def crop_draws(seed: int, epoch: int, samples: list[int], hflip: float) -> list[np.ndarray]:
    """Each sample's random-resized-crop and flip draws: ``float32 [u_area, u_ratio, u_x, u_y, flip]``.

    Drawn on the host from ``(seed, "dali-crop", epoch, sample)``, not by DALI's generator, whose draws
    follow the order samples pass through a pipeline: a run resumed mid-epoch (or on other ranks) would
    crop the rest of the epoch differently. With the draws fed per sample, a sample gets the same crop and
    flip wherever and whenever it is decoded.
    """
    out = []
    for sample in samples:
        generator = torch.Generator().manual_seed(derive_seed(seed, "dali-crop", epoch, int(sample)))
        u = torch.rand(5, generator=generator, dtype=torch.float64)
        out.append(np.array([u[0], u[1], u[2], u[3], float(u[4] < hflip)], dtype=np.float32))
    return out


class _DrawsSource:
    """Feeds a file-reader pipeline its draws batch by batch, in the reader's order (the last batch padded)."""

    def __init__(self, draws: list[np.ndarray], batch_size: int) -> None:
        self.draws, self.batch_size = draws, batch_size

    def __call__(self, iteration: int) -> list[np.ndarray]:
        start = iteration * self.batch_size
        batch = self.draws[start:start + self.batch_size]
        if not batch:
            raise StopIteration
        return batch + [batch[-1]] * (self.batch_size - len(batch))  # the reader repeats its last sample too



def check_pipeline_args(image_size: int, *, num_threads: int | None, hw_decoder_load: float, crop_pct: float,
                        scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
                        prefetch_queue_depth: int = 1) -> None:
    """Refuse pipeline settings DALI would take and misuse, naming the argument and its range.

    Raises:
        ValueError: The first setting out of range.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be >= 1 or None (the cores per rank), got {num_threads}")
    if not 0.0 <= hw_decoder_load <= 1.0:
        raise ValueError(f"hw_decoder_load is a share of the JPEGs in [0, 1], got {hw_decoder_load}")
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must be an area range 0 < low <= high <= 1, got {tuple(scale)}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must be an aspect-ratio range 0 < low <= high, got {tuple(ratio)}")
    if not 0.0 <= hflip <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
    if prefetch_queue_depth < 1:
        raise ValueError(f"prefetch_queue_depth must be >= 1, got {prefetch_queue_depth}")

@dataclass(frozen=True)
class PipelineSpec:
    """Everything that defines one DALI image pipeline except the shard and the seeds.

    Attributes:
        file_root: Directory the ``files`` are relative to.
        files: Relative paths, one per sample of the split (unpadded).
        train: Random-resized-crop + flip and a shuffled reader; otherwise resize + center crop.
        image_size: Side of the square output.
        resize_shorter: Evaluation: the shorter side before the center crop.
        scale: Training: range of the crop's area relative to the image.
        ratio: Training: range of the crop's aspect ratio.
        hflip: Training: probability of a horizontal flip.
        device: ``"mixed"`` decodes on the GPU (nvJPEG, hardware decoder), ``"cpu"`` on the host.
        device_id: CUDA device of the pipeline; ``None`` is DALI's CPU-only mode.
        num_threads: DALI CPU worker threads.
        batch_size: Samples per batch.
        hw_decoder_load: Share of JPEG decoding sent to the A100/H100 hardware decoder (mixed only).
        prefetch_queue_depth: Batches DALI prepares ahead.
    """

    file_root: str
    files: tuple[str, ...]
    train: bool
    image_size: int
    resize_shorter: int
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: float
    device: str
    device_id: int | None
    num_threads: int
    batch_size: int
    hw_decoder_load: float
    prefetch_queue_depth: int


def _image_graph(spec: PipelineSpec, positions: list[int], draws: list[np.ndarray] | None) -> Any:
    from nvidia.dali import fn, types

    # The reader reads exactly this rank's positions of this epoch, in order, as the stoker sampler
    # chose them (one shard arithmetic and one seed scheme for both back ends; a resumed epoch starts
    # at its first untrained sample, with nothing decoded twice). Its "label" is the position in the
    # split: labels are looked up on the host, and the position is a faithful "index" key.
    encoded, index = fn.readers.file(
        file_root=spec.file_root, files=[spec.files[i] for i in positions], labels=positions,
        random_shuffle=False, pad_last_batch=True, name="reader",
    )
    fed = None
    if spec.train:
        assert draws is not None
        fed = fn.external_source(source=_DrawsSource(draws, spec.batch_size), batch=True, name=DRAWS_INPUT,
                                 dtype=types.DALIDataType.FLOAT)
    return _decode_graph(spec, encoded, fed), index


def _encoded_graph(spec: PipelineSpec) -> Any:
    from nvidia.dali import fn, types

    # Encoded bytes fed by the host, one batch per run (a stoker loader streaming shards decides what
    # each batch holds, so order, sharding and resume are the loader's). Batches may be short.
    encoded = fn.external_source(name=ENCODED_INPUT, dtype=types.DALIDataType.UINT8, batch=True, no_copy=False)
    fed = (fn.external_source(name=DRAWS_INPUT, dtype=types.DALIDataType.FLOAT, batch=True, no_copy=False)
           if spec.train else None)
    return _decode_graph(spec, encoded, fed)


def _decode_graph(spec: PipelineSpec, encoded: Any, draws: Any = None) -> Any:
    """Decode, crop, resize (and in training flip) encoded images to uint8 CHW; the same for every input.

    Training crops with the per-sample ``draws`` fed from the host (:func:`crop_draws`): the window of
    torchvision's ``RandomResizedCrop`` (area and log-uniform aspect ratio, clamped to the image, at a
    uniform position), computed in DALI arithmetic from the encoded header's size, then decoded as a
    region of interest (cheaper than decode-then-crop).
    """
    from nvidia.dali import fn, types
    from nvidia.dali import math as dmath

    decoder: dict[str, Any] = {"device": spec.device, "output_type": types.DALIImageType.RGB}
    if spec.device == "mixed":
        decoder.update(
            device_memory_padding=_DEVICE_MEMORY_PADDING, host_memory_padding=_HOST_MEMORY_PADDING,
            hw_decoder_load=spec.hw_decoder_load,
        )
    linear, uint8 = types.DALIInterpType.INTERP_LINEAR, types.DALIDataType.UINT8
    images: Any
    if not spec.train:
        images = fn.decoders.image(encoded, **decoder)
        return _torchvision_center_crop(fn, types, encoded, images, spec.resize_shorter, spec.image_size)
    shape = fn.peek_image_shape(encoded, dtype=types.DALIDataType.FLOAT)  # HWC, EXIF orientation applied
    height, width = shape[0], shape[1]
    area = height * width * (spec.scale[0] + draws[0] * (spec.scale[1] - spec.scale[0]))
    low, high = float(np.log(spec.ratio[0])), float(np.log(spec.ratio[1]))
    ratio = dmath.exp(low + draws[1] * (high - low))
    crop_w = dmath.max(dmath.min(dmath.sqrt(area * ratio), width), 1.0)
    crop_h = dmath.max(dmath.min(dmath.sqrt(area / ratio), height), 1.0)
    images = fn.decoders.image_crop(encoded, crop_w=crop_w, crop_h=crop_h, crop_pos_x=draws[2], crop_pos_y=draws[3],
                                    **decoder)
    images = fn.resize(images, resize_x=spec.image_size, resize_y=spec.image_size, antialias=True, interp_type=linear)
    mirror = fn.cast(draws[4], dtype=types.DALIDataType.INT32)
    return fn.crop_mirror_normalize(images, dtype=uint8, output_layout="CHW", mirror=mirror)


def _torchvision_center_crop(fn: Any, types: Any, encoded: Any, images: Any, resize_shorter: int, size: int) -> Any:
    """Resize the shorter side, then center-crop, with torchvision's exact sizes and offsets.

    DALI's own ``resize_shorter`` rounds the longer side and its ``crop_pos=0.5`` rounds a
    half-pixel offset up, where torchvision truncates the side and rounds the offset half-to-even:
    a one-pixel shift that would make the two back ends evaluate different pixels. The sizes are
    computed per sample from the encoded header (CPU, any decoder device), in DALI arithmetic.
    """
    from nvidia.dali import math as dmath

    shape = fn.peek_image_shape(encoded, dtype=types.DALIDataType.INT32)  # HWC, EXIF orientation applied
    height, width = shape[0], shape[1]
    short = dmath.min(height, width)
    new_height, new_width = (height * resize_shorter) // short, (width * resize_shorter) // short
    images = fn.resize(
        images, antialias=True, interp_type=types.DALIInterpType.INTERP_LINEAR,
        resize_x=fn.cast(new_width, dtype=types.DALIDataType.FLOAT),
        resize_y=fn.cast(new_height, dtype=types.DALIDataType.FLOAT),
    )
    return fn.crop_mirror_normalize(
        images, crop=(size, size), crop_pos_x=_crop_pos(dmath, new_width, size),
        crop_pos_y=_crop_pos(dmath, new_height, size), dtype=types.DALIDataType.UINT8, output_layout="CHW",
    )


def _crop_pos(dmath: Any, extent: Any, size: int) -> Any:
    # torchvision's offset is round((extent - size) / 2) with Python's half-to-even rounding.
    slack = extent - size
    half = slack // 2
    odd = slack - 2 * half
    start = half + odd * (half - 2 * (half // 2))
    # DALI's anchor is crop_pos * slack; the quarter pixel keeps it on `start` whether DALI then
    # rounds or truncates the product.
    return (start + 0.25) / dmath.max(slack, 1)


def build_image_pipeline(spec: PipelineSpec, positions: list[int], *, seed: int,
                         draws: list[np.ndarray] | None = None) -> Any:
    """Build (and start) the DALI pipeline that reads ``positions`` of ``spec.files``, in that order.

    crop_mirror_normalize emits uint8 CHW, not normalized float: the batch contract is uint8 on the
    way in, and the DataModule normalizes on the device, as on the torchvision path (same numbers,
    channels_last honoured, 4x fewer bytes when DALI runs on the host).

    Args:
        spec: The pipeline definition.
        positions: Positions into ``spec.files`` to read (one rank's share of one epoch).
        seed: Seeds DALI's own generator (differs per rank and epoch), below 2**31.
        draws: Training: each position's crop and flip draws (:func:`crop_draws`), in ``positions`` order.

    Returns:
        A built ``nvidia.dali.Pipeline``.

    Raises:
        ValueError: ``positions`` is empty or out of range.
    """
    from nvidia.dali import pipeline_def

    if not positions or min(positions) < 0 or max(positions) >= len(spec.files):
        raise ValueError(f"positions must be a non-empty list of indices into the {len(spec.files)} files")
    if spec.train and (draws is None or len(draws) != len(positions)):
        raise ValueError("a training pipeline needs one crop draw per position (crop_draws)")
    define = pipeline_def(_image_graph)
    pipe = define(
        spec, positions, draws,
        batch_size=spec.batch_size, num_threads=spec.num_threads, device_id=spec.device_id, seed=seed,
        prefetch_queue_depth=spec.prefetch_queue_depth,
    )
    pipe.build()
    return pipe


def build_encoded_pipeline(spec: PipelineSpec, *, seed: int) -> Any:
    """Build (and start) a pipeline that decodes encoded image bytes fed with ``feed_input(ENCODED_INPUT, ...)``.

    The graph after the input is :func:`build_image_pipeline`'s (same crops, same uint8 output);
    ``spec.file_root`` and ``spec.files`` are not used. The pipeline runs synchronously (no
    prefetch): each ``run()`` decodes exactly the batch fed before it, so the feeding loader's
    position is the model's position.

    Args:
        spec: The pipeline definition; ``batch_size`` is the largest batch fed.
        seed: Seeds augmentation draws, below 2**31.

    Returns:
        A built ``nvidia.dali.Pipeline``.
    """
    from nvidia.dali import pipeline_def

    define = pipeline_def(_encoded_graph)
    pipe = define(spec, batch_size=spec.batch_size, num_threads=spec.num_threads, device_id=spec.device_id,
                  seed=seed, prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
    pipe.build()
    return pipe


def to_torch(tensor_list: Any, device: torch.device | None) -> torch.Tensor:
    """A dense DALI output as a torch tensor that owns its memory (on ``device`` when DALI decoded on the GPU)."""
    return _to_torch(tensor_list, device)


def _to_torch(tensor_list: Any, device: torch.device | None) -> torch.Tensor:
    """Copy a dense DALI TensorList (CPU or GPU) into a torch tensor that owns its memory.

    DALI recycles its output buffers on the next ``run()``, so the copy is required.
    """
    from nvidia.dali.tensors import TensorListGPU

    if isinstance(tensor_list, TensorListGPU):
        if device is None or device.type != "cuda":
            tensor_list = tensor_list.as_cpu()
        else:
            from nvidia.dali.plugin.pytorch import feed_ndarray

            dense = tensor_list.as_tensor()
            out = torch.empty(tuple(dense.shape()), dtype=torch.uint8, device=device)
            # Copy on PyTorch's current stream so that the training step is ordered after it.
            feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
            return out
    return torch.from_numpy(np.array(tensor_list.as_tensor()))


def dali_unreadable(relpaths: list[str]) -> dict[str, str]:
    """Files that decode on the torchvision path but not in DALI's file reader, with the reason.

    GIFs (DALI decodes no GIF), and file names that are not valid UTF-8 (kept by Python as surrogate
    escapes): DALI's reader takes its file list as UTF-8 strings and refuses the whole list with
    "Unsupported argument type with name files", naming neither the file nor the cause.
    """
    out: dict[str, str] = {}
    for rel in relpaths:
        if os.path.splitext(rel)[1].lower() in _DALI_UNREADABLE_SUFFIXES:
            out[rel] = "GIF is not decoded by DALI"
        elif not _is_utf8(rel):
            out[rel] = ("the file name is not valid UTF-8, which DALI's file reader cannot take: rename the file, "
                        "or decode it on the CPU (decode='cpu')")
    return out


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # surrogate escapes of undecodable bytes
        return False
    return True
