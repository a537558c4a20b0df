"""Speed of light: how fast training would go if loading were free, measured on the run's own batches.

After warm-up, :class:`SpeedOfLight` keeps a copy of K batches as they reach the device (before the
DataModule's ``on_after_batch_transfer``), lets training go on, and then replays K training steps on
those copies without touching the loader: the device-side work (normalization, log-mel, MixUp/CutMix
callbacks that declare ``stoker_device_work``), forward, backward and optimizer step. Before the
replay it saves everything a step changes (parameters and buffers, gradients, optimizer and scheduler
states, the AMP scaler, the torch/CUDA/NumPy/Python generators, the callbacks' states, torchmetrics
states and the module's plain attributes, reassigned or grown lists and dicts) and restores it afterwards,
so training continues bit for bit as if nothing had happened. What a step writes elsewhere (a file, a
global) is not undone.

``achievable = samples replayed / replay seconds`` is the rate with loading free;
``headroom = achievable / measured`` says how much faster the run could go by fixing the input.
Like the DALI ``LoaderEvaluator`` replay mode, but inside a real fit and on the real step.
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.apply_func import apply_to_collection


@dataclass
class ReplayResult:
    """What a replay measured (per rank)."""

    steps: int
    samples: int
    seconds: float

    @property
    def step_s(self) -> float:
        """Seconds per replayed step."""
        return self.seconds / max(1, self.steps)

    @property
    def samples_per_s(self) -> float:
        """The achievable rate: samples per second when the loader costs nothing."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0


def clone_batch(batch: Any) -> Any:
    """A copy of every tensor of a batch (dicts, lists and tuples kept as they are)."""
    return apply_to_collection(batch, torch.Tensor, lambda t: t.detach().clone())


class TrainingState:
    """Everything a training step changes, saved and restored exactly."""

    def __init__(self, trainer: Any, pl_module: L.LightningModule, skip: Any = None) -> None:
        self.trainer, self.pl_module, self.skip = trainer, pl_module, skip
        self.parameters = [p for p in pl_module.parameters()]
        self.model = copy.deepcopy(pl_module.state_dict())
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in self.parameters]
        self.optimizers = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
        self.schedulers = [copy.deepcopy(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs]
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.scaler = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
        self.callbacks = [(cb, copy.deepcopy(cb.state_dict())) for cb in trainer.callbacks if cb is not skip]
        self.rng = (torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    np.random.get_state(), random.getstate())
        self.attributes = _Attributes(pl_module)
        self.metrics = [(metric, _metric_state(metric)) for metric in pl_module.modules() if _is_metric(metric)]

    def restore(self) -> None:
        """Put the saved state back, in place (references held elsewhere stay valid)."""
        self.pl_module.load_state_dict(self.model)
        for parameter, grad in zip(self.parameters, self.grads):
            parameter.grad = grad
        for optimizer, state in zip(self.trainer.optimizers, self.optimizers):
            optimizer.load_state_dict(state)
        for config, state in zip(self.trainer.lr_scheduler_configs, self.schedulers):
            config.scheduler.load_state_dict(state)
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and self.scaler is not None:
            scaler.load_state_dict(self.scaler)
        for callback, state in self.callbacks:
            callback.load_state_dict(state)
        cpu, cuda, numpy_state, python_state = self.rng
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        self.attributes.restore()
        for metric, saved in self.metrics:
            for name, value in saved.items():
                setattr(metric, name, _copy_state(value))


# nn.Module's own tables: parameters and buffers come back through load_state_dict, submodules stay.
_MODULE_TABLES = frozenset({"_parameters", "_buffers", "_modules"})


class _Attributes:
    """The module's plain attributes as a step may leave them: reassigned (``self.last = loss``) or grown in place
    (``self.outputs.append(loss)``, the documented way to collect step outputs for an epoch-end hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.values = {k: v for k, v in vars(module).items() if k not in _MODULE_TABLES}
        self.contents = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in self.values.items()
                         if type(v) in (list, dict)}

    def restore(self) -> None:
        table = vars(self.module)
        for key in [k for k in table if k not in _MODULE_TABLES and k not in self.values]:
            del table[key]  # set during the replay only
        table.update(self.values)
        for key, saved in self.contents.items():
            value = self.values[key]
            if isinstance(value, list):
                value[:] = saved
            else:
                value.clear()
                value.update(saved)


def _is_metric(module: torch.nn.Module) -> bool:
    # torchmetrics keeps its accumulated state in plain tensor attributes named by `_defaults`.
    return isinstance(getattr(module, "_defaults", None), dict) and hasattr(module, "_update_count")


def _copy_state(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, list):
        return [_copy_state(v) for v in value]
    return copy.copy(value)


def _metric_state(metric: torch.nn.Module) -> dict[str, Any]:
    defaults: dict[str, Any] = metric._defaults  # type: ignore[assignment]
    names = [*defaults, "_update_count", "_computed"]
    return {name: _copy_state(getattr(metric, name)) for name in names if hasattr(metric, name)}


@contextlib.contextmanager
def _quiet_logging(pl_module: L.LightningModule) -> Iterator[None]:
    # Replayed steps must not reach the logs or the epoch averages of self.log().
    pl_module.__dict__["log"] = lambda *args, **kwargs: None
    pl_module.__dict__["log_dict"] = lambda *args, **kwargs: None
    try:
        yield
    finally:
        pl_module.__dict__.pop("log", None)
        pl_module.__dict__.pop("log_dict", None)


def _step(trainer: Any, pl_module: L.LightningModule, batch: Any, index: int) -> None:
    for optimizer in trainer.optimizers:
        optimizer.zero_grad(set_to_none=True)  # as Lightning does before each step
    output = trainer.strategy.training_step(batch, index)
    if not pl_module.automatic_optimization:
        return  # the step ran its own optimizers
    loss = output["loss"] if isinstance(output, dict) else output
    optimizers = trainer.optimizers
    trainer.strategy.backward(loss, optimizers[0] if optimizers else None)
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    for optimizer in optimizers:
        if scaler is not None:
            scaler.step(optimizer)
        else:
            optimizer.step()
    if scaler is not None:
        scaler.update()


def replay(trainer: Any, pl_module: L.LightningModule, batches: list[Any], *, device_work: Any,
           samples_of: Any, monitor: Any = None) -> ReplayResult:
    """Run one training step per kept batch, timed, then restore the training state exactly.

    Args:
        trainer: The running Trainer.
        pl_module: Its LightningModule.
        batches: Batches as they reached the device, before ``on_after_batch_transfer``.
        device_work: ``batch -> batch``: the DataModule's (or module's) ``on_after_batch_transfer``.
        samples_of: ``batch -> int`` samples in a batch.
        monitor: The callback calling this (its own hooks and state are left alone).
    """
    state = TrainingState(trainer, pl_module, skip=monitor)
    augmenters = [cb for cb in trainer.callbacks if getattr(cb, "stoker_device_work", False) and cb is not monitor]
    on_cuda = pl_module.device.type == "cuda"
    samples = 0
    with _quiet_logging(pl_module):
        if on_cuda:
            torch.cuda.synchronize(pl_module.device)  # once per replay, not per training step
        start = time.perf_counter()
        for index, kept in enumerate(batches):
            batch = device_work(kept)  # each kept batch is replayed once: no copy inside the timed loop
            for callback in augmenters:
                callback.on_train_batch_start(trainer, pl_module, batch, index)
            samples += int(samples_of(batch))
            _step(trainer, pl_module, batch, index)
        if on_cuda:
            torch.cuda.synchronize(pl_module.device)
        seconds = time.perf_counter() - start
    state.restore()
    return ReplayResult(steps=len(batches), samples=samples, seconds=seconds)


class SpeedOfLight:
    """Keep ``steps`` device batches after ``after`` training steps, then replay them once (see the module).

    Args:
        steps: Batches kept and replayed (0: off).
        after: Training steps of warm-up before the batches are kept.

    Raises:
        ValueError: Negative ``steps`` or ``after``.
    """

    def __init__(self, steps: int, after: int) -> None:
        if steps < 0 or after < 0:
            raise ValueError(f"speed_of_light_steps and speed_of_light_after must be >= 0, got {steps} and {after}")
        self.steps, self.after = steps, after
        self.result: ReplayResult | None = None
        self._kept: list[Any] = []
        self._seen = 0
        self._wrap: Any = None

    def attach(self, trainer: L.Trainer) -> None:
        """Start watching the batches that reach the device (a no-op when off)."""
        from stoker.profiling.lightning_compat import wrap_device_work

        if self.steps and self._wrap is None:
            self._wrap = wrap_device_work(trainer, self._keep)

    def detach(self) -> None:
        """Stop watching."""
        from stoker.profiling.lightning_compat import unwrap_device_work

        if self._wrap is not None:
            unwrap_device_work(self._wrap)
            self._wrap = None

    def _keep(self, batch: Any) -> None:
        self._seen += 1
        if self.result is None and self._seen > self.after and len(self._kept) < self.steps:
            self._kept.append(clone_batch(batch))

    def step_done(self, trainer: Any, pl_module: L.LightningModule, samples_of: Any, monitor: Any) -> bool:
        """After a training step: replay once the batches are all kept. Returns whether it replayed."""
        if self._wrap is None or self.result is not None or len(self._kept) < self.steps:
            return False
        original = self._wrap.original
        self.result = replay(trainer, pl_module, self._kept, device_work=lambda batch: original(batch, 0),
                             samples_of=samples_of, monitor=monitor)
        self._kept = []
        self.detach()
        return True
