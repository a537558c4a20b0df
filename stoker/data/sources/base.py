"""What a source reader is: it lists samples with their splits and labels, and fetches one sample's bytes.

Everything after that (the decode check, quarantine, the split, the fingerprint, decoding,
transforms, sharding, resume and the batch contract) belongs to the DataModule and is the same
for every source, as timm's readers sit under one dataset class.

A sample is named by a **key**: a string that is stable across runs and machines (a path
relative to the dataset root or table, ``<split>#<row>`` of a Hugging Face split, ``<tar>#<sample>``
of a WebDataset shard). Splits are drawn from hashes of keys, caches, quarantine lists and
manifests are keyed by them, and errors print them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from stoker.data.media import Media
from stoker.data.sources.labels import Label

Pairs = list[tuple[str, Label]]
UNLABELLED = -1  # the label of a sample listed without one (prediction on new data)


@dataclass
class SourceIndex:
    """What a source holds.

    Attributes:
        kind: The reader (``"folder"``, ``"table"``, ``"hf"``, ``"webdataset"``).
        location: The source as given, for messages.
        class_names: Classes in label order.
        files: Per split the source brings (``train``/``val``/``test``), or ``all`` when it brings none,
            the ``(key, label)`` pairs sorted by key.
        bad: Samples refused while listing (a missing or unknown label), ``{key: reason}``.
        skipped: What is not data and was left out (hidden files, tool folders), for the report.
        ignored: Files that are not samples (other extensions).
        empty_classes: Classes named by the source with no sample (class folders with no file).
        notes: What the reader decided, in words (which files gave which split...).
    """

    kind: str
    location: str
    class_names: list[str]
    files: dict[str, Pairs]
    bad: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def presplit(self) -> bool:
        """Whether the source brings its own splits."""
        return "all" not in self.files

    @property
    def keys(self) -> list[str]:
        """Every listed sample's key, over all splits (the bad ones included)."""
        return [key for pairs in self.files.values() for key, _ in pairs] + list(self.bad)


class Source:
    """A reader: lists a source's samples (:meth:`index`) and fetches one sample (:meth:`read_bytes`).

    Sources are pickled into loader workers, so they hold paths and small tables, and open files
    lazily. A subclass sets :attr:`kind` and implements :meth:`index`, :meth:`read_bytes` and
    :meth:`signature`; :meth:`prepare` (downloads, conversions) runs once per node before.

    Args:
        location: The source as the user gave it.
        media: What a sample is (image or audio).
        labelled: ``False`` lists every sample with label -1 and reads no label (new data to predict on).
    """

    kind: ClassVar[str] = "?"
    # Whether samples are files on the local disk (local_path gives them): the folder and table
    # readers; their caches are keyed by file size and mtime, and DALI can read them as files.
    local_files: ClassVar[bool] = False

    def __init__(self, location: str, media: Media, *, labelled: bool = True) -> None:
        self.location = location
        self.media = media
        self.labelled = labelled

    def prepare(self, cache_dir: str | None) -> None:
        """Download or convert what the source needs, once per node (nothing by default)."""

    def known_class_names(self) -> list[str] | None:
        """The classes when they can be read cheaply (folder names, a ClassLabel), else ``None``."""
        return None

    def index(self) -> SourceIndex:
        """List every sample with its split and label."""
        raise NotImplementedError

    def read_bytes(self, key: str) -> bytes:
        """The encoded bytes of one sample (raises ``OSError`` when they cannot be read)."""
        raise NotImplementedError

    def local_path(self, key: str) -> Path | None:
        """The sample's file on the local disk, or ``None`` for samples stored inside something else."""
        return None

    def signature(self, key: str) -> list[Any]:
        """What changes when the sample's bytes change (size and mtime of a file; a table's fingerprint).

        Per-sample results (the decode check, the content hash) are cached under it. Raises ``OSError``
        when the sample cannot be reached (a missing file).
        """
        raise NotImplementedError

    def cache_id(self) -> str:
        """A short, stable name of this source for its cache files."""
        return _digest(self.kind, self.location)

    def name_of(self, key: str) -> str:
        """How messages name a sample."""
        return f"{self.location} [{key}]"

    def describe(self) -> dict[str, Any]:
        """What the reader is, for ``describe()`` and reports."""
        return {"source_kind": self.kind, "source": self.location}


def _digest(*parts: str) -> str:
    text = "\0".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha1(text).hexdigest()[:16]


def stat_signature(path: str | os.PathLike[str]) -> list[int]:
    """``[size, mtime_ns]`` of a file (raises ``OSError`` for a missing or unreadable one)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]
