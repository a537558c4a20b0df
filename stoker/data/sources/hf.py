"""The Hugging Face dataset reader: ``save_to_disk`` folders, parquet/arrow files, and ``hf://<name>`` hub datasets.

``datasets`` does the reading (memory-mapped Arrow, its cache and the hub); stoker takes the encoded
bytes of the image or audio column as they are stored (``datasets.Image()``/``Audio()`` cast to
``decode=False``: ``{"bytes", "path"}``, or a plain binary or path column) and decodes them in the
loader workers with its own decoders, so speed and bad-sample handling are the folder path's. No PIL
image is ever built on the main process.

* a ``save_to_disk`` folder of a ``Dataset`` (one pool) or a ``DatasetDict`` (its splits);
* a folder of parquet or arrow files, split by their names (``train-00000-of-00001.parquet``,
  ``data/validation-*.parquet``, see :mod:`stoker.data.sources.split_names`), one file, or a list;
* ``hf://<name>`` with ``subset`` and ``revision``: ``datasets.load_dataset`` (downloaded once per node in
  ``prepare``; tests point it at a local folder laid out like a hub repository).

Labels may be a ``ClassLabel`` (its names become the classes), integers or names; multi-label a
sequence of either. Keys are ``<split>#<row>`` (the split as the source names it).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path
from typing import Any

from stoker._imports import require
from stoker.data.datasets_compat import fingerprint_of, rows_are_table_rows
from stoker.data.media import Media
from stoker.data.sources.base import UNLABELLED, Pairs, Source, SourceIndex
from stoker.data.sources.folder_tree import printable
from stoker.data.sources.labels import LabelMap, check_class_count, infer_class_names
from stoker.data.sources.split_names import SPLITS, canonical_split, group_by_split, split_files

HF_PREFIX = "hf://"
DATA_SUFFIXES: tuple[str, ...] = (".parquet", ".arrow")
_BUILDERS = {".parquet": "parquet", ".arrow": "arrow"}


def is_saved_dataset(folder: Path) -> bool:
    """Whether a folder was written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


class HFSource(Source):
    """Samples are the rows of a Hugging Face dataset; the media column holds encoded bytes (or file paths).

    Args:
        location: A ``save_to_disk`` folder, a parquet/arrow file or folder, a list of such files, or ``hf://<name>``.
        media: Image or audio.
        media_field: The column of images (``image_field``) or recordings (``audio_field``).
        label_field: The column of labels.
        subset: The hub dataset's configuration (``hf://`` only).
        revision: The hub revision (``hf://`` only).
        class_names: Fix the classes (default: a ClassLabel's names, or inferred from the labels).
        multi_label: Labels are lists.
        cache_dir: Where datasets keeps its cache (default: datasets' own).
    """

    kind = "hf"

    def __init__(self, location: str | list[str], media: Media, *, media_field: str, label_field: str = "label",
                 subset: str | None = None, revision: str | None = None, class_names: list[str] | None = None,
                 multi_label: bool = False, cache_dir: str | None = None, labelled: bool = True) -> None:
        require("hf", f"a Hugging Face dataset source ({location!r})")
        files = [location] if isinstance(location, str) else list(location)
        super().__init__(files[0] if len(files) == 1 else ",".join(files), media, labelled=labelled)
        self.files = files
        self.media_field, self.label_field = media_field, label_field
        self.subset, self.revision = subset, revision
        self.multi_label = multi_label
        self.cache_dir = cache_dir
        self._class_names = list(class_names) if class_names is not None else None
        self._splits: dict[str, Any] | None = None  # HF split name -> Dataset (loaded lazily, in every process)
        self._columns: dict[str, Any] = {}  # HF split name -> the media column (pyarrow), per process

    # ----------------------------------------------------------------- loading
    def prepare(self, cache_dir: str | None) -> None:
        self._load()  # downloads (hf://) or converts parquet/arrow into datasets' cache, once per node

    def _load(self) -> dict[str, Any]:
        if self._splits is None:
            self._splits = self._open()
        return self._splits

    def _open(self) -> dict[str, Any]:
        import datasets

        location = self.files[0]
        if len(self.files) == 1 and location.startswith(HF_PREFIX):
            loaded = datasets.load_dataset(location[len(HF_PREFIX):], self.subset, revision=self.revision,
                                           cache_dir=self.cache_dir)
            return dict(loaded)
        folder = Path(location).expanduser()
        if len(self.files) == 1 and folder.is_dir() and is_saved_dataset(folder):
            loaded = datasets.load_from_disk(str(folder))
            return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"data": loaded}
        grouped = self._data_files()
        builder = _BUILDERS[next(iter(grouped.values()))[0].suffix.lower()]
        loaded = datasets.load_dataset(builder, data_files={split: [str(p) for p in paths]
                                                            for split, paths in grouped.items()},
                                       cache_dir=self.cache_dir)
        return dict(loaded)

    def _data_files(self) -> dict[str, list[Path]]:
        paths: list[Path] = []
        for entry in self.files:
            path = Path(entry).expanduser()
            if path.is_dir():
                grouped = split_files(path, DATA_SUFFIXES)
                if not grouped:
                    raise ValueError(f"{printable(entry)!r} holds no parquet or arrow file (nor a save_to_disk "
                                     "dataset)")
                if len(self.files) == 1:
                    return self._one_format(grouped)
                paths += [p for group in grouped.values() for p in group]
            elif path.is_file():
                paths.append(path)
            else:
                raise FileNotFoundError(f"{printable(entry)!r} does not exist")
        return self._one_format(group_by_split(paths, where=self.location))

    def _one_format(self, grouped: dict[str, list[Path]]) -> dict[str, list[Path]]:
        suffixes = {p.suffix.lower() for group in grouped.values() for p in group}
        if len(suffixes) != 1:
            raise ValueError(f"{self.location!r}: mixes {sorted(suffixes)} files; give one format")
        # datasets names splits freely; ours are train/val/test, and one pool is "train" to datasets.
        return {("train" if split == "all" else split): group for split, group in grouped.items()}

    # ----------------------------------------------------------------- listing
    def _features(self) -> tuple[Any, Any]:
        first = next(iter(self._load().values()))
        features = first.features
        for field in (self.media_field, self.label_field) if self.labelled else (self.media_field,):
            if field not in features:
                raise ValueError(f"dataset {self.location!r} has no column {field!r}; its columns are "
                                 f"{list(features)}. Name them with {self.media.name}_field= and label_field=")
        return features[self.media_field], features.get(self.label_field)

    def known_class_names(self) -> list[str]:
        if self._class_names is None:
            _, label_feature = self._features()
            names = _class_label_names(label_feature)
            if names is None:
                values: list[Any] = []
                for dataset in self._load().values():
                    values += dataset.unique(self.label_field) if not self.multi_label else dataset[self.label_field]
                names = infer_class_names(values, multi_label=self.multi_label,
                                          where=f"dataset {self.location!r}, column {self.label_field!r}")
            check_class_count(names, where=f"dataset {self.location!r}",
                              found=f"{len(names)} class(es) in column {self.label_field!r}")
            self._class_names = names
        return self._class_names

    def _split_names(self) -> dict[str, str]:
        """HF split name -> ours (``all`` for one pool). Refuses splits that are none of train/val/test."""
        names = list(self._load())
        if len(names) == 1 and canonical_split(names[0]) in (None, "train"):
            return {names[0]: "all"}
        out: dict[str, str] = {}
        for name in names:
            ours = canonical_split(name)
            if ours is None:
                raise ValueError(f"dataset {self.location!r} has a split {name!r} that is none of train, validation "
                                 f"or test (its splits: {names}); save the splits under those names")
            if ours in out.values():
                raise ValueError(f"dataset {self.location!r} has two splits that mean {ours!r}: {names}")
            out[name] = ours
        if "train" not in out.values():
            raise ValueError(f"dataset {self.location!r} has no training split; its splits are {names}")
        return out

    def index(self) -> SourceIndex:
        self._features()
        if not self.labelled:
            unlabelled: Pairs = [(f"{name}#{row}", UNLABELLED) for name, dataset in self._load().items()
                                 for row in range(len(dataset))]
            return SourceIndex(kind=self.kind, location=self.location, class_names=list(self._class_names or []),
                               files={"all": unlabelled})
        label_map = LabelMap(self.known_class_names(), multi_label=self.multi_label)
        files: dict[str, Pairs] = {}
        bad: dict[str, str] = {}
        splits = self._split_names()
        for hf_split, ours in splits.items():
            pairs: Pairs = files.setdefault(ours, [])
            for row, value in enumerate(self._load()[hf_split][self.label_field]):
                key = f"{hf_split}#{row}"
                label, reason = label_map(value)
                if label is None:
                    bad[key] = reason or "bad label"
                else:
                    pairs.append((key, label))
        ordered = {split: files[split] for split in (*SPLITS, "all") if split in files}
        note = ("one pool, split by fractions" if "all" in ordered
                else "splits as the dataset names them: " + ", ".join(f"{hf} -> {ours}" for hf, ours in splits.items()))
        return SourceIndex(kind=self.kind, location=self.location, class_names=label_map.class_names,
                           files=ordered, bad=bad, notes=[note])

    # ----------------------------------------------------------------- reading (in the workers)
    def _column(self, hf_split: str) -> Any:
        if hf_split not in self._columns:
            dataset = self._load()[hf_split]
            # The Arrow table's rows are the dataset's unless an indices mapping (select, shuffle) sits on
            # top; what load_from_disk and load_dataset return never has one.
            if rows_are_table_rows(dataset):
                self._columns[hf_split] = _StoredColumn(dataset.data.column(self.media_field))
            else:
                self._columns[hf_split] = _DatasetColumn(dataset, self.media_field)
        return self._columns[hf_split]

    def read_bytes(self, key: str) -> bytes:
        hf_split, _, row = key.rpartition("#")
        value = self._column(hf_split)[int(row)]
        if isinstance(value, dict):  # datasets.Image()/Audio(): embedded bytes, or a path to a file
            if value.get("bytes"):
                return bytes(value["bytes"])
            value = value.get("path")
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str) and value:
            path = Path(value)
            if not path.is_absolute() and len(self.files) == 1 and not self.files[0].startswith(HF_PREFIX):
                base = Path(self.files[0]).expanduser()
                path = (base if base.is_dir() else base.parent) / path
            return path.read_bytes()
        raise OSError(f"row {row} of split {hf_split!r} has no {self.media.name} (empty column {self.media_field!r})")

    def signature(self, key: str) -> list[Any]:
        hf_split = key.rpartition("#")[0]
        return [fingerprint_of(self._load()[hf_split])]

    def cache_id(self) -> str:
        from stoker.data.sources.base import _digest

        return _digest(self.kind, self.location, self.subset or "", self.revision or "", self.media_field)

    def name_of(self, key: str) -> str:
        hf_split, _, row = key.rpartition("#")
        return f"{self.location} (split {hf_split!r}, row {row})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "media_field": self.media_field, "label_field": self.label_field,
                "subset": self.subset, "revision": self.revision}

    def cache_files(self) -> list[str]:
        """The Arrow files datasets keeps for this source (for the report's list of created files)."""
        return sorted({entry["filename"] for dataset in self._load().values() for entry in dataset.cache_files})

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_columns"] = {}  # arrow views are rebuilt in each worker
        return state


class _StoredColumn:
    """One column's stored values by row, read straight from the Arrow arrays under a ``datasets.Dataset``.

    ``Dataset.__getitem__`` (even with the ``arrow`` format) runs its query and formatting layers per
    row: 17 us against 5 us here with warm caches, and 150 us against 40 us in a loader worker, where
    decoding and cropping each image push that code out of the CPU caches; 0.1 ms is ~7% of an
    ImageNet-sized image's decode and crop (benchmarks/sources.py measures the pipeline).
    Rows come as ``read_bytes`` wants them: ``{"bytes", "path"}`` for ``Image()``/``Audio()`` (stored
    as a struct), else the plain value (binary, or a path string).
    """

    def __init__(self, column: Any) -> None:
        import pyarrow as pa

        self.starts = [0, *accumulate(len(chunk) for chunk in column.chunks)][:-1]
        self.struct = pa.types.is_struct(column.type)
        if self.struct:  # flatten() applies a chunk's offset and nulls to its children (field() does not)
            names = [field.name for field in column.type]
            self.chunks: list[Any] = [{name: child for name, child in zip(names, chunk.flatten())
                                       if name in ("bytes", "path")} for chunk in column.chunks]
        else:
            self.chunks = list(column.chunks)

    def __getitem__(self, row: int) -> Any:
        if row < 0:
            raise IndexError(f"row {row} is negative")
        number = bisect_right(self.starts, row) - 1
        chunk, offset = self.chunks[number], row - self.starts[number]
        if self.struct:
            return {name: values[offset].as_py() for name, values in chunk.items()}
        return chunk[offset].as_py()


class _DatasetColumn:
    """One column's stored values by row through ``datasets`` (media features cast to ``decode=False``)."""

    def __init__(self, dataset: Any, field: str) -> None:
        import datasets

        feature = dataset.features[field]
        if isinstance(feature, datasets.Image | datasets.Audio) and feature.decode:
            dataset = dataset.cast_column(field, type(feature)(decode=False))
        self.column = dataset.select_columns([field]).with_format("arrow")

    def __getitem__(self, row: int) -> Any:
        return self.column[row].column(0)[0].as_py()


def _class_label_names(feature: Any) -> list[str] | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel) for multi-label
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    if isinstance(feature, list) and feature and isinstance(feature[0], datasets.ClassLabel):
        return list(feature[0].names)
    return None


def looks_like_hf(path: Path) -> bool:
    """Whether a local path is a Hugging Face dataset for the media readers (saved, or parquet/arrow data)."""
    if path.is_dir():
        if is_saved_dataset(path):
            return True
        try:
            return bool(split_files(path, DATA_SUFFIXES))
        except ValueError:
            return True  # data files whose split names conflict: the HF reader explains
    return path.suffix.lower() in DATA_SUFFIXES


def hf_location(source: str) -> str:
    """``source`` with ``~`` expanded for local paths (``hf://`` names are kept)."""
    return source if source.startswith(HF_PREFIX) else os.path.expanduser(source)
