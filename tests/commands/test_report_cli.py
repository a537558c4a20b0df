"""`stoker report` composes recipes like `stoker fit`: quickstart + MixUp gives the MixUp/CutMix rows."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from stoker.cli import main as stoker_main
from stoker.commands.report import main as report_main
from tests.conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
MIXUP = REPO / "recipes" / "quickstart_mixup.yaml"


def test_report_of_quickstart_plus_mixup_has_the_mixing_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "mix"
    argv = ["report", "--config", str(QUICKSTART), "--config", str(MIXUP), f"--data.init_args.root={tmp_path / 'd'}",
            "--data.init_args.num_workers=0", "--out", str(out), "--batches", "2"]
    monkeypatch.setattr(sys, "argv", ["stoker", *argv])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert stoker_main(argv) == 0
    assert not [w for w in caught if "args parameter" in str(w.message)]
    report = json.loads((out / "data_pipeline.json").read_text())
    rows = {row["augmentation"]: row for row in report["augmentations"]}
    assert {"MixUp", "CutMix"} <= set(rows) and rows["MixUp"]["source"] == "MixUpCutMix"
    assert report["loading"]["num_workers"] == 0  # the dotted override reached the DataModule
    assert report["files"]["source"] == str(tmp_path / "d")
    assert report["usage"]["commands"][0] == (f"stoker fit --config {QUICKSTART} --config {MIXUP} "
                                              f"--data.init_args.root={tmp_path / 'd'} --data.init_args.num_workers=0")
    assert "MixUp" in (out / "data_pipeline.md").read_text()


def test_report_print_config_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report_main(["--config", str(QUICKSTART), "--config", str(MIXUP), "--out", "x", "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    callbacks = [c["class_path"] for c in printed["trainer"]["callbacks"]]
    assert "stoker.callbacks.MixUpCutMix" in callbacks and printed["out"] == "x" and printed["batches"] == 20
    assert report_main(["--config", str(QUICKSTART), "--batches=0"]) == 2
    assert "--batches must be a positive integer, got 0" in capsys.readouterr().err
    assert report_main(["--config", str(QUICKSTART), "--no-such-option"]) == 2
    assert "no-such-option" in capsys.readouterr().err
