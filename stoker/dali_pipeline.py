"""NVIDIA DALI pipelines for image folders, and a Lightning-friendly iterable over them.

Framework-light: nothing here needs a Trainer. :class:`~stoker.shard_plan.ShardPlan` gives every
rank the same number of batches; :func:`build_image_pipeline` defines the DALI graph (file reader
sharded by rank, decode on the GPU with ``device="mixed"`` or on the CPU, resize, crop and flip);
:class:`DALIBatches` runs a pipeline for exactly one epoch at a time and yields stoker's dict batches.

``nvidia.dali`` is imported inside the functions that need it, so importing this module is free.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stoker.shard_plan import ShardPlan

# DALI's image decoders read JPEG, PNG, BMP, TIFF, PNM, JPEG 2000 and WebP, but not GIF, which the
# torchvision path accepts. DALI cannot skip a sample mid-epoch, so such files are excluded up front.
_DALI_UNREADABLE_SUFFIXES: frozenset[str] = frozenset({".gif"})

# nvJPEG scratch buffers sized for ImageNet-scale JPEGs, the values NVIDIA's own ResNet-50 example
# uses: preallocating them avoids reallocations (and synchronizations) in the first iterations.
_DEVICE_MEMORY_PADDING = 211_025_920
_HOST_MEMORY_PADDING = 140_544_512


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
        num_shards: Ranks reading disjoint shards.
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
    num_shards: int
    hw_decoder_load: float
    prefetch_queue_depth: int

    def plan(self) -> ShardPlan:
        """The shard and batch arithmetic of this pipeline."""
        return ShardPlan(len(self.files), self.num_shards, self.batch_size, drop_last=self.train)


def derived_seed(*parts: object) -> int:
    """A 31-bit seed from a hash of ``parts`` (DALI seeds are non-negative int32/int64)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def _image_graph(spec: PipelineSpec, shard_id: int, shuffle_seed: int) -> Any:
    from nvidia.dali import fn, types

    plan = spec.plan()
    indices = plan.padded_indices()
    # The reader's "label" is the sample's position in the split: labels are looked up on the host,
    # and the position doubles as a faithful "index" key (which file each row came from).
    # Training reads a global permutation per epoch, identical on every rank (same seed), cut into
    # shards: disjoint like DistributedSampler. random_shuffle's buffer would mix samples of two epochs.
    shuffle: dict[str, Any] = {}
    if spec.train:
        shuffle = {"shuffle_after_epoch": True, "shuffle_after_epoch_seed": shuffle_seed}
    encoded, index = fn.readers.file(
        file_root=spec.file_root, files=[spec.files[i] for i in indices], labels=indices,
        shard_id=shard_id, num_shards=spec.num_shards, pad_last_batch=True, name="reader", **shuffle,
    )
    decoder: dict[str, Any] = {"device": spec.device, "output_type": types.DALIImageType.RGB}
    if spec.device == "mixed":
        decoder.update(
            device_memory_padding=_DEVICE_MEMORY_PADDING, host_memory_padding=_HOST_MEMORY_PADDING,
            hw_decoder_load=spec.hw_decoder_load,
        )
    linear, uint8 = types.DALIInterpType.INTERP_LINEAR, types.DALIDataType.UINT8
    images: Any
    if spec.train:
        # Decoding only the random crop's region of interest is cheaper than decode-then-crop.
        images = fn.decoders.image_random_crop(
            encoded, random_area=list(spec.scale), random_aspect_ratio=list(spec.ratio), num_attempts=100, **decoder
        )
        images = fn.resize(images, resize_x=spec.image_size, resize_y=spec.image_size, antialias=True,
                           interp_type=linear)
        mirror = fn.random.coin_flip(probability=spec.hflip)
        images = fn.crop_mirror_normalize(images, dtype=uint8, output_layout="CHW", mirror=mirror)
    else:
        images = fn.decoders.image(encoded, **decoder)
        images = _torchvision_center_crop(fn, types, encoded, images, spec.resize_shorter, spec.image_size)
    return images, index


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


def build_image_pipeline(spec: PipelineSpec, *, shard_id: int, seed: int, shuffle_seed: int) -> Any:
    """Build (and start) the DALI pipeline of ``spec`` for one shard.

    crop_mirror_normalize emits uint8 CHW, not normalized float: the batch contract is uint8 on the
    way in, and the DataModule normalizes on the device, as on the torchvision path (same numbers,
    channels_last honoured, 4x fewer bytes when DALI runs on the host).

    Args:
        spec: The pipeline definition.
        shard_id: This rank's shard (the global rank).
        seed: Seeds augmentation draws (differs per rank and epoch).
        shuffle_seed: Seeds the reader's permutation (must be equal on every rank).

    Returns:
        A built ``nvidia.dali.Pipeline``.
    """
    from nvidia.dali import pipeline_def

    if not 0 <= shard_id < spec.num_shards:
        raise ValueError(f"shard_id must be in [0, {spec.num_shards}), got {shard_id}")
    define = pipeline_def(_image_graph)
    pipe = define(
        spec, shard_id, shuffle_seed,
        batch_size=spec.batch_size, num_threads=spec.num_threads, device_id=spec.device_id, seed=seed,
        prefetch_queue_depth=spec.prefetch_queue_depth,
    )
    pipe.build()
    return pipe


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


class DALIBatches:
    """One split on one rank, as an iterable of dict batches with a length Lightning can read.

    Each iteration is one epoch of exactly ``len(self)`` batches, identical on every rank.
    Training builds a fresh pipeline per epoch, seeded from ``(seed, epoch)``, so epoch ``e`` has
    the same order and augmentation whether it runs after epoch ``e - 1`` or after a resume.
    Evaluation reuses its pipeline while the reader sits at an epoch boundary and rebuilds it
    otherwise (an abandoned iteration, e.g. Lightning's sanity check, leaves it mid-epoch).

    This is not a ``torch.utils.data.DataLoader``, so Lightning neither injects a
    ``DistributedSampler`` nor re-wraps it; sharding is the reader's ``shard_id``/``num_shards``.
    It has ``state_dict``/``load_state_dict``, so Lightning saves it in its checkpoints and
    restores it before a resumed epoch: the batches already trained are then decoded and skipped.

    Args:
        spec: The pipeline definition.
        labels: Class label of every sample of the split (by position).
        shard_id: This rank.
        seed: Base seed.
        progress: ``() -> (epoch to read next, batches trained in the current epoch)`` from the
            Trainer; ``None`` counts epochs and yielded batches locally.
        device: Where the images are put when DALI decodes on the GPU.
        input_key: Key of the images in a batch.
        target_key: Key of the labels in a batch.
    """

    def __init__(
        self,
        spec: PipelineSpec,
        labels: list[int],
        *,
        shard_id: int,
        seed: int,
        progress: Callable[[], tuple[int, int]] | None = None,
        device: torch.device | None = None,
        input_key: str = "image",
        target_key: str = "label",
    ) -> None:
        if len(labels) != len(spec.files):
            raise ValueError(f"got {len(labels)} labels for {len(spec.files)} files")
        self.spec = spec
        self.plan = spec.plan()
        if self.plan.batches == 0:
            raise ValueError(
                f"batch_size={spec.batch_size} is larger than the {self.plan.per_shard} training samples each of "
                f"{spec.num_shards} rank(s) reads per epoch; lower batch_size or add data"
            )
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.shard_id = shard_id
        self.seed = seed
        self.progress = progress
        self.device = device
        self.input_key = input_key
        self.target_key = target_key
        self.epoch = -1  # the epoch being (or last) read
        self.yielded = 0  # batches yielded in it, counting skipped ones
        self._resume: tuple[int, int] | None = None
        self._pipe: Any = None
        self._aligned = False  # the reader sits at an epoch boundary

    def __len__(self) -> int:
        return self.plan.batches

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: the epoch and how many of its batches the model has consumed.

        Taken from the Trainer's progress when there is one, because Lightning fetches a batch
        ahead of the training step and this iterable's own count runs one ahead.
        """
        if self.progress is None:
            return {"epoch": self.epoch, "batches": self.yielded}
        next_epoch, trained = self.progress()
        if self.epoch < 0:  # nothing read yet
            return {"epoch": int(next_epoch), "batches": 0}
        # The epoch is the one this iterable is reading: at an epoch-end checkpoint the Trainer's
        # epoch counter has already moved on while its batch counter still counts the finished epoch.
        return {"epoch": self.epoch, "batches": int(trained)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the given epoch after its first ``state["batches"]`` batches (at the next iteration)."""
        if set(state) != {"epoch", "batches"}:
            raise ValueError(f"expected a state with keys 'epoch' and 'batches', got {sorted(state)}")
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # The epoch is decided when the iteration is requested: Lightning does so after it has
        # restored its progress and this iterable's state.
        epoch = self.progress()[0] if self.progress is not None else self.epoch + 1
        skip = 0
        if self._resume is not None:
            # The restored state wins over the Trainer's epoch: resuming from a checkpoint written
            # after an epoch's last batch, Lightning runs the next epoch on the iterator it creates
            # now, while its epoch counter still names the finished one.
            resume_epoch, done = self._resume
            self._resume = None
            epoch, skip = (resume_epoch + 1, 0) if done >= len(self) else (resume_epoch, done)
        if self.spec.train or not self._aligned or self._pipe is None:
            self._pipe = None  # free the previous pipeline's buffers before allocating new ones
            self._pipe = build_image_pipeline(
                self.spec, shard_id=self.shard_id,
                seed=derived_seed(self.seed, "augment", epoch, self.shard_id),
                shuffle_seed=derived_seed(self.seed, "shuffle", epoch),
            )
        self.epoch, self.yielded, self._aligned = epoch, 0, False
        return self._epoch(skip)

    def _epoch(self, skip: int) -> Iterator[dict[str, torch.Tensor]]:
        # Skipped batches are decoded and thrown away: slower than restoring a DALI checkpoint,
        # but exact (same files, same augmentation draws) and independent of Lightning's prefetching.
        for step in range(len(self)):
            images, index = self._pipe.run()
            self.yielded = step + 1
            if step < skip:
                continue
            positions = torch.from_numpy(np.array(index.as_tensor())).reshape(-1).to(torch.int64)
            batch_images = _to_torch(images, self.device)
            if step == len(self) - 1 and self.plan.last_batch_size < self.spec.batch_size:
                real = self.plan.last_batch_size
                positions, batch_images = positions[:real], batch_images[:real]
            yield {self.input_key: batch_images, self.target_key: self.labels[positions], "index": positions}
        # Evaluation has now read its shard's last (padded) batch, so its next epoch starts cleanly
        # on this pipeline; training rebuilds per epoch anyway.
        self._aligned = self.plan.batches == self.plan.reader_batches

    def close(self) -> None:
        """Release the pipeline (its threads and buffers)."""
        self._pipe = None
        self._aligned = False


def dali_unreadable(relpaths: list[str]) -> dict[str, str]:
    """Files that decode on the torchvision path but not in DALI, with the reason."""
    return {
        rel: "GIF is not decoded by DALI"
        for rel in relpaths
        if os.path.splitext(rel)[1].lower() in _DALI_UNREADABLE_SUFFIXES
    }
