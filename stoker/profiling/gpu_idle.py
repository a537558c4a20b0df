"""Accelerator idle time between training steps from CUDA events, without synchronizing.

An event is recorded on the current stream at the start and at the end of every training step.
The GPU-timeline gap from the end of step N to the start of step N+1 is time the device had no
training work queued: zero when the host ran ahead, the starvation when it did not. Events are
read back with :meth:`torch.cuda.Event.query` a step or more later, so the host never waits for
the device (no ``torch.cuda.synchronize()`` per step); only :meth:`CudaGapTimer.drain`, called
once at the end of training, waits.
"""

from __future__ import annotations

from collections import deque

import torch


class CudaGapTimer:
    """Pairs CUDA events into busy spans (inside a step) and idle gaps (between steps).

    Args:
        max_pending: Event pairs allowed to wait for the device before the oldest is waited on;
            a device far behind the host means the host is ahead (no starvation), so waiting on
            the oldest pair then costs nothing that the queue did not already impose.
        enabled: Record nothing when ``False`` (CPU runs); every method is then a no-op.

    Raises:
        ValueError: When ``max_pending`` is below 1.
    """

    def __init__(self, *, max_pending: int = 64, enabled: bool = True) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.enabled = enabled
        self.max_pending = max_pending
        self._pending: deque[tuple[bool, torch.cuda.Event, torch.cuda.Event]] = deque()
        self._start: torch.cuda.Event | None = None
        self._last_end: torch.cuda.Event | None = None
        self._idle_ms = 0.0
        self._busy_ms = 0.0

    @staticmethod
    def _record() -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def step_start(self, *, count_gap: bool = True) -> None:
        """Record the start of a step; the gap since the last step's end is idle when ``count_gap``."""
        if not self.enabled:
            return
        self.poll()
        start = self._record()
        if count_gap and self._last_end is not None:
            self._pending.append((True, self._last_end, start))
        self._start = start

    def step_end(self) -> None:
        """Record the end of a step (after the optimizer step was issued)."""
        if not self.enabled or self._start is None:
            return
        end = self._record()
        self._pending.append((False, self._start, end))
        self._start = None
        self._last_end = end
        while len(self._pending) > self.max_pending:
            self._pending[0][2].synchronize()
            self.poll()

    def break_chain(self) -> None:
        """Other device work (validation) follows: the next gap is not idle time."""
        self._last_end = None

    def poll(self) -> None:
        """Read back every pair the device has completed, oldest first, without waiting."""
        while self._pending and self._pending[0][2].query():
            is_gap, first, second = self._pending.popleft()
            elapsed = first.elapsed_time(second)
            if is_gap:
                self._idle_ms += elapsed
            else:
                self._busy_ms += elapsed

    def drain(self) -> None:
        """Wait for every recorded event and read it back (once, at the end of training)."""
        if self._pending:
            self._pending[-1][2].synchronize()
        self.poll()

    def take(self) -> tuple[float, float]:
        """Idle and busy seconds read back since the last call."""
        idle, busy = self._idle_ms / 1000, self._busy_ms / 1000
        self._idle_ms = self._busy_ms = 0.0
        return idle, busy
