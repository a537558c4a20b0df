"""The cross-rank view: one slowest rank for every line of a summary."""

from __future__ import annotations

from typing import Any

from stoker.profiling.ranks import RANK_FIELDS, aggregate_ranks, find_stragglers


def _row(**values: float) -> list[float]:
    base: dict[str, Any] = dict.fromkeys(RANK_FIELDS, 0.0)
    base.update({"step_ms": 100.0, "node_rank": 0.0, "local_rank": 0.0, **values})
    return [float(base[name]) for name in RANK_FIELDS]


def test_the_straggler_view_names_the_most_starved_rank() -> None:
    # Rank 0 copies more to the device, rank 1 starves on its loader: the summary's starvation line and
    # its straggler line used to name different ranks as the slowest.
    run = aggregate_ranks([_row(starvation=0.05, fetch_ms=5.0, transfer_ms=30.0, local_rank=0.0),
                           _row(starvation=0.30, fetch_ms=30.0, transfer_ms=1.0, local_rank=1.0),
                           _row(starvation=0.02, fetch_ms=2.0, transfer_ms=1.0, node_rank=1.0)])
    found = find_stragglers(run)
    assert run.slowest_rank == found.slowest_rank == 1
    assert found.collective_wait_ms == [0.0, 0.0, 28.0], "nobody waits a negative time for the slowest rank"
    assert found.per_node_wait_ms == {0: 33.0, 1: 3.0} and found.slowest_node == 0
