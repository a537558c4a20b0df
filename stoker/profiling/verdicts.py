"""Verdicts, number-backed suggestions and the end-of-fit summary of the starvation monitor.

Framework-free: it takes measured figures (a :class:`~stoker.profiling.step_clock.RankAggregate` over the
whole run, first-batch latencies, the loader's settings and memory from
:mod:`stoker.profiling.memory`) and returns text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stoker.profiling.ranks import RankAggregate, find_stragglers, nan_to_zero

# Starvation at or above this is input-bound; below COMPUTE_BOUND the device is fed.
INPUT_BOUND = 0.20
COMPUTE_BOUND = 0.05


@dataclass
class LoaderInfo:
    """The training DataLoader's settings as far as the monitor can see them."""

    num_workers: int = 0
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    batch_size: int | None = None
    cores_per_rank: int = 1
    on_cuda: bool = False
    worker_type: str = "process"
    threads_possible: bool = False  # a map-style dataset: worker_type="thread" would load it

    @classmethod
    def from_loader(cls, loader: Any, *, cores_per_rank: int, on_cuda: bool) -> LoaderInfo:
        """Read the settings from a ``torch.utils.data.DataLoader`` (anything else gives defaults)."""
        from torch.utils.data import IterableDataset

        workers = int(getattr(loader, "loading_workers", None) or getattr(loader, "num_workers", 0) or 0)
        dataset = getattr(loader, "dataset", None)
        return cls(
            num_workers=workers,
            worker_type=str(getattr(loader, "worker_type", "process")),
            threads_possible=dataset is not None and not isinstance(dataset, IterableDataset),
            pin_memory=bool(getattr(loader, "pin_memory", False)),
            persistent_workers=bool(getattr(loader, "persistent_workers", False)),
            prefetch_factor=getattr(loader, "prefetch_factor", None) if workers else None,
            batch_size=getattr(loader, "batch_size", None),
            cores_per_rank=max(1, cores_per_rank),
            on_cuda=on_cuda,
        )


def verdict(starvation: float) -> str:
    """``input-bound``, ``balanced`` or ``compute-bound`` for a starvation fraction in ``[0, 1]``."""
    if starvation != starvation:  # NaN: no steady-state step was measured
        return "unknown"
    if starvation >= INPUT_BOUND:
        return "input-bound"
    if starvation < COMPUTE_BOUND:
        return "compute-bound"
    return "balanced"


def suggestions(run: RankAggregate, loader: LoaderInfo, first_batch_s: list[float]) -> list[str]:
    """Concrete changes, each with the measured number that motivates it."""
    starvation = run.slowest_starvation
    label = verdict(starvation)
    out: list[str] = []
    if label == "compute-bound":
        out.append(f"the loader keeps up ({100 * starvation:.1f}% starved): loader tuning will not speed this run up")
        if loader.num_workers > 2:
            out.append(f"{loader.num_workers} workers may be more than needed; fewer would save their memory")
    if label in ("input-bound", "balanced"):
        out.extend(_feeding_suggestions(run, loader))
    out.extend(_rank_suggestion(run))
    slow = run.per_rank[run.slowest_rank]
    if loader.on_cuda and not loader.pin_memory and slow["transfer_ms"] > 0.05 * max(slow["step_ms"], 1e-9):
        out.append(f"host-to-device copy takes {slow['transfer_ms']:.1f} ms per step from pageable memory: "
                   "set pin_memory=True")
    later = first_batch_s[1:]
    restarts = False
    if loader.num_workers > 0 and not loader.persistent_workers and later and loader.worker_type == "process":
        mean_later = sum(later) / len(later)
        if mean_later > 5 * max(slow["fetch_ms"] / 1000, 1e-3):
            restarts = True
            out.append(f"each epoch restarts its workers ({mean_later:.2f} s to the first batch): "
                       "set persistent_workers=True")
    out.extend(_thread_suggestion(run, loader, restarts))
    return out


THREAD_WORKER_MB = 200.0  # memory unique to each worker process above which threads are worth suggesting


def _thread_suggestion(run: RankAggregate, loader: LoaderInfo, restarts: bool) -> list[str]:
    """Suggest loader threads when worker processes cost memory or start-up that threads would not."""
    if loader.worker_type != "process" or loader.num_workers == 0 or not loader.threads_possible:
        return []
    per_worker = mean_of(run, "workers_rss_mb", run.slowest_rank) / loader.num_workers
    if per_worker >= THREAD_WORKER_MB:
        return [f"each of the {loader.num_workers} worker processes holds {per_worker:.0f} MiB of its own: "
                "worker_type='thread' loads the same batches in threads of this process, without those copies"]
    if restarts:
        return ["or worker_type='thread': loader threads start at once, with no process to spawn per epoch"]
    return []


def _feeding_suggestions(run: RankAggregate, loader: LoaderInfo) -> list[str]:
    """What to change when the device waits for data: workers, GPU decoding, CPU cost, prefetch."""
    slow = run.per_rank[run.slowest_rank]
    fetch_ms = slow["fetch_ms"]
    out = []
    spare = loader.cores_per_rank - 1 - loader.num_workers
    if spare > 0:
        out.append(
            f"waiting {fetch_ms:.1f} ms per step for data with {loader.num_workers} workers while "
            f"{loader.cores_per_rank} cores are available per rank: try num_workers={loader.cores_per_rank - 1}"
        )
    elif loader.on_cuda:
        out.append(
            f"all {loader.cores_per_rank} cores per rank already load data and the GPU still idles "
            f"{100 * run.slowest_starvation:.0f}%: decode and augment on the GPU (stoker's DALI DataModule)"
        )
    else:
        out.append(
            f"waiting {fetch_ms:.1f} ms per step for data and no core is left for another worker "
            f"({loader.cores_per_rank} per rank, {loader.num_workers} workers): more cores or fewer ranks per node"
        )
    per_sample = _cpu_ms_per_sample(loader, fetch_ms, slow["transfer_ms"] + slow["step_ms"])
    if per_sample is not None:
        out.append(
            f"the CPU pipeline costs about {per_sample:.2f} ms per sample per core; lighter CPU augmentation "
            "(smaller decode size, fewer ops) or device-side augmentation cuts it"
        )
    if loader.num_workers > 0 and fetch_ms > 0 and _spiky(run):
        depth = (loader.prefetch_factor or 2) * 2
        out.append(f"fetch waits are uneven (worst {_worst(run):.0f} ms vs {fetch_ms:.1f} ms mean): "
                   f"try prefetch_factor={depth}")
    return out


def _rank_suggestion(run: RankAggregate) -> list[str]:
    """Name a rank that waits for data much longer than the others (they wait for it in all-reduce)."""
    if len(run.per_rank) < 2:
        return []
    slow = run.per_rank[run.slowest_rank]
    others = [r["fetch_ms"] for i, r in enumerate(run.per_rank) if i != run.slowest_rank]
    typical = sum(others) / len(others)
    if slow["fetch_ms"] <= 2 * typical + 1.0:
        return []
    return [f"rank {run.slowest_rank} waits {slow['fetch_ms']:.1f} ms per step for data against {typical:.1f} ms on "
            "the other ranks, which wait for it in the gradient all-reduce: check its node (cores, disk) and shard"]


def _cpu_ms_per_sample(loader: LoaderInfo, fetch_ms: float, other_ms: float) -> float | None:
    # Input-bound, the workers are the bottleneck: together they produce one batch per iteration,
    # so a batch costs about (iteration time x workers) of CPU. Without workers it is the fetch.
    if not loader.batch_size:
        return None
    batch_ms = fetch_ms if loader.num_workers == 0 else (fetch_ms + other_ms) * loader.num_workers
    return batch_ms / loader.batch_size


def _worst(run: RankAggregate) -> float:
    return max(nan_to_zero(r["fetch_max_ms"]) for r in run.per_rank)


def _spiky(run: RankAggregate) -> bool:
    slow = run.per_rank[run.slowest_rank]
    return nan_to_zero(slow["fetch_max_ms"]) > 4 * max(slow["fetch_ms"], 1.0)


def headroom(run: RankAggregate) -> float:
    """Speed of light over the measured rate (NaN until a replay measured it): how much faster loading free would be."""
    achievable, measured = run.mean["speed_of_light_samples_per_s"], run.mean["samples_per_s"]
    return achievable / measured if achievable == achievable and measured > 0 else float("nan")


def _speed_of_light_lines(run: RankAggregate, replay: Any) -> list[str]:
    achievable = run.mean["speed_of_light_samples_per_s"]
    if replay is None or achievable != achievable:
        return []
    ratio = headroom(run)
    lines = [f"  speed of light ({replay.steps} steps replayed on kept batches, loading free): "
             f"{replay.step_s * 1e3:.2f} ms per step, {achievable:.1f} samples/s per rank against "
             f"{run.mean['samples_per_s']:.1f} measured: headroom {ratio:.2f}x"]
    if ratio > 1.2:
        lines.append(f"  - loading costs this run {100 * (1 - 1 / ratio):.0f}% of its speed: the input pipeline is "
                     "what to fix (see the suggestions, and `stoker profile --config RECIPE` for num_workers)")
    else:
        lines.append("  - the run is within 20% of its speed of light: faster loading would buy little")
    return lines


def _straggler_lines(run: RankAggregate) -> list[str]:
    if len(run.per_rank) < 2:
        return []
    found = find_stragglers(run)
    slow = run.per_rank[found.slowest_rank]
    nodes = ", ".join(f"node {n} {ms:.1f} ms" for n, ms in found.per_node_wait_ms.items())
    waits = max(found.collective_wait_ms)
    return [f"  stragglers: fetch skew {found.fetch_skew:.2f} (worst/median rank); slowest rank {found.slowest_rank} "
            f"(node {int(slow['node_rank'])}, local rank {int(slow['local_rank'])}); data wait per step by node: "
            f"{nodes}; the fastest rank waits about {waits:.1f} ms per step for it in the all-reduce"]


def format_summary(run: RankAggregate, loader: LoaderInfo, first_batch_s: list[float], *, steps: int,
                   replay: Any = None) -> str:
    """The human-readable end-of-fit report printed on rank zero (``replay``: a speed-of-light result)."""
    mean = run.mean
    world = len(run.per_rank)
    kind = "GPU idle (CUDA events)" if loader.on_cuda else "host fetch wait / step time (CPU run)"
    total_sps = sum(r["samples_per_s"] for r in run.per_rank)
    lines = [
        "stoker StarvationMonitor summary",
        f"  steady-state steps per rank: {steps} on {world} rank(s)",
        f"  loading speed (steady state): {total_sps:.1f} samples/s over all ranks "
        f"({mean['samples_per_s']:.1f} per rank)",
        f"  starvation ({kind}): {100 * nan_to_zero(mean['starvation']):.1f}% mean, "
        f"{100 * run.slowest_starvation:.1f}% on the slowest rank (rank {run.slowest_rank})",
        f"  per step: fetch wait {mean['fetch_ms']:.2f} ms, {_transfer_label(loader)} {mean['transfer_ms']:.2f} ms, "
        f"step {mean['step_ms']:.2f} ms (fetch fraction {100 * nan_to_zero(mean['fetch_fraction']):.1f}%)",
    ]
    if first_batch_s:
        shown = ", ".join(f"{s:.3f}" for s in first_batch_s[:8]) + (", ..." if len(first_batch_s) > 8 else "")
        lines.append(f"  epoch start-up (epoch start to first batch: worker start-up, first reads), per epoch: "
                     f"{shown} s")
    lines += _speed_of_light_lines(run, replay)
    lines += _straggler_lines(run)
    lines.append(
        f"  memory (rank 0): main process {mean_of(run, 'main_rss_mb', 0):.0f} MiB resident + "
        f"{int(run.per_rank[0]['num_workers'])} workers {mean_of(run, 'workers_rss_mb', 0):.0f} MiB unique to them"
    )
    lines.append(
        f"  loader: {loader.num_workers} {'threads' if loader.worker_type == 'thread' else 'workers'}, "
        f"{loader.cores_per_rank} cores per rank, pin_memory="
        f"{loader.pin_memory}, persistent_workers={loader.persistent_workers}, prefetch_factor={loader.prefetch_factor}"
    )
    if steps == 0:
        # Only epochs' first batches ran (fast_dev_run, one batch per epoch): nothing steady to judge.
        lines.append("  verdict: unknown (no steady-state step was measured; run more than one batch per epoch)")
        return "\n".join(lines)
    lines.append(f"  verdict: {verdict(run.slowest_starvation)}")
    lines.extend(f"  - {text}" for text in suggestions(run, loader, first_batch_s))
    return "\n".join(lines)


def _transfer_label(loader: LoaderInfo) -> str:
    # The span from the fetch to the step holds the copy *and* on_after_batch_transfer: on a CPU run
    # there is no copy, only that device-side preprocessing (normalization, log-mel spectrograms).
    if loader.on_cuda:
        return "host-to-device copy + on_after_batch_transfer"
    return "on_after_batch_transfer (device-side preprocessing, run on the CPU here)"


def mean_of(run: RankAggregate, key: str, rank: int) -> float:
    """One rank's value of a field (0 when missing or NaN)."""
    return nan_to_zero(run.per_rank[rank].get(key, 0.0))


