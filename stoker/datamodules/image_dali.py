"""How :class:`~stoker.datamodules.ImageDataModule` decodes with NVIDIA DALI (``decode="dali"``), per source.

* Files on the local disk (class folders, tables of paths): DALI's own file reader reads exactly the
  files the sampler hands this rank, in its order (:class:`~stoker.io.dali_batches.DALIBatches`), with
  DALI's threads doing the I/O.
* Bytes stored in something else (Hugging Face tables, WebDataset tars): the stoker loader reads
  the encoded bytes of each batch (workers only read) and DALI decodes them through an external
  source (:class:`~stoker.data.sources.shards.dali.ShardDALIBatches`), so order, sharding and resume are the
  loader's, as on the CPU path.
* Stoker shard sets: the same, with the shard stream as the loader.

On CUDA DALI decodes on the GPU (nvJPEG, with ``hw_decoder_load`` of JPEGs on the A100/H100 hardware
decoder); elsewhere in its CPU-only mode (``device_id=None``), which is how it is tested here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stoker.data.loader import available_cores, local_world_size
from stoker.data.sources.base import Source
from stoker.data.sources.labels import Label
from stoker.io.dali import PipelineSpec
from stoker.io.dali_batches import DALIBatches
from stoker.samplers.distributed import ResumableDistributedSampler

DALI_DEVICES: tuple[str, ...] = ("auto", "mixed", "cpu")


class EncodedSamples(Dataset):
    """A source's samples as encoded bytes (for DALI): ``{"data": uint8 array, "label", "index", "key"}``."""

    def __init__(self, source: Source, samples: list[tuple[str, Label]], num_classes: int) -> None:
        self.source, self.samples, self.num_classes = source, samples, num_classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        key, label = self.samples[index]
        target: Any = label
        if isinstance(label, tuple):
            target = torch.zeros(self.num_classes, dtype=torch.float32)
            target[list(label)] = 1.0
        return {"data": np.frombuffer(self.source.read_bytes(key), dtype=np.uint8), "label": target,
                "index": index, "key": key}


class SourceNamer:
    """Names a sample of a source in DALI's errors, as :class:`~stoker.data.sources.shards.items.SampleLocator` does."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def describe(self, item: dict[str, Any]) -> str:
        return self.source.name_of(str(item["key"]))


def targets(pairs: list[tuple[str, Label]], num_classes: int) -> list[int] | torch.Tensor:
    """The targets of a split by position: class indices, or ``[N, C]`` multi-hot for multi-label samples."""
    if pairs and isinstance(pairs[0][1], tuple):
        hot = torch.zeros(len(pairs), num_classes, dtype=torch.float32)
        for row, (_, label) in enumerate(pairs):
            hot[row, list(label)] = 1.0  # type: ignore[arg-type]
        return hot
    return [int(label) for _, label in pairs]  # type: ignore[arg-type]


def resolve_device(trainer: Any, dali_device: str) -> tuple[str, int | None, torch.device | None]:
    """``(DALI decoder device, DALI device_id, torch device of the output)`` for the Trainer's accelerator.

    Raises:
        ValueError: An unknown device, or ``"mixed"`` without CUDA.
    """
    if dali_device not in DALI_DEVICES:
        raise ValueError(f"DALI device must be one of {DALI_DEVICES}, got {dali_device!r}")
    root = trainer.strategy.root_device if trainer is not None else None
    on_cuda = root.type == "cuda" if root is not None else torch.cuda.is_available()
    if dali_device == "cpu" or (dali_device == "auto" and not on_cuda):
        return "cpu", None, None  # DALI's CPU-only mode: no CUDA context is created
    if not torch.cuda.is_available():
        raise ValueError("DALI was asked to decode on the GPU ('mixed'), but CUDA is not available; use 'cpu' or "
                         "'auto'")
    cuda = root if root is not None and root.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    index = cuda.index if cuda.index is not None else torch.cuda.current_device()
    return "mixed", index, torch.device("cuda", index)


def pipeline_spec(dm: Any, *, files: tuple[str, ...], file_root: str, train: bool, device: str,
                  device_id: int | None) -> PipelineSpec:
    """The DALI pipeline of a split of ``dm`` (an ImageDataModule)."""
    trainer = dm.trainer
    ranks_here = max(1, trainer.num_devices) if trainer is not None else local_world_size()
    return PipelineSpec(
        file_root=file_root, files=files, train=train, image_size=dm.image_size,
        resize_shorter=int(round(dm.image_size / dm.crop_pct)), scale=dm.scale, ratio=dm.ratio, hflip=dm.hflip,
        device=device, device_id=device_id, num_threads=dm.dali_threads or max(1, available_cores() // ranks_here),
        batch_size=dm.batch_size, hw_decoder_load=dm.hw_decoder_load,
        prefetch_queue_depth=dm.prefetch_queue_depth if files else 1,
    )


def file_batches(dm: Any, split: str, *, rank: int, world_size: int, dali_device: str) -> DALIBatches:
    """DALI's file reader over one split's files on one rank (the sampler decides which and in which order)."""
    source: Source = dm.reader
    pairs = dm.splits[split]
    train = split == "train"
    sampler = ResumableDistributedSampler(len(pairs), num_replicas=world_size, rank=rank, shuffle=train, seed=dm.seed,
                                          drop_last=train, batch_size=dm.batch_size, even=train)
    if not len(sampler):
        raise ValueError(f"batch_size={dm.batch_size} is larger than the {sampler.plan.rank_size(rank)} training "
                         f"samples each of {world_size} rank(s) reads per epoch; lower batch_size or add data")
    if train:
        dm.track_train_sampler(sampler)
    root = getattr(source, "root", None)
    if root is not None:  # a class folder: paths relative to its root
        files, file_root = tuple(key for key, _ in pairs), str(root)
    else:  # a table: each file where the table says
        files, file_root = tuple(str(source.local_path(key)) for key, _ in pairs), ""
    device, device_id, target = resolve_device(dm.trainer, dali_device)
    spec = pipeline_spec(dm, files=files, file_root=file_root, train=train, device=device, device_id=device_id)
    batches = DALIBatches(spec, targets(pairs, dm.num_classes), sampler, seed=dm.seed, device=target,
                          input_key=dm.input_key, target_key=dm.target_key or "label")
    if train:  # a checkpoint of another number of ranks: the Trainer counts the rest of the epoch right
        batches.on_elastic_resume = dm._follow_elastic_resume
    return batches


def encoded_batches(dm: Any, loader: Any, split: str, namer: Any, *, dali_device: str) -> Any:
    """DALI decoding the encoded bytes a stoker loader yields (Hugging Face tables, tars, shard sets)."""
    from stoker.data.sources.shards.dali import ShardDALIBatches

    device, device_id, target = resolve_device(dm.trainer, dali_device)
    spec = pipeline_spec(dm, files=(), file_root="", train=split == "train", device=device, device_id=device_id)
    trainer = dm.trainer
    return ShardDALIBatches(loader, spec, namer, seed=dm.seed, rank=dm.world()[1], device=target,
                            on_bad_sample=dm.on_bad_sample, input_key=dm.input_key,
                            target_key=dm.target_key or "label",
                            epoch_of=(lambda: trainer.current_epoch) if trainer is not None else None)
