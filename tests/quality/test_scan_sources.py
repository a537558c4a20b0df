"""`stoker scan SOURCE` reads every source form through the DataModules' readers, keyed as they key samples.

A leaked copy planted in the validation split is found in a table, a saved and a parquet Hugging Face
dataset and WebDataset tars, named by its key, and the quarantine list written from it is obeyed by
an ImageDataModule on the same source. Multi-label data gets its label pairs and empty classes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from stoker.commands.scan import main as scan_main
from stoker.datamodules import ImageDataModule
from stoker.quality.media_source import SourceOptions
from stoker.quality.scan import datamodule_scan_args, scan_dataset, scan_markdown
from tests.sources_fixtures import CLASSES, WRITERS, Record, photo_records, write_hub_parquet, write_table

FORMS = {"table": "table", "hf_saved": "hf", "hf_parquet": "hf", "webdataset": "webdataset"}


def leaky_records() -> list[Record]:
    """The photo records with the first validation cat a byte copy of the first training cat."""
    records = photo_records()
    train = next(r for r in records if r.split == "train" and r.label == "cat")
    return [Record(r.name, train.data, r.label, r.split) if r.name == "val_cat_000" else r for r in records]


def multi_label_parquet(root: Path) -> tuple[Path, list[list[str]]]:
    """One parquet file (no splits) of 30 photos whose ``label`` is a list of names (every third also a bird),
    and row 30 a copy of row 1 with another label set (a conflict); returns the file and the label lists."""
    import datasets

    records = photo_records()
    labels = [sorted({r.label, "bird"}) if i % 3 == 0 else [r.label] for i, r in enumerate(records)]
    images = [{"bytes": r.data, "path": None} for r in records] + [{"bytes": records[1].data, "path": None}]
    labels.append(["dog"] if labels[1] != ["dog"] else ["cat"])
    table = datasets.Dataset.from_dict({"image": images, "label": labels}).cast_column("image", datasets.Image())
    root.mkdir(parents=True, exist_ok=True)
    table.to_parquet(str(root / "photos.parquet"))
    return root / "photos.parquet", labels


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("leaky")
    records = leaky_records()
    return {form: WRITERS[form](base / form, records) for form in FORMS}


def _source(path: Path) -> str:
    return str(path / "labels.csv") if (path / "labels.csv").is_file() else str(path)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_leak_is_named_by_its_key_and_the_quarantine_is_obeyed(leaky, tmp_path, form) -> None:
    source = _source(leaky[form])
    names = ["--class-names", ",".join(CLASSES)] if form == "webdataset" else []
    out, quarantine = tmp_path / "scan.json", tmp_path / "q.json"
    assert scan_main([source, *names, "--json", str(out), "--quarantine", str(quarantine), "--no-progress",
                      "--fail-on", "leakage", "--cache-dir", str(tmp_path / "cache")]) == 1
    result = json.loads(out.read_text())
    assert result["source_kind"] == FORMS[form] and result["kind"] == "image"
    assert result["splits"] == {"test": 6, "train": 18, "val": 6}
    assert result["class_counts"]["total"] == {name: 10 for name in CLASSES}
    [leak] = result["leakage"]
    assert leak["match"] == "exact"
    dm = ImageDataModule(source, batch_size=4, num_workers=0, image_size=32, quarantine=str(quarantine),
                         cache_dir=str(tmp_path / "cache"), **({"class_names": list(CLASSES)} if names else {}))
    dm.setup("fit")
    assert dm.quarantined == [leak["other"]], "the scan names samples with the DataModule's keys"
    assert leak["other"] not in {key for key, _ in dm.splits["val"]} and len(dm.splits["val"]) == 5
    assert leak["train"] in {key for key, _ in dm.splits["train"]}


def test_a_hub_name_with_subset_and_revision_is_scanned_with_its_splits(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    repo = write_hub_parquet(tmp_path / "repo", leaky_records())
    out, result = tmp_path / "scan.md", tmp_path / "scan.json"
    assert scan_main([f"hf://{repo}", "--subset", "default", "--revision", "main", "--markdown", str(out),
                      "--json", str(result), "--no-progress", "--cache-dir", str(tmp_path / "cache")]) == 0
    reader = json.loads(result.read_text())["reader"]
    assert (reader["source"], reader["subset"], reader["revision"]) == (f"hf://{repo}", "default", "main")
    text = out.read_text()
    assert text.startswith(f"# Data scan: `hf://{repo}` (hf)")
    assert "train 18" in text and "val 6" in text and "### Leakage: 1" in text
    assert "`train#6` (train) = `validation#2` (val, exact)" in text, "keys are rows of the hub splits"


def test_multi_label_scan_reports_label_pairs_and_classes_without_positives(tmp_path) -> None:
    table, labels = multi_label_parquet(tmp_path / "ml")
    options = SourceOptions(multi_label=True, class_names=[*CLASSES, "fish"])
    result = scan_dataset(str(table), options=options, val_fraction=0.2, num_workers=2)
    assert result["multi_label"] and result["source_kind"] == "hf"
    assert result["class_counts"]["total"] == dict(Counter(name for names in labels for name in names))
    pairs = {tuple(p["classes"]): p["count"] for p in result["label_cooccurrence"]}
    assert pairs == dict(Counter(tuple(names) for names in labels if len(names) == 2))
    assert set(pairs) == {("bird", "cat"), ("bird", "dog")}
    assert result["classes_without_positives"]["total"] == ["fish"]
    assert result["labels_per_sample"]["counts"] == {str(n): c for n, c in sorted(Counter(map(len, labels)).items())}
    [conflict] = result["label_conflicts"]
    assert sorted(m["path"] for m in conflict) == ["train#1", "train#30"]
    assert all(isinstance(m["label"], tuple) for m in conflict), "labels are sets of class names"
    assert result["splits"] == {"train": 25, "val": 6}, "one pool for label sets, as the DataModules split"
    markdown = scan_markdown(json.loads(json.dumps(result)))
    assert "## Label sets" in markdown and f"| bird + dog | {pairs['bird', 'dog']} |" in markdown
    assert "Classes with no positive in total: fish" in markdown


def test_the_recipe_form_scans_a_multi_label_module_through_its_reader(tmp_path) -> None:
    table, labels = multi_label_parquet(tmp_path / "ml")
    dm = ImageDataModule(str(table), multi_label=True, batch_size=4, num_workers=0, image_size=32,
                         val_fraction=0.2, max_bad_fraction=0.1)
    dm.setup("fit")
    args = datamodule_scan_args(dm)
    assert args is not None and args["reader"] is dm.reader and args["options"].multi_label
    result = scan_dataset(**args, num_workers=2)
    assert result["split_source"] == "DataModule"
    assert result["splits"] == {split: len(pairs) for split, pairs in dm.splits.items() if pairs}
    kept = {key for pairs in dm.splits.values() for key, _ in pairs}
    expected = Counter(tuple(names) for row, names in enumerate(labels) if len(names) == 2 and f"train#{row}" in kept)
    assert {tuple(p["classes"]): p["count"] for p in result["label_cooccurrence"]} == dict(expected)


def test_a_single_class_source_is_refused_as_the_datamodules_refuse_it(tmp_path, capsys) -> None:
    table = write_table(tmp_path, [r for r in photo_records() if r.label == "cat"])
    assert scan_main([str(table), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "single class 'cat'" in err and "to tell apart" in err


def test_audio_stored_in_a_hugging_face_dataset_is_decoded_from_its_bytes(tmp_path) -> None:
    pytest.importorskip("soundfile")
    from tests.sources_fixtures import tone_records, write_saved

    clips = tone_records()
    broken = Record(clips[0].name, clips[0].data[:40], clips[0].label, clips[0].split, ".wav")  # a header, no data
    saved = write_saved(tmp_path / "saved", [broken, *clips[1:]], field="audio")
    result = scan_dataset(str(saved), num_workers=2)
    assert result["kind"] == "audio" and result["source_kind"] == "hf"
    assert result["splits"] == {"train": 8, "val": 4}
    [corrupt] = result["corrupt"]
    assert corrupt["path"] == "train#0" and "No 'data' chunk" in corrupt["reason"]
    assert "stoker-scan-" not in corrupt["reason"] and str(saved) in corrupt["reason"], "named as the sample"
    assert result["missing"] == [] and result["outliers"] == []
