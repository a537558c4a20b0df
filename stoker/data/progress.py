"""Progress for long per-file work (the first decode check and hashing of a large folder).

A tqdm bar, like Lightning's own, shown on global rank zero only and only when stderr is a
terminal; before it, one line says what is happening, that it happens once (the results are
cached) and how to skip it. Small jobs show nothing.
"""

from __future__ import annotations

import sys
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

MIN_FILES = 500  # below this the work takes seconds: no bar


class FileProgress:
    """A ``progress(done, total)`` callback for :func:`stoker.data.file_cache.per_file_cached`.

    Args:
        what: What is being done, e.g. ``"decode-checking image files"``.
        hint: How to avoid it, e.g. ``"verify='none' trusts the files"``.
        enabled: Override the rank-zero-and-terminal rule (tests).
    """

    def __init__(self, what: str, hint: str, *, enabled: bool | None = None) -> None:
        self.what, self.hint = what, hint
        rank = getattr(rank_zero_only, "rank", 0)  # set by Lightning on every process it launches
        self.enabled = (rank == 0 and sys.stderr.isatty()) if enabled is None else enabled
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < MIN_FILES:
            return
        if self._bar is None:
            from tqdm import tqdm

            print(f"stoker: {self.what}: {total} files, once (the results are cached); {self.hint}",
                  file=sys.stderr, flush=True)
            self._bar = tqdm(total=total, unit="file", desc=self.what, file=sys.stderr, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the bar (if one was shown)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
