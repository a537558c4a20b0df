"""How a media DataModule streams a stoker shard set (``stoker pack``'s output) with litdata.

A shard set has no per-sample random access worth using (its chunks live on object storage), so
instead of the map-style path of :class:`~stoker.datamodules.source.SourceDataModule` its splits
stream through :class:`~stoker.data.sources.shards.stream.ShardStream` (training) and ``ShardPass``
(evaluation): one global permutation of chunks and samples per epoch across nodes, equal whole
batches per rank, exactly-once evaluation and exact resume (see :mod:`stoker.data.sources.shards.stream`).

The DataModule owns this engine and keeps the rest (the batch contract, transforms, DALI, skipped
samples, the report); the engine reads the set's small metadata file in ``__init__`` (class names,
split sizes, fingerprint), checks every split's index and chunks once per node in ``prepare`` and
builds the loaders.
"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path
from typing import Any

from stoker._imports import require
from stoker.data.cache import library_cache, stoker_cache
from stoker.data.sources.shards.items import SampleLocator
from stoker.data.sources.shards.meta import (
    ShardFormatError,
    ShardSetMeta,
    SplitChunks,
    check_split,
    read_labels,
    read_meta,
)
from stoker.data.sources.shards.storage import check_location, is_remote, join
from stoker.data.sources.shards.stream import ShardPass, ShardStream, StreamPosition
from stoker.samplers.shard_plan import ShardPlan


class ShardEngine:
    """The shard-set side of a media DataModule (see the module).

    Args:
        datamodule: The owner: its loader policy, seed, batch size and per-sample decoding (``shard_items``).
        source: The shard set: a folder or an ``s3://``/``gs://``/``r2://`` URL.
        cache_dir: Node-local cache root: litdata keeps the chunks of a remote set under ``<cache_dir>/chunks``,
            stoker its checks under ``<cache_dir>/shards`` (see :mod:`stoker.data.cache`).
        storage_options: Options for litdata's object-store client.
    """

    def __init__(self, datamodule: Any, source: str, *, cache_dir: str | None,
                 storage_options: dict[str, Any] | None) -> None:
        require("shards", type(datamodule).__name__)
        check_location(source)
        self.dm = datamodule
        self.source, self.cache_dir = source, cache_dir
        self.storage_options = dict(storage_options) if storage_options else None
        self.meta: ShardSetMeta = read_meta(source, self.storage_options)
        media = datamodule.media.name
        if self.meta.media != media:
            raise ValueError(f"{source!r} holds {self.meta.media} shards, but {type(datamodule).__name__} reads "
                             f"{media}; use the {self.meta.media} DataModule")
        self.chunks: dict[str, SplitChunks] = {}
        self._train_labels: list[int] | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.class_names)

    def split_sizes(self) -> dict[str, int]:
        """Samples per split, as packed (less those of damaged chunks left out)."""
        return {split: self.meta.splits.get(split, 0) - self.left_out(split) for split in ("train", "val", "test")}

    def train_labels(self) -> list[int]:
        """Labels of the training split by packed position (a sample's ``index``), read from the shard set."""
        if self._train_labels is None:
            self._train_labels = read_labels(self.source, "train", self.storage_options)
        return self._train_labels

    def prepare(self) -> None:
        """Check every split's index and chunk files (once per node) and record them in the node's cache."""
        record = self.prepared_record_path()
        previous = json.loads(record.read_text()) if record.is_file() else {}
        checked = self._check()
        record.parent.mkdir(parents=True, exist_ok=True)
        same = previous.get("fingerprint") == self.meta.fingerprint
        record.write_text(json.dumps({
            "source": self.source, "fingerprint": self.meta.fingerprint, "host": socket.gethostname(),
            "prepared": int(previous.get("prepared", 0)) + 1 if same else 1,
            "splits": {split: {"names": list(c.names), "counts": list(c.counts), "sizes": list(c.sizes),
                               "damaged": list(c.damaged)} for split, c in checked.items()},
        }, indent=1))

    def setup(self) -> None:
        """Read the splits' chunk lists (from this node's record when ``prepare`` wrote it) and the fingerprint."""
        if self.chunks:
            return
        record = self.prepared_record_path()
        saved = json.loads(record.read_text()) if record.is_file() else {}
        if saved.get("fingerprint") == self.meta.fingerprint:
            self.chunks = {split: SplitChunks(tuple(c["names"]), tuple(c["counts"]), tuple(c.get("sizes", ())),
                                              tuple(c.get("damaged", ()))) for split, c in saved["splits"].items()}
        else:  # prepare did not run on this node (or for this data): check here
            self.chunks = self._check()
        self.dm.record_fingerprint(self.meta.fingerprint)
        damaged = {split: c.damaged for split, c in self.chunks.items() if c.damaged}
        if damaged:
            from lightning.pytorch.utilities import rank_zero_warn

            lost = {split: self.left_out(split) for split in damaged}
            rank_zero_warn(f"{type(self.dm).__name__}: damaged chunk file(s) of {self.source!r}: {damaged}; their "
                           f"samples are left out (on_bad_sample='skip'): {lost}. Copy the shard set again or "
                           "re-pack it")

    def _check(self) -> dict[str, SplitChunks]:
        # With on_bad_sample="skip" a damaged chunk is recorded (its samples are left out); otherwise it stops here.
        skip = self.dm.on_bad_sample == "skip"
        return {split: check_split(self.source, split, size, self.storage_options, allow_damaged=skip)
                for split, size in self.meta.splits.items() if size}

    def location(self, split: str) -> str:
        """Where a split streams from: the shard set's folder, or a repaired view without its damaged chunks.

        A chunk whose size differs from the index (found before training, kept only under
        ``on_bad_sample="skip"``) is never read: the split streams from a folder in the node's cache holding
        a copy of the index without it and links to the intact chunks, so every rank still gets equal whole
        batches of the samples that remain, and the left-out samples are counted (:meth:`left_out`).

        Raises:
            ShardFormatError: A remote shard set with damaged chunks (copy or re-pack it).
        """
        chunks = self.chunks[split]
        if not chunks.damaged:
            return join(self.source, split)
        if is_remote(self.source):
            raise ShardFormatError(f"the {split} split of {self.source!r} has damaged chunk file(s) {chunks.damaged}; "
                                   "a remote shard set cannot be streamed around them: copy it again or re-pack it")
        view = self.prepared_record_path().parent / "repaired" / split
        view.mkdir(parents=True, exist_ok=True)
        index = json.loads((Path(self.source) / split / "index.json").read_text())
        index["chunks"] = [c for c in index["chunks"] if c["filename"] not in chunks.damaged]
        for chunk in index["chunks"]:
            link = view / chunk["filename"]
            if not link.exists():
                link.symlink_to(Path(self.source, split, chunk["filename"]).resolve())
        (view / "index.json").write_text(json.dumps(index))
        return str(view)

    def left_out(self, split: str) -> int:
        """Samples of a split left out with its damaged chunks."""
        chunks = self.chunks.get(split)
        if chunks is None or not chunks.damaged:
            return 0
        return sum(count for name, count in zip(chunks.names, chunks.counts) if name in chunks.damaged)

    def loader(self, split: str, *, train: bool) -> Any:
        """The loader of one split (wrapped for DALI when the DataModule decodes with it)."""
        dm = self.dm
        if not self.chunks:
            raise ValueError(f"{type(dm).__name__}: call setup() before asking for a loader; the shard lists are "
                             "read there")
        world, rank = dm.world()
        location = self.location(split)
        locator = SampleLocator(join(self.source, split), self.chunks[split])
        chunk_cache = library_cache(self.cache_dir, "chunks")
        common: dict[str, Any] = dict(rank=rank, num_replicas=world, batch_size=dm.batch_size, seed=dm.seed,
                                      cache_dir=chunk_cache, max_cache_size=getattr(dm, "max_cache_size", None),
                                      storage_options=self.storage_options)
        stream: ShardStream | ShardPass
        if train:
            stream = ShardStream(location, dm.shard_items(split, locator),
                                 num_samples=self.meta.splits[split] - self.left_out(split), **common)
            if stream.num_batches == 0:
                raise ValueError(f"{type(dm).__name__}: the training split has {stream.num_samples} samples, which "
                                 f"gives each of {world} rank(s) no whole batch of batch_size={dm.batch_size}; lower "
                                 f"batch_size (at most {stream.num_samples // world}) or add data")
            dm.track_train_sampler(StreamPosition(stream))  # an epoch-end checkpoint's position applies here
        else:
            stream = ShardPass(location, dm.shard_items(split, locator),
                               num_samples=self.meta.splits[split] - self.left_out(split), **common)
        loader = dm.make_loader(stream, train=train, collate_fn=dm.shard_collate())  # seeded by the stream's epoch
        if isinstance(stream, ShardStream):
            stream.prepare(dm.num_workers)
        return dm.shard_wrap(loader, split, locator)

    def prepared_record_path(self) -> Path:
        """Where ``prepare`` records its checks of the shard set on this node (the node's cache)."""
        key = hashlib.sha1(self.source.encode("utf-8")).hexdigest()[:16]
        return stoker_cache(self.cache_dir, "shards") / key / "prepared.json"

    def describe(self) -> dict[str, Any]:
        world = self.dm.world()[0]
        plan = ShardPlan(self.meta.splits.get("train", 0), world, mode="cut", batch_size=self.dm.batch_size,
                         drop_last=True)
        return {"dataset": self.source, "fingerprint": self.meta.fingerprint, "packed_by": self.meta.stoker_version,
                "train_batches_per_rank": plan.num_batches(0),
                "train_dropped_per_epoch": plan.num_samples - plan.share(0) * world}

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()
