"""What every media DataModule (images, audio) does the same way, whatever the source.

A source reader (:mod:`stoker.data.sources`) lists samples with their splits and labels and
fetches one sample's bytes; everything else happens here, once for every source: the decode
check and the content hashes (once per node, cached), quarantine, the split, the fingerprint,
the loaders, samples that fail while training, predicting on new data, and the report. The splits
(:mod:`stoker.datamodules._source_splits`), the pre-training checks (:mod:`stoker.data.sources.checks`) and
what is logged and described (:mod:`stoker.datamodules._source_report`) are written beside it. A stoker
shard set streams instead (:class:`~stoker.datamodules.shard_engine.ShardEngine`).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_warn

from stoker.data.file_dataset import BAD_SAMPLE_POLICIES, SKIPPED_KEY, BadSamplePolicy, SkippingCollate
from stoker.data.loader import WorkerType
from stoker.data.manifest import check_manifest_fingerprint, dataset_fingerprint
from stoker.data.media import IMAGE, Media
from stoker.data.progress import Progress
from stoker.data.sources import Pairs, Source, SourceIndex, open_source, source_kind
from stoker.data.sources.checks import check_bad_fraction, source_cache_path, unusable_samples
from stoker.data.sources.folder_tree import printable, read_path_list
from stoker.data.sources.labels import Label, LabelMap
from stoker.data.splits import validate_fractions
from stoker.datamodules._source_report import report_setup, report_skips, sizes_text, source_description
from stoker.datamodules._source_splits import EVAL_SPLITS, carve_splits, explain_splits, manifest_splits
from stoker.datamodules.base import StokerDataModule

Verify = Literal["decode", "none"]


class SourceDataModule(StokerDataModule):
    """Base of the media DataModules: one pipeline over every source (see the module).

    A subclass sets :attr:`media`, builds a dataset from ``(key, label)`` pairs (:meth:`_build_dataset`)
    and says how a shard sample decodes (:meth:`shard_items`).

    Args:
        source: A folder of class folders, a table of files, a Hugging Face dataset (``save_to_disk``
            folder, parquet/arrow files or ``hf://<name>``), WebDataset tars, or a stoker shard set.
        media_field: The column or member that holds the media (the subclass's ``image_field``/``audio_field``).
        label_field: The column (or WebDataset ``json`` field) holding labels.
        path_field: A table's column of file paths.
        split_field: A table's column of splits (used when present).
        multi_label: Each sample has a set of classes; targets become multi-hot float ``[N, C]``.
        class_names: Fix the classes and their order (default: what the source says).
        subset: A hub dataset's configuration (``hf://`` sources).
        revision: A hub dataset's revision (``hf://`` sources).
        storage_options: Object-store client options for ``s3://`` sources (endpoint, profile).
        val_fraction: Share of each class held out for validation when the source brings no validation split.
        test_fraction: Share of each class held out for testing when the source brings no test split.
        max_bad_fraction: Largest tolerated fraction of unusable samples.
        verify: ``"decode"`` checks every sample by decoding it once; ``"none"`` trusts them.
        on_bad_sample: A sample that fails while training: ``"raise"`` an error naming it, or ``"skip"`` it.
        quarantine: A file listing keys (paths relative to the root or table) to leave out, e.g. from ``stoker scan``.
        manifest: A split manifest from ``stoker split``; it replaces the source's split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error.
        cache_dir: The node-local folder for everything this DataModule caches (decode checks, hashes,
            converted Hugging Face datasets, downloaded tars, shard chunks); default ``~/.cache/stoker``
            (``$STOKER_CACHE``) for stoker's and each library's own default for theirs (:mod:`stoker.data.cache`).
        predict_source: New data for ``predict`` (any source; labels optional). Default: the test split,
            else validation.
        batch_size: See :class:`~stoker.datamodules.base.StokerDataModule` (so are the rest, ``worker_type`` too).
    """

    media: Media = IMAGE

    def __init__(
        self,
        source: str | list[str],
        *,
        media_field: str,
        label_field: str,
        path_field: str,
        split_field: str,
        multi_label: bool,
        class_names: list[str] | None,
        subset: str | None,
        revision: str | None,
        storage_options: dict[str, Any] | None,
        val_fraction: float,
        test_fraction: float,
        max_bad_fraction: float,
        verify: Verify,
        on_bad_sample: BadSamplePolicy,
        quarantine: str | None,
        manifest: str | None,
        strict_fingerprint: bool,
        cache_dir: str | None,
        predict_source: str | list[str] | None,
        batch_size: int,
        num_workers: int | None,
        worker_type: WorkerType,
        pin_memory: bool | None,
        persistent_workers: bool,
        prefetch_factor: int,
        seed: int,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        validate_fractions(val_fraction, test_fraction)
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if verify not in ("decode", "none"):
            raise ValueError(f"verify must be 'decode' or 'none', got {verify!r}")
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        source = os.fspath(source) if isinstance(source, os.PathLike) else source
        self.source = source
        self.fields = {"media_field": media_field, "label_field": label_field, "path_field": path_field,
                       "split_field": split_field}
        self.multi_label = multi_label
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.max_bad_fraction, self.verify, self.on_bad_sample = max_bad_fraction, verify, on_bad_sample
        self.quarantine, self.manifest = quarantine, manifest
        self.strict_fingerprint = strict_fingerprint
        self.cache_dir = cache_dir
        self.predict_source = os.fspath(predict_source) if isinstance(predict_source, os.PathLike) else predict_source
        self._options: dict[str, Any] = {"subset": subset, "revision": revision, "storage_options": storage_options}
        self.source_kind = source_kind(source, media_field=media_field, path_field=path_field,
                                       storage_options=storage_options)
        self.shards: Any = None
        self.reader: Source | None = None
        if self.source_kind == "shards":
            from stoker.datamodules.shard_engine import ShardEngine

            if multi_label:
                raise ValueError("stoker shard sets hold one label per sample; multi_label needs another source "
                                 "(a table, a Hugging Face dataset or WebDataset tars)")
            self.shards = ShardEngine(self, str(source), cache_dir=cache_dir, storage_options=storage_options)
        else:
            self.reader = self._open(source, class_names=class_names)
        self._class_names = list(class_names) if class_names is not None else None
        self.bad_files: dict[str, str] = {}
        self.quarantined: list[str] = []
        self.skipped: list[str] = []
        self.skipped_samples: dict[int, dict[str, str]] = {}  # epoch -> {sample: reason}, until reported
        self.skipped_report: dict[int, int] = {}  # epoch -> samples skipped under on_bad_sample="skip"
        self.splits: dict[str, Pairs] = {}
        self.datasets: dict[str, Any] = {}
        self.split_notes: list[str] = []
        self.split_drift: dict[str, dict[str, object]] = {}
        self._predict: tuple[Source, Pairs] | None = None
        # How messages call a sample: a file (folders, tables) or a sample (rows, tar members, shard records).
        self.unit = "file" if self.reader is not None and self.reader.local_files else "sample"

    def _open(self, source: str | list[str], *, class_names: list[str] | None, labelled: bool = True) -> Source:
        return open_source(source, self.media, class_names=class_names, multi_label=self.multi_label,
                           cache_dir=self.cache_dir, labelled=labelled, media_field=self.fields["media_field"],
                           label_field=self.fields["label_field"], path_field=self.fields["path_field"],
                           split_field=self.fields["split_field"], subset=self._options["subset"],
                           revision=self._options["revision"], storage_options=self._options["storage_options"])

    # ----------------------------------------------------------------- what a subclass provides
    def _build_dataset(self, source: Source, split: str, pairs: Pairs) -> Any:
        """A map-style dataset of the pairs (or whatever this DataModule's loaders read)."""
        raise NotImplementedError

    def shard_items(self, split: str, locator: Any) -> Any:
        """The per-sample decoder of a shard split (runs in the loader workers)."""
        raise NotImplementedError

    def shard_wrap(self, loader: Any, split: str, locator: Any) -> Any:
        """What Lightning iterates for a shard split (the loader itself unless DALI decodes)."""
        return loader

    def shard_collate(self) -> Any:
        return SkippingCollate()

    # ----------------------------------------------------------------- self-description
    @property
    def root(self) -> str | list[str]:
        """The source (the name the folder DataModules have always used)."""
        return self.source

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            names = self.shards.class_names if self.shards is not None else self.reader.known_class_names()  # type: ignore[union-attr]
            if names is None:
                raise ValueError(
                    f"{type(self).__name__}: the classes of {self.source!r} are known once its samples are indexed "
                    "(in prepare_data/setup); call setup() first, or pass class_names=[...] so that num_classes is "
                    "known from __init__ (LightningCLI links it into the model)")
            self._class_names = list(names)
        return self._class_names

    def train_labels(self) -> list[Label]:
        """Labels of the training split in dataset order (available after ``setup``)."""
        if self.shards is not None:
            return self.shards.train_labels()
        return [label for _, label in self.splits["train"]]

    @property
    def meta(self) -> Any:
        """A shard set's metadata (class names, split sizes, fingerprint); ``None`` for other sources."""
        return self.shards.meta if self.shards is not None else None

    def prepared_record_path(self) -> Any:
        """Where ``prepare_data`` records its checks of a shard set on this node (shard sets only)."""
        if self.shards is None:
            raise ValueError(f"{type(self).__name__}: {self.source!r} is not a shard set")
        return self.shards.prepared_record_path()

    def plan(self, split: str, world_size: int = 1) -> Any:
        """Padding, batches per rank and dropped samples of a split over ``world_size`` ranks (after ``setup``)."""
        from stoker.samplers.shard_plan import ShardPlan

        train = split == "train"
        return ShardPlan(self.split_sizes()[split], world_size, mode="cut" if train else "unrepeated",
                         batch_size=self.batch_size, drop_last=train)

    def split_sizes(self) -> dict[str, int]:
        """Samples per split (after ``setup``)."""
        if self.shards is not None:
            return self.shards.split_sizes()
        return {split: len(pairs) for split, pairs in self.splits.items()}

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Once per node: download or convert the source, decode-check and hash every sample (cached)."""
        if self.shards is not None:
            self.shards.prepare()
            return
        assert self.reader is not None
        self.reader.prepare(self.cache_dir)
        self._unusable(self.reader, self.reader.index(), self._excluded())

    def setup(self, stage: str | None = None) -> None:
        """List the source, leave out bad and quarantined samples, split, and build the datasets."""
        if self.shards is not None:
            self.shards.setup()
            report_setup(self)
            return
        if self.datasets:
            return
        assert self.reader is not None
        index = self.reader.index()
        self._class_names = index.class_names
        excluded = self._excluded()
        self.skipped = list(index.skipped)
        self.quarantined = sorted(key for key in index.keys if key in excluded)
        self.bad_files, hashes = self._unusable(self.reader, index, excluded)
        check_bad_fraction(self.bad_files, len(index.keys), limit=self.max_bad_fraction,
                           what=f"{self.media.name} {self.unit}s under {self.source!r}")
        drop = excluded | set(self.bad_files)
        kept = {split: [(key, y) for key, y in pairs if key not in drop] for split, pairs in index.files.items()}
        splits = manifest_splits(kept, self.manifest, class_names=self.class_names, multi_label=self.multi_label) \
            if self.manifest else self._split(kept)
        self.splits = {split: splits.get(split, []) for split in ("train", *EVAL_SPLITS)}
        self.split_notes, self.split_drift = explain_splits(
            index, self.splits, manifest=self.manifest, multi_label=self.multi_label, class_names=self.class_names,
            fractions={"val": self.val_fraction, "test": self.test_fraction}, owner=type(self).__name__)
        if not self.splits["train"]:
            raise ValueError(f"no training {self.media.name} samples left in {self.source!r} after the split and "
                             "exclusions")
        self.datasets = {split: self._build_dataset(self.reader, split, pairs) for split, pairs in self.splits.items()}
        label_map = LabelMap(self.class_names, multi_label=self.multi_label)
        self.record_fingerprint(dataset_fingerprint((split, label_map.name_of(y), key, hashes[key])
                                                    for split, pairs in self.splits.items() for key, y in pairs))
        check_manifest_fingerprint(self.manifest, self.fingerprint or "")
        report_setup(self)

    def train_dataloader(self) -> Any:
        if self.shards is not None:
            return self.shards.loader("train", train=True)
        # Stage times ride with the batches of a Trainer's loader only (the load profile).
        return self.make_loader(self.datasets["train"], train=True, collate_fn=self.profiled(SkippingCollate()))

    def val_dataloader(self) -> Any:
        return self._eval_loader("val")

    def test_dataloader(self) -> Any:
        sizes = self.split_sizes()
        if not sizes.get("test"):
            raise ValueError(
                f"{type(self).__name__}: there is no test split to test on ({sizes_text(sizes)}): {self.source!r} "
                "brings none and test_fraction=0. Hold out a seeded share of each class with "
                "--data.init_args.test_fraction=0.1 (training then uses the rest), or give the source a test split "
                "(root/test/<class>/..., a 'test' value in the table's split column, test-*.parquet or test-*.tar)")
        return self._eval_loader("test")

    @property
    def predict_split(self) -> str:
        """The split ``predict`` runs on without a ``predict_source``: test when there is one, else validation."""
        return "test" if self.split_sizes().get("test") else "val"

    def predict_dataloader(self) -> Any:
        if self.predict_source is None:
            return self._eval_loader(self.predict_split)
        source, pairs = self._predict_samples()
        dataset = self._build_dataset(source, "predict", pairs)
        return self.make_loader(dataset, train=False, collate_fn=SkippingCollate())

    def predict_names(self) -> list[str]:
        """How ``PredictionWriter`` names the predicted samples, by ``index`` (their keys)."""
        if self.predict_source is not None:
            return [key for key, _ in self._predict_samples()[1]]
        return [key for key, _ in self.splits.get(self.predict_split, [])]

    def _eval_loader(self, split: str) -> Any:
        self.check_evaluation_size(split, self.split_sizes().get(split, 0))
        if self.shards is not None:
            return self.shards.loader(split, train=False) if self.split_sizes().get(split) else []
        dataset = self.datasets.get(split)
        if dataset is None or not len(dataset):
            return []  # Lightning then skips it, as a missing split should
        return self.make_loader(self.datasets[split], train=False, collate_fn=SkippingCollate())

    def _predict_samples(self) -> tuple[Source, Pairs]:
        if self._predict is None:
            assert self.predict_source is not None
            source = self._open(self.predict_source, class_names=self.class_names, labelled=False)
            source.prepare(self.cache_dir)
            index = source.index()
            pairs = [pair for pairs in index.files.values() for pair in pairs]
            if index.bad:
                rank_zero_warn(f"predict_source {self.predict_source!r}: left out {len(index.bad)} sample(s): "
                               + "; ".join(f"{key}: {why}" for key, why in list(index.bad.items())[:5]))
            self._predict = (source, sorted(pairs))
        return self._predict

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the load profile and the samples skipped under ``on_bad_sample="skip"`` out of the batch; count them."""
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        if isinstance(batch, dict) and SKIPPED_KEY in batch:
            found = self.skipped_samples.setdefault(epoch, {})
            for path, reason in batch.pop(SKIPPED_KEY):
                found[path] = reason
        if self.skipped_samples:
            report_skips(self, before=epoch)
        return batch

    def teardown(self, stage: str | None = None) -> None:
        report_skips(self, before=None)

    def sample_name(self, index: int) -> str:
        pairs = self.splits.get("train", [])
        return printable(pairs[index][0]) if 0 <= index < len(pairs) else f"index {index}"

    # ----------------------------------------------------------------- internals
    def _excluded(self) -> set[str]:
        return read_path_list(self.quarantine) if self.quarantine else set()

    def _progress(self, what: str, hint: str) -> Progress:
        return Progress(f"{what} {self.media.name} {self.unit}s of {self.source}", hint, unit=self.unit)

    def _unusable(self, source: Source, index: SourceIndex,
                  excluded: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        """``(bad samples with their reasons, content hashes of the others)``, both cached per sample."""
        return unusable_samples(source, index, excluded, decode_check=self.verify == "decode", media=self.media.name,
                                cache_dir=self.cache_dir, progress=self._progress)

    def _split(self, kept: dict[str, Pairs]) -> dict[str, Pairs]:
        return carve_splits(kept, multi_label=self.multi_label, val_fraction=self.val_fraction,
                            test_fraction=self.test_fraction, seed=self.seed)

    def created_files(self) -> list[str]:
        """The per-sample caches of the decode check and the content hashes, and datasets' converted tables."""
        found = list(super().created_files())
        if self.reader is not None:
            for purpose in (self.media.name, "sha256"):
                path = source_cache_path(self.reader, self.cache_dir, purpose)
                if path.is_file():
                    found.append(str(path))
            cache_files = getattr(self.reader, "cache_files", None)
            if callable(cache_files):
                found += cache_files()
        return sorted(set(found))

    def describe(self) -> dict[str, Any]:
        return source_description(self, super().describe())
