"""Writing a shard set: the splits of a source, shuffled, packed as encoded bytes with litdata's ``optimize``.

Why shuffle before packing: litdata streams a shuffled epoch by permuting the chunks and then
the samples inside each chunk (in blocks). A class-folder tree (or a table, a dataset, tars)
listed in order would put whole classes into the same chunks, so every batch would hold few
classes. Each split is therefore written in a seeded permutation (``derive_seed(seed, "pack",
split)``), and a sample's ``index`` is its position in it.

What is packed is each sample's encoded bytes as its source stores them (a JPEG stays a JPEG:
about ten times smaller than its pixels), read through the source's reader
(:meth:`stoker.data.sources.Source.read_bytes`: a file, a Hugging Face row, a tar member), its
label and its key. Which samples, in which split, comes from the media DataModule over the source
(``stoker pack`` runs its index, quarantine, decode check, manifest and split), so a shard set
holds exactly what that DataModule would train on, with the same data fingerprint.

**Resuming.** A split is packed in parts of ``part_size`` samples, each one ``optimize`` call
that appends to the split's litdata index (the index is rewritten only when a part is complete,
so it is the commit point). ``stoker_pack_progress.json`` records the plan (fingerprint, seed,
settings) and the parts done; ``stoker_shards.json`` is written last. An interrupted pack is
refused unless ``resume`` (finish it, if the data and settings are the same) or ``overwrite``.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stoker.data.media import media_for
from stoker.data.sources import FolderSource, Source
from stoker.data.sources.shards.meta import (
    LABELS_NAME,
    META_NAME,
    PROGRESS_NAME,
    ShardSetMeta,
    read_split_chunks,
    restored_start_method,
)
from stoker.data.sources.shards.storage import (
    allow_plain_http,
    check_location,
    delete,
    is_remote,
    join,
    list_names,
    read_text,
    write_text,
)
from stoker.data.splits import SPLITS
from stoker.seeds import derive_seed

Pairs = list[tuple[str, int]]


@dataclass(frozen=True)
class PackPlan:
    """What a shard set will hold: the splits of one source and how they were made.

    Attributes:
        root: The source, for messages.
        media: ``"image"`` or ``"audio"``.
        class_names: Label names, by label.
        splits: ``{split: [(key, label)]}`` (empty splits are not written).
        fingerprint: The data fingerprint of ``splits``.
        seed: Seed of the split and of the packing permutation.
        reader: The source's reader, which fetches each key's bytes in the packing workers (pickled into
            them). ``None``: the keys are paths relative to ``root`` (a class-folder tree).
        extra: Recorded in the metadata as it is (source, manifest, quarantine, excluded files).
    """

    root: str
    media: str
    class_names: list[str]
    splits: dict[str, Pairs]
    fingerprint: str
    seed: int
    reader: Source | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def pack_order(pairs: Pairs, seed: int, split: str) -> list[tuple[int, str, int]]:
    """``(position, key, label)`` of a split in its packing permutation."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "pack", split))
    order = torch.randperm(len(pairs), generator=generator).tolist()
    return [(position, *pairs[source]) for position, source in enumerate(order)]


class _ReadSample:
    """litdata's per-sample function: read one sample's bytes through the source's reader (in a packing
    worker) and count it."""

    def __init__(self, reader: Source, counter: Any) -> None:
        self.reader = reader
        self.counter = counter

    def __call__(self, item: tuple[int, str, int]) -> dict[str, Any]:
        position, key, label = item
        data = self.reader.read_bytes(key)
        with self.counter.get_lock():
            self.counter.value += 1
        return {"data": data, "label": int(label), "index": int(position), "key": key}


@dataclass
class _Progress:
    """The progress file: the plan's identity and the parts done per split."""

    settings: dict[str, Any]
    done: dict[str, int]

    def text(self) -> str:
        return json.dumps({"settings": self.settings, "done": self.done}, indent=1, sort_keys=True)


def _settings(plan: PackPlan, chunk_bytes: str, chunk_size: int | None, part_size: int) -> dict[str, Any]:
    return {"fingerprint": plan.fingerprint, "seed": plan.seed, "media": plan.media, "chunk_bytes": chunk_bytes,
            "chunk_size": chunk_size, "part_size": part_size,
            "sizes": {split: len(pairs) for split, pairs in plan.splits.items()}}


def _describe_done(progress: dict[str, Any]) -> str:
    settings, done = progress.get("settings", {}), progress.get("done", {})
    parts = []
    for split, size in settings.get("sizes", {}).items():
        if size:
            total = -(-size // max(1, int(settings.get("part_size", size) or size)))
            parts.append(f"{split}: {done.get(split, 0)} of {total} part(s)")
    return ", ".join(parts) or "nothing packed yet"


def _is_empty(out: str, storage_options: dict[str, Any] | None) -> bool:
    if not is_remote(out):
        return not Path(out).exists() or not any(Path(out).iterdir())
    names = list_names(out, storage_options)
    if names:
        return False
    return not any(list_names(join(out, split), storage_options) for split in SPLITS)


def _start(out: str, settings: dict[str, Any], *, resume: bool, overwrite: bool,
           storage_options: dict[str, Any] | None) -> dict[str, int]:
    """Decide what to do with what ``out`` already holds; returns the parts already done per split.

    Raises:
        FileExistsError: ``out`` holds a complete shard set, a half-written one, or other files, and
            neither ``resume`` nor ``overwrite`` says what to do.
        ValueError: ``resume`` of a half-written pack of other data or settings.
    """
    meta_text = read_text(join(out, META_NAME), storage_options)
    progress_text = read_text(join(out, PROGRESS_NAME), storage_options)
    if overwrite:
        delete(join(out, META_NAME), storage_options)
        return {}
    if meta_text is not None:
        meta = ShardSetMeta.from_json(meta_text, join(out, META_NAME))
        raise FileExistsError(
            f"{out!r} already holds a complete shard set ({sum(meta.splits.values())} samples, fingerprint "
            f"{meta.fingerprint}, packed by stoker {meta.stoker_version}); choose another --out, or pass --overwrite "
            "to replace it"
        )
    if progress_text is not None:
        progress = json.loads(progress_text)
        if not resume:
            raise FileExistsError(
                f"{out!r} holds a half-written shard set from an interrupted `stoker pack` "
                f"({_describe_done(progress)}). Run the same command with --resume to finish it, or with --overwrite "
                "to start over"
            )
        saved = progress.get("settings", {})
        changed = sorted(key for key in set(saved) | set(settings) if saved.get(key) != settings.get(key))
        if changed:
            shown = "; ".join(f"{key}: {saved.get(key)!r} then, {settings.get(key)!r} now" for key in changed)
            raise ValueError(f"cannot resume the pack in {out!r}: the data or settings changed since it started "
                             f"({shown}). Pack to a new --out, or pass --overwrite to start over")
        return {str(split): int(n) for split, n in progress.get("done", {}).items()}
    if not _is_empty(out, storage_options):
        raise FileExistsError(f"{out!r} is not empty and holds no stoker shard set; pack into a new or empty folder "
                              "(or pass --overwrite to write the splits into it anyway)")
    return {}


@contextmanager
def _private_litdata_caches() -> Iterator[None]:
    # optimize stages chunks in $TMPDIR/chunks and $TMPDIR/data, shared by every pack on the machine;
    # a folder of its own keeps two packs (or two splits' leftovers) from meeting there.
    keys = ("DATA_OPTIMIZER_CACHE_FOLDER", "DATA_OPTIMIZER_DATA_CACHE_FOLDER")
    before = {key: os.environ.get(key) for key in keys}
    with tempfile.TemporaryDirectory(prefix="stoker-pack-") as tmp:
        os.environ.update({keys[0]: os.path.join(tmp, "chunks"), keys[1]: os.path.join(tmp, "data")})
        try:
            yield
        finally:
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


class _Bar:
    """stoker's :class:`~stoker.data.progress.Progress` fed from the packing workers' shared counter.

    ``optimize`` blocks the calling thread, so a thread polls the counter; on a terminal that is a bar
    with the rate and time left, in logs a line every ten seconds.
    """

    def __init__(self, total: int, enabled: bool, counter: Any) -> None:
        from stoker.data.progress import Progress

        self.total = total
        self.progress = Progress("packing samples into shards", "`stoker pack --resume` continues an interrupted "
                                 "pack", unit="sample", enabled=enabled)
        self.counter, self.base = counter, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            self.progress(self.base + int(self.counter.value), self.total)

    def start(self, split: str) -> None:
        self.progress.what = f"packing the {split} split into shards"

    def advance(self, count: int) -> None:
        self.base += count
        with self.counter.get_lock():
            self.counter.value = 0
        self.progress(self.base, self.total)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.progress.close()


def _optimize_part(items: list[tuple[int, str, int]], reader: _ReadSample, output: str, *, first: bool,
                   num_workers: int, chunk_bytes: str, chunk_size: int | None, start_method: str) -> None:
    from litdata import optimize

    size = {"chunk_size": chunk_size} if chunk_size else {"chunk_bytes": chunk_bytes}
    with restored_start_method():
        # keep_data_ordered + reorder_files=False: litdata writes the items in the given order, each worker a
        # contiguous slice, so a sample's litdata index equals its "index" (the position in the permutation).
        optimize(reader, items, output_dir=output, num_workers=min(num_workers, len(items)), reorder_files=False,
                 keep_data_ordered=True, mode="overwrite" if first else "append", verbose=False,
                 start_method=start_method, **size)


def write_shard_set(plan: PackPlan, out: str, *, num_workers: int, chunk_bytes: str = "64MB",
                    chunk_size: int | None = None, part_size: int = 50_000, resume: bool = False,
                    overwrite: bool = False, progress: bool = True,
                    storage_options: dict[str, Any] | None = None) -> ShardSetMeta:
    """Pack ``plan`` into a shard set at ``out`` (a folder or an object-store URL); returns its metadata.

    Args:
        plan: The splits to write.
        out: Where the shard set goes.
        num_workers: Packing processes (litdata ``optimize`` workers).
        chunk_bytes: Target size of a chunk file (litdata's default, 64MB, suits object stores).
        chunk_size: Samples per chunk instead of ``chunk_bytes`` (tests, tiny datasets).
        part_size: Samples per resumable part.
        resume: Finish a half-written pack of the same data and settings.
        overwrite: Replace whatever ``out`` holds.
        progress: Show a progress bar.
        storage_options: litdata storage options for a remote ``out``.

    Raises:
        FileExistsError: ``out`` is not empty and neither ``resume`` nor ``overwrite`` applies.
        ValueError: Bad sizes, or ``resume`` over other data or settings.
    """
    check_location(out)
    if num_workers < 1 or part_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ValueError(f"num_workers, part_size and chunk_size must be >= 1, got {num_workers}, {part_size}, "
                         f"{chunk_size}")
    if not plan.splits.get("train"):
        raise ValueError(f"nothing to pack under {plan.root!r}: the training split is empty")
    from stoker import __version__

    allow_plain_http(storage_options)
    settings = _settings(plan, chunk_bytes, chunk_size, part_size)
    done = _start(out, settings, resume=resume, overwrite=overwrite, storage_options=storage_options)
    state = _Progress(settings, done)
    write_text(join(out, PROGRESS_NAME), state.text(), storage_options)
    import multiprocessing

    start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    counter = multiprocessing.get_context(start_method).Value("q", 0)
    reader = _ReadSample(plan.reader or FolderSource(plan.root, media_for(plan.media)), counter)
    bar = _Bar(sum(len(p) for p in plan.splits.values()), progress, counter)
    try:
        with _private_litdata_caches():
            for split in SPLITS:
                _pack_split(plan, split, out, state, reader, bar, num_workers=num_workers, chunk_bytes=chunk_bytes,
                            chunk_size=chunk_size, part_size=part_size, start_method=start_method,
                            storage_options=storage_options)
    finally:
        bar.close()
    meta = ShardSetMeta(media=plan.media, class_names=list(plan.class_names),
                        splits={split: len(plan.splits[split]) for split in SPLITS if plan.splits.get(split)},
                        fingerprint=plan.fingerprint, seed=plan.seed, stoker_version=__version__, extra=plan.extra)
    write_text(join(out, META_NAME), meta.to_json(), storage_options)
    delete(join(out, PROGRESS_NAME), storage_options)
    return meta


def _pack_split(plan: PackPlan, split: str, out: str, state: _Progress, reader: _ReadSample, bar: _Bar, *,
                num_workers: int, chunk_bytes: str, chunk_size: int | None, part_size: int, start_method: str,
                storage_options: dict[str, Any] | None) -> None:
    pairs = plan.splits.get(split) or []
    if not pairs:
        return
    items = pack_order(pairs, plan.seed, split)
    parts = [items[i : i + part_size] for i in range(0, len(items), part_size)]
    done = state.done.get(split, 0)
    if done and read_split_chunks(out, split, storage_options).total != min(len(items), done * part_size):
        done = 0  # the index does not hold what the progress file says (a foreign write): pack the split again
    bar.start(split)
    for number, part in enumerate(parts):
        if number < done:
            bar.advance(len(part))
            continue
        _optimize_part(part, reader, join(out, split), first=number == 0, num_workers=num_workers,
                       chunk_bytes=chunk_bytes, chunk_size=chunk_size, start_method=start_method)
        bar.advance(len(part))
        state.done[split] = number + 1
        write_text(join(out, PROGRESS_NAME), state.text(), storage_options)
    written = read_split_chunks(out, split, storage_options).total
    if written != len(items):
        raise RuntimeError(f"litdata wrote {written} samples for the {split} split into {join(out, split)!r}, "
                           f"expected {len(items)}; pack again with --overwrite")
    write_text(join(out, split, LABELS_NAME), json.dumps([label for _, _, label in items]), storage_options)
