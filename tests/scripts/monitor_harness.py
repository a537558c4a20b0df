"""A training run whose starvation is known: each batch costs an injected delay, each step a known time.

Shared by tests/test_starvation_monitor.py, tests/scripts/ddp_monitors.py and the benchmarks. With
``num_workers=0`` the fetch of a batch is exactly the dataset's sleep, so the true host starvation
is ``delay / (delay + step)``.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, Dataset


class PacedBatches(Dataset):
    """Whole batches (``{"x": [batch, 8], "y": [batch]}``), each returned after ``delay_s`` seconds.

    ``delay_by_rank`` overrides the delay on a DDP rank (read when the batch is made).
    """

    def __init__(self, num_batches: int, delay_s: float, batch_size: int = 4,
                 delay_by_rank: dict[int, float] | None = None) -> None:
        self.num_batches = num_batches
        self.delay_s = delay_s
        self.batch_size = batch_size
        self.delay_by_rank = delay_by_rank or {}

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        delay = self.delay_s
        if self.delay_by_rank and torch.distributed.is_initialized():
            delay = self.delay_by_rank.get(torch.distributed.get_rank(), delay)
        if delay > 0:
            time.sleep(delay)
        return {"x": torch.randn(self.batch_size, 8), "y": torch.zeros(self.batch_size, dtype=torch.long)}


class PacedModel(L.LightningModule):
    """A linear model whose training step lasts ``step_s`` seconds from ``on_train_batch_start``.

    Manual optimization keeps backward and the optimizer step inside ``training_step``, before the
    pacing sleep, so that a busy machine stretches the sleep's slack, not the step.
    """

    def __init__(self, step_s: float) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.step_s = step_s
        self.layer = torch.nn.Linear(8, 2)
        self._deadline = 0.0

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._deadline = time.perf_counter() + self.step_s

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        optimizer = self.optimizers()
        loss = torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["y"])
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        remaining = self._deadline - time.perf_counter()
        if remaining > 0:
            time.sleep(remaining)
        return loss.detach()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def paced_loader(num_batches: int, delay_s: float, delay_by_rank: dict[int, float] | None = None) -> DataLoader:
    """A 0-worker loader over :class:`PacedBatches` (the fetch is then exactly the delay)."""
    return DataLoader(PacedBatches(num_batches, delay_s, delay_by_rank=delay_by_rank), batch_size=None,
                      num_workers=0)


def run_paced(delay_s: float, step_s: float, *, num_batches: int = 12, epochs: int = 1,
              callbacks: list[Callback] | None = None, log_every_n_steps: int = 4, **trainer: Any) -> L.Trainer:
    """Fit :class:`PacedModel` on :func:`paced_loader` on the CPU; return the Trainer.

    Torch runs one intra-op thread meanwhile: on a small, shared machine its thread pool otherwise
    turns a microsecond linear layer into tens of milliseconds of contention, and the step would
    no longer cost the known time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if "default_root_dir" in trainer:
            return _fit(delay_s, step_s, num_batches, epochs, callbacks or [], log_every_n_steps, trainer)
        with tempfile.TemporaryDirectory(prefix="stoker-paced-") as root:  # the run summary lands here
            return _fit(delay_s, step_s, num_batches, epochs, callbacks or [], log_every_n_steps,
                        {**trainer, "default_root_dir": root})
    finally:
        torch.set_num_threads(threads)


def _fit(delay_s: float, step_s: float, num_batches: int, epochs: int, callbacks: list[Callback],
         log_every_n_steps: int, trainer: dict[str, Any]) -> L.Trainer:
    fit = L.Trainer(
        accelerator=trainer.pop("accelerator", "cpu"), devices=trainer.pop("devices", 1), max_epochs=epochs,
        logger=trainer.pop("logger", False), enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=log_every_n_steps, callbacks=callbacks, **trainer,
    )
    fit.fit(PacedModel(step_s), paced_loader(num_batches, delay_s))
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
