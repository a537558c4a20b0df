"""`stoker scan` takes what `stoker fit` takes (repeated --config, dotted overrides, --print_config); PATH works."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from stoker.cli import main as stoker_main
from stoker.commands.scan import main as scan_main


@pytest.fixture
def recipes(image_tree, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A base recipe on a clean tree, a second config on top, and another tree with a val copy of a train image."""
    clean = image_tree({"cat": 3, "dog": 3}, root=tmp_path / "clean", split="train")
    leaky = image_tree({"cat": 4, "dog": 4}, root=tmp_path / "leaky", split="train")
    image_tree({"cat": 2, "dog": 2}, root=leaky, split="val", seed=1)
    (leaky / "val/dog/copy.jpg").write_bytes((leaky / "train/dog/dog_0002.jpg").read_bytes())
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "trainer": {"accelerator": "cpu", "logger": False},
        "model": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
        "data": {"class_path": "stoker.datamodules.ImageFolderDataModule",
                 "init_args": {"root": str(clean), "num_workers": 0, "image_size": 16}},
    }))
    extra = tmp_path / "extra.yaml"
    extra.write_text(yaml.safe_dump({"data": {"init_args": {"image_size": 24, "batch_size": 2}}}))
    return base, extra, leaky


def test_scan_composes_configs_and_overrides_without_the_args_warning(
        recipes: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, extra, leaky = recipes
    out = tmp_path / "scan.json"
    argv = ["scan", "--config", str(base), "--config", str(extra), f"--data.init_args.root={leaky}",
            "--json", str(out), "--no-progress", "--fail-on", "leakage"]
    monkeypatch.setattr(sys, "argv", ["stoker", *argv])  # what the console script sees
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the pyproject filter would hide LightningCLI's warning
        assert stoker_main(argv) == 1
    assert not [w for w in caught if "args parameter" in str(w.message)]
    result = json.loads(out.read_text())
    assert result["root"] == str(leaky) and result["split_source"] == "DataModule"
    assert [(p["train"], p["other"]) for p in result["leakage"]] == [("train/dog/dog_0002.jpg", "val/dog/copy.jpg")]
    assert list(result["class_counts"]) == ["train", "val", "total"]


def test_scan_print_config_shows_the_merged_recipe_and_its_options(
        recipes: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    base, extra, leaky = recipes
    assert scan_main(["--config", str(base), "--config", str(extra), f"--data.init_args.root={leaky}",
                      "--near-threshold", "6", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["init_args"]["root"] == str(leaky)
    assert printed["data"]["init_args"]["image_size"] == 24 and printed["data"]["init_args"]["batch_size"] == 2
    assert printed["near_threshold"] == 6 and printed["fail_on"] == ""


def test_scan_path_form_and_bad_arguments(recipes: tuple[Path, Path, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    base, _, leaky = recipes
    assert scan_main([str(leaky), "--no-progress", "--fail-on", "leakage"]) == 1
    assert "failing on leakage" in capsys.readouterr().err
    assert scan_main(["--config", str(base), "--data.init_args.no_such_option=1"]) == 2
    assert "no_such_option" in capsys.readouterr().err
    assert scan_main(["--config", str(base.with_name("missing.yaml"))]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_recipe_form_scans_a_hugging_face_source_through_the_module_reader(tmp_path: Path) -> None:
    from tests.quality.test_scan_sources import leaky_records
    from tests.sources_fixtures import write_saved

    saved = write_saved(tmp_path / "saved", leaky_records())
    recipe = tmp_path / "hf.yaml"
    recipe.write_text(yaml.safe_dump({
        "trainer": {"accelerator": "cpu", "logger": False},
        "model": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
        "data": {"class_path": "stoker.datamodules.ImageDataModule",
                 "init_args": {"source": str(saved), "num_workers": 0, "image_size": 16}},
    }))
    out, quarantine = tmp_path / "scan.json", tmp_path / "q.json"
    assert scan_main(["--config", str(recipe), "--json", str(out), "--quarantine", str(quarantine),
                      "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["source_kind"] == "hf" and result["split_source"] == "DataModule"
    assert result["splits"] == {"test": 6, "train": 18, "val": 6}
    assert [(p["train"], p["other"]) for p in result["leakage"]] == [("train#6", "validation#2")]
    assert json.loads(quarantine.read_text())["quarantine"] == [
        {"path": "validation#2", "reason": "leakage: same content as train#6"}]
