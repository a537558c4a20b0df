"""Shard streams in one process with injected ranks: equal whole batches, disjoint, complete, exact resume, eval once.

Each test pins one place where litdata alone falls short (see stoker/data/sources/shards/stream.py).
"""

from __future__ import annotations

from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("litdata")

from stoker.data.loader import build_loader  # noqa: E402
from stoker.data.sources.shards import stream as shard_stream  # noqa: E402
from stoker.data.sources.shards.storage import allow_plain_http  # noqa: E402
from stoker.data.sources.shards.stream import ShardPass, ShardStream, StreamPosition  # noqa: E402
from stoker.samplers import ShardPlan  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402

# The shared shard fixtures (a packed tree, the loopback S3 server), by name for pytest.
image_tree_root = shared.image_tree_root
shard_set = shared.shard_set
s3_server = shared.s3_server

TRAIN, VAL, BATCH = 29, 8, 4


def _stream(shards: Path, rank: int, world: int, **kwargs: Any) -> ShardStream:
    return ShardStream(str(shards / "train"), itemgetter("index"), num_samples=TRAIN, rank=rank, num_replicas=world,
                       batch_size=BATCH, seed=3, **kwargs)


def _loader(stream: Any, workers: int, *, train: bool = True) -> Any:
    loader = build_loader(stream, batch_size=BATCH, train=train, num_workers=workers, pin_memory=False,
                          persistent_workers=False, prefetch_factor=2, seed=3)
    if isinstance(stream, ShardStream):
        stream.prepare(workers)
    return loader


def _epochs(shards: Path, rank: int, world: int, workers: int, epochs: int = 2) -> list[list[list[int]]]:
    loader = _loader(_stream(shards, rank, world), workers)
    return [[batch.tolist() for batch in loader] for _ in range(epochs)]


@pytest.mark.parametrize(("world", "workers"), [(1, 0), (2, 2), (3, 1)])
def test_training_ranks_get_equal_whole_batches_disjoint_and_complete(shard_set: Path, world: int,
                                                                      workers: int) -> None:
    plan = ShardPlan(TRAIN, world, mode="cut", batch_size=BATCH, drop_last=True)
    runs = [_epochs(shard_set, rank, world, workers) for rank in range(world)]
    for epoch in range(2):
        per_rank = [[i for batch in run[epoch] for i in batch] for run in runs]
        assert all(len(run[epoch]) == plan.num_batches(0) for run in runs), "the same number of steps on every rank"
        assert all(len(batch) == BATCH for run in runs for batch in run[epoch]), "whole batches only"
        seen = [i for rank in per_rank for i in rank]
        assert len(seen) == len(set(seen)) == plan.share(0) * world, "disjoint; only the cut tail is missing"
        assert set(seen) <= set(range(TRAIN))
    assert runs[0][0] != runs[0][1], "a new order every epoch"


def test_litdata_alone_repeats_samples_across_nodes_from_the_second_epoch(shard_set: Path) -> None:
    # The reason ShardStream tells litdata there is one node (its epoch >= 2 reshuffle inside each node's
    # first-epoch chunks reads straddling chunks on both nodes). If this starts failing, litdata fixed it.
    from litdata import StreamingDataset
    from litdata.utilities.env import _DistributedEnv

    def rank_items(rank: int, nodes: int) -> list[int]:
        ds = StreamingDataset(str(shard_set / "train"), shuffle=True, drop_last=True, seed=3)
        ds.distributed_env = _DistributedEnv(2, rank, nodes)
        ds.set_batch_size(BATCH)
        ds.set_epoch(2)
        return [item["index"] for item in ds]

    two_nodes = rank_items(0, 2) + rank_items(1, 2)
    one_node = rank_items(0, 1) + rank_items(1, 1)
    assert len(set(two_nodes)) < len(two_nodes), "litdata's multi-node epoch 2 repeats samples"
    assert len(set(one_node)) == len(one_node), "as one node, epoch 2 is disjoint"


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_continues_exactly_after_every_batch(shard_set: Path, workers: int) -> None:
    full = _epochs(shard_set, 1, 2, workers, epochs=3)
    for stop in range(1, len(full[1])):
        stream = _stream(shard_set, 1, 2)
        loader = _loader(stream, workers)
        first = [b.tolist() for b in loader]
        iterator = iter(loader)
        head = [next(iterator).tolist() for _ in range(stop)]
        state = loader.state_dict()
        del iterator
        resumed = _loader(_stream(shard_set, 1, 2), workers)
        resumed.load_state_dict(state)
        rest = [[b.tolist() for b in resumed] for _ in range(2)]
        assert [first, head + rest[0], rest[1]] == full, f"resumed after batch {stop} of epoch 1"


def test_the_main_process_state_starts_the_next_epoch(shard_set: Path) -> None:
    for workers in (0, 2):
        full = _epochs(shard_set, 0, 1, workers, epochs=2)
        stream = _stream(shard_set, 0, 1)
        loader = _loader(stream, workers)
        assert [b.tolist() for b in loader] == full[0]
        saved = StreamPosition(stream).state_dict()  # what the DataModule checkpoints at an epoch's end
        assert saved["epoch"] == 1 and saved["yielded"] == 0
        fresh = _stream(shard_set, 0, 1)
        StreamPosition(fresh).load_state_dict(saved)
        assert [b.tolist() for b in _loader(fresh, workers)] == full[1]


def test_a_state_of_other_settings_is_refused(shard_set: Path) -> None:
    # A position of other ranks mid-epoch is left to the loader's state, which holds every rank's position and
    # deals the epoch's rest again (tests/data/test_shards_elastic.py); another seed is refused by name.
    stream = _stream(shard_set, 0, 1)
    stream.load_state_dict({**_stream(shard_set, 0, 2).state_dict(), "yielded": 4})
    assert stream.shares._resume is None
    with pytest.raises(ValueError, match="the checkpoint has seed=0, this run has seed=3. Resume with the same seed"):
        _stream(shard_set, 0, 1).load_state_dict({**_stream(shard_set, 0, 1).state_dict(), "seed": 0, "yielded": 4})


def test_metadata_promising_more_samples_than_the_shards_hold_fails_before_training(shard_set: Path) -> None:
    stream = ShardStream(str(shard_set / "train"), itemgetter("index"), num_samples=TRAIN + 20, rank=0,
                         num_replicas=1, batch_size=BATCH)
    with pytest.raises(ValueError, match="litdata gives rank 0 28 samples .* fewer than its 12 batches"):
        stream.prepare(0)


@pytest.mark.parametrize(("world", "workers"), [(1, 2), (2, 0), (3, 2), (2, 1)])
def test_evaluation_reads_every_sample_exactly_once_in_shares_that_differ_by_one(shard_set: Path, world: int,
                                                                                 workers: int) -> None:
    seen, shares = [], []
    for rank in range(world):
        passes = ShardPass(str(shard_set / "val"), itemgetter("index"), num_samples=VAL, rank=rank,
                           num_replicas=world, batch_size=BATCH)
        mine = [i for batch in _loader(passes, workers, train=False) for i in batch.tolist()]
        seen, shares = seen + mine, [*shares, len(mine)]
    assert sorted(seen) == list(range(VAL))
    assert max(shares) - min(shares) <= 1 and min(shares) > 0  # never a rank without an evaluation step


def test_plain_http_endpoints_are_allowed_for_litdata(monkeypatch: pytest.MonkeyPatch) -> None:
    from litdata.streaming import downloader

    monkeypatch.setattr(downloader, "_OBSTORE_CLIENT_OPTIONS", {"timeout": "200s"})
    allow_plain_http({"endpoint_url": "https://s3.example.com"})
    assert "allow_http" not in downloader._OBSTORE_CLIENT_OPTIONS
    allow_plain_http({"endpoint_url": "http://127.0.0.1:9000"})
    assert downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] is True


def test_a_worker_waits_for_another_ones_download_of_a_remote_index(s3_server: str, shard_set: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Workers share the cache; litdata gave a worker 1 s to wait for the lock of the index.json another
    # was downloading, then failed with "doesn't contain any index.json file" (seen on a loaded machine).
    import boto3
    from filelock import FileLock
    from litdata.utilities.dataset_utilities import _try_create_cache_dir

    client = boto3.client("s3")
    for path in sorted((shard_set / "train").iterdir()):
        client.upload_file(str(path), "stoker", f"index-race/train/{path.name}")
    location, cache = "s3://stoker/index-race/train", str(tmp_path / "cache")
    allow_plain_http()
    lock = FileLock(str(Path(_try_create_cache_dir(location, cache)) / "index.json.lock"), thread_local=False)
    lock.acquire()  # as a worker downloading the index would hold it
    other = ReleaseOnRetry(lock)
    monkeypatch.setattr(shard_stream, "time", other)
    try:
        stream = ShardStream(location, itemgetter("index"), num_samples=TRAIN, rank=0, num_replicas=1,
                             batch_size=BATCH, seed=3, cache_dir=cache)
        assert len(stream.dataset(1)) == TRAIN - TRAIN % BATCH  # training drops the partial batch
        assert other.retries == 1, "the index was read after the other download let go, on the first retry"
    finally:
        if lock.is_locked:
            lock.release()


class ReleaseOnRetry:
    """Stands in for ``time`` in shard_stream: the other download lets go of the lock during the first retry's sleep.

    Its seconds pass only by those sleeps, so the retry deadline is reached by retries, not by a loaded machine.
    """

    def __init__(self, lock: Any) -> None:
        self.lock, self.retries, self.now = lock, 0, 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.retries += 1
        self.now += seconds
        if self.lock.is_locked:
            self.lock.release()
