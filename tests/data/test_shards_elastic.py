"""A shard-set epoch resumed on other ranks, loader workers or batch size: its rest dealt again, each sample once.

In one process, with ranks injected: each "rank" is a loader over its own :class:`ShardStream`; their states are
gathered as stoker's loader gathers them under DDP (``{"per_rank": [...]}``) and loaded into the loaders of
the new run. Samples are identified by their packed position (the decoder returns ``index``).
"""

from __future__ import annotations

from collections import Counter
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litdata")

from stoker.data.loader import build_loader  # noqa: E402
from stoker.data.sources.shards.elastic import deal, left_after  # noqa: E402
from stoker.data.sources.shards.stream import ShardStream  # noqa: E402
from stoker.samplers.shard_plan import worker_batches  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402

image_tree_root = shared.image_tree_root
shard_set = shared.shard_set

TRAIN = 29


def _loaders(shards: Path, world: int, workers: int, batch: int) -> list[Any]:
    loaders = []
    for rank in range(world):
        stream = ShardStream(str(shards / "train"), itemgetter("index"), num_samples=TRAIN, rank=rank,
                             num_replicas=world, batch_size=batch, seed=3)
        loaders.append(build_loader(stream, batch_size=batch, train=True, num_workers=workers, pin_memory=False,
                                    persistent_workers=False, prefetch_factor=2, seed=3, rank=rank,
                                    num_replicas=world))
        stream.prepare(workers)
    return loaders


def _run(loaders: list[Any], steps: int | None, state: dict[str, Any] | None = None) -> tuple[list[int], Any]:
    """Each rank takes ``steps`` batches (``None``: the whole epoch); what they trained and their gathered state."""
    trained: list[int] = []
    iterators = []
    for loader in loaders:
        if state is not None:
            loader.load_state_dict(state)
        iterators.append(iter(loader))
    lengths = set()
    for iterator in iterators:
        batches = [batch.tolist() for _, batch in zip(range(steps if steps is not None else 10**6), iterator)]
        lengths.add(len(batches))
        trained += [index for batch in batches for index in batch]
    assert len(lengths) == 1, f"the ranks took different numbers of steps: {lengths}"
    states = [loader.state_dict() for loader in loaders]
    return trained, {"per_rank": states} if len(states) > 1 else states[0]


@pytest.mark.parametrize(("before", "after"), [
    ((2, 1, 4), (1, 1, 4)),  # (ranks, workers, batch size): 2 ranks to 1
    ((1, 0, 4), (2, 2, 4)),  # 1 rank in the main process to 2 ranks of 2 workers
    ((1, 2, 4), (1, 0, 4)),  # 2 workers to the main process
    ((2, 0, 4), (3, 1, 2)),  # 2 ranks to 3 with another batch size
])
def test_the_rest_of_an_epoch_is_trained_once_on_other_ranks_and_workers(shard_set: Path, before: tuple[int, ...],
                                                                          after: tuple[int, ...]) -> None:
    old = _loaders(shard_set, *before)
    first, _ = _run(old, None)  # epoch 0, whole
    head, state = _run(old, 2)  # two steps of epoch 1, then the checkpoint
    new = _loaders(shard_set, *after)
    rest, _ = _run(new, None, state)
    epoch = Counter(head + rest)
    assert max(epoch.values()) == 1, "a sample trained twice in the resumed epoch"
    ranks, _, batch = after
    assert len(head) == 2 * before[0] * before[2] and TRAIN - len(epoch) < ranks * batch, \
        f"{TRAIN - len(epoch)} samples skipped; only a tail shorter than a batch per rank may be cut"
    assert sorted(first) != sorted(head + rest) or first != head + rest, "epoch 1 is not epoch 0 again"
    # The next epoch streams again, as an uninterrupted run on the new ranks and workers would.
    following, _ = _run(new, None)
    fresh = _loaders(shard_set, *after)
    _run(fresh, None)
    _run(fresh, None)
    expected, _ = _run(fresh, None)
    assert following == expected


def test_a_second_resume_inside_a_dealt_epoch_keeps_the_count(shard_set: Path) -> None:
    # 2 ranks, then 3 (killed again after one step), then 1: every sample of the epoch still trained once.
    head, state = _run(_loaders(shard_set, 2, 1, 4), 1)
    middle, state = _run(_loaders(shard_set, 3, 0, 2), 1, state)
    rest, _ = _run(_loaders(shard_set, 1, 2, 4), None, state)
    epoch = Counter(head + middle + rest)
    assert max(epoch.values()) == 1 and TRAIN - len(epoch) < 4


def test_a_position_of_some_ranks_only_is_refused_by_name(shard_set: Path) -> None:
    _, state = _run(_loaders(shard_set, 2, 0, 4), 1)
    lone = _loaders(shard_set, 1, 0, 4)[0]
    with pytest.raises(ValueError, match=r"from a checkpoint of 2 ranks that holds the position of 1: every rank's "
                                         r"position is needed"):
        lone.load_state_dict(state["per_rank"][0])
    other_seed = ShardStream(str(shard_set / "train"), itemgetter("index"), num_samples=TRAIN, rank=0,
                             num_replicas=1, batch_size=4, seed=5)
    with pytest.raises(ValueError, match="the checkpoint has seed=3, this run has seed=5. Resume with the same seed"):
        other_seed.resume_elsewhere(state["per_rank"], 1)


def test_an_epoch_boundary_resumes_as_it_is(shard_set: Path) -> None:
    old = _loaders(shard_set, 2, 0, 4)
    _run(old, None)
    _, state = _run(old, None)  # every worker's whole share: the next epoch starts with the new shares
    stream = _loaders(shard_set, 1, 0, 4)[0].dataset
    assert stream.resume_elsewhere(state["per_rank"], 1) is None


def test_deal_cuts_equal_whole_batch_blocks_and_one_run_per_worker() -> None:
    dealt = deal(list(range(30)), 2, 3, 4)
    assert [sum(len(run) for run in runs) for runs in dealt] == [12, 12]  # 15 per rank, cut to whole batches
    assert [len(run) for run in dealt[1]] == [worker_batches(3, w, 3) * 4 for w in range(3)]
    assert [i for runs in dealt for run in runs for i in run] == list(range(24)), "contiguous, in order"


def test_left_after_follows_each_stage() -> None:
    orders = [[5, 0, 1, 2], [9, 8, 7, 6], [3, 4]]  # what litdata dealt 3 (rank, worker) slots; 10 samples

    def litdata_orders(ranks: int, workers: int, batch: int) -> tuple[list[list[int]], int]:
        assert (ranks, workers, batch) == (3, 1, 2)
        return orders, 10

    first = {"num_replicas": 3, "workers": 1, "batch_size": 2, "yielded": [[2], [2], [0]]}
    assert left_after([first], litdata_orders) == [1, 2, 7, 6, 3, 4]
    second = {"num_replicas": 2, "workers": 1, "batch_size": 1, "yielded": [[1], [3]]}  # dealt [1, 2, 7], [6, 3, 4]
    assert left_after([first, second], litdata_orders) == [2, 7]
    with pytest.raises(ValueError, match="worker 0 of rank 1 counts 5 samples of an epoch that dealt it 4"):
        left_after([{**first, "yielded": [[2], [5], [0]]}], litdata_orders)
