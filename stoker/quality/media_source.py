"""What a source given on the command line holds (images, audio or text) and its reader.

The path forms of ``stoker scan``, ``stoker split`` and ``stoker pack`` take every source the media
DataModules take (a class folder, a table of files, a Hugging Face dataset or ``hf://<name>``,
WebDataset tars). :func:`stoker.data.sources.source_kind` says which reader; :func:`detect_kind` says
which media, from what is there without reading every sample (file extensions, column names, the
first members of a tar); :func:`open_media_source` opens the reader exactly as the DataModules do,
with the same :class:`SourceOptions` they take as arguments.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stoker.data.media import AUDIO, IMAGE, is_skipped_file, media_for
from stoker.data.sources import Source, open_source, source_kind
from stoker.data.sources.hf import HF_PREFIX
from stoker.data.sources.table import TABLE_SUFFIXES

MEDIA_KINDS: tuple[str, ...] = ("image", "audio")


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source: the DataModules' arguments of the same names (see ``ImageDataModule``).

    Attributes:
        media_field: The column holding the media (default: ``"image"`` or ``"audio"``).
        label_field: The column (or WebDataset ``json`` field) holding labels.
        path_field: A table's column of file paths.
        split_field: A table's column of splits.
        class_names: Fix the classes and their order (WebDataset ``.cls`` indices get their names here).
        multi_label: Each sample has a set of classes.
        subset: A hub dataset's configuration (``hf://`` sources).
        revision: A hub dataset's revision (``hf://`` sources).
        cache_dir: Where downloads, converted datasets and per-sample results are cached.
        storage_options: Object-store client options for ``s3://`` sources.
    """

    media_field: str | None = None
    label_field: str = "label"
    path_field: str = "path"
    split_field: str = "split"
    class_names: list[str] | None = None
    multi_label: bool = False
    subset: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    storage_options: dict[str, Any] | None = None


def location_text(source: str | os.PathLike[str] | Sequence[str]) -> str:
    """How results name a source: URLs and ``hf://`` names as given, local paths normalised, lists joined."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        return ",".join(str(s) for s in source)
    if "://" in source:
        return source
    return str(Path(source))


def open_media_source(source: str | os.PathLike[str] | Sequence[str], kind: str,
                      options: SourceOptions | None = None) -> Source:
    """The reader the media DataModules would use for ``source``, prepared (downloaded, converted, indexed once).

    Raises:
        ValueError: ``kind`` is not a media, or ``source`` is a stoker shard set (it streams; it has no reader).
        FileNotFoundError: A local source that does not exist.
    """
    options = options or SourceOptions()
    if kind not in MEDIA_KINDS:
        raise ValueError(f"kind must be one of {MEDIA_KINDS} for a source reader, got {kind!r}")
    location = os.fspath(source) if isinstance(source, os.PathLike) else source
    media_field = options.media_field or kind
    found = source_kind(location, media_field=media_field, path_field=options.path_field,
                        storage_options=options.storage_options)
    if found == "shards":
        raise _shard_set(location)
    if found == "folder" and isinstance(location, str) and "://" not in location \
            and not Path(location).expanduser().exists():
        raise FileNotFoundError(f"source {location!r} does not exist")
    reader = open_source(location, media_for(kind), kind=found, media_field=media_field,
                         label_field=options.label_field, path_field=options.path_field,
                         split_field=options.split_field, class_names=options.class_names,
                         multi_label=options.multi_label, subset=options.subset, revision=options.revision,
                         cache_dir=options.cache_dir, storage_options=options.storage_options)
    reader.prepare(options.cache_dir)
    return reader


def _shard_set(location: str | Sequence[str]) -> ValueError:
    return ValueError(f"{location_text(location)!r} is a stoker shard set (written by `stoker pack`, which checked "
                      "its samples): it streams and has no per-sample reader. Scan, split or pack the source it was "
                      "packed from")


def detect_kind(source: str | os.PathLike[str] | Sequence[str], *, path_field: str = "path") -> str:
    """``"image"``, ``"audio"`` or ``"text"``: what ``source`` holds, from names and columns (no sample is read).

    A class-folder tree by its file extensions; a table by the extensions of its path column (a table
    without one is text); a Hugging Face dataset by an ``image`` or ``audio`` column (neither: text); tars
    by their first members. A hub dataset or remote tars that cannot be looked into count as images:
    pass ``--kind`` for others.

    Raises:
        FileNotFoundError: A local path that does not exist.
        ValueError: A stoker shard set (it has no per-sample reader).
    """
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        names = [str(s) for s in source]
        if names and all(n.endswith(".tar") for n in names):
            return _tar_media(Path(names[0]))
        return _columns_media(_file_columns(Path(names[0])) if names else None)
    if source.startswith(HF_PREFIX):
        local = Path(source[len(HF_PREFIX):]).expanduser()
        return _columns_media(_hf_columns(local) if local.is_dir() else None)
    if "://" in source:
        if source_kind(source) == "shards":
            raise _shard_set(source)
        return "image"
    path = Path(source).expanduser()
    if "{" in source and ".tar" in source:
        from stoker.data.sources.webdataset import expand_braces

        path = Path(expand_braces(source)[0]).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"scan path {source!r} does not exist")
    if path.is_file():
        return _file_media(path, path_field)
    kind = source_kind(str(path))
    if kind == "shards":
        raise _shard_set(source)
    if kind == "hf":
        return _columns_media(_hf_columns(path))
    if kind == "webdataset":
        return _tar_media(next(p for p in sorted(path.rglob("*.tar")) if not p.name.startswith(".")))
    names = [name for _, _, files in os.walk(path) for name in files if not is_skipped_file(name)]
    return _vote(names, text=True, default="image")  # nothing recognised: the folder reader says what it expects


def _vote(names: Iterable[str], *, text: bool, default: str = "text") -> str:
    """The media most of ``names`` have the extension of (tables count as text when ``text``), else ``default``."""
    from stoker.quality.sources import TEXT_EXTENSIONS

    suffixes = Counter(Path(str(name)).suffix.lower() for name in names)
    votes = {
        "image": sum(n for s, n in suffixes.items() if s in IMAGE.extensions),
        "audio": sum(n for s, n in suffixes.items() if s in AUDIO.extensions),
        "text": sum(n for s, n in suffixes.items() if s in TEXT_EXTENSIONS) if text else 0,
    }
    best = max(votes, key=lambda kind: votes[kind])
    return best if votes[best] else default


def _file_media(path: Path, path_field: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tar":
        return _tar_media(path)
    if suffix in (".parquet", ".arrow"):
        columns = _file_columns(path)
        if columns is not None and path_field in columns and "image" not in columns and "audio" not in columns:
            return _table_media(path, path_field)
        return _columns_media(columns)
    if suffix in TABLE_SUFFIXES:
        return _table_media(path, path_field)
    return "text"  # the text scan names the formats it reads


def _table_media(path: Path, path_field: str) -> str:
    from stoker.data.sources.table import read_columns

    try:
        paths = read_columns(path, [path_field])[path_field]
    except (ValueError, OSError, UnicodeDecodeError):
        return "text"  # no path column: a table of texts
    return _vote((p for p in paths if isinstance(p, str)), text=False)


def _columns_media(columns: list[str] | None) -> str:
    if columns is None:
        return "image"
    for kind in MEDIA_KINDS:
        if kind in columns:
            return kind
    return "text"


def _file_columns(path: Path) -> list[str] | None:
    """The column names of a parquet or arrow file (``None`` when it cannot be read as one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.suffix.lower() == ".parquet":
            return list(pq.read_schema(path).names)
        with pa.memory_map(str(path)) as handle:
            try:
                return list(pa.ipc.open_stream(handle).schema.names)  # what datasets writes
            except pa.ArrowInvalid:
                handle.seek(0)
                return list(pa.ipc.open_file(handle).schema.names)
    except (OSError, pa.ArrowInvalid):
        return None


def _hf_columns(folder: Path) -> list[str] | None:
    """The columns of a ``save_to_disk`` folder (its ``dataset_info.json``) or of its first parquet/arrow file."""
    from stoker.data.sources.hf import DATA_SUFFIXES
    from stoker.data.sources.split_names import split_files

    info = folder / "dataset_info.json"
    splits = folder / "dataset_dict.json"
    if splits.is_file():
        names = json.loads(splits.read_text()).get("splits") or []
        info = folder / str(names[0]) / "dataset_info.json" if names else info
    if info.is_file():
        features = json.loads(info.read_text()).get("features") or {}
        return list(features)
    try:
        grouped = split_files(folder, DATA_SUFFIXES)
    except ValueError:
        return None
    files = [p for group in grouped.values() for p in group]
    return _file_columns(files[0]) if files else None


def _tar_media(path: Path, members: int = 64) -> str:
    """The media of a tar's first samples, by their members' extensions (images when it cannot be read)."""
    from stoker.data.sources.webdataset import MEDIA_FIELDS

    names: list[str] = []
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                names.append(member.name)
                if len(names) >= members:
                    break
    except (OSError, tarfile.TarError):
        return "image"
    fields = Counter(name.rpartition("/")[2].partition(".")[2].lower() for name in names)
    audio = sum(n for f, n in fields.items() if f in MEDIA_FIELDS["audio"])
    image = sum(n for f, n in fields.items() if f in MEDIA_FIELDS["image"])
    return "audio" if audio > image else "image"
