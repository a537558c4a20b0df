"""One kind of progress for every long step: decode checks, hashing, tokenization, packing, scanning.

On a terminal, a tqdm bar with the rate and the time left; in logs and CI (stderr not a terminal), a
line every :data:`LOG_EVERY_S` seconds with the same figures, so a 100k-file first ``prepare_data``
is never silent. Before either, one line says what is happening, that it happens once (results are
cached) and how to skip it. Only global rank zero reports; steps that end within
:data:`QUIET_FOR_S` seconds show nothing at all.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

LOG_EVERY_S = 10.0  # seconds between progress lines when stderr is not a terminal
QUIET_FOR_S = 2.0  # a step that is done within this many seconds reports nothing


def _rank() -> int:
    try:
        from lightning.fabric.utilities.rank_zero import rank_zero_only
    except ImportError:
        return 0
    return int(getattr(rank_zero_only, "rank", 0))  # set by Lightning on every process it launches


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


class Progress:
    """A ``progress(done, total)`` callback: a bar on a terminal, periodic lines elsewhere (see the module).

    Args:
        what: What is being done, e.g. ``"decode-checking image files of data/flowers"``.
        hint: How to avoid it, e.g. ``"verify='none' trusts the files"`` (``""``: none).
        unit: What is counted (``"file"``, ``"row"``, ``"sample"``).
        enabled: Override the rank-zero rule (tests); ``None`` reports on global rank zero only.
        stream: Where to write (default ``sys.stderr``).
        terminal: Override the terminal check (tests).
        clock: Time source (tests).
    """

    def __init__(self, what: str, hint: str = "", *, unit: str = "file", enabled: bool | None = None,
                 stream: TextIO | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.hint, self.unit = what, hint, unit
        self.enabled = (_rank() == 0) if enabled is None else enabled
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self.clock = clock
        self._start: float | None = None
        self._announced = False
        self._last_line = float("-inf")  # the first line comes as soon as the step is announced
        self._bar: Any = None
        self._done, self._total = 0, 0
        self._printed = -1  # the count the last line showed

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = self.clock()
        if self._start is None:
            self._start = now
        self._done, self._total = done, total
        if not self._announced:
            if now - self._start < QUIET_FOR_S and done < total:
                return  # short steps stay quiet; the first report comes once the step has lasted a while
            if done >= total:
                return
            self._announce()
        if self.terminal:
            self._bar.update(done - self._bar.n)
        elif now - self._last_line >= LOG_EVERY_S:
            self._line(now)
        if done >= total:
            self.close()

    def _announce(self) -> None:
        self._announced = True
        hint = f"; {self.hint}" if self.hint else ""
        print(f"stoker: {self.what}: {self._total:,} {self.unit}s, once (the results are cached){hint}",
              file=self.stream, flush=True)
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=self._total, unit=self.unit, desc=self.what, file=self.stream,
                             dynamic_ncols=True, initial=0)

    def _line(self, now: float) -> None:
        assert self._start is not None
        self._last_line, self._printed = now, self._done
        elapsed = max(now - self._start, 1e-9)
        rate = self._done / elapsed
        left = (self._total - self._done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "?"
        print(f"stoker: {self.what}: {self._done:,}/{self._total:,} {self.unit}s "
              f"({self._done / self._total:.0%}), {rate:,.0f} {self.unit}s/s, {eta} left",
              file=self.stream, flush=True)

    def close(self) -> None:
        """End the report: close the bar, or print the final line (only if anything was shown)."""
        if self._bar is not None:
            self._bar.update(self._done - self._bar.n)
            self._bar.close()
            self._bar = None
        elif self._announced and self._printed != self._done:
            self._line(self.clock())
        self._announced = False


FileProgress = Progress  # the name the folder DataModules used


class CountedBatches:
    """A batched ``Dataset.map`` function that reports the rows it has done to a :class:`Progress`.

    ``datasets`` shows a bar of its own; stoker turns it off around its maps and reports with the one
    kind of progress instead. Only for maps in this process (``num_proc`` of one): each worker of a
    multi-process map would count on its own, so those keep datasets' bar.

    Args:
        function: The map function, called as ``function(batch, indices)`` (``with_indices=True``).
        progress: Where the count goes.
        total: Rows the map will see.
    """

    def __init__(self, function: Callable[..., Any], progress: Progress, total: int) -> None:
        self.function, self.progress, self.total = function, progress, total
        self.done = 0

    def __call__(self, batch: Any, indices: list[int]) -> Any:
        out = self.function(batch, indices)
        self.done += len(indices)
        self.progress(self.done, self.total)
        return out


def quiet_datasets() -> Any:
    """A context in which datasets shows no progress bar of its own (stoker's :class:`Progress` reports)."""
    import contextlib

    @contextlib.contextmanager
    def quiet() -> Any:
        from datasets.utils import logging as datasets_logging

        was = datasets_logging.is_progress_bar_enabled()
        datasets_logging.disable_progress_bar()
        try:
            yield
        finally:
            if was:
                datasets_logging.enable_progress_bar()

    return quiet()
