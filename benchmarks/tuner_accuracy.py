"""How much training throughput following the num_workers tuner loses against the best setting, measured.

Three injected pipelines, each a dataset whose samples cost a known wait (like reading from slow
storage) and a model whose step costs a known wait (like a GPU step the host waits on); both sleep,
so workers scale past this machine's two cores as they would with I/O-bound loading:

- loader-bound: 10 ms per sample (80 ms per batch of 8) against a 10 ms step;
- balanced: 2.5 ms per sample (20 ms per batch) against a 20 ms step;
- compute-bound: 0.5 ms per sample (4 ms per batch) against a 30 ms step.

For each, the way ``stoker profile`` does it: a short fit with ``StarvationMonitor(speed_of_light_steps=K)``
gives the model's rate with loading free, then :func:`stoker.profiling.tuner.tune_loader` measures the
loader alone and recommends a setting. Then every setting the tuner could choose (workers 0, 1, 2, 4,
8) is trained for real in the same run, ``--rounds`` times interleaved, and the median training
throughput (steady-state samples/s of the StarvationMonitor) of the recommendation is compared with
the best one. The last line is the worst
pipeline's regret, ``100 * (best - recommended) / best`` (goal: <= 10).

Run: python benchmarks/tuner_accuracy.py [--steps N] [--max-workers W] [--rounds R]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stoker.callbacks import StarvationMonitor  # noqa: E402
from stoker.profiling.tuner import tune_loader, worker_counts  # noqa: E402

BATCH = 8
PIPELINES = {"loader-bound": (0.010, 0.010), "balanced": (0.0025, 0.020), "compute-bound": (0.0005, 0.030)}


class WaitingSamples(Dataset):
    """Samples that each cost ``sample_s`` seconds of waiting."""

    def __init__(self, size: int, sample_s: float) -> None:
        self.size, self.sample_s = size, sample_s

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        time.sleep(self.sample_s)
        return {"x": torch.full((16,), float(index % 7)), "y": torch.tensor(index % 2)}


class WaitingModel(L.LightningModule):
    """A linear model whose step waits ``step_s`` seconds (the device time the host would wait on)."""

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.step_s = step_s
        self.layer = torch.nn.Linear(16, 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        time.sleep(self.step_s)
        return torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["y"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(sample_s: float, workers: int, prefetch: int, batches: int) -> DataLoader:
    return DataLoader(WaitingSamples(BATCH * batches, sample_s), batch_size=BATCH, num_workers=workers,
                      prefetch_factor=prefetch if workers else None, persistent_workers=False)


def fit(sample_s: float, step_s: float, workers: int, prefetch: int, steps: int,
        replay: int = 0) -> StarvationMonitor:
    monitor = StarvationMonitor(print_summary=False, summary_file=None, speed_of_light_steps=replay,
                                speed_of_light_after=3)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
                        log_every_n_steps=10)
    trainer.fit(WaitingModel(step_s), loader(sample_s, workers, prefetch, steps))
    return monitor


def measure(name: str, sample_s: float, step_s: float, steps: int, max_workers: int, rounds: int) -> float:
    light = fit(sample_s, step_s, 0, 2, 12, replay=6).speed_of_light.result
    assert light is not None
    target = light.samples_per_s
    tuned = tune_loader(lambda w, p, _type: loader(sample_s, w, p, 40), lambda b: len(b["y"]), max_workers=max_workers,
                        target=target, batches=16)
    best = tuned.best
    runs: dict[int, list[float]] = {w: [] for w in worker_counts(max_workers)}
    for _ in range(rounds):  # settings interleaved round by round: load drift hits them all alike
        for workers in runs:
            final = fit(sample_s, step_s, workers, 2, steps).final
            assert final is not None
            runs[workers].append(final.mean["samples_per_s"])
    measured = {w: statistics.median(rates) for w, rates in runs.items()}
    true_best = max(measured, key=lambda w: measured[w])
    got = measured[best.num_workers]
    regret = 100 * (measured[true_best] - got) / measured[true_best]
    curve = ", ".join(f"{w}: {rate:.0f}" for w, rate in measured.items())
    print(f"{name}: speed of light {target:.0f} samples/s (truth {BATCH / step_s:.0f}); tuner measured workers "
          f"{sorted({s.num_workers for s in tuned.settings})}, recommends num_workers={best.num_workers} "
          f"(prefetch {best.prefetch_factor}), predicted {best.predicted(target):.0f} samples/s, measured "
          f"{got:.0f}; trained samples/s by workers: {curve}; best num_workers={true_best}; regret {regret:.1f}%")
    return regret


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="training steps per measured setting")
    parser.add_argument("--max-workers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="trainings per setting (the median is kept)")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, lightning {L.__version__}; batch {BATCH}, "
          f"{args.steps} steps per setting, workers up to {args.max_workers}")
    regrets: list[Any] = [measure(name, sample_s, step_s, args.steps, args.max_workers, args.rounds)
                          for name, (sample_s, step_s) in PIPELINES.items()]
    print(f"tuner_regret_percent: {max(regrets):.1f}")


if __name__ == "__main__":
    main()
