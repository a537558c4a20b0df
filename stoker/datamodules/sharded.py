"""DataModules over shard sets written by ``stoker pack``, streamed by litdata (local disk or object storage)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info

from stoker._imports import require
from stoker.data.file_dataset import BAD_SAMPLE_POLICIES, SKIPPED_KEY, BadSamplePolicy, SkippingCollate
from stoker.data.loader import available_cores, local_world_size
from stoker.data.media import IMAGE, Media
from stoker.data.shard_items import ImageItems, SampleLocator, collate_encoded
from stoker.data.shard_stream import ShardPass, ShardStream, StreamPosition
from stoker.data.shards import (
    ShardSetMeta,
    SplitChunks,
    check_location,
    check_split,
    join,
    read_labels,
    read_meta,
)
from stoker.datamodules.base import StokerDataModule
from stoker.io.dali import check_pipeline_args
from stoker.samplers.shard_plan import ShardPlan
from stoker.transforms.image import IMAGENET_MEAN, IMAGENET_STD, AutoAugment, eval_transform, timm_input_config
from stoker.transforms.image import train_transform as image_train_transform

Decode = Literal["cpu", "dali"]


class ShardedDataModule(StokerDataModule):
    """What the sharded DataModules share: the shard set, its checks, the streams and their loaders.

    ``__init__`` reads the shard set's small metadata file (class names, split sizes, fingerprint),
    so ``num_classes`` is known at once. ``prepare_data`` (once per node) checks every split's
    index and chunk files and records them in the node's cache; ``setup`` (every rank) reads that
    record and the data fingerprint. Loaders stream with litdata through stoker's loader policy:
    see :mod:`stoker.data.shard_stream` for equal batches, exact resume and exactly-once evaluation.
    A subclass says how a stored sample is decoded (:meth:`_items`).

    Args:
        source: The shard set: a folder or an ``s3://``/``gs://``/``r2://`` URL (``stoker pack ... --out``).
        cache_dir: Node-local folder where litdata caches the chunks of a remote source (and stoker its
            checks); default: litdata's cache and ``~/.cache/stoker``.
        max_cache_size: litdata's cache budget, e.g. ``"200GB"`` (``None``: litdata's default).
        storage_options: Options for litdata's object-store client (e.g. ``{"endpoint_url": ...}``).
        on_bad_sample: A sample that does not decode: ``"raise"`` an error naming its key and shard, or
            ``"skip"`` it (left out of its batch, counted and reported after its epoch).
        strict_fingerprint: Resuming from a checkpoint of other data is an error, not a warning.
        batch_size: See :class:`~stoker.datamodules.base.StokerDataModule` (so are the rest).
    """

    media: Media = IMAGE

    def __init__(self, source: str, *, cache_dir: str | None, max_cache_size: str | None,
                 storage_options: dict[str, Any] | None, on_bad_sample: BadSamplePolicy, strict_fingerprint: bool,
                 batch_size: int, num_workers: int | None, pin_memory: bool | None, persistent_workers: bool,
                 prefetch_factor: int, seed: int) -> None:
        require("shards", type(self).__name__)
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed)
        check_location(source)
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.source, self.cache_dir, self.max_cache_size = source, cache_dir, max_cache_size
        self.storage_options = dict(storage_options) if storage_options else None
        self.on_bad_sample = on_bad_sample
        self.strict_fingerprint = strict_fingerprint
        self.meta: ShardSetMeta = read_meta(source, self.storage_options)
        if self.meta.media != self.media.name:
            raise ValueError(f"{source!r} holds {self.meta.media} shards, but {type(self).__name__} reads "
                             f"{self.media.name}; use the {self.meta.media} sharded DataModule")
        self.chunks: dict[str, SplitChunks] = {}
        self._train_labels: list[int] | None = None
        self.skipped_report: dict[int, int] = {}  # epoch -> samples skipped under on_bad_sample="skip"
        self._skipped: dict[int, dict[str, str]] = {}  # epoch -> {sample: reason}, until reported

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    def split_sizes(self) -> dict[str, int]:
        """Samples per split, as packed."""
        return {split: self.meta.splits.get(split, 0) for split in ("train", "val", "test")}

    def train_labels(self) -> list[int]:
        """Labels of the training split by packed position (a sample's ``index``), read from the shard set."""
        if self._train_labels is None:
            self._train_labels = read_labels(self.source, "train", self.storage_options)
        return self._train_labels

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Check every split's index and chunk files (once per node) and record them in the node's cache."""
        record = self.prepared_record_path()
        previous = json.loads(record.read_text()) if record.is_file() else {}
        checked = {split: check_split(self.source, split, size, self.storage_options)
                   for split, size in self.meta.splits.items() if size}
        record.parent.mkdir(parents=True, exist_ok=True)
        same = previous.get("fingerprint") == self.meta.fingerprint
        record.write_text(json.dumps({
            "source": self.source, "fingerprint": self.meta.fingerprint, "host": socket.gethostname(),
            "prepared": int(previous.get("prepared", 0)) + 1 if same else 1,
            "splits": {split: {"names": list(c.names), "counts": list(c.counts)} for split, c in checked.items()},
        }, indent=1))

    def setup(self, stage: str | None = None) -> None:
        """Read the splits' chunk lists (from this node's record when ``prepare_data`` wrote it) and the fingerprint."""
        if self.chunks:
            return
        record = self.prepared_record_path()
        saved = json.loads(record.read_text()) if record.is_file() else {}
        if saved.get("fingerprint") == self.meta.fingerprint:
            self.chunks = {split: SplitChunks(tuple(c["names"]), tuple(c["counts"]))
                           for split, c in saved["splits"].items()}
        else:  # prepare_data did not run on this node (or for this data): check here
            self.chunks = {split: check_split(self.source, split, size, self.storage_options)
                           for split, size in self.meta.splits.items() if size}
        self.record_fingerprint(self.meta.fingerprint)
        sizes = ", ".join(f"{split} {n}" for split, n in self.split_sizes().items())
        rank_zero_info(f"{type(self).__name__}: {len(self.class_names)} classes; {sizes} (shards at {self.source})")

    def train_dataloader(self) -> Any:
        return self._loader("train", train=True)

    def val_dataloader(self) -> Any:
        return self._loader("val", train=False) if self.meta.splits.get("val") else []

    def test_dataloader(self) -> Any:
        return self._loader("test", train=False) if self.meta.splits.get("test") else []

    def predict_dataloader(self) -> Any:
        return self._loader("test" if self.meta.splits.get("test") else "val", train=False)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the samples skipped under ``on_bad_sample="skip"`` out of the batch, count and report them."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        if isinstance(batch, dict) and SKIPPED_KEY in batch:
            self._skipped.setdefault(epoch, {}).update({where: reason for where, reason in batch.pop(SKIPPED_KEY)})
        self._report_skipped(before=epoch)
        return batch

    def teardown(self, stage: str | None = None) -> None:
        self._report_skipped(before=None)

    # ----------------------------------------------------------------- what a subclass provides
    def _items(self, split: str, locator: SampleLocator) -> Any:
        """The per-sample decoder of a split (runs in the loader workers)."""
        raise NotImplementedError

    def _wrap(self, loader: Any, split: str, locator: SampleLocator) -> Any:
        """What Lightning iterates for a split (the loader itself on the CPU path)."""
        return loader

    def _collate(self) -> Any:
        return SkippingCollate()

    # ----------------------------------------------------------------- internals
    def _loader(self, split: str, *, train: bool) -> Any:
        if not self.chunks:
            raise ValueError(f"{type(self).__name__}: call setup() before asking for a loader; the shard lists are "
                             "read there")
        world, rank = self.world()
        location = join(self.source, split)
        locator = SampleLocator(location, self.chunks[split])
        common: dict[str, Any] = dict(rank=rank, num_replicas=world, batch_size=self.batch_size, seed=self.seed,
                                      cache_dir=self.cache_dir, max_cache_size=self.max_cache_size,
                                      storage_options=self.storage_options)
        stream: ShardStream | ShardPass
        if train:
            stream = ShardStream(location, self._items(split, locator), num_samples=self.meta.splits[split], **common)
            if stream.num_batches == 0:
                raise ValueError(f"{type(self).__name__}: the training split has {stream.num_samples} samples, which "
                                 f"gives each of {world} rank(s) no whole batch of batch_size={self.batch_size}; lower "
                                 f"batch_size (at most {stream.num_samples // world}) or add data")
            self.track_train_sampler(StreamPosition(stream))  # an epoch-end checkpoint's position applies here
        else:
            stream = ShardPass(location, self._items(split, locator), **common)
        loader = self.make_loader(stream, train=train, collate_fn=self._collate())  # seeded by the stream's epoch
        if isinstance(stream, ShardStream):
            stream.prepare(self.num_workers)
        return self._wrap(loader, split, locator)

    def prepared_record_path(self) -> Path:
        """Where ``prepare_data`` records its checks of the shard set on this node (the node's cache)."""
        base = Path(self.cache_dir) if self.cache_dir else Path(os.environ.get("STOKER_CACHE", "~/.cache/stoker"))
        key = hashlib.sha1(self.source.encode("utf-8")).hexdigest()[:16]
        return base.expanduser() / "stoker-shards" / key / "prepared.json"

    def _report_skipped(self, *, before: int | None) -> None:
        # Each epoch's skipped samples are reported once, when a later epoch begins (or at teardown), by every
        # rank: each rank skips samples of its own share.
        for epoch in sorted(e for e in self._skipped if before is None or e < before):
            found = self._skipped.pop(epoch)
            self.skipped_report[epoch] = self.skipped_report.get(epoch, 0) + len(found)
            listed = "\n".join(f"  {where}: {reason}" for where, reason in sorted(found.items()))
            warnings.warn(f"{type(self).__name__}: skipped {len(found)} undecodable sample(s) in epoch {epoch} "
                          f"(on_bad_sample='skip'):\n{listed}", stacklevel=2)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        world = self.world()[0]
        plan = ShardPlan(self.meta.splits.get("train", 0), world, mode="cut", batch_size=self.batch_size,
                         drop_last=True)
        info.update(source=self.source, dataset=self.source, split_sizes=self.split_sizes(),
                    fingerprint=self.meta.fingerprint,
                    packed_by=self.meta.stoker_version, skipped_in_training=dict(self.skipped_report),
                    train_batches_per_rank=plan.num_batches(0),
                    train_dropped_per_epoch=plan.num_samples - plan.share(0) * world)
        return info


class ShardedImageDataModule(ShardedDataModule):
    """Image classification from a shard set, decoded by torchvision in the workers or by NVIDIA DALI.

    The batch contract and transforms of :class:`~stoker.datamodules.ImageFolderDataModule`
    (``decode="cpu"``) or :class:`~stoker.datamodules.DALIImageNetDataModule` (``decode="dali"``):
    ``{"image": uint8 [N, 3, S, S], "label": int64 [N], "index": int64 [N]}`` on the host, normalized
    float on the device; ``index`` is the sample's position in its split as packed. MixUp/CutMix,
    the monitors and the report work unchanged.

    Args:
        source: The shard set (a folder or an ``s3://``/``gs://``/``r2://`` URL) from ``stoker pack``.
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores per rank). With ``decode="dali"`` they
            only read bytes; DALI decodes with ``num_threads``.
        image_size: Side of the square training and evaluation crops.
        decode: ``"cpu"`` (torchvision in the loader workers) or ``"dali"`` (DALI: on the GPU when the
            Trainer runs on CUDA, otherwise in DALI's CPU-only mode).
        cache_dir: Node-local cache of a remote source's chunks.
        max_cache_size: litdata's cache budget (e.g. ``"200GB"``).
        storage_options: Options for litdata's object-store client.
        seed: Seeds the shuffle (the same on every rank) and augmentation (per rank and worker).
        timm_model: Take ``image_size``, ``mean``, ``std``, ``crop_pct`` and interpolation from this timm
            model's pretrained config (nothing is downloaded).
        mean: Per-channel mean in ``[0, 1]``.
        std: Per-channel standard deviation in ``[0, 1]``.
        crop_pct: Evaluation center-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Probability of a horizontal flip in training.
        auto_augment: ``"none"``, ``"randaugment"``, ``"trivialaugment"`` or ``"autoaugment"`` (CPU decode only).
        random_erasing: Probability of RandomErasing in training (CPU decode only).
        channels_last: Hand the model channels_last float images.
        on_bad_sample: ``"raise"`` or ``"skip"`` a sample that does not decode (see the base class).
        strict_fingerprint: Resuming from a checkpoint of other data is an error, not a warning.
        num_threads: DALI CPU threads per rank (``None``: the cores per rank).
        hw_decoder_load: DALI: share of JPEGs for the A100/H100 hardware decoder.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Raises:
        ModuleNotFoundError: litdata is not installed (``pip install 'stoker[shards]'``), or DALI for ``"dali"``.

    Example::

        dm = ShardedImageDataModule("s3://bucket/imagenet-shards", batch_size=256, cache_dir="/nvme/cache")
        trainer.fit(ImageClassifier("resnet50", num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "image"
    target_key = "label"
    media = IMAGE

    def __init__(
        self,
        source: str,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 224,
        decode: Decode = "cpu",
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        seed: int = 0,
        timm_model: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        channels_last: bool = False,
        on_bad_sample: BadSamplePolicy = "raise",
        strict_fingerprint: bool = False,
        num_threads: int | None = None,
        hw_decoder_load: float = 0.65,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        if decode not in ("cpu", "dali"):
            raise ValueError(f"decode must be 'cpu' (torchvision in the workers) or 'dali', got {decode!r}")
        if decode == "dali":
            require("dali", f"{type(self).__name__}(decode='dali')")
        check_pipeline_args(image_size, num_threads=num_threads, hw_decoder_load=hw_decoder_load, crop_pct=crop_pct,
                            scale=scale, ratio=ratio, hflip=hflip)
        super().__init__(source, cache_dir=cache_dir, max_cache_size=max_cache_size, storage_options=storage_options,
                         on_bad_sample=on_bad_sample, strict_fingerprint=strict_fingerprint, batch_size=batch_size,
                         num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
                         prefetch_factor=prefetch_factor, seed=seed)
        config = timm_input_config(timm_model) if timm_model is not None else None
        self.image_size = config.image_size if config else image_size
        self.mean = tuple(config.mean if config else mean)
        self.std = tuple(config.std if config else std)
        self.crop_pct = config.crop_pct if config else crop_pct
        interpolation = config.interpolation if config else "bilinear"
        self.decode, self.channels_last = decode, channels_last
        self.scale, self.ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
        self.hflip = hflip
        self.num_threads, self.hw_decoder_load = num_threads, hw_decoder_load
        self.train_transform = image_train_transform(self.image_size, scale=self.scale, ratio=self.ratio, hflip=hflip,
                                                     auto_augment=auto_augment, random_erasing=random_erasing,
                                                     interpolation=interpolation)
        self.eval_transform = eval_transform(self.image_size, crop_pct=self.crop_pct, interpolation=interpolation)

    def _items(self, split: str, locator: SampleLocator) -> Any:
        if self.decode == "dali":
            from stoker.data.shard_items import EncodedItems

            return EncodedItems()
        transform = self.train_transform if split == "train" else self.eval_transform
        return ImageItems(locator, transform, on_bad_sample=self.on_bad_sample)

    def _collate(self) -> Any:
        return collate_encoded if self.decode == "dali" else SkippingCollate()

    def _wrap(self, loader: Any, split: str, locator: SampleLocator) -> Any:
        if self.decode != "dali":
            return loader
        from stoker.data.shard_dali import ShardDALIBatches
        from stoker.io.dali import PipelineSpec

        trainer = self.trainer
        root = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        cuda = root.type == "cuda"
        ranks_here = max(1, trainer.num_devices) if trainer is not None else local_world_size()
        spec = PipelineSpec(
            file_root="", files=(), train=split == "train", image_size=self.image_size,
            resize_shorter=int(round(self.image_size / self.crop_pct)), scale=self.scale, ratio=self.ratio,
            hflip=self.hflip, device="mixed" if cuda else "cpu",
            device_id=(root.index if root.index is not None else torch.cuda.current_device()) if cuda else None,
            num_threads=self.num_threads or max(1, available_cores() // ranks_here), batch_size=self.batch_size,
            hw_decoder_load=self.hw_decoder_load, prefetch_queue_depth=1,
        )
        return ShardDALIBatches(loader, spec, locator, seed=self.seed, rank=self.world()[1],
                                device=root if cuda else None, on_bad_sample=self.on_bad_sample,
                                input_key=self.input_key, target_key=self.target_key or "label",
                                epoch_of=(lambda: trainer.current_epoch) if trainer is not None else None)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(image_size=self.image_size, mean=list(self.mean or ()), std=list(self.std or ()),
                    decode=self.decode)
        return info
