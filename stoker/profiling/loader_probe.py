"""Measure a DataLoader on its own: samples/s over N batches, memory of the main process and workers.

The loader is timed without a model, so the numbers are what the input pipeline can supply at
most; during training, :class:`stoker.callbacks.StarvationMonitor` shows whether the model waits.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

from stoker.profiling.memory import measure_memory


def measure_loader(loader: Iterable[Any], batch_size_of: Callable[[Any], int], *, batches: int = 20,
                   clock: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Iterate ``batches`` batches and time each fetch.

    The first batch carries the worker start-up, so it is reported apart and left out of the rate.

    Returns:
        ``samples_per_s``, ``startup_s``, ``batch_s`` (per batch), ``samples_per_s_per_batch``,
        ``median_batch_s``, ``p90_batch_s``, ``memory_mb`` (peak ``main``/``workers``, ``num_processes``)
        and ``first_batch`` (the first batch, for its format).

    Raises:
        ValueError: ``batches`` is not positive, or the loader yields nothing.
    """
    if batches < 1:
        raise ValueError(f"batches must be a positive integer, got {batches}")
    peak = {"main": 0.0, "workers": 0.0, "num_processes": 0}
    times: list[float] = []
    sizes: list[int] = []
    first: Any = None
    start = clock()
    iterator = iter(loader)
    for _ in range(batches):
        before = clock() if times else start
        try:
            batch = next(iterator)
        except StopIteration:
            break
        times.append(clock() - before)
        sizes.append(batch_size_of(batch))
        if first is None:
            first = batch
            peak = _peak(peak)  # workers are up once the first batch is in
    # Memory is read after the first batch and after the last only: scanning the workers takes
    # milliseconds, and workers would prefetch meanwhile and look faster than they are.
    peak = _peak(peak)
    del iterator  # shuts non-persistent workers down
    if not times:
        raise ValueError("the training DataLoader yielded no batch; check the split sizes and batch_size")
    steady_times, steady_sizes = (times[1:], sizes[1:]) if len(times) > 1 else (times, sizes)
    total = sum(steady_times)
    return {
        "batches": len(times),
        "samples_per_s": sum(steady_sizes) / total if total > 0 else float("inf"),
        "startup_s": times[0],
        "batch_s": times,
        "samples_per_s_per_batch": [n / t if t > 0 else 0.0 for n, t in zip(sizes, times)],
        "median_batch_s": statistics.median(steady_times),
        "p90_batch_s": sorted(steady_times)[int(0.9 * (len(steady_times) - 1))],
        "memory_mb": {k: round(v, 1) if isinstance(v, float) else v for k, v in peak.items()},
        "first_batch": first,
    }


def _peak(peak: dict[str, Any]) -> dict[str, Any]:
    now = measure_memory()
    return {"main": max(peak["main"], now.main_mb), "workers": max(peak["workers"], now.workers_mb),
            "num_processes": max(int(peak["num_processes"]), now.num_workers)}


def time_items(dataset: Any, *, count: int = 16, clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per item in this process: the whole ``dataset[i]`` and, for a dataset with ``transform``,
    the share spent in that transform (the rest is reading and decoding)."""
    size = len(dataset)
    positions = [round(i * (size - 1) / max(1, count - 1)) for i in range(min(count, size))]
    start = clock()
    for position in positions:
        dataset[position]
    whole = (clock() - start) / len(positions)
    out = {"item_s": whole}
    transform = getattr(dataset, "transform", None)
    if transform is not None:
        saved = dataset.transform
        dataset.transform = None
        try:
            start = clock()
            for position in positions:
                dataset[position]
            out["read_decode_s"] = (clock() - start) / len(positions)
        finally:
            dataset.transform = saved
        out["transform_s"] = max(0.0, whole - out["read_decode_s"])
    return out


def find_bottlenecks(measured: dict[str, Any], items: dict[str, float], *, num_workers: int, cores: int,
                     persistent_workers: bool, step_s: float | None = None) -> list[str]:
    """Plain-language verdicts, each with its numbers, from the loader and per-item measurements.

    With ``step_s`` (a measured training step of the model on one batch), the loader is judged
    against what the model consumes: when it supplies batches faster than the step takes, the run is
    compute-bound and loader tuning is not suggested.
    """
    median = measured["median_batch_s"]
    if step_s is not None and median > 0 and median < step_s:
        return [f"compute-bound: the loader supplies a batch every {median * 1e3:.1f} ms and a training step of "
                f"the model takes {step_s * 1e3:.1f} ms here, so loader tuning will not speed training up"]
    notes: list[str] = []
    if step_s is not None and median > 0:
        notes.append(f"input-bound: a batch takes {median * 1e3:.1f} ms to load and the model's training step "
                     f"{step_s * 1e3:.1f} ms, so the model would wait about {(median - step_s) * 1e3:.1f} ms per "
                     "step without workers to overlap them")
    rate = measured["samples_per_s"]
    single = 1.0 / items["item_s"] if items.get("item_s") else None
    if num_workers == 0:
        notes.append(f"loading runs in the training process ({rate:.0f} samples/s): set num_workers so that "
                     "decoding overlaps the model step")
    elif single:
        ideal = single * min(num_workers, cores)
        efficiency = rate / ideal if ideal else 0.0
        if efficiency < 0.5:
            notes.append(f"{num_workers} workers deliver {rate:.0f} samples/s, {efficiency:.0%} of "
                         f"{min(num_workers, cores)} x the single-process {single:.0f} samples/s: worker IPC, "
                         "collation or CPU contention limit scaling")
    if num_workers > cores:
        notes.append(f"{num_workers} workers share {cores} cores: oversubscribed; use at most {cores}")
    if "transform_s" in items and items["item_s"] > 0:
        share = items["transform_s"] / items["item_s"]
        part = "CPU augmentation" if share >= 0.5 else "reading and decoding"
        notes.append(f"{part} takes {max(share, 1 - share):.0%} of the per-sample CPU time "
                     f"({items['item_s'] * 1e3:.2f} ms per sample in one process)"
                     + ("; consider a lighter policy or device-side augmentation" if share >= 0.5 else
                        "; GPU decoding (the DALI DataModule) removes this cost from the CPU"))
    if median > 0 and measured["startup_s"] > 5 * median and not persistent_workers and num_workers > 0:
        notes.append(f"worker start-up takes {measured['startup_s']:.2f} s (vs {median * 1e3:.0f} ms per batch) "
                     "and repeats every epoch: set persistent_workers=True")
    if median > 0 and measured["p90_batch_s"] > 3 * median:
        notes.append(f"batch times are uneven (p90 {measured['p90_batch_s'] * 1e3:.0f} ms vs median "
                     f"{median * 1e3:.0f} ms): storage stalls or a few slow files; raise prefetch_factor")
    return notes or ["no loading bottleneck found in the loader alone; check StarvationMonitor during training"]
