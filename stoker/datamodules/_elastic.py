"""Where a Trainer counts itself in an epoch resumed on another number of ranks."""

from __future__ import annotations

from typing import Any


def align_epoch_progress(trainer: Any, batches_done: int) -> None:
    """Set the Trainer's count of the current epoch's batches to ``batches_done`` (at least 0).

    Lightning ends a training epoch when that count reaches the loader's length, and runs validation on the
    batch that reaches it. A checkpoint's count is in the old ranks' batches; after a resume on another number
    of ranks this rank has ``len(loader) - batches_done`` batches left, so the count must say ``batches_done``.
    Only the epoch's batch counters move: global steps, epochs and schedulers keep the checkpoint's values.
    """
    current = trainer.fit_loop.epoch_loop.batch_progress.current
    shift = max(0, batches_done) - current.ready
    for counter in ("ready", "started", "processed", "completed"):
        if hasattr(current, counter):
            setattr(current, counter, getattr(current, counter) + shift)
