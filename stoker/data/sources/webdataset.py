"""The WebDataset reader: tar shards whose members ``<key>.jpg`` + ``<key>.cls`` (``.label``, ``.json``) are samples.

Members are grouped into samples the WebDataset way: a member's sample key is its path up to the
first dot of its file name, its field is the rest (``n01440764/000001.jpg`` -> key
``n01440764/000001``, field ``jpg``), and consecutive members with one key are one sample. The
image is the ``jpg``/``jpeg``/``png``/``webp`` member (audio: ``wav``/``flac``), the label the
``cls`` or ``label`` member (a class index or name) or ``label_field`` of the ``json`` member.

Why stoker indexes the tars instead of streaming them with the ``webdataset`` package: exact
mid-epoch resume on any number of ranks and workers, evaluation that sees each sample once and
augmentation seeded by a sample's position all need random access, which a tar stream does not
give; and ``webdataset``'s decoders unpickle ``.pyd``/``.pickle`` members, which data must never
do. The index (every member's offset and size, read from the tar headers with Python's
``tarfile``, plus the small label members) is built once per tar and cached by the tar's size and
mtime; a sample is then one ``pread`` of its bytes. Nothing in a tar is ever executed.

Sources: one ``.tar``, a brace pattern (``shards-{000000..000127}.tar``), a folder of tars, or a
list, local or ``s3://`` (remote tars are downloaded once per node into ``cache_dir`` by
``prepare``; for datasets larger than a node's disk, ``stoker pack`` them into stoker shards).
Splits come from the tar names (``train-000000.tar``, ``val-000000.tar``) or folders
(``train/000000.tar``), else the samples form one pool split by fractions.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from stoker.data.cache import stoker_cache
from stoker.data.media import Media
from stoker.data.sources.base import UNLABELLED, Pairs, Source, SourceIndex, _digest, stat_signature
from stoker.data.sources.folder_tree import printable
from stoker.data.sources.labels import LabelMap, check_class_count, infer_class_names
from stoker.data.sources.split_names import SPLITS, group_by_split

TAR_SUFFIXES: tuple[str, ...] = (".tar",)
LABEL_FIELDS: tuple[str, ...] = ("cls", "label")
MEDIA_FIELDS: dict[str, tuple[str, ...]] = {
    "image": ("jpg", "jpeg", "png", "webp"),
    "audio": ("wav", "flac"),
}
_RANGE = re.compile(r"\{(-?\d+)\.\.(-?\d+)\}")
_INDEX_VERSION = 1


def expand_braces(pattern: str) -> list[str]:
    """Every name a brace pattern stands for: ``{000..002}`` (zero-padded ranges) and ``{a,b}`` lists, nested.

    Raises:
        ValueError: A range that runs backwards.
    """
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    depth, end = 0, -1
    for position in range(start, len(pattern)):
        depth += {"{": 1, "}": -1}.get(pattern[position], 0)
        if depth == 0:
            end = position
            break
    if end < 0:
        return [pattern]
    body, head, tail = pattern[start + 1 : end], pattern[:start], pattern[end + 1 :]
    numeric = _RANGE.fullmatch("{" + body + "}")
    if numeric:
        low, high = numeric.group(1), numeric.group(2)
        if int(high) < int(low):
            raise ValueError(f"brace range {{{body}}} in {pattern!r} runs backwards")
        width = len(low) if low.startswith("0") else 0
        choices = [str(n).zfill(width) for n in range(int(low), int(high) + 1)]
    else:
        choices = _split_top_level(body)
    return [name for choice in choices for name in expand_braces(head + choice + tail)]


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in body:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        current += char
    return [*parts, current]


def _sample_key(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, field = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), field.lower() if dot else ""


def index_tar(path: Path, media_fields: tuple[str, ...], label_field: str) -> list[list[Any]]:
    """``[[sample key, media offset, media size, raw label], ...]`` of one tar, read from its headers.

    A sample without a media member is listed with offset -1 (named as bad by the DataModule); the
    raw label is the ``cls``/``label`` member's text, the ``json`` member's ``label_field``, or ``None``.
    """
    samples: list[list[Any]] = []
    current: list[Any] | None = None
    rank = {field: position for position, field in enumerate(media_fields)}
    with tarfile.open(path, "r:") as archive:  # "r:": plain tar, read with seeks (never decompressed as a stream)
        for member in archive:
            if not member.isfile():
                continue
            key, field = _sample_key(member.name)
            if current is None or current[0] != key:
                current = [key, -1, 0, None, len(media_fields)]
                samples.append(current)
            if field in rank and rank[field] < current[4]:
                current[1], current[2], current[4] = member.offset_data, member.size, rank[field]
            elif field in LABEL_FIELDS or (field == "json" and current[3] is None):
                handle = archive.extractfile(member)
                text = handle.read().decode("utf-8", "replace") if handle is not None else ""
                if field == "json":
                    try:
                        record = json.loads(text)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(record, dict) and label_field in record:
                        current[3] = record[label_field]
                else:
                    current[3] = _label_text(text)
    return [sample[:4] for sample in samples]


def _label_text(text: str) -> Any:
    value = text.strip()
    return int(value) if value.lstrip("-").isdigit() else value


class WebDatasetSource(Source):
    """Samples are the WebDataset samples of a set of tar shards (see the module).

    Args:
        location: One tar, a brace pattern, a folder of tars, or ``s3://`` URLs of any of them.
        media: Image or audio.
        label_field: The field of a ``json`` member holding the label (``cls``/``label`` members come first).
        class_names: Fix the classes (default: inferred from the labels, which needs the index).
        multi_label: Labels are lists (a ``json`` list, or ``a;b`` text).
        cache_dir: Where indexes (and downloaded remote tars) are kept (default ``$STOKER_CACHE`` or
            ``~/.cache/stoker``).
        storage_options: Options for the object-store client of remote tars.
    """

    kind = "webdataset"

    def __init__(self, location: str | list[str], media: Media, *, label_field: str = "label",
                 class_names: list[str] | None = None, multi_label: bool = False, cache_dir: str | None = None,
                 storage_options: dict[str, Any] | None = None, labelled: bool = True) -> None:
        names = [location] if isinstance(location, str) else list(location)
        super().__init__(names[0] if len(names) == 1 else ",".join(names), media, labelled=labelled)
        self.patterns = names
        self.label_field = label_field
        self.multi_label = multi_label
        self.cache_dir = cache_dir
        self.storage_options = storage_options
        self.media_fields = MEDIA_FIELDS.get(media.name, tuple(ext.lstrip(".") for ext in sorted(media.extensions)))
        self._class_names = list(class_names) if class_names is not None else None
        self._tars: list[Path] | None = None
        self._index: dict[str, list[list[Any]]] | None = None  # tar name -> samples
        self._where: dict[str, tuple[int, int, int]] = {}  # key -> (tar position, offset, size)
        self._handles: dict[int, Any] = {}

    # ----------------------------------------------------------------- where the tars are
    @property
    def remote(self) -> bool:
        from stoker.data.sources.shards.storage import is_remote

        return any(is_remote(pattern) for pattern in self.patterns)

    def _cache_root(self) -> Path:
        return stoker_cache(self.cache_dir, "webdataset") / _digest(*self.patterns)

    def _names(self) -> list[str]:
        """Every tar the patterns name (URLs for remote sources)."""
        found: list[str] = []
        for pattern in self.patterns:
            for name in expand_braces(pattern):
                path = Path(name).expanduser()
                if not self.remote and path.is_dir():
                    found += sorted(str(p) for p in path.rglob("*.tar") if not p.name.startswith("."))
                elif self.remote and not name.endswith(".tar"):
                    found += self._list_remote(name)
                else:
                    found.append(name)
        if not found:
            raise ValueError(f"WebDataset source {self.location!r} names no .tar file")
        return found

    def _list_remote(self, prefix: str) -> list[str]:
        from stoker.data.sources.shards.storage import join, list_names

        names = list_names(prefix, self.storage_options)
        if names is None:
            raise ValueError(f"cannot list {prefix!r}: name the tars (a brace pattern such as "
                             "shards-{000000..000127}.tar)")
        return [join(prefix, name) for name in sorted(names) if name.endswith(".tar")]

    def prepare(self, cache_dir: str | None) -> None:
        if self.remote:
            self._download()
        self._load_index()

    def _download(self) -> list[Path]:
        from stoker.data.sources.shards.storage import provider

        local: list[Path] = []
        folder = self._cache_root() / "tars"
        folder.mkdir(parents=True, exist_ok=True)
        for number, url in enumerate(self._names()):
            target = folder / f"{number:06d}-{Path(url).name}"
            if not target.is_file():
                partial = target.with_name(target.name + f".{os.getpid()}.partial")
                provider(url, self.storage_options).download_file(url, str(partial))
                os.replace(partial, target)
            local.append(target)
        return local

    def tars(self) -> list[Path]:
        """The local tar files (downloaded first for a remote source)."""
        if self._tars is None:
            if self.remote:
                self._tars = self._download()
            else:
                self._tars = [Path(name).expanduser() for name in self._names()]
                missing = [str(p) for p in self._tars if not p.is_file()]
                if missing:
                    raise FileNotFoundError(f"WebDataset source {self.location!r}: no such tar file(s): {missing[:3]}")
        return self._tars

    def _split_name(self, path: Path) -> Path:
        # Downloaded copies carry a "<number>-" prefix; their split is their original name's.
        return path.with_name(path.name.split("-", 1)[1]) if self.remote else path

    # ----------------------------------------------------------------- the index
    def _load_index(self) -> dict[str, list[list[Any]]]:
        if self._index is not None:
            return self._index
        cache = self._cache_root() / "index.json"
        saved: dict[str, Any] = {}
        if cache.is_file():
            try:
                saved = json.loads(cache.read_text())
            except (OSError, json.JSONDecodeError):
                saved = {}
        if saved.get("version") != _INDEX_VERSION or saved.get("fields") != [*self.media_fields, self.label_field]:
            saved = {"version": _INDEX_VERSION, "fields": [*self.media_fields, self.label_field], "tars": {}}
        changed = False
        index: dict[str, list[list[Any]]] = {}
        for path in self.tars():
            signature = stat_signature(path)
            entry = saved["tars"].get(str(path))
            if entry is None or entry["signature"] != signature:
                try:
                    samples = index_tar(path, self.media_fields, self.label_field)
                except tarfile.TarError as err:
                    raise ValueError(f"{printable(str(path))}: not a readable tar file ({err})") from err
                entry = {"signature": signature, "samples": samples}
                saved["tars"][str(path)] = entry
                changed = True
            index[str(path)] = entry["samples"]
        if changed:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f"index.{os.getpid()}.partial")
            partial.write_text(json.dumps(saved))
            os.replace(partial, cache)
        self._index = index
        self._where = {}
        for position, path in enumerate(self.tars()):
            tar_key = self._tar_key(path)
            for key, offset, size, _ in index[str(path)]:
                self._where[f"{tar_key}#{key}"] = (position, offset, size)
        return index

    def _tar_key(self, path: Path) -> str:
        return self._split_name(path).name if self.remote else os.path.relpath(path, self._common_root())

    def _common_root(self) -> str:
        paths = [str(p.parent) for p in self.tars()]
        return os.path.commonpath(paths) if paths else "."

    def known_class_names(self) -> list[str] | None:
        if self._class_names is None:
            if self.remote and self._index is None and not (self._cache_root() / "index.json").is_file():
                return None  # known once prepare() has fetched and indexed the tars
            values = [sample[3] for samples in self._load_index().values() for sample in samples]
            names = infer_class_names(values, multi_label=self.multi_label,
                                      where=f"WebDataset {self.location!r} labels")
            check_class_count(names, where=f"WebDataset {self.location!r}",
                              found=f"{len(names)} distinct label(s) in its cls/label/json members")
            self._class_names = names
        return self._class_names

    def index(self) -> SourceIndex:
        index = self._load_index()
        if not self.labelled:
            pairs = [(f"{self._tar_key(p)}#{key}", UNLABELLED) for p in self.tars()
                     for key, offset, _, _ in index[str(p)] if offset >= 0]
            return SourceIndex(kind=self.kind, location=self.location, class_names=list(self._class_names or []),
                               files={"all": sorted(pairs)})
        names = self.known_class_names()
        assert names is not None  # the index exists now
        label_map = LabelMap(names, multi_label=self.multi_label)
        by_split = group_by_split([self._split_name(p) for p in self.tars()], where=self.location)
        split_of = {str(p): split for split, paths in by_split.items() for p in paths}
        files: dict[str, Pairs] = {}
        bad: dict[str, str] = {}
        for path in self.tars():
            split = split_of[str(self._split_name(path))]
            tar_key = self._tar_key(path)
            for key, offset, _, raw in index[str(path)]:
                name = f"{tar_key}#{key}"
                if offset < 0:
                    bad[name] = f"no {'/'.join(self.media_fields)} member"
                    continue
                label, reason = label_map(raw)
                if label is None:
                    bad[name] = reason or "bad label"
                else:
                    files.setdefault(split, []).append((name, label))
        ordered = {split: sorted(files.get(split, [])) for split in (*SPLITS, "all") if split in by_split}
        note = ("one pool, split by fractions" if "all" in ordered
                else "splits from the tar names: " + ", ".join(f"{s} {len(p)} tar(s)" for s, p in by_split.items()))
        return SourceIndex(kind=self.kind, location=self.location, class_names=names, files=ordered, bad=bad,
                           notes=[note])

    # ----------------------------------------------------------------- reading (in the workers)
    def read_bytes(self, key: str) -> bytes:
        if not self._where:
            self._load_index()
        position, offset, size = self._where[key]
        handle = self._handles.get(position)
        if handle is None:
            handle = self._handles[position] = open(self.tars()[position], "rb")  # noqa: SIM115 - kept per worker
        return os.pread(handle.fileno(), size, offset)

    def signature(self, key: str) -> list[Any]:
        if not self._where:
            self._load_index()
        position, offset, _ = self._where[key]
        return [*stat_signature(self.tars()[position]), offset]

    def cache_id(self) -> str:
        return _digest(self.kind, *self.patterns, self.media.name)

    def name_of(self, key: str) -> str:
        tar, _, sample = key.partition("#")
        return f"{sample} (tar {tar})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tars": len(self._tars or []), "label_field": self.label_field}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # open files stay with their process
        return state
