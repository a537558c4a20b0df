"""A num_workers / prefetch tuner: measure the loader alone over settings, stop at the knee, recommend.

Framework-free: :func:`tune_loader` takes a function that builds the training loader for a setting
and measures each with :func:`stoker.profiling.loader_probe.measure_loader` (samples/s in steady
state, start-up, memory of the main process and of the workers). Workers go 0, 1, 2, 4, ... up to
the cores per local rank; the search stops at the knee, where one more step of workers (from 1 on)
buys less than ``knee`` (10%) more throughput, or as soon as a setting reaches ``target`` (the model's speed of
light: more loading speed than the model consumes buys nothing). Then prefetch depths are tried on
the chosen worker count.

With ``worker_types=("process", "thread")`` (a map-style dataset) the same worker counts are measured
again with loader threads. Threads keep no copy of the interpreter per worker, so their memory per worker
is what the process grows by over the 0-worker setting; they are recommended when their best predicted
rate is within ``tolerance`` of the processes' best (per-sample work that holds the GIL keeps processes).

With a target, each setting's training rate is predicted: loading in the main process (0 workers)
adds its time to every step, ``1 / (1 / loader + 1 / model)``; workers overlap it with the step,
``min(loader, model)``. The recommendation is the smallest setting predicted within ``tolerance`` (5%)
of the best prediction; without a target, the smallest with workers within ``knee`` of the best loader
rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from stoker.profiling.loader_probe import measure_loader


@dataclass
class Setting:
    """One measured loader setting."""

    num_workers: int
    prefetch_factor: int
    samples_per_s: float
    startup_s: float
    main_mb: float
    workers_mb: float  # memory the workers add: unique to worker processes, or what threads add to this process
    worker_type: str = "process"

    @property
    def mb_per_worker(self) -> float:
        """Memory one worker adds, in MiB (0 without workers)."""
        return self.workers_mb / self.num_workers if self.num_workers else 0.0

    @property
    def label(self) -> str:
        """``process`` or ``thread``; ``main`` without workers (both backends load in the main process then)."""
        return self.worker_type if self.num_workers else "main"

    def predicted(self, target: float | None) -> float:
        """Training samples/s predicted with the model consuming ``target`` (the loader rate without one)."""
        if not target:
            return self.samples_per_s
        if self.num_workers == 0:  # loading runs in the training process, one after the other
            return 1.0 / (1.0 / max(self.samples_per_s, 1e-9) + 1.0 / target)
        return min(self.samples_per_s, target)


@dataclass
class TunerResult:
    """The measured curve and the recommendation."""

    settings: list[Setting]
    best: Setting
    target: float | None
    reason: str
    notes: list[str] = field(default_factory=list)
    # What the DataModule's arguments can set.
    settable: tuple[str, ...] = ("num_workers", "prefetch_factor", "worker_type")

    def values(self) -> dict[str, int | str]:
        """The recommended settings the DataModule accepts (no prefetch depth without workers; the worker
        type once both were measured)."""
        out: dict[str, int | str] = {"num_workers": self.best.num_workers}
        if self.best.num_workers:
            out["prefetch_factor"] = self.best.prefetch_factor
            if any(s.worker_type == "thread" for s in self.settings):
                out["worker_type"] = self.best.worker_type
        return {key: value for key, value in out.items() if key in self.settable}

    def overrides(self, prefix: str = "data.init_args") -> list[str]:
        """The command-line overrides that apply the recommendation."""
        return [f"--{prefix}.{key}={value}" for key, value in self.values().items()]

    def yaml(self, nested: bool = False) -> str:
        """The recommendation as YAML to compose with ``--config`` (``nested``: inside a wrapper's datamodule)."""
        indent = "      " if nested else "    "
        lines = ["# written by `stoker profile`: compose with --config", "data:", "  init_args:"]
        if nested:
            lines.append("    datamodule:\n      init_args:")
        lines += [f"{indent}{key}: {value}" for key, value in self.values().items()]
        return "\n".join(lines) + "\n"

    def table(self) -> str:
        """The curve as text, one row per setting, the recommended one marked."""
        lines = ["workers  type     prefetch  loader samples/s  training samples/s (predicted)  start-up s  main MiB  "
                 "MiB/worker"]
        for s in self.settings:
            mark = "  <- recommended" if s is self.best else ""
            lines.append(f"{s.num_workers:7d}  {s.label:7s}  {s.prefetch_factor:8d}  {s.samples_per_s:16.1f}  "
                         f"{s.predicted(self.target):30.1f}  {s.startup_s:10.3f}  {s.main_mb:8.0f}  "
                         f"{s.mb_per_worker:10.0f}{mark}")
        if self.target:
            lines.append(f"the model consumes {self.target:.1f} samples/s (speed of light)")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"settings": [asdict(s) for s in self.settings], "best": asdict(self.best), "target": self.target,
                "reason": self.reason, "notes": self.notes, "overrides": self.overrides()}


def worker_counts(max_workers: int) -> list[int]:
    """0, 1, 2, 4, 8, ... up to and including ``max_workers``."""
    counts, n = [0], 1
    while n < max_workers:
        counts.append(n)
        n *= 2
    if max_workers >= 1:
        counts.append(max_workers)
    return sorted(set(counts))


def _measure(make_loader: Callable[[int, int, str], Iterable[Any]], batch_size_of: Callable[[Any], int],
             workers: int, prefetch: int, worker_type: str, batches: int, clock: Callable[[], float],
             main_baseline_mb: float = 0.0) -> Setting:
    measured = measure_loader(make_loader(workers, prefetch, worker_type), batch_size_of, batches=batches, clock=clock)
    memory = measured["memory_mb"]
    main, added = float(memory["main"]), float(memory["workers"])
    if worker_type == "thread":  # no worker processes: what the threads and their batches add to this one
        added = max(0.0, main - main_baseline_mb)
    return Setting(workers, prefetch, float(measured["samples_per_s"]), float(measured["startup_s"]), main, added,
                   worker_type)


def tune_loader(
    make_loader: Callable[[int, int, str], Iterable[Any]],
    batch_size_of: Callable[[Any], int],
    *,
    max_workers: int,
    prefetch_factors: Sequence[int] = (2, 4),
    worker_types: Sequence[str] = ("process",),
    target: float | None = None,
    batches: int = 20,
    knee: float = 0.10,
    tolerance: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> TunerResult:
    """Measure loader settings and recommend one (see the module docstring).

    Args:
        make_loader: ``(num_workers, prefetch_factor, worker_type) -> loader`` (a fresh one per setting).
        batch_size_of: Samples in a batch.
        max_workers: The most workers to try (the cores per local rank).
        prefetch_factors: Depths tried on the chosen worker count (the first is the default).
        worker_types: ``"process"`` and, for a map-style dataset, ``"thread"``.
        target: The samples/s the model consumes (its speed of light); ``None`` when unknown.
        batches: Batches measured per setting (the first, the start-up, is left out of the rate).
        knee: Smallest relative gain worth one more step of workers.
        tolerance: How far below the best predicted training rate the recommendation may be.
        clock: Returns seconds (tests pass a fake).

    Raises:
        ValueError: ``max_workers`` below 0, ``batches`` below 2, no prefetch factor or an unknown worker type.
    """
    if max_workers < 0 or batches < 2 or not prefetch_factors:
        raise ValueError(f"need max_workers >= 0, batches >= 2 and a prefetch factor; got {max_workers}, {batches}, "
                         f"{list(prefetch_factors)}")
    unknown = set(worker_types) - {"process", "thread"}
    if unknown or "process" not in worker_types:
        raise ValueError(f"worker_types must hold 'process' and may add 'thread', got {list(worker_types)}")
    default = prefetch_factors[0]

    def curve(worker_type: str, counts: list[int], settings: list[Setting]) -> list[Setting]:
        baseline = settings[0].main_mb if settings else 0.0
        measured: list[Setting] = []
        for workers in counts:
            setting = _measure(make_loader, batch_size_of, workers, default, worker_type, batches, clock, baseline)
            previous = max((s.samples_per_s for s in settings + measured), default=0.0)
            measured.append(setting)
            if target is not None and setting.num_workers and setting.samples_per_s >= target:
                break  # workers already supply more than the model consumes: more buy nothing
            if setting.num_workers >= 2 and setting.samples_per_s < previous * (1 + knee):
                break  # the knee: another step of workers adds less than `knee`
            # (From 0 to 1 worker the loader alone rarely gets faster: the worker's value is the overlap
            # with the training step, which the prediction accounts for, so the search always goes on.)
        return measured

    settings = curve("process", worker_counts(max_workers), [])
    chosen = _pick(settings, target, knee, tolerance)[0]
    if chosen.num_workers:  # deeper prefetch on the worker count the curve recommends
        for prefetch in prefetch_factors[1:]:
            settings.append(_measure(make_loader, batch_size_of, chosen.num_workers, prefetch, "process", batches,
                                     clock))
    if "thread" in worker_types and max_workers:
        main_only = [s for s in settings if not s.num_workers]
        settings += curve("thread", [n for n in worker_counts(max_workers) if n], main_only)
    return _recommend(settings, target, knee, tolerance)


def _pick(settings: list[Setting], target: float | None, knee: float,
          tolerance: float) -> tuple[Setting, str, float]:
    """The cheapest setting within reach of the best, why, and the best rate (predicted with a target)."""
    by_cost = sorted(settings, key=lambda s: (s.num_workers, s.prefetch_factor))
    if target is None:
        # Without the model's rate, workers are assumed worth their overlap with the step.
        candidates = [s for s in by_cost if s.num_workers] or by_cost
        top = max(s.samples_per_s for s in candidates)
        best = next(s for s in candidates if s.samples_per_s >= top / (1 + knee))
        return best, f"the knee: within {knee:.0%} of the best loader rate measured", top
    top = max(s.predicted(target) for s in settings)
    best = next(s for s in by_cost if s.predicted(target) >= top * (1 - tolerance))
    reason = f"the smallest setting predicted within {tolerance:.0%} of the best training rate ({top:.1f} samples/s)"
    return best, reason, top


def _recommend(settings: list[Setting], target: float | None, knee: float, tolerance: float) -> TunerResult:
    processes = [s for s in settings if s.worker_type == "process"]
    best, reason, top = _pick(processes, target, knee, tolerance)
    notes = []
    threads = [s for s in settings if s.worker_type == "thread"]
    if threads:
        main_only = [s for s in processes if not s.num_workers]
        by_thread, _, thread_top = _pick(threads + main_only, target, knee, tolerance)
        if by_thread.num_workers and thread_top >= top * (1 - tolerance):
            saved = best.workers_mb - by_thread.workers_mb if best.num_workers else 0.0
            reason = (f"threads load within {tolerance:.0%} of worker processes ({thread_top:.1f} vs {top:.1f} "
                      f"samples/s) with {by_thread.mb_per_worker:.0f} MiB per thread"
                      + (f", {saved:.0f} MiB less than the processes" if saved > 0 else ""))
            best = by_thread
        else:
            notes.append(f"loader threads reach {thread_top / max(top, 1e-9):.0%} of the processes' rate: the "
                         "per-sample work holds the GIL (pure-Python transforms), so worker processes stay")
    if target is not None and top < target * (1 - tolerance):
        notes.append(f"no setting supplies the model's {target:.1f} samples/s (best predicted {top:.1f}): the run "
                     "stays input-bound; lighter CPU work per sample, GPU decoding (DALI) or more cores per rank")
    return TunerResult(settings, best, target, reason, notes)
