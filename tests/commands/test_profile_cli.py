"""`stoker profile` on the quickstart: speed of light, the tuner's curve, the override and a YAML that composes."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
import yaml

from stoker.cli import main as stoker_main
from tests.conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def test_profile_prints_the_curve_and_writes_a_composable_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    tuned = tmp_path / "tuned.yaml"
    root = f"--data.init_args.root={tmp_path / 'digits'}"
    argv = ["profile", "--config", str(QUICKSTART), root, f"--trainer.default_root_dir={tmp_path}",
            "--batches", "4", "--replay_steps", "3", "--warmup_steps", "2", "--write", str(tuned)]
    monkeypatch.setattr(sys, "argv", ["stoker", *argv])
    assert stoker_main(argv) == 0
    out = capsys.readouterr().out
    assert "MiB/worker" in out and "<- recommended" in out
    assert "the model consumes" in out  # the speed of light was measured and is the tuner's target
    recommended = [line for line in out.splitlines() if line.startswith("recommended: num_workers=")]
    assert recommended, out
    workers = int(recommended[0].split("num_workers=")[1].split()[0].rstrip(","))
    assert f"apply with: --data.init_args.num_workers={workers}" in out
    written = yaml.safe_load(tuned.read_text())
    assert written["data"]["init_args"]["num_workers"] == workers
    # DigitsDataModule takes no prefetch_factor; its map-style dataset is measured with loader threads too.
    assert set(written["data"]["init_args"]) == ({"num_workers", "worker_type"} if workers else {"num_workers"})
    assert any(line.split()[1:2] == ["thread"] for line in out.splitlines() if line[:7].strip().isdigit()), out

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit):
        stoker_main(["fit", "--config", str(QUICKSTART), "--config", str(tuned), root, "--print_config"])
    assert yaml.safe_load(printed.getvalue())["data"]["init_args"]["num_workers"] == workers


def test_profile_reports_a_bad_recipe_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    code = stoker_main(["profile", "--config", str(QUICKSTART), f"--data.init_args.root={tmp_path / 'digits'}",
                        "--data.init_args.batch_size=100000", f"--trainer.default_root_dir={tmp_path}"])
    assert code == 2
    assert "stoker profile: error:" in capsys.readouterr().err
