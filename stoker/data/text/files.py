"""Text sources and local text tables (csv, tsv, json, jsonl, parquet): finding the splits, reading columns, naming
bad input.

A text ``source`` is one of two kinds (:func:`text_source_kind`, ``describe()["source_kind"]``):

* ``"hf"``: a hub dataset (``"glue"`` or ``"hf://glue"``, read by ``datasets.load_dataset``) or a folder
  written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk`` (read by ``datasets.load_from_disk``);
* ``"table"``: local csv/tsv/json/jsonl/parquet/txt files: one file, a folder or a glob.

Splits keep the names their source gives them (:func:`local_data_files` for files, :func:`source_splits` for a
dataset's splits, both through :mod:`stoker.data.sources.split_names`): they are never merged and re-split.

Framework-free and without datasets: pyarrow reads the columns, and when a reader rejects a file,
:func:`diagnose_file` reads it again with Python's ``json``/``csv`` to say which line and column is
at fault (a malformed JSON line, a number where text belongs, a column whose values change type,
a CSV line with too many fields). Rows are 0-based data rows; syntax errors give the 1-based line.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stoker.data.sources.hf import HF_PREFIX, is_saved_dataset
from stoker.data.sources.split_names import canonical_split, group_by_split, split_files

# Extension -> the datasets packaged builder that reads it (.tsv is csv with a tab delimiter).
FILE_BUILDERS: dict[str, str] = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text",
}
SOURCE_KINDS: tuple[str, ...] = ("hf", "table")  # describe()["source_kind"] of the text DataModules


def local_data_files(source: str) -> tuple[str, dict[str, list[str]]] | None:
    """``(builder, {split: files})`` when ``source`` is a local file, folder or glob; ``None`` for a hub name or a
    ``save_to_disk`` folder (datasets reads those itself).

    Splits come from the files' names, as :mod:`stoker.data.sources.split_names` reads them for every source:
    ``train``, ``validation``/``valid``/``val``/``dev`` and ``test``, alone or as Hugging Face's shards
    (``train-00000-of-00004.parquet``), in the folder, under its ``data/`` folder or in ``<split>/`` folders.
    Files that name no split are the training data: beside validation or test files, or alone as one pool
    (returned as ``"train"``; the DataModule carves the missing held-out splits out of it).

    Raises:
        ValueError: No readable file, files of several formats (csv and tsv count as two), or unnamed files beside
            a file named ``train``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if is_saved_dataset(path):
            return None
        grouped = split_files(path, FILE_BUILDERS)
    elif any(ch in source for ch in "*?["):
        grouped = group_by_split([Path(f) for f in glob.glob(os.path.expanduser(source)) if Path(f).is_file()],
                                 where=source)
    elif path.is_file() or path.suffix.lower() in FILE_BUILDERS:
        grouped = group_by_split([path], where=source) if path.is_file() else {}
    else:
        return None
    files = [str(f) for group in grouped.values() for f in group]
    if not files:
        raise ValueError(
            f"source {source!r} names no readable file; expected a path or glob of {sorted(FILE_BUILDERS)}"
        )
    formats = {".tsv" if f.lower().endswith(".tsv") else FILE_BUILDERS.get(Path(f).suffix.lower(), "?") for f in files}
    if len(formats) != 1 or "?" in formats:
        raise ValueError(
            f"source {source!r}: files must share one format of {sorted(FILE_BUILDERS)}, got {files[:5]}"
        )
    # One pool of unnamed files is datasets' "train"; the DataModule carves validation out of it.
    splits = {("train" if split == "all" else split): [str(f) for f in group] for split, group in grouped.items()}
    return FILE_BUILDERS[Path(files[0]).suffix.lower()], splits


def text_source_kind(source: str) -> str:
    """``"hf"`` for a hub name or a ``save_to_disk`` folder, ``"table"`` for local files (see the module).

    Cheap (a few ``stat`` calls): a file a demo writes later counts as the table it will be.
    """
    path = Path(source).expanduser()
    if source.startswith(HF_PREFIX) or (path.is_dir() and is_saved_dataset(path)):
        return "hf"
    if path.is_dir() or path.is_file() or path.suffix.lower() in FILE_BUILDERS or any(c in source for c in "*?["):
        return "table"
    return "hf"


def saved_dataset(source: str) -> Path | None:
    """The folder when ``source`` was written by ``save_to_disk``, else ``None``."""
    path = Path(source).expanduser()
    return path if not source.startswith(HF_PREFIX) and path.is_dir() and is_saved_dataset(path) else None


def source_splits(names: Sequence[str], *, source: str) -> tuple[dict[str, str], list[str]]:
    """``({the source's split name: ours}, [names left out])`` for a dataset's splits.

    Names are read by :func:`~stoker.data.sources.split_names.canonical_split` (``validation``, ``dev`` ->
    ``val``...). One split that is not a validation or test split is the pool (our ``train``, held-out
    splits are carved out of it). Other splits that are none of train/validation/test (``unsupervised``,
    ``validation_matched``) are left out, never trained on: the caller says so.

    Raises:
        ValueError: Two splits that mean the same one, or no training split.
    """
    if len(names) == 1 and canonical_split(names[0]) in (None, "train"):
        return {names[0]: "train"}, []
    ours: dict[str, str] = {}
    left_out: list[str] = []
    for name in names:
        split = canonical_split(name)
        if split is None:
            left_out.append(name)
        elif split in ours.values():
            twin = next(n for n, s in ours.items() if s == split)
            raise ValueError(f"source {source!r} has two splits that mean {split!r}: {twin!r} and {name!r}; keep one")
        else:
            ours[name] = split
    if "train" not in ours.values():
        raise ValueError(f"source {source!r} has no training split; its splits are {list(names)}. Name one 'train'")
    return ours, left_out


def split_origin(given: Sequence[str], carved: dict[str, float]) -> str:
    """The one line that says where the splits came from: the source's names, or carved out of train.

    ``split_origin(["train", "val"], {})`` is ``"splits as the source names them: train, val"``;
    ``split_origin(["train"], {"val": 0.1})`` is ``"val carved out of train (val_fraction=0.1)"``.
    """
    parts = [f"splits as the source names them: {', '.join(given)}"] if list(given) != ["train"] else []
    parts += [f"{split} carved out of train ({split}_fraction={fraction:g})" for split, fraction in carved.items()]
    return "; ".join(parts) or "one training split: the source names no validation or test split, and none is carved"


def delimiter(path: str) -> str:
    """The field delimiter of a csv/tsv file."""
    return "\t" if path.lower().endswith(".tsv") else ","


def check_columns(columns: Sequence[str], fields: Sequence[str], *, dataset: str, split: str | None) -> None:
    """Raise ``ValueError`` naming the available columns when a field is missing."""
    missing = [f for f in fields if f not in columns]
    if missing:
        where = f"dataset {dataset!r} ({split} split)" if split else repr(dataset)
        raise ValueError(f"{where} has no column {missing[0]!r}; available columns: {list(columns)}. Set "
                         "text_field/label_field to one of them")


# ----------------------------------------------------------------- values and their types
def is_missing(value: Any) -> bool:
    """``None``, or the NaN that pandas puts in empty CSV cells."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def normalize_label(value: Any) -> Any:
    """A label as the mapping sees it: ``None`` when missing, integral floats as ``int`` (pandas reads an int
    column with gaps as float), anything else unchanged."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def kind_of(value: Any) -> str:
    """``"string"``, ``"number"`` (bools count as numbers) or the type's name."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def wrong_type(where: str, field: str, value: Any, expected: str) -> str:
    """The message for a value of the wrong type: where, which column, what arrived, what to do."""
    return (f"{where}, field {field!r}: expected {expected}, got {kind_of(value)} {value!r:.80}. Fix that row, or "
            "point text_field/label_field at the right column")


def _records(path: str) -> Iterator[tuple[str, Any]]:
    """``(location, record)`` of a JSON lines file (or a JSON array); a syntax error names its line."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(1024).lstrip()[:1]
        handle.seek(0)
        if head == "[":
            try:
                records = json.load(handle)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {err.lineno}: not valid JSON ({err.msg}); fix that line") from None
            yield from ((f"{path}, row {i}", r) for i, r in enumerate(records))
            return
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}, line {number}", json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg} at column {err.colno}); fix or "
                                 "remove that line") from None


def diagnose_file(builder: str, path: str, fields: Sequence[str], text_fields: Sequence[str] | None = None) -> None:
    """Find why a reader rejected ``path``; raise ``ValueError`` naming the line and column (return if nothing found).

    JSON: a line that is not JSON or not an object, text (``text_fields``, default all of ``fields`` but the
    last) that is not a string, a column whose values change type (numbers then strings). CSV/TSV: a line
    whose field count differs from the header's.
    """
    text_fields = list(fields[:-1]) if text_fields is None else list(text_fields)
    if builder == "json":
        first: dict[str, tuple[str, str]] = {}
        for where, record in _records(path):
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object with the columns, got {kind_of(record)}")
            for field in text_fields:
                if record.get(field) is not None and not isinstance(record[field], str):
                    raise ValueError(wrong_type(where, field, record[field], "text (a string)"))
            for field, value in record.items():  # any column can stop pyarrow, not only the ones read
                if value is None:
                    continue
                kind, seen = first.setdefault(field, (kind_of(value), where))
                if kind != kind_of(value):
                    raise ValueError(f"{where}, field {field!r}: a {kind_of(value)} ({value!r:.40}) where {seen} has a "
                                     f"{kind}; give the whole column one type (e.g. every label as a string)")
    elif builder == "csv":
        sep = delimiter(path)
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle, delimiter=sep)
            header = next(reader, [])
            for row in reader:
                if row and len(row) != len(header):
                    raise ValueError(f"{path}, line {reader.line_num}: {len(row)} fields where the header has "
                                     f"{len(header)}; quote fields that contain the delimiter {sep!r}")


def read_local_table(builder: str, path: str, fields: Sequence[str], text_fields: Sequence[str] | None = None) -> Any:
    """The columns ``fields`` of one local file as a pyarrow Table (no datasets conversion).

    Raises:
        ValueError: A missing column (the message lists the columns), a plain text file, or a file the reader
            rejects (named by :func:`diagnose_file`).
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if builder == "text":
        raise ValueError(f"{path}: plain text files have no label column {fields[-1]!r}; use csv, json or parquet")
    try:
        if builder == "csv":
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter(path)),
                                  convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
        elif builder == "json":
            with open(path, encoding="utf-8") as handle:
                is_array = handle.read(1024).lstrip()[:1] == "["
            table = pa.Table.from_pylist([r for _, r in _records(path)]) if is_array else pjson.read_json(path)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        diagnose_file(builder, path, fields, text_fields)
        raise ValueError(f"{path}: the {builder} reader failed: {err}") from err
    check_columns(table.column_names, fields, dataset=path, split=None)
    return table.select(list(fields))


def scan_local_rows(builder: str, files: Sequence[str], text_fields: Sequence[str], label_field: str,
                    ) -> dict[str, Any]:
    """What a stream of local files will skip, counted with pyarrow before training starts (see :func:`scan_tables`).

    Raises:
        ValueError: As :func:`scan_tables`, or a file the reader rejects.
    """
    fields = [*text_fields, label_field]
    return scan_tables(((path, read_local_table(builder, path, fields, text_fields)) for path in files),
                       text_fields, label_field)


def scan_tables(tables: Iterable[tuple[str, Any]], text_fields: Sequence[str], label_field: str) -> dict[str, Any]:
    """What a stream of ``(where, pyarrow Table)`` parts (files, or a saved dataset's splits) will skip.

    Returns:
        ``{"rows", "bad", "first": ["<where>, row <i> (<problem>)", ...], "labels": distinct label values}``.

    Raises:
        ValueError: A text column that does not hold strings (naming its first such row), or labels that mix
            numbers and strings across parts.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {"rows": 0, "bad": 0, "first": [], "labels": set()}
    kinds: dict[str, str] = {}
    for path, table in tables:
        masks = []
        for field in text_fields:
            column = table.column(field)
            if pa.types.is_null(column.type):  # every value missing
                masks.append(("missing text", pc.is_null(column)))
                continue
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                values = column.to_pylist()
                row = next(i for i, v in enumerate(values) if v is not None)
                raise ValueError(wrong_type(f"{path}, row {row}", field, values[row], "text (a string)"))
            masks += [("missing text", pc.is_null(column)),
                      ("empty text", pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False))]
        label = table.column(label_field)
        missing = pc.is_null(label, nan_is_null=True)
        if pa.types.is_integer(label.type) or pa.types.is_floating(label.type):
            missing = pc.or_(missing, pc.fill_null(pc.equal(label, -1), False))
        masks.append(("missing label", missing))
        bad = masks[0][1]
        for _, mask in masks[1:]:
            bad = pc.or_(bad, mask)
        rows = pc.indices_nonzero(bad).to_pylist()
        for row in rows[: max(0, 10 - len(out["first"]))]:
            problem = next(name for name, mask in masks if mask[row].as_py())
            out["first"].append(f"{path}, row {row} ({problem})")
        values = {normalize_label(v) for v in pc.unique(label).to_pylist()} - {None, -1}
        for value in values:
            kinds.setdefault(kind_of(value), path)
        out["labels"] |= values
        out["rows"] += table.num_rows
        out["bad"] += len(rows)
    if len(kinds) > 1:
        raise ValueError(f"the label column {label_field!r} mixes types: " + "; ".join(
            f"{kind}s in {where}" for kind, where in kinds.items()) + ". Give every label one type")
    return out


def count_local_rows(builder: str, files: Sequence[str], field: str) -> dict[str, Any]:
    """Rows of a column of local files, and (for a text column) the missing or empty ones (see :func:`count_rows`).

    Raises:
        ValueError: A missing column or a file the reader rejects.
    """
    def columns() -> Iterator[tuple[str, Any]]:
        for path in files:
            if builder == "text":  # one row per line, as datasets' text builder reads it
                with open(path, encoding="utf-8") as handle:
                    yield path, handle.read().splitlines()
            else:
                yield path, read_local_table(builder, path, [field], []).column(0)

    return count_rows(columns())


def count_rows(columns: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Rows of ``(where, column)`` parts (a pyarrow column, or a file's lines), and the missing or empty texts.

    Returns:
        ``{"rows", "bad", "first": ["<where>, row <i> (<problem>)", ...]}``; ``bad`` counts only text columns
        (a column of conversations is checked row by row as it streams).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, Any] = {"rows": 0, "bad": 0, "first": []}
    for path, column in columns:
        if isinstance(column, list):
            empty = [i for i, line in enumerate(column) if not line.strip()]
        else:
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                out["rows"] += len(column)
                continue
            missing = pc.or_(pc.is_null(column), pc.fill_null(pc.equal(pc.utf8_trim_whitespace(column), ""), False))
            empty = pc.indices_nonzero(missing).to_pylist()
        out["rows"] += len(column)
        out["bad"] += len(empty)
        out["first"] += [f"{path}, row {row} (empty text)" for row in empty[: max(0, 10 - len(out["first"]))]]
    return out
