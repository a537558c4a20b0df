"""A training run whose starvation is known: each batch costs an injected delay, each step a known time.

Shared by tests/callbacks/test_starvation_monitor.py, tests/scripts/ddp_monitors.py and the benchmarks.
With ``num_workers=0`` the fetch of a batch is exactly the dataset's sleep, so the true host starvation
is ``delay / (delay + step)``.

The benchmarks sleep for real (``clock=time``, the default) and print how close the monitors come.
The tests pass a :class:`VirtualClock` instead and make the monitors read it (:func:`virtual_time`):
nothing sleeps, time moves only by the injected costs, and every figure is exact on any machine load.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, Dataset


class VirtualClock:
    """Seconds that pass only when something sleeps on this clock; nothing really sleeps.

    It has the three names of the ``time`` module that the harness and the monitors use, so it stands
    in for that module: the harness sleeps on it and :func:`virtual_time` makes the monitors read it.
    A paced run then measures exactly the injected costs, and Lightning's own overhead, however long a
    loaded machine makes it, costs zero seconds.
    """

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.now += seconds


@contextlib.contextmanager
def virtual_time(clock: VirtualClock) -> Iterator[VirtualClock]:
    """While inside, the monitors built here read ``clock`` instead of ``time.perf_counter``.

    StarvationMonitor's step clock takes the clock as an argument; the speed-of-light replay and
    DataThroughputMonitor read ``time.perf_counter`` of their own module, which is patched there only.
    """
    from stoker.callbacks import speed_of_light, starvation, throughput
    from stoker.profiling.step_clock import StepClock

    with mock.patch.object(starvation, "StepClock", functools.partial(StepClock, clock.perf_counter)), \
            mock.patch.object(speed_of_light, "time", clock), mock.patch.object(throughput, "time", clock):
        yield clock


class VirtualEvent:
    """A ``torch.cuda.Event`` stand-in stamped with a :class:`VirtualClock`'s time when recorded.

    ``done`` says whether the "device" has reached it (:meth:`query`); :meth:`synchronize` waits for it
    and notes the wait (``waited``), so a test can tell a host that polls from a host that blocks.
    """

    def __init__(self, at: float, done: bool = True) -> None:
        self.at, self.done, self.waited = at, done, False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = self.done = True

    def elapsed_time(self, end: VirtualEvent) -> float:
        return 1000 * (end.at - self.at)  # milliseconds, as torch's


@contextlib.contextmanager
def virtual_cuda(clock: VirtualClock) -> Iterator[list[VirtualEvent]]:
    """While inside, StarvationMonitor's GPU timer runs on a CPU run, recording :class:`VirtualEvent` s.

    The device is taken to run each step's work the moment the host issues it, so the GPU timeline is
    the virtual clock's: an idle gap is exactly the host's time between two steps. Yields the events
    recorded, in order.
    """
    from stoker.callbacks import starvation
    from stoker.profiling.gpu_idle import CudaGapTimer

    recorded: list[VirtualEvent] = []

    def record() -> VirtualEvent:
        recorded.append(VirtualEvent(clock.now))
        return recorded[-1]

    def enabled_timer(*, max_pending: int = 64, enabled: bool = True) -> CudaGapTimer:
        return CudaGapTimer(max_pending=max_pending, enabled=True)

    with mock.patch.object(CudaGapTimer, "_record", staticmethod(record)), \
            mock.patch.object(starvation, "CudaGapTimer", enabled_timer):
        yield recorded


class PacedBatches(Dataset):
    """Whole batches (``{"x": [batch, 8], "y": [batch]}``), each returned after ``delay_s`` seconds.

    ``delay_by_rank`` overrides the delay on a DDP rank (read when the batch is made). ``clock`` is
    what sleeps: the ``time`` module, or a :class:`VirtualClock` (then with ``num_workers=0`` only).
    """

    def __init__(self, num_batches: int, delay_s: float, batch_size: int = 4,
                 delay_by_rank: dict[int, float] | None = None, clock: Any = time) -> None:
        self.num_batches = num_batches
        self.delay_s = delay_s
        self.batch_size = batch_size
        self.delay_by_rank = delay_by_rank or {}
        self.clock = clock

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        delay = self.delay_s
        if self.delay_by_rank and torch.distributed.is_initialized():
            delay = self.delay_by_rank.get(torch.distributed.get_rank(), delay)
        if delay > 0:
            self.clock.sleep(delay)
        return {"x": torch.randn(self.batch_size, 8), "y": torch.zeros(self.batch_size, dtype=torch.long)}


class PacedModel(L.LightningModule):
    """A linear model whose training step lasts ``step_s`` seconds from ``on_train_batch_start``.

    Manual optimization keeps backward and the optimizer step inside ``training_step``, before the
    pacing sleep, so that a busy machine stretches the sleep's slack, not the step (on a
    :class:`VirtualClock` the step is exactly ``step_s``).
    """

    def __init__(self, step_s: float, clock: Any = time) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.step_s = step_s
        self.clock = clock
        self.layer = torch.nn.Linear(8, 2)
        self._deadline = 0.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._deadline = self.clock.perf_counter() + self.step_s

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["y"])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        remaining = self._deadline - self.clock.perf_counter()
        if remaining > 0:
            self.clock.sleep(remaining)
        return loss.detach()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def paced_loader(num_batches: int, delay_s: float, delay_by_rank: dict[int, float] | None = None,
                 clock: Any = time) -> DataLoader:
    """A 0-worker loader over :class:`PacedBatches` (the fetch is then exactly the delay)."""
    return DataLoader(PacedBatches(num_batches, delay_s, delay_by_rank=delay_by_rank, clock=clock), batch_size=None,
                      num_workers=0)


def run_paced(delay_s: float, step_s: float, *, num_batches: int = 12, epochs: int = 1,
              callbacks: list[Callback] | None = None, log_every_n_steps: int = 4, clock: Any = time,
              **trainer: Any) -> L.Trainer:
    """Fit :class:`PacedModel` on :func:`paced_loader` on the CPU; return the Trainer.

    ``clock`` paces the batches and the steps (see :class:`PacedBatches`); the monitors read it
    only inside :func:`virtual_time`.

    Torch runs one intra-op thread meanwhile: on a small, shared machine its thread pool otherwise
    turns a microsecond linear layer into tens of milliseconds of contention, and the step would
    no longer cost the known time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if "default_root_dir" in trainer:
            return _fit(delay_s, step_s, num_batches, epochs, callbacks or [], log_every_n_steps, clock, trainer)
        with tempfile.TemporaryDirectory(prefix="stoker-paced-") as root:  # the run summary lands here
            return _fit(delay_s, step_s, num_batches, epochs, callbacks or [], log_every_n_steps, clock,
                        {**trainer, "default_root_dir": root})
    finally:
        torch.set_num_threads(threads)


def _fit(delay_s: float, step_s: float, num_batches: int, epochs: int, callbacks: list[Callback],
         log_every_n_steps: int, clock: Any, trainer: dict[str, Any]) -> L.Trainer:
    fit = L.Trainer(
        accelerator=trainer.pop("accelerator", "cpu"), devices=trainer.pop("devices", 1), max_epochs=epochs,
        logger=trainer.pop("logger", False), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=log_every_n_steps, callbacks=callbacks, **trainer,
    )
    fit.fit(PacedModel(step_s, clock), paced_loader(num_batches, delay_s, clock=clock))
    return fit


def true_starvation(delay_s: float, step_s: float) -> float:
    """The fraction of each iteration spent waiting for the batch."""
    return delay_s / (delay_s + step_s)


class ListLogger(Logger):
    """Keeps what the Trainer's loggers receive."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "list"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass
