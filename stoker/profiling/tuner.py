"""A num_workers / prefetch tuner: measure the loader alone over settings, stop at the knee, recommend.

Framework-free: :func:`tune_loader` takes a function that builds the training loader for a setting
and measures each with :func:`stoker.profiling.loader_probe.measure_loader` (samples/s in steady
state, start-up, memory of the main process and of the workers). Workers go 0, 1, 2, 4, ... up to
the cores per local rank; the search stops at the knee, where one more step of workers (from 1 on)
buys less than ``knee`` (10%) more throughput, or as soon as a setting reaches ``target`` (the model's speed of
light: more loading speed than the model consumes buys nothing). Then prefetch depths are tried on
the chosen worker count.

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
    workers_mb: float

    @property
    def mb_per_worker(self) -> float:
        """Memory unique to one worker, in MiB (0 without workers)."""
        return self.workers_mb / self.num_workers if self.num_workers else 0.0

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
    settable: tuple[str, ...] = ("num_workers", "prefetch_factor")  # what the DataModule's arguments can set

    def values(self) -> dict[str, int]:
        """The recommended settings the DataModule accepts (no prefetch depth without workers)."""
        out = {"num_workers": self.best.num_workers}
        if self.best.num_workers:
            out["prefetch_factor"] = self.best.prefetch_factor
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
        lines = ["workers  prefetch  loader samples/s  training samples/s (predicted)  start-up s  main MiB  "
                 "MiB/worker"]
        for s in self.settings:
            mark = "  <- recommended" if s is self.best else ""
            lines.append(f"{s.num_workers:7d}  {s.prefetch_factor:8d}  {s.samples_per_s:16.1f}  "
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


def _measure(make_loader: Callable[[int, int], Iterable[Any]], batch_size_of: Callable[[Any], int], workers: int,
             prefetch: int, batches: int, clock: Callable[[], float]) -> Setting:
    measured = measure_loader(make_loader(workers, prefetch), batch_size_of, batches=batches, clock=clock)
    memory = measured["memory_mb"]
    return Setting(workers, prefetch, float(measured["samples_per_s"]), float(measured["startup_s"]),
                   float(memory["main"]), float(memory["workers"]))


def tune_loader(
    make_loader: Callable[[int, int], Iterable[Any]],
    batch_size_of: Callable[[Any], int],
    *,
    max_workers: int,
    prefetch_factors: Sequence[int] = (2, 4),
    target: float | None = None,
    batches: int = 20,
    knee: float = 0.10,
    tolerance: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
) -> TunerResult:
    """Measure loader settings and recommend one (see the module docstring).

    Args:
        make_loader: ``(num_workers, prefetch_factor) -> loader`` (a fresh one per setting).
        batch_size_of: Samples in a batch.
        max_workers: The most workers to try (the cores per local rank).
        prefetch_factors: Depths tried on the chosen worker count (the first is the default).
        target: The samples/s the model consumes (its speed of light); ``None`` when unknown.
        batches: Batches measured per setting (the first, the start-up, is left out of the rate).
        knee: Smallest relative gain worth one more step of workers.
        tolerance: How far below the best predicted training rate the recommendation may be.
        clock: Returns seconds (tests pass a fake).

    Raises:
        ValueError: ``max_workers`` below 0, ``batches`` below 2 or no prefetch factor.
    """
    if max_workers < 0 or batches < 2 or not prefetch_factors:
        raise ValueError(f"need max_workers >= 0, batches >= 2 and a prefetch factor; got {max_workers}, {batches}, "
                         f"{list(prefetch_factors)}")
    default = prefetch_factors[0]
    settings: list[Setting] = []
    for workers in worker_counts(max_workers):
        setting = _measure(make_loader, batch_size_of, workers, default, batches, clock)
        previous = max((s.samples_per_s for s in settings), default=0.0)
        settings.append(setting)
        if target is not None and setting.num_workers and setting.samples_per_s >= target:
            break  # workers already supply more than the model consumes: more buy nothing
        if setting.num_workers >= 2 and setting.samples_per_s < previous * (1 + knee):
            break  # the knee: another step of workers adds less than `knee`
        # (From 0 to 1 worker the loader alone rarely gets faster: the worker's value is the overlap
        # with the training step, which the prediction accounts for, so the search always goes on.)
    chosen = _recommend(settings, target, knee, tolerance).best
    if chosen.num_workers:  # deeper prefetch on the worker count the curve recommends
        for prefetch in prefetch_factors[1:]:
            settings.append(_measure(make_loader, batch_size_of, chosen.num_workers, prefetch, batches, clock))
    return _recommend(settings, target, knee, tolerance)


def _recommend(settings: list[Setting], target: float | None, knee: float, tolerance: float) -> TunerResult:
    by_cost = sorted(settings, key=lambda s: (s.num_workers, s.prefetch_factor))
    if target is None:
        # Without the model's rate, workers are assumed worth their overlap with the step.
        candidates = [s for s in by_cost if s.num_workers] or by_cost
        top = max(s.samples_per_s for s in candidates)
        best = next(s for s in candidates if s.samples_per_s >= top / (1 + knee))
        return TunerResult(settings, best, target, f"the knee: within {knee:.0%} of the best loader rate measured")
    top = max(s.predicted(target) for s in settings)
    best = next(s for s in by_cost if s.predicted(target) >= top * (1 - tolerance))
    notes = []
    if top < target * (1 - tolerance):
        notes.append(f"no setting supplies the model's {target:.1f} samples/s (best predicted {top:.1f}): the run "
                     "stays input-bound; lighter CPU work per sample, GPU decoding (DALI) or more cores per rank")
    reason = f"the smallest setting predicted within {tolerance:.0%} of the best training rate ({top:.1f} samples/s)"
    return TunerResult(settings, best, target, reason, notes)
