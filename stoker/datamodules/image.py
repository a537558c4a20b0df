"""ImageDataModule: image classification from any source, decoded on the CPU (torchvision) or by NVIDIA DALI."""

from __future__ import annotations

from typing import Any, Literal

from stoker._imports import require
from stoker.data.file_dataset import BadSamplePolicy, ImageFileDataset
from stoker.data.loader import WorkerType
from stoker.data.media import IMAGE
from stoker.data.sources import Pairs, Source, SourceIndex
from stoker.data.sources.shards.items import ImageItems, collate_encoded
from stoker.datamodules.source import SourceDataModule, Verify
from stoker.io.dali import check_pipeline_args, dali_unreadable
from stoker.transforms.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    eval_transform,
    timm_input_config,
    train_transform,
)

Decode = Literal["cpu", "dali"]


class ImageDataModule(SourceDataModule):
    """Image classification (single- or multi-label) from the data you have, in the shape you have it.

    ``source`` may be (the reader is chosen from what is there; ``describe()["source_kind"]`` names it):

    * a folder of class folders: ``root/<class>/…`` or ``root/train|val|test/<class>/…``;
    * a table of files: ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` with ``path_field`` and ``label_field``
      columns (and ``split_field`` when present), paths relative to the table or absolute;
    * a Hugging Face dataset: a ``save_to_disk`` folder (``Dataset`` or ``DatasetDict``), parquet/arrow
      files (a folder such as a hub repository's ``data/train-00000-of-00001.parquet``...), or
      ``hf://<name>`` with ``subset`` and ``revision``; the image column may be ``datasets.Image()``
      (embedded bytes or paths), raw bytes or paths, labels a ``ClassLabel``, integers or names;
    * WebDataset tar shards (``<key>.jpg`` + ``<key>.cls``): one ``.tar``, a brace pattern, a folder, ``s3://``;
    * a stoker shard set from ``stoker pack`` (``stoker_shards.json``), local or ``s3://``.

    Splits the source brings (folders, a split column, split-named files or tars, a ``DatasetDict``) are
    kept, never merged and re-split; ``val_fraction``/``test_fraction`` carve a missing validation/test
    split out of the training data by exact per-class quotas (setup says which happened). Every sample
    is decode-checked once per node (cached): bad files and rows are named, counted and left out, and
    more than ``max_bad_fraction`` of them stops before training.

    Batches are ``{"image": uint8 [N, 3, S, S], "label": int64 [N] (multi-label: float [N, C]),
    "index": int64 [N]}`` on the host; the image becomes normalized float32 on the device.

    Args:
        source: See above.
        image_field: The column (Hugging Face) holding the images.
        label_field: The column holding labels (WebDataset: the ``json`` member's field, after ``cls``/``label``).
        path_field: A table's column of file paths.
        split_field: A table's column of splits (used when present).
        multi_label: Labels are sets of classes (a list, or ``a;b`` in a table); targets become multi-hot.
        class_names: Fix the classes and their order (default: what the source says).
        decode: ``"cpu"`` (torchvision in the loader workers) or ``"dali"`` (NVIDIA DALI: on the GPU when
            the Trainer runs on CUDA, otherwise DALI's CPU-only mode).
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores per rank). With ``decode="dali"`` on files
            DALI reads them itself; on stored bytes the workers only read.
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        image_size: Side of the square training and evaluation crops.
        val_fraction: Per-class share held out for validation when the source brings no validation split.
        test_fraction: Per-class share held out for testing when the source brings no test split.
        seed: Seeds the split, shuffling and augmentation.
        timm_model: Take ``image_size``, ``mean``, ``std``, ``crop_pct`` and interpolation from this timm
            model's pretrained config (nothing is downloaded).
        mean: Per-channel mean in ``[0, 1]``.
        std: Per-channel standard deviation in ``[0, 1]``.
        crop_pct: Evaluation center-crop fraction: resize the shorter side to ``image_size / crop_pct``.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Probability of a horizontal flip in training.
        auto_augment: ``"none"``, ``"randaugment"``, ``"trivialaugment"`` or ``"autoaugment"`` (CPU decode).
        random_erasing: Probability of RandomErasing in training (CPU decode).
        channels_last: Hand the model channels_last float images.
        max_bad_fraction: Largest tolerated fraction of unusable samples.
        verify: ``"decode"`` checks every sample by decoding it once; ``"none"`` trusts them.
        on_bad_sample: A sample that fails while training: ``"raise"`` an error naming it, or ``"skip"`` it.
        quarantine: A file listing keys to leave out (e.g. from ``stoker scan --quarantine``).
        manifest: A split manifest from ``stoker split``; it replaces the source's split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error, not a warning.
        subset: A hub dataset's configuration (``hf://``).
        revision: A hub dataset's revision (``hf://``).
        storage_options: Object-store client options for ``s3://`` sources.
        cache_dir: Node-local folder for everything this DataModule caches (see
            :class:`~stoker.datamodules.source.SourceDataModule`).
        max_cache_size: Budget of the chunk cache of a remote shard set (e.g. ``"200GB"``).
        predict_source: New images for ``predict`` (any source; labels optional, e.g. a flat folder).
        dali_threads: DALI's CPU threads per rank (``None``: the cores per rank).
        hw_decoder_load: DALI: share of JPEGs for the A100/H100 hardware decoder.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Example::

        dm = ImageDataModule("data/train.csv", path_field="file", label_field="species", batch_size=64)
        trainer.fit(ImageClassifier("resnet18", num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "image"
    target_key = "label"
    media = IMAGE

    def __init__(
        self,
        source: str | list[str],
        *,
        image_field: str = "image",
        label_field: str = "label",
        path_field: str = "path",
        split_field: str = "split",
        multi_label: bool = False,
        class_names: list[str] | None = None,
        decode: Decode = "cpu",
        batch_size: int = 64,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        image_size: int = 224,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
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
        max_bad_fraction: float = 0.01,
        verify: Verify = "decode",
        on_bad_sample: BadSamplePolicy = "raise",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        subset: str | None = None,
        revision: str | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        predict_source: str | list[str] | None = None,
        dali_threads: int | None = None,
        hw_decoder_load: float = 0.65,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        if decode not in ("cpu", "dali"):
            raise ValueError(f"decode must be 'cpu' (torchvision in the loader workers) or 'dali', got {decode!r}")
        if decode == "dali":
            name = type(self).__name__
            require("dali", name if type(self) is not ImageDataModule else f"{name}(decode='dali')")
        config = timm_input_config(timm_model) if timm_model is not None else None
        self.image_size = config.image_size if config else image_size
        self.crop_pct = config.crop_pct if config else crop_pct
        check_pipeline_args(self.image_size, num_threads=dali_threads, hw_decoder_load=hw_decoder_load,
                            crop_pct=self.crop_pct, scale=scale, ratio=ratio, hflip=hflip)
        super().__init__(
            source, media_field=image_field, label_field=label_field, path_field=path_field, split_field=split_field,
            multi_label=multi_label, class_names=class_names, subset=subset, revision=revision,
            storage_options=storage_options, val_fraction=val_fraction, test_fraction=test_fraction,
            max_bad_fraction=max_bad_fraction, verify=verify, on_bad_sample=on_bad_sample, quarantine=quarantine,
            manifest=manifest, strict_fingerprint=strict_fingerprint, cache_dir=cache_dir,
            predict_source=predict_source, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed, worker_type=worker_type,
        )
        interpolation = config.interpolation if config else "bilinear"
        self.mean = tuple(config.mean if config else mean)
        self.std = tuple(config.std if config else std)
        self.decode, self.channels_last = decode, channels_last
        self.scale, self.ratio = (float(scale[0]), float(scale[1])), (float(ratio[0]), float(ratio[1]))
        self.hflip = hflip
        self.dali_threads, self.hw_decoder_load = dali_threads, hw_decoder_load
        self.max_cache_size = max_cache_size
        self.dali_device = "auto"  # DALI on the GPU when the Trainer runs on CUDA (DALIImageNetDataModule can pin it)
        self.prefetch_queue_depth = 2
        self.train_transform = train_transform(self.image_size, scale=self.scale, ratio=self.ratio, hflip=hflip,
                                               auto_augment=auto_augment, random_erasing=random_erasing,
                                               interpolation=interpolation)
        self.eval_transform = eval_transform(self.image_size, crop_pct=self.crop_pct, interpolation=interpolation)
        self._dali: dict[tuple[str, int, int], Any] = {}

    # ----------------------------------------------------------------- the CPU path
    def _build_dataset(self, source: Source, split: str, pairs: Pairs) -> Any:
        if self.decode == "dali":
            from stoker.datamodules.image_dali import EncodedSamples

            return EncodedSamples(source, pairs, self.num_classes or 0)
        return ImageFileDataset(source, pairs, self.train_transform if split == "train" else self.eval_transform,
                                on_bad_sample=self.on_bad_sample, num_classes=self.num_classes)

    def shard_items(self, split: str, locator: Any) -> Any:
        if self.decode == "dali":
            from stoker.data.sources.shards.items import EncodedItems

            return EncodedItems(locator, self.on_bad_sample)
        return ImageItems(locator, self.train_transform if split == "train" else self.eval_transform,
                          on_bad_sample=self.on_bad_sample)

    def shard_collate(self) -> Any:
        return collate_encoded if self.decode == "dali" else super().shard_collate()

    def shard_wrap(self, loader: Any, split: str, locator: Any) -> Any:
        if self.decode != "dali":
            return loader
        from stoker.datamodules.image_dali import encoded_batches

        return encoded_batches(self, loader, split, locator, dali_device=self.dali_device)

    # ----------------------------------------------------------------- DALI on map-style sources
    def _unusable(self, source: Source, index: SourceIndex,
                  excluded: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        bad, hashes = super()._unusable(source, index, excluded)
        if self.decode == "dali" and source.local_files:  # formats DALI's file reader cannot decode stay out
            bad = dict(sorted({**bad, **dali_unreadable([k for p in index.files.values() for k, _ in p])}.items()))
        return bad, hashes

    def train_dataloader(self) -> Any:
        if self.decode == "dali" and self.reader is not None:
            return self._dali_loader("train")
        return super().train_dataloader()

    def _eval_loader(self, split: str) -> Any:
        if self.decode == "dali" and self.reader is not None:
            self.check_evaluation_size(split, len(self.splits.get(split, [])))
            return self._dali_loader(split) if self.splits.get(split) else []
        return super()._eval_loader(split)

    def _dali_loader(self, split: str) -> Any:
        from stoker.datamodules.image_dali import SourceNamer, encoded_batches, file_batches

        world, rank = self.world()
        key = (split, rank, world)
        if key not in self._dali:
            assert self.reader is not None
            if self.reader.local_files:
                self._dali[key] = file_batches(self, split, rank=rank, world_size=world, dali_device=self.dali_device)
            else:
                loader = self.make_loader(self.datasets[split], train=split == "train", collate_fn=collate_encoded)
                self._dali[key] = encoded_batches(self, loader, split, SourceNamer(self.reader),
                                                  dali_device=self.dali_device)
        return self._dali[key]

    def teardown(self, stage: str | None = None) -> None:
        """Release DALI pipelines (threads, pinned and device buffers) and report skipped samples."""
        for loader in self._dali.values():
            loader.close()
        self._dali.clear()
        super().teardown(stage)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_dali"] = {}  # DALI pipelines hold threads and device buffers: they never travel in a pickle
        return state

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(image_size=self.image_size, mean=list(self.mean or ()), std=list(self.std or ()),
                    decode=self.decode)
        if self.decode == "dali":
            info.update(dali_threads=self.dali_threads, dali_device=self.dali_device)
        return info
