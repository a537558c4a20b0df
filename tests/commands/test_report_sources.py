"""`stoker report` of a recipe whose DataModule reads a multi-label Hugging Face parquet file: its source, label
sets and scan, not a class-folder root with integer labels."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import yaml

from stoker.commands.report import main as report_main
from tests.quality.test_scan_sources import multi_label_parquet


def test_a_multi_label_hugging_face_source_reports_its_label_sets(tmp_path: Path) -> None:
    table, labels = multi_label_parquet(tmp_path / "ml")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False},
        "model": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
        "data": {"class_path": "stoker.datamodules.ImageDataModule",
                 "init_args": {"source": str(table), "multi_label": True, "class_names": ["bird", "cat", "dog",
                                                                                          "fish"],
                               "batch_size": 4, "num_workers": 0, "image_size": 24, "val_fraction": 0.2,
                               "persistent_workers": False}},
    }))
    out = tmp_path / "report"
    assert report_main(["--config", str(recipe), "--out", str(out), "--batches", "2"]) == 0
    report = json.loads((out / "data_pipeline.json").read_text())
    files = report["files"]
    assert files["source"] == str(table) and files["source_kind"] == "hf"
    assert "extensions" not in files, "rows of a table have no file extension"
    assert set(files["examples"]) == {"bird", "cat", "dog"} and files["examples"]["bird"][0].startswith("train#")
    positives = Counter(name for names in labels for name in names)
    distribution = report["dataset_statistics"]["class_distribution"]
    assert {name: sum(split.get(name, 0) for split in distribution.values()) for name in positives} == positives
    scan = report["quality"]["scan"]
    assert report["quality"]["scanned"] and scan["multi_label"]
    assert scan["classes_without_positives"]["train"] == ["fish"]
    assert any("no positive training sample (fish)" in rec for rec in report["quality"]["recommendations"])
    assert f"- Source: `{table}` (hf)" in (out / "data_pipeline.md").read_text()
