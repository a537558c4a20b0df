"""Where the time of a training step goes: host fetch wait, host-to-device transfer and compute.

A framework-free core (no Trainer): :class:`StepClock` is driven by four marks per step (fetch
start, fetch end, batch start, batch end) and an epoch mark, reads one clock
(``time.perf_counter`` unless given another) and keeps running totals and a window that the
caller empties at its log interval; :mod:`stoker.profiling.ranks` turns per-rank figures into the
cross-rank view.

The first step of every epoch is kept out of the steady-state totals: its wait is dominated by
worker start-up and is reported on its own as the epoch's first-batch latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class PhaseTotals:
    """Summed step phases over some span of steady-state training steps (seconds)."""

    steps: int = 0
    samples: int = 0
    fetch_s: float = 0.0
    transfer_s: float = 0.0
    compute_s: float = 0.0
    fetch_max_s: float = 0.0
    gpu_idle_s: float = 0.0
    gpu_busy_s: float = 0.0

    def add_step(self, *, fetch_s: float, transfer_s: float, compute_s: float, samples: int) -> None:
        """Account one steady-state step."""
        self.steps += 1
        self.samples += samples
        self.fetch_s += fetch_s
        self.transfer_s += transfer_s
        self.compute_s += compute_s
        self.fetch_max_s = max(self.fetch_max_s, fetch_s)

    def add_gpu(self, *, idle_s: float, busy_s: float) -> None:
        """Account accelerator idle and busy time read back from device events."""
        self.gpu_idle_s += idle_s
        self.gpu_busy_s += busy_s

    def merge(self, other: PhaseTotals) -> None:
        """Add another span's totals into this one."""
        for item in fields(self):
            if item.name == "fetch_max_s":
                self.fetch_max_s = max(self.fetch_max_s, other.fetch_max_s)
            else:
                setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    @property
    def host_s(self) -> float:
        """Host time of the steps: fetch + transfer + compute."""
        return self.fetch_s + self.transfer_s + self.compute_s

    @property
    def fetch_fraction(self) -> float | None:
        """Host fetch wait as a fraction of the host step time (``None`` before any step)."""
        return self.fetch_s / self.host_s if self.host_s > 0 else None

    @property
    def transfer_fraction(self) -> float | None:
        """Host-to-device transfer as a fraction of the host step time."""
        return self.transfer_s / self.host_s if self.host_s > 0 else None

    @property
    def gpu_idle_fraction(self) -> float | None:
        """Accelerator idle / (idle + busy) from device events (``None`` without them)."""
        total = self.gpu_idle_s + self.gpu_busy_s
        return self.gpu_idle_s / total if total > 0 else None

    @property
    def samples_per_s(self) -> float | None:
        """Samples per second of host step time."""
        return self.samples / self.host_s if self.host_s > 0 else None

    def to_dict(self) -> dict[str, float]:
        """Plain numbers, for ``state_dict``."""
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> PhaseTotals:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {item.name for item in fields(cls)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise ValueError(f"unknown PhaseTotals keys {unknown}; expected a subset of {sorted(names)}")
        totals = cls()
        for key, value in state.items():
            setattr(totals, key, int(value) if key in ("steps", "samples") else float(value))
        return totals


class StepClock:
    """Splits each training step into fetch wait, transfer and compute from host timestamps.

    Marks, in the order the training loop reaches them::

        epoch_start()            # before the epoch's first fetch (worker start-up begins)
        fetch_start(); fetch_end()  # the span Lightning's profiler calls train_dataloader_next
        batch_start()            # after the batch reached the device (on_train_batch_start)
        batch_end(samples)       # after the optimizer step (on_train_batch_end)

    When fetch marks are missing for a step (a loop this clock is not wired into), the gap from
    the previous ``batch_end`` to ``batch_start`` counts as fetch wait and transfer as zero.
    Call :meth:`interrupt` when something that is not training (validation) runs between steps.

    Args:
        clock: Returns seconds; ``time.perf_counter`` by default (tests pass a fake).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.total = PhaseTotals()
        self.window = PhaseTotals()
        self.first_batch_s: list[float] = []
        self._epoch_t0: float | None = None
        self._first_pending = False
        self._fetch_t0: float | None = None
        self._fetch_t1: float | None = None
        self._step_t0: float | None = None
        self._last_end: float | None = None

    def epoch_start(self) -> None:
        """A new epoch begins: its first fetch will be timed as first-batch latency."""
        self._epoch_t0 = self._clock()
        self._first_pending = True
        self._last_end = None

    def fetch_start(self) -> None:
        """The loop asks the loader for the next batch."""
        self._fetch_t0 = self._clock()

    def fetch_end(self) -> None:
        """The loader returned a batch."""
        self._fetch_t1 = self._clock()

    def batch_start(self) -> None:
        """The batch is on the device and the training step begins."""
        self._step_t0 = self._clock()

    def batch_end(self, samples: int) -> float | None:
        """The training step (with its optimizer step) has been issued.

        Returns:
            The first-batch latency when this was an epoch's first step, else ``None``.
        """
        now = self._clock()
        step_t0 = now if self._step_t0 is None else self._step_t0
        fetch_t0, fetch_t1 = self._fetch_t0, self._fetch_t1
        if fetch_t0 is not None and fetch_t1 is not None:
            fetch_s, transfer_s = fetch_t1 - fetch_t0, step_t0 - fetch_t1
        elif self._last_end is not None:
            fetch_s, transfer_s = step_t0 - self._last_end, 0.0
        else:
            fetch_s, transfer_s = 0.0, 0.0
        latency = None
        if self._first_pending:
            origin = self._epoch_t0 if self._epoch_t0 is not None else fetch_t0
            done = fetch_t1 if fetch_t1 is not None else step_t0
            latency = max(0.0, done - origin) if origin is not None else fetch_s
            self.first_batch_s.append(latency)
            self._first_pending = False
        else:
            for totals in (self.total, self.window):
                totals.add_step(fetch_s=fetch_s, transfer_s=transfer_s, compute_s=now - step_t0, samples=samples)
        self._fetch_t0 = self._fetch_t1 = self._step_t0 = None
        self._last_end = now
        return latency

    def interrupt(self) -> None:
        """Something other than training ran (validation): the next gap is not a fetch wait."""
        self._last_end = None
        self._fetch_t0 = self._fetch_t1 = None

    def add_gpu(self, *, idle_s: float, busy_s: float) -> None:
        """Account accelerator idle/busy time read back (a step or more late) from device events."""
        self.total.add_gpu(idle_s=idle_s, busy_s=busy_s)
        self.window.add_gpu(idle_s=idle_s, busy_s=busy_s)

    def take_window(self) -> PhaseTotals:
        """Return the window's totals and start a new window."""
        window, self.window = self.window, PhaseTotals()
        return window

    def state_dict(self) -> dict[str, Any]:
        """Totals and first-batch latencies, so that a resumed run continues its figures."""
        return {"total": self.total.to_dict(), "first_batch_s": list(self.first_batch_s)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if "total" not in state:
            raise ValueError(f"StepClock state needs a 'total' entry, got keys {sorted(state)}")
        self.total = PhaseTotals.from_dict(state["total"])
        self.first_batch_s = [float(x) for x in state.get("first_batch_s", [])]
