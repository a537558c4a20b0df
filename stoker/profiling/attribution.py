"""Where loading time goes inside the workers: per worker, per stage, and the slowest samples by name.

Stoker's file datasets time each sample's read-and-decode and its transform; text streams time
their tokenization (:class:`TimedStage`, summed per process). The collate function adds its own
time and ships the figures with the batch under :data:`PROFILE_KEY` (a few floats per sample, no
logging call in the workers). The DataModule takes them out of the batch before it goes to the
device and feeds a :class:`LoadProfile`, which the starvation monitor reads at the end of fit.
Only loaders a Trainer asks for carry the figures: a batch read straight from ``train_dataloader()``
holds the data keys alone.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

PROFILE_KEY = "_load_profile"
ITEM_TIMING_KEY = "_timing"  # an item's (read_s, transform_s), taken out by the collate
_RESERVOIR = 20_000  # sample times kept for the p99 (the first ones; enough for a percentile)
_SLOWEST = 10
_LOCAL = threading.local()  # per worker process or loader thread: stage seconds not yet shipped with a batch


def _pending() -> dict[str, float]:
    if not hasattr(_LOCAL, "pending"):
        _LOCAL.pending = {}
    return _LOCAL.pending


def add_stage_time(stage: str, seconds: float) -> None:
    """Count ``seconds`` of ``stage`` (e.g. ``"tokenize"``) in this process, for the next batch it collates."""
    pending = _pending()
    pending[stage] = pending.get(stage, 0.0) + seconds


def take_stage_times() -> dict[str, float]:
    """The stage seconds counted since the last call, and reset."""
    pending = _pending()
    taken = dict(pending)
    pending.clear()
    return taken


def batch_profile(*, collate_s: float, read_s: Sequence[float] = (), transform_s: Sequence[float] = (),
                  index: Sequence[int] = ()) -> dict[str, Any]:
    """The figures a collate function ships with its batch (the worker id, process or thread, is read here)."""
    from stoker.data.loader import current_worker

    return {"worker": current_worker(), "read_s": list(read_s), "transform_s": list(transform_s),
            "index": list(index), "collate_s": collate_s, "stages": take_stage_times()}


class TimedStage:
    """Wrap a pipeline function (a ``datasets`` map function) so its time counts as ``stage`` in this process."""

    def __init__(self, function: Callable[..., Any], stage: str) -> None:
        self.function, self.stage = function, stage

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            add_stage_time(self.stage, time.perf_counter() - start)


class ProfiledCollate:
    """Wrap a collate function returning dict batches: its time, the items' own and the pending stage times go with it.

    Dict items that carry :data:`ITEM_TIMING_KEY` (file datasets) give up their read and transform
    times here, before the wrapped collate sees them; other items (a skipped sample) are passed as they are.
    """

    def __init__(self, collate: Callable[[Any], Any]) -> None:
        self.collate = collate

    def __call__(self, items: Any) -> Any:
        start = time.perf_counter()
        read_s: list[float] = []
        transform_s: list[float] = []
        index: list[int] = []
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and ITEM_TIMING_KEY in item:
                    read, transform = item.pop(ITEM_TIMING_KEY)
                    read_s.append(read)
                    transform_s.append(transform)
                    index.append(int(item.get("index", -1)))
        batch = self.collate(items)
        if isinstance(batch, dict):
            batch[PROFILE_KEY] = batch_profile(collate_s=time.perf_counter() - start, read_s=read_s,
                                               transform_s=transform_s, index=index)
        return batch


@dataclass
class WorkerTotals:
    """One worker's summed stage times."""

    samples: int = 0
    batches: int = 0
    read_s: float = 0.0
    transform_s: float = 0.0
    collate_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def per_sample_ms(self) -> float:
        """Mean read + transform time per sample, in ms."""
        return 1000 * (self.read_s + self.transform_s) / max(1, self.samples)


@dataclass
class LoadProfile:
    """Accumulates the per-batch load figures of one rank's training loader."""

    workers: dict[int, WorkerTotals] = field(default_factory=dict)
    sample_s: list[float] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)  # a min-heap of (seconds, path)

    def add(self, profile: dict[str, Any], path_of: Any = None) -> None:
        """Account one batch's figures (``path_of(index) -> str`` names the samples)."""
        totals = self.workers.setdefault(int(profile["worker"]), WorkerTotals())
        reads, transforms, indices = profile["read_s"], profile["transform_s"], profile["index"]
        totals.samples += len(reads)
        totals.batches += 1
        totals.read_s += sum(reads)
        totals.transform_s += sum(transforms)
        totals.collate_s += float(profile["collate_s"])
        for stage, seconds in (profile.get("stages") or {}).items():
            totals.stages[stage] = totals.stages.get(stage, 0.0) + float(seconds)
        seconds = [read + transform for read, transform in zip(reads, transforms)]
        room = _RESERVOIR - len(self.sample_s)
        if room > 0:
            self.sample_s.extend(seconds[:room])
        # Only a sample slower than the slowest kept so far costs a heap operation (and its name).
        floor = self.slowest[0][0] if len(self.slowest) >= _SLOWEST else -1.0
        for took, index in zip(seconds, indices):
            if took <= floor:
                continue
            item = (took, str(path_of(index)) if path_of is not None else f"index {index}")
            if len(self.slowest) < _SLOWEST:
                heapq.heappush(self.slowest, item)
            else:
                heapq.heapreplace(self.slowest, item)
            if len(self.slowest) >= _SLOWEST:
                floor = self.slowest[0][0]

    def p99_ms(self) -> float:
        """The 99th percentile of the per-sample time, in ms (NaN before any sample)."""
        if not self.sample_s:
            return float("nan")
        ordered = sorted(self.sample_s)
        return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: per worker, the p99 and the slowest samples."""
        workers = {w: {"samples": t.samples, "per_sample_ms": t.per_sample_ms,
                       "read_ms_per_sample": 1000 * t.read_s / max(1, t.samples),
                       "transform_ms_per_sample": 1000 * t.transform_s / max(1, t.samples),
                       "collate_ms_per_batch": 1000 * t.collate_s / max(1, t.batches), "batches": t.batches,
                       **{f"{stage}_ms_per_batch": 1000 * seconds / max(1, t.batches)
                          for stage, seconds in sorted(t.stages.items())}}
                   for w, t in sorted(self.workers.items())}
        slowest = [{"path": path, "ms": 1000 * seconds} for seconds, path in sorted(self.slowest, reverse=True)]
        return {"workers": workers, "p99_sample_ms": self.p99_ms(), "slowest": slowest}


def _worker_name(worker: Any) -> str:
    return "main process" if int(worker) < 0 else f"worker {worker}"


def _worker_line(worker: Any, figures: dict[str, Any]) -> str:
    per_sample = (f"read+decode {figures['read_ms_per_sample']:.2f} ms, transform "
                  f"{figures['transform_ms_per_sample']:.2f} ms per sample, ") if figures["samples"] else ""
    stages = [key for key in figures if key.endswith("_ms_per_batch") and key != "collate_ms_per_batch"]
    per_batch = [f"{key.removesuffix('_ms_per_batch')} {figures[key]:.2f} ms" for key in stages]
    per_batch.append(f"collate {figures['collate_ms_per_batch']:.2f} ms")
    return f"{_worker_name(worker)}: {per_sample}{', '.join(per_batch)} per batch"


def attribution_lines(summary: dict[str, Any]) -> list[str]:
    """The summary's lines about the workers (empty when nothing was measured)."""
    workers = summary.get("workers") or {}
    if not workers:
        return []
    lines = ["  loading inside the workers: " + "; ".join(_worker_line(w, v) for w, v in workers.items())]
    if any(v["samples"] for v in workers.values()):
        slowest_worker = max(workers, key=lambda w: workers[w]["per_sample_ms"])
        names = ", ".join(f"{s['path']} ({s['ms']:.0f} ms)" for s in summary["slowest"][:5])
        lines.append(f"  slowest: {_worker_name(slowest_worker)}; p99 sample {summary['p99_sample_ms']:.2f} ms; "
                     f"slowest samples: {names} (`stoker scan` checks such files for size and format outliers)")
    elif not any(key.startswith("tokenize") for v in workers.values() for key in v):
        lines.append("  the rows were tokenized once before training (cached), so a batch costs its collate only")
    else:
        slowest_worker = max(workers, key=lambda w: sum(v for k, v in workers[w].items() if k.endswith("_per_batch")))
        lines.append(f"  slowest: {_worker_name(slowest_worker)} (tokenizing on the fly: more workers, or a map-style "
                     "dataset tokenized once before training, take it off the step)")
    return lines
