"""Malformed text input fails before training with the file, the row or line, and the column named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stoker.data.text.files import diagnose_file, scan_local_rows
from tests.datamodules.test_text_datamodule import make, ready, rows, write_csv, write_jsonl


def good(n: int = 12) -> list[dict]:
    return [{"text": r["text"], "label": r["label"]} for r in rows(n)]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("value, kind", [(5, "number 5"), ({"title": "x"}, "dict {'title': 'x'}")])
def test_text_that_is_not_a_string_names_file_row_and_field(tmp_path: Path, streaming: bool, value: object,
                                                             kind: str) -> None:
    records = good()
    records[7]["text"] = value
    path = write_jsonl(tmp_path / "data.jsonl", records)
    dm = make(tmp_path, path, streaming=streaming, **({} if streaming else {"val_fraction": 0.0}))
    # Met when the classes are read (pyarrow reads every column of a JSON file), so before tokenizing.
    with pytest.raises(ValueError, match=rf"data.jsonl, line 8, field 'text': expected text \(a string\), got "
                                         rf"{kind}"):
        ready(dm)


def test_a_numeric_text_column_names_its_first_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "numbers.csv", [{"text": i * 7, "label": "a" if i % 2 else "b"} for i in range(10)])
    with pytest.raises(ValueError, match=r"numbers.csv, row 0, field 'text': expected text \(a string\), got number 0"):
        ready(make(tmp_path, path, val_fraction=0.0))
    with pytest.raises(ValueError, match=r"numbers.csv, row 0, field 'text'"):
        ready(make(tmp_path, path, streaming=True))


def test_labels_mixing_numbers_and_strings_name_both(tmp_path: Path) -> None:
    records = good()
    for i, record in enumerate(records):
        record["label"] = i % 2 if i < 5 else ("pos" if i % 2 else "neg")
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    with pytest.raises(ValueError, match=r"mixed.jsonl, line 6, field 'label': a string \('pos'\) where "
                                         r".*mixed.jsonl, line 1 has a number; give the whole column one type"):
        _ = make(tmp_path, path).num_classes  # found when the classes are first read, before any tokenizing
    write_jsonl(tmp_path / "parts" / "a.jsonl", good()[:6])
    write_jsonl(tmp_path / "parts" / "b.jsonl", [{**r, "label": i} for i, r in enumerate(good()[6:])])
    with pytest.raises(ValueError, match=r"the label column 'label' mixes types: a string at .*a.jsonl, row 0; "
                                         r"a number at .*b.jsonl, row 0"):
        _ = make(tmp_path, tmp_path / "parts").num_classes


def test_a_malformed_json_line_is_named(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in good()]
    lines[4] = lines[4][:-1]  # the closing brace is missing
    path = write_jsonl(tmp_path / "broken.jsonl", lines)
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"broken.jsonl, line 5: not valid JSON \(.*\); fix or remove that line"):
            ready(make(tmp_path, path, streaming=streaming))


def test_a_csv_line_with_too_many_fields_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "wide.csv", good())
    lines = path.read_text().splitlines()
    lines[3] = "an unquoted text, with a comma,pos"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"wide.csv, line 4: 3 fields where the header has 2; quote fields that "
                                         r"contain the delimiter ','"):
        ready(make(tmp_path, path))


def test_json_arrays_and_the_diagnosis_of_clean_files(tmp_path: Path) -> None:
    array = tmp_path / "array.json"
    array.write_text(json.dumps(good(20)))
    dm = ready(make(tmp_path, array, val_fraction=0.0))
    assert len(dm.datasets["train"]) == 20
    assert diagnose_file("json", str(array), ["text", "label"]) is None, "nothing wrong: the caller raises its own"
    scan = scan_local_rows("json", [str(array)], ["text"], "label")
    assert scan["rows"] == 20 and scan["bad"] == 0 and scan["labels"] == {"neg", "pos"}


def test_plain_text_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("one line\nanother line\n")
    with pytest.raises(ValueError, match="plain text files have no label column 'label'; use csv, json or parquet"):
        _ = make(tmp_path, tmp_path / "notes.txt").num_classes
