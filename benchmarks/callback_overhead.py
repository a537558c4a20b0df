"""Cost of DataThroughputMonitor + StarvationMonitor per training step, measured side by side.

A small convolutional network trains on in-memory 32x32 images (0 workers, so data costs almost
nothing and any callback cost shows). Both monitors are attached for the whole fit, behind a
gate that lets their per-batch hooks run only in alternate blocks of steps; every step's host
time (end of one step to the end of the next) is filed under "with" or "without" by the gate's
state during that step. Interleaving blocks inside one run keeps drift in machine load out of
the comparison, and medians keep other processes' spikes out. The last line is the relative
slowdown of the median step (goal: < 1%). The time spent inside the hooks themselves is printed
beside it.

Per-worker attribution (stage times shipped with each batch of stoker's file datasets) costs a
little in the worker (clock reads, a few lists in the collate) and a little in the training process
(taking the figures out of the batch and accounting them). Both are timed directly on real batches
of small PNGs, per batch of 32, and added to the last line as a share of the median step.

Run: python benchmarks/callback_overhead.py [--rounds R] [--steps N] [--block B]
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
from stoker.data.file_dataset import ImageFileDataset, SkippingCollate  # noqa: E402
from stoker.profiling.attribution import ITEM_TIMING_KEY, PROFILE_KEY, LoadProfile, ProfiledCollate  # noqa: E402

WARMUP = 10


class Gate:
    """Whether the monitors' per-batch hooks run in the current step."""

    def __init__(self) -> None:
        self.on = True


class StepTimes(Callback):
    """Host time of every step (end of the previous one to the end of this one), by gate state.

    It must be the last callback, so that a step's interval holds the monitors' hooks of that step
    only; it flips the gate every ``block`` steps, after recording.
    """

    def __init__(self, gate: Gate, block: int) -> None:
        self.gate, self.block = gate, block
        self.last: float | None = None
        self.steps = 0
        self.times: dict[bool, list[float]] = {True: [], False: []}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        now = time.perf_counter()
        if self.last is not None and self.steps >= WARMUP:
            self.times[self.gate.on].append(now - self.last)
        self.last = now
        self.steps += 1
        if self.steps % self.block == 0:
            self.gate.on = not self.gate.on


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


def time_hooks(callback: Callback, spent: list[float], gate: Gate) -> Callback:
    """Wrap the callback's hooks on the instance: per-batch hooks run only while the gate is on.

    Time inside per-batch hooks adds up in ``spent[0]``, time inside the once-per-fit hooks
    (set-up, the end-of-fit exchange and summary) in ``spent[1]``.
    """
    for name in HOOKS:
        hook = getattr(callback, name)
        per_batch = "batch" in name

        def timed(*args: Any, _hook: Any = hook, _per_batch: bool = per_batch, **kwargs: Any) -> Any:
            if _per_batch and not gate.on:
                return None
            started = time.perf_counter()
            try:
                return _hook(*args, **kwargs)
            finally:
                spent[0 if _per_batch else 1] += time.perf_counter() - started

        setattr(callback, name, timed)
    return callback


def run_once(loader: DataLoader, steps: int, block: int, spent: list[float]) -> dict[bool, list[float]]:
    gate = Gate()
    timer = StepTimes(gate, block)
    callbacks: list[Callback] = [
        time_hooks(DataThroughputMonitor(print_summary=False), spent, gate),
        time_hooks(StarvationMonitor(print_summary=False, summary_file=None), spent, gate),
        timer,
    ]
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
                        callbacks=callbacks)
    trainer.fit(SmallConvNet(), loader)
    return timer.times


def attribution_cost(batches: int = 200, batch: int = 32) -> tuple[float, float]:
    """Seconds per batch the attribution adds: (in the worker's collate, in the training process)."""
    import tempfile

    from PIL import Image
    from torch.utils.data import default_collate

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for i in range(batch):
            Image.new("RGB", (16, 16), (i, 2 * i, 3 * i)).save(root / f"{i}.png")
        dataset = ImageFileDataset(root, [(f"{i}.png", i % 2) for i in range(batch)], None)
        items = [dataset[i] for i in range(batch)]
    stripped = [{k: v for k, v in item.items() if k != ITEM_TIMING_KEY} for item in items]
    collate = ProfiledCollate(SkippingCollate())  # as in a Trainer's training loader
    start = time.perf_counter()
    for _ in range(batches):
        collate([dict(item) for item in items])
    with_profile = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        default_collate([dict(item) for item in stripped])
    plain = time.perf_counter() - start
    clock_reads = 4 * batch * _clock_read_s()  # FileDataset reads the clock around read and transform
    worker = max(0.0, with_profile - plain) / batches + clock_reads
    profile, collated = LoadProfile(), collate([dict(item) for item in items])
    start = time.perf_counter()
    for _ in range(batches):
        copy = dict(collated)
        profile.add(copy.pop(PROFILE_KEY), str)
    return worker, (time.perf_counter() - start) / batches


def _clock_read_s(reads: int = 100_000) -> float:
    start = time.perf_counter()
    for _ in range(reads):
        time.perf_counter()
    return (time.perf_counter() - start) / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--block", type=int, default=5, help="steps per block before the gate flips")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    torch.set_num_threads(1)  # steadier step times on a shared machine
    data = TensorDataset(torch.randn(2048, 3, 32, 32), torch.randint(0, 10, (2048,)))
    loader = DataLoader(data, batch_size=32, shuffle=True, num_workers=0)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
          f"lightning {L.__version__}; CPU, batch 32 of 3x32x32, {args.steps} steps per run in blocks of "
          f"{args.block}, log every 50")
    times: dict[bool, list[float]] = {True: [], False: []}
    spent = [0.0, 0.0]
    for round_index in range(args.rounds):
        run = run_once(loader, args.steps, args.block, spent)
        for state in (True, False):
            times[state] += run[state]
        with_ms, without_ms = (1000 * statistics.median(run[state]) for state in (True, False))
        print(f"round {round_index}: median step without {without_ms:.3f} ms, with {with_ms:.3f} ms, "
              f"ratio {with_ms / without_ms:.4f}")
    with_s, without_s = statistics.median(times[True]), statistics.median(times[False])
    steps_with = len(times[True]) + args.rounds * WARMUP / 2
    print(f"inside the callbacks' per-batch hooks (log intervals included): {1e6 * spent[0] / steps_with:.0f} us "
          f"per monitored step = {100 * spent[0] / steps_with / with_s:.3f}% of the median step; once per fit "
          f"(set-up, end-of-fit exchange and summary): {1e3 * spent[1] / args.rounds:.0f} ms")
    worker_s, main_s = attribution_cost()
    main_share = main_s / with_s
    print(f"attribution per batch of 32: {1e6 * worker_s:.0f} us in the worker ({100 * worker_s / with_s:.3f}% of "
          f"the median step, off the training process with workers), {1e6 * main_s:.0f} us in the training "
          f"process ({100 * main_share:.3f}%)")
    print(f"overhead_percent: {100 * (with_s / without_s - 1 + main_share):.2f}")


if __name__ == "__main__":
    main()
