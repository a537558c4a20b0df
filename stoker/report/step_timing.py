"""Time a model's training step on a real batch, for the Data Pipeline Summary's compute-bound/input-bound verdict.

The figure is meant to be read beside the fit summary's ``step`` (:class:`stoker.callbacks.StarvationMonitor`,
which spans ``on_train_batch_start`` to ``on_train_batch_end``): the same work is timed here (forward,
backward, optimizer step and ``zero_grad``; the DataModule's device-side work before the span), but on
one batch after warm-up, as a median, with no loader running beside it. :data:`STEP_NOTE` says so in the report.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

# Printed under the figure in the report: what the figure is, and why the fit summary's can differ.
STEP_NOTE = (
    "The fit summary's `step` (StarvationMonitor, printed at the end of `stoker fit`) spans the same work but is "
    "the mean over every training step of the run, on the Trainer's accelerator and precision, while the loader's "
    "workers decode and augment on the same cores; expect the two to differ with the machine's load (on a shared "
    "CPU, see the min-max spread above) and, with a GPU, by the device."
)


def _optimizer_of(model: Any) -> torch.optim.Optimizer | None:
    """The first optimizer the model configures, or ``None`` when it builds none outside a Trainer."""
    try:
        configured = model.configure_optimizers()
    except Exception:  # a scheduler that asks the Trainer for its step count must not end the report
        return None
    while not isinstance(configured, torch.optim.Optimizer):
        if isinstance(configured, dict):
            configured = configured.get("optimizer")
        elif isinstance(configured, (list, tuple)) and configured:
            configured = configured[0]
        else:
            return None
    return configured


def _loss_of(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, dict) else output
    return loss if isinstance(loss, torch.Tensor) and loss.requires_grad else None


def step_timing(model: Any, datamodule: Any, batch: Any, *, warmup: int = 2, steps: int = 5,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, Any] | None:
    """Wall-clock seconds of one training step of ``model`` on a real batch, where the model is (the CPU here).

    A step is forward (``training_step``), backward, the optimizer step and ``zero_grad``: what the
    fit summary's step spans. The batch gets the DataModule's device-side work first
    (:meth:`StokerDataModule.normalize`), outside the timed span as in training. The first ``warmup``
    steps run untimed: the first calls choose kernels, grow the allocator and create the optimizer
    state, and take up to several times a steady step. The figure is the median of the next ``steps``.

    The model is left as it was: the optimizer runs with a learning rate of 0 (the same arithmetic,
    no change to the weights), and buffers (BatchNorm running statistics) and the train/eval mode are
    restored afterwards.

    Args:
        model: The recipe's LightningModule.
        datamodule: Gives ``normalize`` and ``batch_size_of``.
        batch: One batch from the training loader.
        warmup: Untimed steps first.
        steps: Timed steps; their median is reported.
        clock: Returns seconds (tests pass a fake).

    Returns:
        ``step_s`` (median), ``samples_per_s``, ``min_s``, ``max_s``, ``steps``, ``warmup``, ``batch_size``,
        ``optimizer`` (its class name; ``None`` when the model builds none without a Trainer, and then the
        step is forward and backward only) and ``device``; ``None`` when the model cannot take the batch
        (it is not a stoker model, it optimizes manually...).

    Raises:
        ValueError: ``warmup`` is negative or ``steps`` is not positive.
    """
    if warmup < 0 or steps < 1:
        raise ValueError(f"step_timing needs warmup >= 0 and steps >= 1, got warmup={warmup}, steps={steps}")
    normalize = getattr(datamodule, "normalize", None)
    if model is None or not callable(normalize):
        return None
    optimizer = _optimizer_of(model)
    if optimizer is not None:
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    buffers = {name: value.detach().clone() for name, value in model.named_buffers()}
    was_training = model.training
    times: list[float] = []
    model.train()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # self.log() without a Trainer warns and does nothing
            for index in range(warmup + steps):
                ready = normalize(copy.copy(batch), training=True)
                start = clock()
                try:
                    loss = _loss_of(model.training_step(ready, 0))
                    if loss is None:
                        return None
                    loss.backward()
                    if optimizer is not None:
                        optimizer.step()
                except (AttributeError, KeyError, TypeError, ValueError, RuntimeError):
                    return None
                model.zero_grad(set_to_none=True)
                if index >= warmup:
                    times.append(clock() - start)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, value in model.named_buffers():
                if name in buffers:
                    value.copy_(buffers[name])
        model.train(was_training)
    seconds = statistics.median(times)
    size = datamodule.batch_size_of(batch)
    device = next((str(p.device) for p in model.parameters()), "cpu")
    return {"step_s": seconds, "samples_per_s": size / seconds if seconds > 0 else 0.0, "min_s": min(times),
            "max_s": max(times), "steps": steps, "warmup": warmup, "batch_size": size,
            "optimizer": type(optimizer).__name__ if optimizer is not None else None, "device": device}
