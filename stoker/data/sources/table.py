"""The table-of-files reader: a ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet`` file with a path and a label per row.

Paths are relative to the table's folder, or absolute. Labels are class names or integer indices
(:mod:`stoker.data.sources.labels`); with ``multi_label`` a row holds a list or ``a;b`` names, and a
path listed on several rows collects their labels. A ``split`` column, when present, gives the
splits (``train``, ``validation``/``val``/``valid``/``dev``, ``test``), which are then kept.

CSV, TSV and JSON lines are read with Python's own readers (no extra needed); parquet with pyarrow.
Keys are the paths as the table writes them (normalized), so quarantine lists and manifests name
the same strings the user wrote.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stoker.data.media import Media
from stoker.data.sources.base import UNLABELLED, Pairs, Source, SourceIndex, stat_signature
from stoker.data.sources.folder_tree import printable
from stoker.data.sources.labels import Label, LabelMap, check_class_count, infer_class_names, is_missing
from stoker.data.sources.split_names import SPLIT_ALIASES, canonical_split

TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_columns(path: Path, fields: Sequence[str], *, optional: Sequence[str] = ()) -> dict[str, list[Any]]:
    """The ``fields`` (and those of ``optional`` that exist) of a table, column by column.

    Raises:
        ValueError: A required column is missing (the message lists the columns), or a malformed line.
    """
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        columns = table.column_names
        _require(columns, fields, path)
        return {name: table.column(name).to_pylist() for name in [*fields, *optional] if name in columns}
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            columns = list(reader.fieldnames or [])
            _require(columns, fields, path)
            wanted = [name for name in [*fields, *optional] if name in columns]
            out: dict[str, list[Any]] = {name: [] for name in wanted}
            for row in reader:
                if None in row:  # more fields than the header
                    raise ValueError(f"{path}, line {reader.line_num}: more fields than the header's {len(columns)}; "
                                     "quote fields that contain the delimiter")
                for name in wanted:
                    out[name].append(row[name])
            return out
    records = _json_records(path)
    columns = sorted({key for record in records for key in record})
    _require(columns, fields, path)
    wanted = [name for name in [*fields, *optional] if name in columns]
    return {name: [record.get(name) for record in records] for name in wanted}


def _json_records(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg})") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}); fix or remove that "
                                 "line") from None
    for number, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}, record {number}: expected a JSON object with the columns, got "
                             f"{type(record).__name__}")
    return records


def _require(columns: Sequence[str], fields: Sequence[str], path: Path) -> None:
    missing = [name for name in fields if name not in columns]
    if missing:
        raise ValueError(f"table {printable(str(path))!r} has no column {missing[0]!r}; its columns are "
                         f"{list(columns)}. Name the columns with path_field=, label_field= (and split_field=)")


class TableSource(Source):
    """Samples are the files a table lists, with the label (and split) of their row.

    Args:
        table: The table file.
        media: What a sample file is.
        path_field: Column of file paths (relative to the table's folder, or absolute).
        label_field: Column of labels.
        split_field: Column of splits; used when the table has it.
        class_names: Fix the classes and their order (default: inferred from the labels).
        multi_label: Rows hold several labels.
    """

    kind = "table"
    local_files = True

    def __init__(self, table: str, media: Media, *, path_field: str = "path", label_field: str = "label",
                 split_field: str = "split", class_names: list[str] | None = None,
                 multi_label: bool = False, labelled: bool = True) -> None:
        super().__init__(os.fspath(table), media, labelled=labelled)
        self.table = Path(table).expanduser()
        if not self.table.is_file():
            raise FileNotFoundError(f"table {printable(str(self.table))!r} does not exist")
        self.base = self.table.parent
        self.path_field, self.label_field, self.split_field = path_field, label_field, split_field
        self.multi_label = multi_label
        self._class_names = list(class_names) if class_names is not None else None

    def _columns(self) -> dict[str, list[Any]]:
        if not self.labelled:
            return read_columns(self.table, [self.path_field])
        return read_columns(self.table, [self.path_field, self.label_field], optional=[self.split_field])

    def known_class_names(self) -> list[str]:
        if self._class_names is None:
            where = f"table {printable(str(self.table))!r}, column {self.label_field!r}"
            names = infer_class_names(self._columns()[self.label_field], multi_label=self.multi_label, where=where)
            check_class_count(names, where=f"table {printable(str(self.table))!r}",
                              found=f"{len(names)} distinct label(s) in column {self.label_field!r}")
            self._class_names = names
        return self._class_names

    def index(self) -> SourceIndex:
        columns = self._columns()
        if not self.labelled:
            keys = sorted({os.path.normpath(str(p)) for p in columns[self.path_field] if not is_missing(p)})
            return SourceIndex(kind=self.kind, location=self.location, class_names=list(self._class_names or []),
                               files={"all": [(key, UNLABELLED) for key in keys]})
        label_map = LabelMap(self.known_class_names(), multi_label=self.multi_label)
        splits = columns.get(self.split_field)
        rows: dict[str, tuple[int, str, list[Label]]] = {}  # key -> (first row, split, labels)
        bad: dict[str, str] = {}
        for row, (path, value) in enumerate(zip(columns[self.path_field], columns[self.label_field])):
            split = self._split_of(splits[row], row) if splits is not None else "all"
            if is_missing(path):
                bad[f"row {row}"] = "missing path"
                continue
            key = os.path.normpath(str(path))
            label, reason = label_map(value)
            if label is None:
                # Named by file and row: the same file may be listed again on a good row, which stays.
                bad[f"{key}, row {row}"] = reason or "bad label"
                continue
            if key in rows:
                first, first_split, labels = rows[key]
                if not self.multi_label:
                    raise ValueError(f"table {printable(str(self.table))!r}: {key!r} is listed on rows {first} and "
                                     f"{row}; list each file once (for several labels per file set multi_label=True)")
                if first_split != split:
                    raise ValueError(f"table {printable(str(self.table))!r}: {key!r} is in split {first_split!r} on "
                                     f"row {first} and {split!r} on row {row}; a file belongs to one split")
                labels.append(label)
            else:
                rows[key] = (row, split, [label])
        files: dict[str, Pairs] = {}
        for key, (_, split, labels) in rows.items():
            merged: Label = tuple(sorted({i for lab in labels for i in lab})) if self.multi_label else labels[0]  # type: ignore[union-attr]
            files.setdefault(split, []).append((key, merged))
        if splits is not None:
            files = {split: files.get(split, []) for split in ("train", "val", "test") if split in files}
        for pairs in files.values():
            pairs.sort()
        note = (f"splits from column {self.split_field!r}" if splits is not None
                else f"no column {self.split_field!r}: one pool, split by fractions")
        return SourceIndex(kind=self.kind, location=self.location, class_names=label_map.class_names,
                           files=files or {"all": []}, bad=bad, notes=[note])

    def _split_of(self, value: Any, row: int) -> str:
        split = canonical_split(str(value)) if not is_missing(value) else None
        if split is None:
            accepted = sorted({name for names in SPLIT_ALIASES.values() for name in names})
            raise ValueError(f"table {printable(str(self.table))!r}, row {row}, column {self.split_field!r}: "
                             f"{value!r} is not a split; expected one of {accepted}")
        return split

    def read_bytes(self, key: str) -> bytes:
        return (self.base / key).read_bytes()

    def local_path(self, key: str) -> Path:
        return self.base / key

    def signature(self, key: str) -> list[Any]:
        return stat_signature(self.base / key)

    def name_of(self, key: str) -> str:
        return printable(str(self.base / key))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path_field": self.path_field, "label_field": self.label_field}
