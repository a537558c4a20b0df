"""How a rank's batches are dealt over its loader workers (what the streams' per-worker quotas rest on)."""

from __future__ import annotations

import pytest

from stoker.samplers.shard_plan import worker_batches


@pytest.mark.parametrize(("num_batches", "workers"), [(0, 1), (7, 1), (7, 3), (2, 4), (12, 4)])
def test_workers_get_the_batches_the_dataloader_asks_them_for(num_batches: int, workers: int) -> None:
    # The DataLoader asks worker w for batches w, w + W, ... in turn.
    asked = [sum(1 for b in range(num_batches) if b % workers == w) for w in range(workers)]
    assert [worker_batches(num_batches, w, workers) for w in range(workers)] == asked


def test_a_worker_outside_the_loader_is_refused() -> None:
    with pytest.raises(ValueError, match=r"worker must be in \[0, 2\), got 2"):
        worker_batches(5, 2, 2)
