"""The one place stoker reaches into Lightning internals, kept small so that a Lightning upgrade breaks here.

Lightning 2.x's training epoch loop brackets ``next(data_fetcher)`` with its ``_on_before_fetch`` and
``_on_after_fetch`` methods (the span its profiler names ``train_dataloader_next``) and hands those
bound methods to the fetcher in ``on_run_start`` of every epoch. Wrapping them on the loop instance,
before the first epoch starts, times exactly that span whatever profiler is configured. Callback
hooks alone could only time ``on_train_batch_end`` to the next ``on_train_batch_start``, which also
holds the host-to-device copy and ``on_after_batch_transfer``.

:func:`wrap_fetch` returns ``None`` when a Lightning release no longer has these methods, and the
starvation monitor then falls back to that hook gap. ``tests/profiling/test_lightning_compat.py``
fails on such a release instead of letting the fallback pass unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L


@dataclass
class FetchWrap:
    """What :func:`wrap_fetch` installed, for :func:`unwrap_fetch`."""

    loop: Any
    before: Callable[[], None]
    after: Callable[[], None]


def wrap_fetch(trainer: L.Trainer, on_start: Callable[[], None], on_end: Callable[[], None]) -> FetchWrap | None:
    """Call ``on_start``/``on_end`` around every training fetch (Lightning's ``train_dataloader_next`` span).

    Returns:
        A handle for :func:`unwrap_fetch`, or ``None`` when this Lightning release has no such span.
    """
    loop = trainer.fit_loop.epoch_loop
    before, after = getattr(loop, "_on_before_fetch", None), getattr(loop, "_on_after_fetch", None)
    if not (callable(before) and callable(after)):
        return None

    def timed_before() -> None:
        on_start()
        before()

    def timed_after() -> None:
        after()
        on_end()

    # Instance attributes shadow the bound methods; on_run_start hands these to the fetcher.
    setattr(loop, "_on_before_fetch", timed_before)  # noqa: B010
    setattr(loop, "_on_after_fetch", timed_after)  # noqa: B010
    return FetchWrap(loop, timed_before, timed_after)


def unwrap_fetch(handle: FetchWrap) -> None:
    """Remove what :func:`wrap_fetch` installed, so the loop's own methods show through again."""
    loop = handle.loop
    if loop.__dict__.get("_on_before_fetch") is handle.before:
        del loop._on_before_fetch
    if loop.__dict__.get("_on_after_fetch") is handle.after:
        del loop._on_after_fetch


def trainer_log_every(trainer: L.Trainer) -> int:
    """The Trainer's ``log_every_n_steps`` (set by its logger connector; 0 under ``barebones``: use 50)."""
    return int(getattr(trainer, "log_every_n_steps", 0) or 50)


def publish(trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
    """Send a monitor's metrics, computed at its own log interval, to the loggers and to ``callback_metrics``.

    The loggers get them directly at the current step (``self.log`` would hold step metrics until the
    Trainer's own logging interval); ``callback_metrics`` (what ``EarlyStopping``, ``ModelCheckpoint``
    and tests read) gets them through ``pl_module.log`` with the logger off. The values are the same on
    every rank (they were gathered), so nothing is reduced again.
    """
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
    if metrics:
        pl_module.log_dict(metrics, logger=False, on_step=True, on_epoch=False, batch_size=1)


@dataclass
class DeviceWorkWrap:
    """What :func:`wrap_device_work` installed: the object whose hook it wraps and the original hook."""

    owner: Any
    original: Callable[[Any, int], Any]
    wrapper: Callable[[Any, int], Any]


def wrap_device_work(trainer: L.Trainer, on_batch: Callable[[Any], None]) -> DeviceWorkWrap:
    """See every training batch as it reaches the device, before ``on_after_batch_transfer`` runs.

    Lightning calls the DataModule's ``on_after_batch_transfer`` when the DataModule overrides it,
    else the LightningModule's, looking the hook up on the instance each time; an instance attribute
    therefore intercepts it. The original hook is returned, to replay the device-side work.
    """
    from lightning.pytorch.utilities.model_helpers import is_overridden

    datamodule = getattr(trainer, "datamodule", None)
    owner: Any = datamodule
    if datamodule is None or not is_overridden("on_after_batch_transfer", datamodule, L.LightningDataModule):
        owner = trainer.lightning_module
    original = owner.on_after_batch_transfer

    def wrapper(batch: Any, dataloader_idx: int) -> Any:
        if trainer.training:
            on_batch(batch)
        return original(batch, dataloader_idx)

    owner.__dict__["on_after_batch_transfer"] = wrapper
    return DeviceWorkWrap(owner, original, wrapper)


def unwrap_device_work(handle: DeviceWorkWrap) -> None:
    """Remove what :func:`wrap_device_work` installed."""
    if handle.owner.__dict__.get("on_after_batch_transfer") is handle.wrapper:
        del handle.owner.__dict__["on_after_batch_transfer"]
