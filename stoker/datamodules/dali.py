"""ImageNet-style DataModule on NVIDIA DALI: JPEG decoding on the GPU, sharded by rank."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stoker._imports import require
from stoker.data.folder import FolderIndex
from stoker.data.loader import available_cores, local_world_size
from stoker.data.media import IMAGE
from stoker.datamodules.folder import ClassFolderDataModule
from stoker.io.dali import DALIBatches, PipelineSpec, check_pipeline_args, dali_unreadable
from stoker.samplers.distributed import ResumableDistributedSampler
from stoker.samplers.shard_plan import ShardPlan
from stoker.transforms.image import IMAGENET_MEAN, IMAGENET_STD

_DECODE_DEVICES = ("auto", "mixed", "cpu")


class DALIImageNetDataModule(ClassFolderDataModule):
    """Image classification from a folder tree, decoded by NVIDIA DALI (GPU, or CPU-only mode).

    Same trees, splits, exclusions and batch contract as
    :class:`~stoker.datamodules.ImageFolderDataModule`, so models, callbacks and recipes work
    unchanged: ``{"image": uint8 [N, 3, S, S], "label": int64 [N], "index": int64 [N]}``, then
    normalized float on the device. ``index`` is the sample's position in its split, read back from
    DALI's file reader, so it names exactly the file each row came from.

    Which files each rank reads comes from the same sampler as on the torchvision path
    (:class:`~stoker.samplers.ResumableDistributedSampler`): in training a permutation per epoch
    from ``(seed, epoch)``, identical on every rank, cut into one equal share of whole batches per
    rank (what does not divide evenly is the tail of that epoch's permutation, reported in
    :meth:`describe`); in evaluation every sample
    exactly once over the ranks (the last batch of a rank trimmed to its real samples). DALI reads
    each rank's files of the epoch in that order, decodes a random crop
    (``decoders.image_random_crop``: on the GPU with ``device="mixed"`` when the Trainer runs on
    CUDA, otherwise on the CPU with ``device_id=None``), resizes it to ``image_size`` and flips it
    at random. Evaluation resizes the shorter side to ``image_size / crop_pct`` and center-crops.

    DALI cannot skip a corrupt file mid-epoch, so every file is decode-checked up front by the same
    scan as the image-folder DataModule (cached), and bad, quarantined and GIF files (which DALI does
    not decode) are left out and reported in :attr:`bad_files` and :attr:`quarantined`.

    Resuming: the training iterable is stateful (its sampler's position, counted in batches the
    model received), so Lightning checkpoints it; resumed mid-epoch, DALI reads exactly the samples
    of the epoch not trained yet, and nothing is decoded twice.

    Args:
        root: Dataset root: ``root/train/<class>/…`` with ``root/val/<class>/…`` (ImageNet), or one
            ``root/<class>/…`` folder split by a seeded per-class hash.
        batch_size: Samples per batch per rank.
        image_size: Side of the square training and evaluation crops.
        num_threads: DALI CPU threads per rank (``None``: the cores available per local rank).
        hw_decoder_load: Share of JPEGs sent to the hardware decoder of A100/H100-class GPUs (0-1).
        seed: Seeds the split, the shuffle (same on every rank) and augmentation (per rank).
        decode_device: ``"auto"`` (GPU when the Trainer runs on CUDA), ``"mixed"`` or ``"cpu"``.
        val_fraction: Per-class fraction held out for validation when the tree has no ``val`` folder.
        test_fraction: Per-class fraction held out for testing when the tree has no ``test`` folder.
        mean: Per-channel mean in ``[0, 1]`` for the device normalization.
        std: Per-channel standard deviation in ``[0, 1]``.
        crop_pct: Evaluation center-crop fraction.
        scale: Training random crop's area range.
        ratio: Training random crop's aspect-ratio range.
        hflip: Probability of a horizontal flip in training.
        channels_last: Hand the model channels_last float images.
        max_bad_fraction: Largest tolerated fraction of excluded (undecodable) files.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts the files (a corrupt
            one then stops DALI mid-epoch).
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Where scan results are cached (default ``~/.cache/stoker``).
        prefetch_queue_depth: Batches DALI prepares ahead of the training step.

    Raises:
        ModuleNotFoundError: DALI is not installed (``pip install 'stoker[dali]'``).

    Example::

        dm = DALIImageNetDataModule("/data/imagenet", batch_size=256, image_size=224)
        trainer.fit(ImageClassifier("resnet50", num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "image"
    media = IMAGE
    target_key = "label"

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 64,
        image_size: int = 224,
        num_threads: int | None = None,
        hw_decoder_load: float = 0.65,
        seed: int = 0,
        decode_device: str = "auto",
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        channels_last: bool = False,
        max_bad_fraction: float = 0.01,
        verify: str = "decode",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        prefetch_queue_depth: int = 2,
    ) -> None:
        require("dali", "DALIImageNetDataModule")
        # DataLoader workers do not exist here: DALI runs its own threads (num_threads).
        super().__init__(
            root, val_fraction=val_fraction, test_fraction=test_fraction, max_bad_fraction=max_bad_fraction,
            verify=verify, quarantine=quarantine, manifest=manifest, strict_fingerprint=strict_fingerprint,
            on_bad_sample="raise", class_names=class_names, cache_dir=cache_dir, batch_size=batch_size, num_workers=0,
            pin_memory=None, persistent_workers=False, prefetch_factor=2, seed=seed,
        )
        _check_args(image_size, num_threads, hw_decoder_load, decode_device, crop_pct, scale, ratio, hflip,
                    prefetch_queue_depth)
        self.image_size = image_size
        self.num_threads = num_threads
        self.hw_decoder_load = hw_decoder_load
        self.decode_device = decode_device
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.crop_pct = crop_pct
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip = hflip
        self.channels_last = channels_last
        self.prefetch_queue_depth = prefetch_queue_depth
        self._file_root = ""
        self._loaders: dict[tuple[str, int, int, str], DALIBatches] = {}

    # ----------------------------------------------------------------- the DALI specifics
    def _build_dataset(self, root: Path, split: str, pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        # DALI's reader takes the file list itself; the "dataset" is that list.
        self._file_root = os.fspath(root)
        return pairs

    def _scan(self, index: FolderIndex, relpaths: list[str]) -> dict[str, str]:
        # DALI-unreadable formats are left out even when the files are trusted (verify="none").
        bad = {**dali_unreadable(relpaths), **super()._scan(index, relpaths)}
        return dict(sorted(bad.items()))

    def train_dataloader(self) -> DALIBatches:
        return self.batches("train")

    def val_dataloader(self) -> DALIBatches | list[Any]:
        # An empty list tells Lightning there is no validation, as a missing split should.
        return self.batches("val") if self.splits.get("val") else []

    def test_dataloader(self) -> DALIBatches | list[Any]:
        return self.batches("test") if self.splits.get("test") else []

    def predict_dataloader(self) -> DALIBatches | list[Any]:
        return self.batches("test" if self.splits.get("test") else "val") if self.splits else []

    def teardown(self, stage: str | None = None) -> None:
        """Release the DALI pipelines (threads, pinned and device buffers)."""
        for loader in self._loaders.values():
            loader.close()
        self._loaders.clear()

    # ----------------------------------------------------------------- the iterable
    def batches(self, split: str, *, rank: int | None = None, world_size: int | None = None,
                decode_device: str | None = None) -> DALIBatches:
        """The DALI iterable of one split on one rank (``rank``/``world_size`` default to the Trainer's).

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            rank: Shard to read (the global rank).
            world_size: Number of shards.
            decode_device: Overrides the DataModule's ``decode_device``.

        Raises:
            ValueError: ``setup`` has not run, the split is unknown or empty, or ``rank`` is out of range.
        """
        if not self.splits:
            raise ValueError("call setup() before asking for batches: the file lists are built there")
        if split not in self.splits or not self.splits[split]:
            raise ValueError(f"split {split!r} is empty or unknown; sizes: {self._sizes()}")
        trainer = self.trainer
        rank = (trainer.global_rank if trainer is not None else 0) if rank is None else rank
        world_size = (trainer.world_size if trainer is not None else 1) if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        device, device_id, target = self._resolve_device(decode_device or self.decode_device)
        key = (split, rank, world_size, device)
        if key not in self._loaders:
            pairs = self.splits[split]
            train = split == "train"
            sampler = ResumableDistributedSampler(len(pairs), num_replicas=world_size, rank=rank, shuffle=train,
                                                  seed=self.seed, drop_last=train, batch_size=self.batch_size,
                                                  even=train)
            if not len(sampler):
                raise ValueError(
                    f"batch_size={self.batch_size} is larger than the {sampler.plan.rank_size(rank)} training samples "
                    f"each of {world_size} rank(s) reads per epoch; lower batch_size or add data"
                )
            if train:
                self.track_train_sampler(sampler)
            spec = self._spec([rel for rel, _ in pairs], train=train, device=device, device_id=device_id)
            self._loaders[key] = DALIBatches(
                spec, [y for _, y in pairs], sampler, seed=self.seed, device=target, input_key=self.input_key,
                target_key=self.target_key or "label",
            )
        return self._loaders[key]

    def plan(self, split: str, world_size: int = 1) -> ShardPlan:
        """Padding, batches per rank and dropped samples of a split (after ``setup``)."""
        train = split == "train"
        return ShardPlan(len(self.splits[split]), world_size, mode="cut" if train else "unrepeated",
                         batch_size=self.batch_size, drop_last=train)

    # ----------------------------------------------------------------- internals
    def _spec(self, files: list[str], *, train: bool, device: str, device_id: int | None) -> PipelineSpec:
        threads = self.num_threads or max(1, available_cores() // self._ranks_per_node())
        return PipelineSpec(
            file_root=self._file_root, files=tuple(files), train=train, image_size=self.image_size,
            resize_shorter=int(round(self.image_size / self.crop_pct)), scale=self.scale, ratio=self.ratio,
            hflip=self.hflip, device=device, device_id=device_id, num_threads=threads,
            batch_size=self.batch_size, hw_decoder_load=self.hw_decoder_load,
            prefetch_queue_depth=self.prefetch_queue_depth,
        )

    def _ranks_per_node(self) -> int:
        trainer = self.trainer
        return max(1, trainer.num_devices) if trainer is not None else local_world_size()

    def _resolve_device(self, decode_device: str) -> tuple[str, int | None, torch.device | None]:
        """``(DALI decoder device, DALI device_id, torch device of the output)``."""
        if decode_device not in _DECODE_DEVICES:
            raise ValueError(f"decode_device must be one of {_DECODE_DEVICES}, got {decode_device!r}")
        trainer = self.trainer
        root = trainer.strategy.root_device if trainer is not None else None
        on_cuda = root.type == "cuda" if root is not None else torch.cuda.is_available()
        if decode_device == "cpu" or (decode_device == "auto" and not on_cuda):
            return "cpu", None, None  # DALI's CPU-only mode: no CUDA context is created
        if not torch.cuda.is_available():
            raise ValueError("decode_device='mixed' decodes on the GPU, but CUDA is not available; use 'cpu' or 'auto'")
        cuda = root if root is not None and root.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
        index = cuda.index if cuda.index is not None else torch.cuda.current_device()
        return "mixed", index, torch.device("cuda", index)

    def _sizes(self) -> dict[str, int]:
        return {split: len(pairs) for split, pairs in self.splits.items()}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        info.update(
            image_size=self.image_size, mean=list(self.mean or ()), std=list(self.std or ()),
            decode_device=self.decode_device, num_threads=self.num_threads,
        )
        for split, pairs in self.splits.items():
            if pairs:
                plan = self.plan(split, world_size)
                info[f"{split}_batches_per_rank"] = plan.num_batches(0)
                info[f"{split}_padding"] = plan.padding  # samples read twice per epoch across ranks
                info[f"{split}_dropped_per_rank"] = plan.dropped(0)
        return info

    def __getstate__(self) -> dict[str, Any]:
        # DALI pipelines hold threads and device buffers: they never travel in a pickle.
        state = super().__getstate__()
        state["_loaders"] = {}
        return state


def _check_args(image_size: int, num_threads: int | None, hw_decoder_load: float, decode_device: str,
                crop_pct: float, scale: tuple[float, float], ratio: tuple[float, float], hflip: float,
                prefetch_queue_depth: int) -> None:
    # max_bad_fraction, verify and the fractions are checked by ClassFolderDataModule.
    if decode_device not in _DECODE_DEVICES:
        raise ValueError(f"decode_device must be one of {_DECODE_DEVICES}, got {decode_device!r}")
    check_pipeline_args(image_size, num_threads=num_threads, hw_decoder_load=hw_decoder_load, crop_pct=crop_pct,
                        scale=scale, ratio=ratio, hflip=hflip, prefetch_queue_depth=prefetch_queue_depth)
