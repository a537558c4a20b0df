"""Readers for the sources the media DataModules take: what is there picks the reader.

=============  ==============================================================================
kind           what ``source`` is
=============  ==============================================================================
``folder``     ``root/<class>/<file>`` or ``root/train|val|test/<class>/<file>``
``table``      a ``.csv``/``.tsv``/``.jsonl``/``.parquet`` file with a path and a label column
``hf``         a ``save_to_disk`` folder, parquet/arrow files (with the media in a column), ``hf://<name>``
``webdataset`` ``.tar`` shards: one, a brace pattern, a folder of them, local or ``s3://``
``shards``     a stoker shard set (``stoker_shards.json``, from ``stoker pack``), local or ``s3://``
=============  ==============================================================================

:func:`source_kind` tells which; :func:`open_source` builds the reader (``shards`` streams through
:mod:`stoker.data.sources.shards.stream` instead: it has no per-sample random access).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stoker.data.cache import library_cache
from stoker.data.media import Media
from stoker.data.sources.base import Pairs, Source, SourceIndex
from stoker.data.sources.folder import FolderSource
from stoker.data.sources.labels import Label, LabelMap
from stoker.data.sources.split_names import SPLIT_ALIASES, canonical_split, split_of_name

SOURCE_KINDS: tuple[str, ...] = ("folder", "table", "hf", "webdataset", "shards")
_TABLES = (".csv", ".tsv", ".jsonl", ".json")

__all__ = [
    "SOURCE_KINDS",
    "SPLIT_ALIASES",
    "FolderSource",
    "Label",
    "LabelMap",
    "Pairs",
    "Source",
    "SourceIndex",
    "canonical_split",
    "open_source",
    "source_kind",
    "split_of_name",
]


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def source_kind(source: str | Sequence[str], *, media_field: str = "image", path_field: str = "path",
                storage_options: dict[str, Any] | None = None) -> str:
    """Which reader ``source`` needs (one of :data:`SOURCE_KINDS`), from what is there.

    Raises:
        FileNotFoundError: A local path that does not exist.
        ValueError: A file of a format no reader takes, or a parquet file with neither a media nor a path column.
    """
    from stoker.data.sources.shards.meta import META_NAME
    from stoker.data.sources.shards.storage import is_remote, join, read_text

    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        names = list(source)
        if names and all(str(n).endswith(".tar") for n in names):
            return "webdataset"
        return "hf"
    if source.startswith("hf://"):
        return "hf"
    if ".tar" in source and (source.endswith(".tar") or "{" in source):
        return "webdataset"
    if is_remote(source):
        return "shards" if read_text(join(source, META_NAME), storage_options) is not None else "webdataset"
    path = Path(source).expanduser()
    if not path.exists():
        if path.suffix.lower() in (*_TABLES, ".parquet", ".arrow", ".tar"):
            raise FileNotFoundError(f"source {source!r} does not exist")
        # A folder that prepare_data may still write (the demos build theirs on first use); reading it
        # names it if it never appears.
        return "folder"
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in _TABLES:
            return "table"
        if suffix == ".arrow":
            return "hf"
        if suffix == ".parquet":
            columns = _parquet_columns(path)
            if media_field in columns:
                return "hf"
            if path_field in columns:
                return "table"
            raise ValueError(f"parquet file {source!r} has neither a {media_field!r} column (images or audio stored "
                             f"in the table) nor a {path_field!r} column (paths of files); its columns are {columns}. "
                             f"Name the right one with {media_field}= or path_field=")
        raise ValueError(f"source {source!r} is a {suffix or 'extension-less'} file; expected a folder, a table "
                         f"({', '.join(_TABLES)}, .parquet), .arrow, .tar, or hf://<name>")
    if (path / META_NAME).is_file():
        return "shards"
    from stoker.data.sources.hf import looks_like_hf

    if looks_like_hf(path):
        return "hf"
    if _holds_tars(path):
        return "webdataset"
    return "folder"


def _holds_tars(path: Path) -> bool:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return False
    if any(e.is_file() and e.name.endswith(".tar") for e in entries):
        return True
    return any(e.is_dir() and canonical_split(e.name) and any(n.endswith(".tar") for n in os.listdir(e.path))
               for e in entries)


def open_source(source: str | Sequence[str], media: Media, *, kind: str | None = None, media_field: str,
                label_field: str = "label", path_field: str = "path", split_field: str = "split",
                class_names: list[str] | None = None, multi_label: bool = False, subset: str | None = None,
                revision: str | None = None, cache_dir: str | None = None,
                storage_options: dict[str, Any] | None = None, labelled: bool = True) -> Source:
    """The reader of a map-style source (every kind but ``shards``), chosen by :func:`source_kind` unless ``kind``.

    Raises:
        ValueError: ``kind`` is ``shards`` or unknown (shards stream; see the module).
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    kind = kind or source_kind(source, media_field=media_field, path_field=path_field,
                               storage_options=storage_options)
    if kind == "folder":
        return FolderSource(str(source), media, class_names=class_names, labelled=labelled)
    if kind == "table":
        from stoker.data.sources.table import TableSource

        return TableSource(str(source), media, path_field=path_field, label_field=label_field,
                           split_field=split_field, class_names=class_names, multi_label=multi_label,
                           labelled=labelled)
    if kind == "hf":
        from stoker.data.sources.hf import HFSource

        hf_cache = library_cache(cache_dir, "hf")
        location = source if isinstance(source, str) else list(source)
        return HFSource(location, media, media_field=media_field, label_field=label_field, subset=subset,
                        revision=revision, class_names=class_names, multi_label=multi_label, cache_dir=hf_cache,
                        labelled=labelled)
    if kind == "webdataset":
        from stoker.data.sources.webdataset import WebDatasetSource

        location = source if isinstance(source, str) else list(source)
        return WebDatasetSource(location, media, label_field=label_field, class_names=class_names,
                                multi_label=multi_label, cache_dir=cache_dir, storage_options=storage_options,
                                labelled=labelled)
    raise ValueError(f"no map-style reader for source kind {kind!r}; expected one of {SOURCE_KINDS[:-1]}")
