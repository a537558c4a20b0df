"""Shard sets: what ``stoker pack`` writes next to litdata's chunks, and how a reader checks it.

A shard set is one folder (a local path or an ``s3://``/``gs://``/``r2://`` prefix) holding one
litdata dataset per split and a small JSON file that says what they are::

    OUT/stoker_shards.json          format, stoker version, media, class names, split sizes, fingerprint
    OUT/train/index.json            litdata's index (chunk files, item counts)
    OUT/train/chunk-0-0.bin ...     encoded file bytes, label, position and relative path of each sample
    OUT/train/labels.json           the labels by packed position (class counts, reports)
    OUT/val/...  OUT/test/...

Each sample is ``{"data": <encoded bytes>, "label": int, "index": int, "key": <relative path>}``;
``index`` is the sample's position in its split as packed (a seeded permutation, see
:mod:`stoker.data.sources.shards.pack`). The metadata file is written last: a folder without it is a
half-written pack (``stoker pack --resume`` finishes it).

Framework-free: the sharded DataModules, ``stoker pack`` and the benchmark read and write shard
sets here, local or remote through :mod:`stoker.data.sources.shards.storage`. litdata is imported inside
the functions that need it (the ``shards`` extra).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from stoker.data.sources.shards.storage import check_location, join, list_sizes, read_text

FORMAT = "stoker-shards"
FORMAT_VERSION = 1
META_NAME = "stoker_shards.json"
PROGRESS_NAME = "stoker_pack_progress.json"
INDEX_NAME = "index.json"  # litdata's index of one split
LABELS_NAME = "labels.json"  # one split's labels by packed position (read only on demand)
# What each packed sample is, field by field ({"data", "label", "index", "key"}), as litdata's index declares it.
SAMPLE_FORMAT: tuple[str, ...] = ("bytes", "int", "int", "str")


class ShardFormatError(ValueError):
    """A shard set that cannot be read: not stoker's, another format version, or damaged metadata."""


@dataclass(frozen=True)
class ShardSetMeta:
    """What a shard set holds (the content of ``stoker_shards.json``).

    Attributes:
        media: ``"image"`` or ``"audio"``.
        class_names: Label names, by label.
        splits: Samples per split (``train``, ``val``, ``test``; empty splits have no folder).
        fingerprint: The data fingerprint of the splits (:func:`stoker.data.manifest.splits_fingerprint`),
            the same value the folder DataModule records for the same files and split.
        seed: Seed of the split and of the permutation the samples were packed in.
        stoker_version: The stoker that packed it.
        format_version: Layout version of the shard set (:data:`FORMAT_VERSION`).
        extra: How it was made (source root, manifest, quarantine, excluded files).
    """

    media: str
    class_names: list[str]
    splits: dict[str, int]
    fingerprint: str
    seed: int
    stoker_version: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The metadata file's text."""
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str) -> ShardSetMeta:
        """Parse a metadata file's text (``where`` names the file in errors).

        Raises:
            ShardFormatError: Not JSON (a truncated upload), not a stoker shard set, or another format version.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ShardFormatError(
                f"{where} is not valid JSON ({err.msg} at character {err.pos} of {len(text)}): the file is truncated "
                "or damaged, e.g. by an interrupted copy. Copy it again from the original shard set, or re-pack with "
                "`stoker pack`"
            ) from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ShardFormatError(f"{where} is not stoker shard metadata (expected \"format\": \"{FORMAT}\")")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardFormatError(
                f"{where} was written by stoker {data.get('stoker_version', '?')} in shard format version {version}; "
                f"this stoker reads format version {FORMAT_VERSION}. Re-pack the data with this stoker's "
                "`stoker pack`, or use the stoker version that packed it"
            )
        try:
            return cls(media=str(data["media"]), class_names=[str(n) for n in data["class_names"]],
                       splits={str(k): int(v) for k, v in data["splits"].items()},
                       fingerprint=str(data["fingerprint"]), seed=int(data["seed"]),
                       stoker_version=str(data["stoker_version"]), format_version=int(version),
                       extra=dict(data.get("extra", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ShardFormatError(f"{where} lacks or mangles the field {err}; re-pack with `stoker pack`") from err


@dataclass(frozen=True)
class SplitChunks:
    """One split's chunk files, in litdata's order, with the number of samples in each.

    Attributes:
        names: Chunk file names.
        counts: Samples in each chunk.
        sizes: Bytes of each chunk, as the index says.
        damaged: Chunks whose file differs from the index (found by :func:`check_split`).
    """

    names: tuple[str, ...]
    counts: tuple[int, ...]
    sizes: tuple[int, ...] = ()
    damaged: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Samples in the split."""
        return sum(self.counts)

    def chunk_of(self, position: int) -> str:
        """The chunk file holding the sample packed at ``position`` (its ``index``)."""
        ends = list(_running_sum(self.counts))
        found = bisect.bisect_right(ends, position)
        return self.names[min(found, len(self.names) - 1)]


def _running_sum(values: tuple[int, ...]) -> Iterator[int]:
    total = 0
    for value in values:
        total += value
        yield total


# ----------------------------------------------------------------------------- reading a shard set
def read_meta(source: str, storage_options: dict[str, Any] | None = None) -> ShardSetMeta:
    """The metadata of the shard set at ``source``.

    Raises:
        FileNotFoundError: No ``stoker_shards.json`` (with the reason: nothing there, a half-written
            pack, or a litdata dataset that ``stoker pack`` did not write).
        ShardFormatError: Truncated or foreign metadata, or another format version.
    """
    check_location(source)
    where = join(source, META_NAME)
    text = read_text(where, storage_options)
    if text is not None:
        return ShardSetMeta.from_json(text, where)
    if read_text(join(source, PROGRESS_NAME), storage_options) is not None:
        raise FileNotFoundError(f"{source!r} holds a half-written shard set (an interrupted `stoker pack`): finish "
                                "it with `stoker pack ... --resume` before training on it")
    if read_text(join(source, INDEX_NAME), storage_options) is not None:
        raise FileNotFoundError(f"{source!r} is a litdata dataset without {META_NAME}: it was not written by "
                                "`stoker pack`, so its class names and splits are unknown. Pack the class folder "
                                "with `stoker pack ROOT --out OUT`")
    raise FileNotFoundError(f"no stoker shard set at {source!r}: expected {where}, written by "
                            "`stoker pack ROOT --out OUT`")


def read_split_chunks(source: str, split: str, storage_options: dict[str, Any] | None = None) -> SplitChunks:
    """The chunk files and their sample counts of one split, from litdata's ``index.json``.

    Raises:
        FileNotFoundError: The split's index is missing.
        ShardFormatError: The index is truncated or is not litdata's.
    """
    where = join(source, split, INDEX_NAME)
    text = read_text(where, storage_options)
    if text is None:
        raise FileNotFoundError(f"the {split} split of the shard set {source!r} has no {INDEX_NAME} ({where}); the "
                                "shard set is incomplete: copy it again, or re-pack with `stoker pack`")
    try:
        index = json.loads(text)
        chunks = index["chunks"]
        found = SplitChunks(tuple(str(c["filename"]) for c in chunks), tuple(int(c["chunk_size"]) for c in chunks),
                            tuple(int(c["chunk_bytes"]) for c in chunks))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ShardFormatError(f"{where} is not a readable litdata index ({type(err).__name__}: {err}); copy it again "
                               "or re-pack with `stoker pack`") from err
    check_index_config(index.get("config"), where)
    return found


def check_index_config(config: Any, where: str) -> None:
    """Refuse a split index that declares anything but the plain samples ``stoker pack`` writes.

    litdata deserializes each field by the ``data_format`` its index declares, and its ``pickle``
    format unpickles, which runs whatever code the file carries. A shard set is data people download
    and share: reading it must never execute anything, so the index must declare exactly
    :data:`SAMPLE_FORMAT` (bytes, int, int, str), litdata's plain ``PyTreeLoader`` and no encryption;
    anything else is refused before a single sample is read.

    Raises:
        ShardFormatError: Another layout, naming the field and the value found.
    """
    if not isinstance(config, dict):
        raise ShardFormatError(f"{where} has no litdata config; re-pack the data with `stoker pack`")
    checks = {"data_format": list(SAMPLE_FORMAT), "item_loader": "PyTreeLoader", "encryption": None}
    for field_name, expected in checks.items():
        found = config.get(field_name)
        if found != expected:
            why = " (litdata unpickles 'pickle' fields: reading them would run code from the file)" if (
                "pickle" in str(found)) else ""
            raise ShardFormatError(
                f"{where} declares {field_name}={found!r}{why}; stoker reads only shard sets whose samples are "
                f"{expected!r} as `stoker pack` writes them. Re-pack the source data with `stoker pack`")


def check_split(source: str, split: str, expected: int, storage_options: dict[str, Any] | None = None, *,
                allow_damaged: bool = False) -> SplitChunks:
    """Check that a split's index matches the metadata and that every chunk file it lists exists, whole.

    A missing or truncated chunk would otherwise surface hours into training (or as a wait on a
    download that never comes); here it is an error before the first step. With ``allow_damaged``
    a chunk whose size differs from the index is returned in ``damaged`` instead (its samples are
    then skipped, see :mod:`stoker.data.litdata_compat`).

    Raises:
        FileNotFoundError: The index or chunk files are missing (named).
        ShardFormatError: The index's sample count differs from the metadata's, its layout is not stoker's,
            or a chunk is damaged (without ``allow_damaged``).
    """
    chunks = read_split_chunks(source, split, storage_options)
    if chunks.total != expected:
        raise ShardFormatError(f"the {split} split of {source!r} holds {chunks.total} samples in its {INDEX_NAME} but "
                               f"{META_NAME} says {expected}: the shard set is inconsistent; re-pack it")
    present = list_sizes(join(source, split), storage_options)
    if present is not None:
        missing = [name for name in chunks.names if name not in present]
        if missing:
            shown = ", ".join(join(source, split, name) for name in missing[:5])
            raise FileNotFoundError(f"{len(missing)} shard file(s) of the {split} split are missing: {shown}. Copy "
                                    "the shard set again (every file under it), or re-pack with `stoker pack`")
        damaged = tuple(name for name, size in zip(chunks.names, chunks.sizes) if present[name] != size)
        if damaged:
            listed = ", ".join(f"{join(source, split, name)} ({present[name]} bytes, the index says "
                               f"{dict(zip(chunks.names, chunks.sizes))[name]})" for name in damaged[:5])
            if not allow_damaged:
                raise ShardFormatError(f"{len(damaged)} chunk file(s) of the {split} split are damaged: {listed}. "
                                       "Copy the shard set again or re-pack it; on_bad_sample='skip' trains without "
                                       "their samples")
            chunks = SplitChunks(chunks.names, chunks.counts, chunks.sizes, damaged)
    return chunks


def read_labels(source: str, split: str, storage_options: dict[str, Any] | None = None) -> list[int]:
    """A split's labels by packed position (``index``), from the ``labels.json`` that ``stoker pack`` writes.

    Raises:
        FileNotFoundError: The file is missing.
        ShardFormatError: It is not a JSON list of labels.
    """
    where = join(source, split, LABELS_NAME)
    text = read_text(where, storage_options)
    if text is None:
        raise FileNotFoundError(f"{where} is missing; the shard set is incomplete: copy it again or re-pack it")
    try:
        labels = json.loads(text)
        return [int(y) for y in labels]
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ShardFormatError(f"{where} is not a JSON list of labels ({err}); copy it again or re-pack it") from err


@contextmanager
def restored_start_method() -> Iterator[None]:
    """Undo litdata's ``multiprocessing.set_start_method(..., force=True)`` after ``optimize`` returns.

    litdata's ``optimize`` forces the process-wide start method; left changed, every later
    DataLoader of the process would start its workers with it.
    """
    import multiprocessing

    before = multiprocessing.get_start_method(allow_none=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)
