"""How close StarvationMonitor's figure is to a known starvation.

Each batch costs an injected delay in the dataset (0 DataLoader workers, so the fetch is exactly
that delay) and each training step a known time, so the true host starvation is
delay / (delay + step). Three settings near 0%, 50% and 80% run on the CPU; the last line is the
largest absolute error in percentage points (goal: <= 5).

Run: python benchmarks/starvation_accuracy.py [--batches N]
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import warnings
from pathlib import Path

import lightning
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stoker.callbacks import StarvationMonitor  # noqa: E402
from tests.scripts.monitor_harness import run_paced, true_starvation  # noqa: E402

# (injected per-batch delay, known step time) in seconds
SETTINGS = [(0.0, 0.05), (0.06, 0.06), (0.16, 0.04)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20, help="training batches per setting")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"lightning {lightning.__version__}; CPU, 0 workers, {args.batches} batches per setting")
    print(f"{'delay ms':>9} {'step ms':>8} {'true %':>7} {'reported %':>11} {'error pts':>10}")
    worst = 0.0
    for delay_s, step_s in SETTINGS:
        monitor = StarvationMonitor(print_summary=False, summary_file=None)
        run_paced(delay_s, step_s, num_batches=args.batches, callbacks=[monitor])
        assert monitor.final is not None
        truth = 100 * true_starvation(delay_s, step_s)
        reported = 100 * monitor.final.mean["starvation"]
        error = abs(reported - truth)
        worst = max(worst, error)
        print(f"{1000 * delay_s:9.0f} {1000 * step_s:8.0f} {truth:7.1f} {reported:11.1f} {error:10.2f}")
    print(f"max_abs_error_points: {worst:.2f}")


if __name__ == "__main__":
    main()
