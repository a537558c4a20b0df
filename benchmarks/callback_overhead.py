"""Cost of DataThroughputMonitor + StarvationMonitor per training step, measured side by side.

A small convolutional network trains on in-memory 32x32 images (0 workers, so data costs almost
nothing and any callback cost shows). Runs without and with both callbacks alternate in one
process; each run's steady-state step time is the sum of its step-to-step intervals after a
warm-up, taken by the same timing callback in both arms. The last line is the median over rounds
of the relative slowdown (goal: < 1%). The time spent inside the callbacks' own hooks is printed
beside it: on a busy machine the side-by-side ratio carries the noise of other processes, the
in-hook time does not.

Run: python benchmarks/callback_overhead.py [--rounds R] [--steps N]
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
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stoker.callbacks import DataThroughputMonitor, StarvationMonitor  # noqa: E402

WARMUP = 10


class StepTimes(Callback):
    """Host time between consecutive ends of training steps."""

    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.ends.append(time.perf_counter())

    def steady_seconds(self) -> float:
        return self.ends[-1] - self.ends[WARMUP]


class SmallConvNet(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(), torch.nn.Linear(32, 10),
        )

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


HOOKS = ("setup", "on_train_start", "on_train_epoch_start", "on_train_batch_start", "on_train_batch_end",
         "on_validation_start", "on_validation_end", "on_train_end", "teardown")


def time_hooks(callback: Callback, spent: list[float]) -> Callback:
    """Wrap the callback's hooks on the instance; time inside per-batch hooks adds up in ``spent[0]``,
    time inside the once-per-fit hooks (set-up, the end-of-fit exchange and summary) in ``spent[1]``."""
    for name in HOOKS:
        hook = getattr(callback, name)
        slot = 0 if "batch" in name else 1

        def timed(*args: Any, _hook: Any = hook, _slot: int = slot, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[_slot] += time.perf_counter() - started

        setattr(callback, name, timed)
    return callback


def run_once(loader: DataLoader, steps: int, monitored: bool, spent: list[float]) -> float:
    timer = StepTimes()
    callbacks: list[Callback] = [timer]
    if monitored:
        callbacks += [time_hooks(DataThroughputMonitor(print_summary=False), spent),
                      time_hooks(StarvationMonitor(print_summary=False), spent)]
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
                        callbacks=callbacks)
    trainer.fit(SmallConvNet(), loader)
    return timer.steady_seconds() / (steps - 1 - WARMUP)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # steadier step times on a shared machine
    data = TensorDataset(torch.randn(2048, 3, 32, 32), torch.randint(0, 10, (2048,)))
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=0)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
          f"lightning {L.__version__}; CPU, batch 32 of 3x32x32, {args.steps} steps per run, log every 50")
    slowdowns, in_hooks, per_step_us, once_ms = [], [], [], []
    for round_index in range(args.rounds):
        # Alternate which arm goes first so that drift in machine load does not favour one.
        order = (False, True) if round_index % 2 == 0 else (True, False)
        spent = [0.0, 0.0]
        times = {monitored: run_once(loader, args.steps, monitored, spent) for monitored in order}
        in_hooks.append(100 * spent[0] / (times[True] * args.steps))
        per_step_us.append(1e6 * spent[0] / args.steps)
        once_ms.append(1e3 * spent[1])
        slowdown = 100 * (times[True] / times[False] - 1)
        slowdowns.append(slowdown)
        print(f"round {round_index}: without {1000 * times[False]:.3f} ms/step, with {1000 * times[True]:.3f} "
              f"ms/step, ratio {times[True] / times[False]:.4f}")
    print(f"inside the callbacks' per-batch hooks (log intervals included): {statistics.median(per_step_us):.0f} us "
          f"per step = {statistics.median(in_hooks):.3f}% of the step; once per fit (set-up, end-of-fit exchange and "
          f"summary): {statistics.median(once_ms):.0f} ms (medians over rounds)")
    print(f"overhead_percent: {statistics.median(slowdowns):.2f}")


if __name__ == "__main__":
    main()
