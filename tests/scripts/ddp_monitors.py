"""Real 2-process CPU DDP (gloo) run of both monitors; rank 0 writes what they reported.

Rank 1's batches cost more than rank 0's, so rank 1 must be named the slowest. Each rank sleeps its
costs on its own virtual clock, which its monitors read (tests/scripts/monitor_harness.py): the figures
are exact however long the real run takes.
Usage: python ddp_monitors.py --out OUT.json [--delay0 S] [--delay1 S] [--step S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stoker.callbacks import DataThroughputMonitor, StarvationMonitor  # noqa: E402
from tests.scripts.ddp_common import ddp_trainer
from tests.scripts.monitor_harness import PacedModel, VirtualClock, paced_loader, virtual_time  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--delay0", type=float, default=0.002)
    parser.add_argument("--delay1", type=float, default=0.04)
    parser.add_argument("--step", type=float, default=0.02)
    args = parser.parse_args()
    torch.set_num_threads(1)  # two ranks on a small machine: see monitor_harness.run_paced
    with virtual_time(VirtualClock()) as clock:
        starvation = StarvationMonitor()
        throughput = DataThroughputMonitor(window_size=3)
        trainer = ddp_trainer(num_sanity_val_steps=2, log_every_n_steps=4, callbacks=[throughput, starvation])
        loader = paced_loader(16, args.delay0, delay_by_rank={1: args.delay1}, clock=clock)
        trainer.fit(PacedModel(args.step, clock), loader)
    if trainer.global_rank == 0:
        assert starvation.final is not None
        result = {
            "per_rank": starvation.final.per_rank,
            "slowest_rank": starvation.final.slowest_rank,
            "history": starvation.history,
            "summary": starvation.summary,
            "throughput_history": throughput.history,
            "throughput_per_rank": throughput.final_per_rank,
            "throughput_summary": throughput.summary,
        }
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
