"""Every fit writes a run summary into its log directory; ``stoker compare`` says what changed and by how much.

The paced runs sleep their costs on a virtual clock that the monitor reads, so the compared figures are exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from stoker.callbacks import StarvationMonitor
from stoker.commands import compare
from stoker.profiling.run_summary import SUMMARY_NAME, compare_runs, format_comparison, read_run_summary
from tests.scripts.monitor_harness import VirtualClock, run_paced


def _run(folder: Path, delay_s: float, clock: VirtualClock) -> Path:
    monitor = StarvationMonitor(print_summary=False)
    trainer = run_paced(delay_s, 0.01, num_batches=8, callbacks=[monitor], logger=CSVLogger(folder, name="run"),
                        clock=clock)
    assert monitor.summary_path is not None
    path = Path(monitor.summary_path)
    assert path.parent == Path(trainer.log_dir) and path.name == SUMMARY_NAME
    return path


def test_a_fit_writes_its_summary_and_two_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  virtual_clock: VirtualClock) -> None:
    slow = _run(tmp_path / "slow", 0.03, virtual_clock)
    fast = _run(tmp_path / "fast", 0.0, virtual_clock)
    summary = read_run_summary(tmp_path / "slow")  # a folder: the summary below it
    assert summary == json.loads(slow.read_text())
    assert {"torch", "lightning", "python"} <= set(summary["versions"])
    assert summary["hardware"]["world_size"] == 1 and summary["loader"]["num_workers"] == 0
    figures = summary["figures"]
    assert figures["verdict"] == "input-bound" and figures["steady_steps"] == 7
    assert figures["fetch_ms"] == pytest.approx(30.0)
    assert len(figures["per_rank"]) == 1 and len(figures["epoch_startup_s"]) == 1

    result = compare_runs(summary, read_run_summary(fast))
    by_name = {name: (left, right, ratio, better) for name, left, right, ratio, better in result["figures"]}
    assert by_name["fetch_ms"] == (pytest.approx(30.0), pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9),
                                   True)  # the wait is gone
    # 4 samples per 40 ms step, then per 10 ms step: 4x the rate.
    assert by_name["samples_per_s"] == (pytest.approx(100.0), pytest.approx(400.0), pytest.approx(4.0), True)
    assert by_name["starvation"] == (pytest.approx(0.75), pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9),
                                     True)

    changed = json.loads(fast.read_text())
    changed["loader"]["num_workers"] = 4
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(changed))
    assert ("loader.num_workers", 0, 4) in compare_runs(summary, changed)["settings"]
    assert compare.main([str(slow), str(edited)]) == 0
    out = capsys.readouterr().out
    assert "loader.num_workers: 0 -> 4" in out and "fetch_ms:" in out and "better" in out
    assert "none" in format_comparison(compare_runs(summary, summary)).splitlines()[1]


def test_compare_names_what_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main([str(tmp_path), str(tmp_path)]) == 2
    assert f"no {SUMMARY_NAME} under" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text('{"loss": 1}')
    assert compare.main([str(other), str(other)]) == 2
    assert "is not a stoker run summary" in capsys.readouterr().err


def test_no_summary_file_when_turned_off(tmp_path: Path) -> None:
    monitor = StarvationMonitor(print_summary=False, summary_file=None)
    run_paced(0.0, 0.01, num_batches=4, callbacks=[monitor], default_root_dir=str(tmp_path))
    assert monitor.summary_path is None and not list(tmp_path.rglob(SUMMARY_NAME))
