"""The cross-rank view of the step clock: each rank's figures in one row, the mean, the slowest rank and node.

Framework-free: rows are exchanged by the starvation monitor at its log intervals (one all-gather)
and turned here into the run's view. Under DDP the gradient all-reduce makes every rank wait for the
slowest one, so the rank (and node) with the largest data wait is the one holding the others back;
the skew (worst over median fetch wait) says by how much.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from stoker.profiling.step_clock import PhaseTotals

# Per-rank figures exchanged at log intervals, in this order (one float tensor row per rank).
RANK_FIELDS: tuple[str, ...] = (
    "starvation", "fetch_fraction", "gpu_idle_fraction", "fetch_ms", "fetch_max_ms", "transfer_ms", "step_ms",
    "samples_per_s", "first_batch_s", "main_rss_mb", "workers_rss_mb", "num_workers",
    "speed_of_light_samples_per_s", "node_rank", "local_rank",
)


def rank_row(window: PhaseTotals, *, first_batch_s: float, main_rss_mb: float, workers_rss_mb: float,
             num_workers: int, speed_of_light: float | None = None, node_rank: int = 0,
             local_rank: int = 0) -> list[float]:
    """This rank's figures over a window, in :data:`RANK_FIELDS` order (NaN where unknown)."""
    nan = float("nan")
    steps = max(window.steps, 1)
    gpu = window.gpu_idle_fraction
    fetch = window.fetch_fraction
    starvation = gpu if gpu is not None else fetch
    return [
        nan if starvation is None else starvation,
        nan if fetch is None else fetch,
        nan if gpu is None else gpu,
        1000 * window.fetch_s / steps,
        1000 * window.fetch_max_s,
        1000 * window.transfer_s / steps,
        1000 * window.compute_s / steps,
        window.samples_per_s or 0.0,
        first_batch_s,
        main_rss_mb,
        workers_rss_mb,
        float(num_workers),
        nan if speed_of_light is None else speed_of_light,
        float(node_rank),
        float(local_rank),
    ]


@dataclass
class RankAggregate:
    """The cross-rank view of one set of per-rank rows."""

    per_rank: list[dict[str, float]]
    mean: dict[str, float]
    slowest_rank: int
    slowest_starvation: float


def aggregate_ranks(rows: Sequence[Sequence[float]]) -> RankAggregate:
    """Mean of each field over ranks and the slowest rank (most starved; NaN counts as 0).

    Under DDP the gradient all-reduce makes every rank wait for the slowest one, so the rank with
    the largest data wait is the one holding the others back.

    Raises:
        ValueError: When no rows are given or a row has the wrong length.
    """
    if not rows:
        raise ValueError("aggregate_ranks needs at least one rank's row, got none")
    for index, row in enumerate(rows):
        if len(row) != len(RANK_FIELDS):
            raise ValueError(f"rank {index} row has {len(row)} values, expected {len(RANK_FIELDS)} ({RANK_FIELDS})")
    per_rank = [dict(zip(RANK_FIELDS, (float(v) for v in row))) for row in rows]
    mean = {}
    for name in RANK_FIELDS:
        values = [r[name] for r in per_rank if r[name] == r[name]]
        mean[name] = sum(values) / len(values) if values else float("nan")
    starvation = [nan_to_zero(r["starvation"]) for r in per_rank]
    slowest = max(range(len(starvation)), key=lambda i: (starvation[i], -i))
    return RankAggregate(per_rank=per_rank, mean=mean, slowest_rank=slowest, slowest_starvation=starvation[slowest])


@dataclass
class Stragglers:
    """Who holds the others back, and by how much.

    Attributes:
        fetch_skew: Worst rank's fetch wait over the median rank's (1.0: balanced; NaN: no wait measured).
        slowest_rank: The run's slowest rank (:attr:`RankAggregate.slowest_rank`, the most starved), so
            every line of a summary names the same one.
        slowest_node: The node whose ranks wait longest for data, on average.
        per_node_wait_ms: Mean data wait per step of each node's ranks.
        collective_wait_ms: Per rank, the time it waits for the slowest rank's data in the all-reduce
            (the slowest rank's data wait minus its own), an estimate from host timings.
    """

    fetch_skew: float
    slowest_rank: int
    slowest_node: int
    per_node_wait_ms: dict[int, float]
    collective_wait_ms: list[float]


def nan_to_zero(value: float) -> float:
    """``value``, or 0.0 where it is NaN (a field this rank did not measure)."""
    return 0.0 if value != value else value


def _data_wait(row: dict[str, float]) -> float:
    return nan_to_zero(row["fetch_ms"]) + nan_to_zero(row["transfer_ms"])


def find_stragglers(run: RankAggregate) -> Stragglers:
    """The straggler view of a run's per-rank rows (per rank and per node)."""
    waits = [_data_wait(row) for row in run.per_rank]
    fetches = [nan_to_zero(row["fetch_ms"]) for row in run.per_rank]
    median = statistics.median(fetches)
    skew = max(fetches) / median if median > 0 else (1.0 if max(fetches) == 0 else float("inf"))
    slowest = run.slowest_rank
    nodes: dict[int, list[float]] = {}
    for row, wait in zip(run.per_rank, waits):
        nodes.setdefault(int(nan_to_zero(row["node_rank"])), []).append(wait)
    per_node = {node: sum(values) / len(values) for node, values in sorted(nodes.items())}
    slowest_node = max(per_node, key=lambda node: (per_node[node], -node))
    return Stragglers(fetch_skew=skew, slowest_rank=slowest, slowest_node=slowest_node, per_node_wait_ms=per_node,
                      collective_wait_ms=[max(0.0, waits[slowest] - wait) for wait in waits])
