"""One split of a shard set, streamed by litdata: equal training batches per rank, exact resume, eval once.

litdata's ``StreamingDataset`` does the streaming: it reads the split's ``index.json``, gives
every (rank, worker) its chunks, permutes chunks and then samples inside them per epoch,
downloads chunks ahead into a local cache (remote sources) or maps them in place (local), and
reads the samples. stoker wraps it in two iterable datasets that the stoker loader policy
(torchdata's ``StatefulDataLoader``) runs:

* :class:`ShardStream` (training) yields exactly its rank's share of whole batches
  (:class:`~stoker.samplers.ShardPlan` in ``"cut"`` mode), split over the loader's workers as
  whole batches, so every rank runs the same number of steps and no partial batch exists.
  Its state is ``{epoch, yielded}`` per worker; torchdata saves and restores it inside every
  worker, so a resumed epoch continues exactly after the last batch the model received.
* :class:`ShardPass` (evaluation) reads the rank's share once, in packing order, padding nothing.

Where litdata falls short, and what stoker does about it (each pinned by a test in
``tests/data/test_shards_stream.py``):

* **Multi-node reshuffles repeat samples.** From its second epoch litdata reshuffles chunks
  inside each node's first-epoch chunk set; a chunk that straddled two nodes then belongs to
  both, so samples are read twice per epoch and others not at all. stoker describes the world
  to litdata as one node (``_DistributedEnv(world_size, rank, 1)``): every epoch is one global
  permutation, disjoint over all ranks of all nodes (the price: a node does not keep reading
  the chunks it cached in epoch 1).
* **Node count on CPU.** litdata guesses nodes from CUDA devices; the rank and world size are
  set from the Trainer instead of being detected.
* **Uneven ranks with ``drop_last=False``.** litdata gives the remainder to the last rank, so a
  training rank could take more steps than the others and leave them waiting in an all-reduce.
  Training always runs with ``drop_last=True``, and :class:`ShardStream` checks each worker's
  count against the plan (too few samples is an error, never a hang).
* **Resume by replay.** litdata's own resume replays "``num_samples_yielded`` samples over
  round-robin workers" from one number kept by its ``StreamingDataLoader``. Here each worker
  knows its own count; it hands litdata a state made by litdata itself (in the main process)
  with that count expressed as whole rounds, so litdata skips the consumed chunks and samples
  without reading them.
* **Resume on other ranks, workers or batch size.** litdata deals an epoch by all three, so a worker's
  count means nothing on other ones. The loader hands every saved rank's and worker's count to
  :meth:`ShardStream.resume_elsewhere`, which deals the epoch's rest again
  (:mod:`stoker.data.sources.shards.elastic`) and reads it by position; the next epoch streams.
* **A remote index fetched by several processes.** The loader workers (and the ranks of a node)
  share one cache; the first downloads the split's ``index.json`` under a file lock, and litdata
  gives the others only one second to wait for it before failing with "doesn't contain any
  index.json file". stoker retries the dataset for up to :data:`INDEX_WAIT_S` while that
  download is under way.
* **Evaluation.** With ``drop_last=False`` litdata's split of an evaluation set is uneven (the last
  rank reads up to ``world_size`` more batches) but complete: every sample exactly once, and
  evaluation runs no collective per step.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset

from stoker.data.loader import MAX_WORKERS, worker_slot
from stoker.data.sources.shards.elastic import deal, left_after, rest_stages
from stoker.data.sources.shards.storage import allow_plain_http, is_remote
from stoker.data.stream_shares import WholeBatchStream, WorkerShares
from stoker.samplers.shard_plan import ShardPlan
from stoker.seeds import derive_seed

INDEX_WAIT_S = 60.0  # how long a process waits for another one's download of a remote split's index.json




class _LitdataSplit(IterableDataset):
    """What both streams share: one split of a shard set, read through a per-process litdata dataset.

    Args:
        location: The split's folder or URL (``SOURCE/<split>``).
        decode: Turns a stored sample into a loader item (runs in the loader workers).
        num_samples: Samples in the split (those of damaged chunks left out).
        rank: This rank.
        num_replicas: Ranks (the world size).
        batch_size: Samples per batch.
        seed: The run's seed (litdata's shuffle seed derives from it).
        cache_dir: Where litdata caches the chunks of a remote source (per node).
        max_cache_size: litdata's cache budget (``None``: its default).
        storage_options: litdata storage options of a remote source.
        damaged: Chunk files found damaged before training; their samples come back as damaged records
            (:mod:`stoker.data.litdata_compat`) that the decoder skips or raises on.
    """

    shuffle = False

    def __init__(self, location: str, decode: Callable[[dict[str, Any]], Any], *, num_samples: int, rank: int,
                 num_replicas: int, batch_size: int, seed: int = 0, cache_dir: str | None = None,
                 max_cache_size: str | None = None, storage_options: dict[str, Any] | None = None,
                 damaged: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.location, self.decode, self.num_samples = location, decode, num_samples
        self.rank, self.num_replicas, self.batch_size, self.seed = rank, num_replicas, batch_size, seed
        self.cache_dir, self.max_cache_size, self.storage_options = cache_dir, max_cache_size, storage_options
        self.damaged = frozenset(damaged)
        self._passes = torch.zeros(MAX_WORKERS, dtype=torch.int64).share_memory_()  # evaluation passes per worker
        self._own: tuple[int, Any] | None = None

    def litdata_seed(self) -> int:
        """The seed of litdata's chunk and sample permutations (NumPy takes 32 bits)."""
        return derive_seed(self.seed, "shards", bits=31)

    def dataset(self, workers: int) -> Any:
        """This process's litdata ``StreamingDataset`` of the split (built once per process)."""
        if self._own is None or self._own[0] != os.getpid():
            self._own = (os.getpid(), self.new_dataset())
        ds = self._own[1]
        ds.set_batch_size(self.batch_size)
        ds.set_num_workers(workers)
        return ds

    def new_dataset(self) -> Any:
        """A litdata ``StreamingDataset`` of the split, as this process's :meth:`dataset` is made."""
        from litdata import StreamingDataset
        from litdata.utilities.env import _DistributedEnv

        from stoker.data.litdata_compat import checked_item_loader

        allow_plain_http(self.storage_options)
        deadline = time.monotonic() + INDEX_WAIT_S
        while True:
            try:
                ds = StreamingDataset(self.location, cache_dir=self.cache_dir, shuffle=self.shuffle,
                                      drop_last=self.shuffle, seed=self.litdata_seed(),
                                      max_cache_size=self.max_cache_size, storage_options=self.storage_options,
                                      item_loader=checked_item_loader(self.damaged))
                break
            except ValueError as error:
                # Another process holds the lock of the cached index.json (see the module notes).
                remote = is_remote(self.location)
                if not (remote and "index.json" in str(error)) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        ds.set_drop_last(self.shuffle)  # the constructor forces True under DDP; evaluation needs False
        ds.distributed_env = _DistributedEnv(self.num_replicas, self.rank, 1)  # one node: see the module
        return ds

    def bind_seeding(self, seeding: Any) -> None:
        """Hand the per-sample seeding to the decoder (its crops and flips), as the map-style datasets take it."""
        bind = getattr(self.decode, "bind_seeding", None)
        if callable(bind):
            bind(seeding)

    def __getitem__(self, position: int) -> Any:
        """The sample packed at ``position``, decoded (random access for sample grids and reports, not training)."""
        return self.decode(self.dataset(1)[int(position)])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_own"] = None  # each process builds its own litdata dataset (its reader holds threads and files)
        return state


class ShardStream(WholeBatchStream, _LitdataSplit):
    """One rank's training share of a split: exactly ``num_batches`` whole batches per epoch, resumable.

    Args:
        location: See :class:`_LitdataSplit` (so are the other arguments).
    """

    shuffle = True
    order_keys = ("seed", "rank", "num_replicas", "batch_size", "num_samples")

    def __init__(self, location: str, decode: Callable[[dict[str, Any]], Any], **split: Any) -> None:
        super().__init__(location, decode, **split)
        self.plan = ShardPlan(self.num_samples, self.num_replicas, mode="cut", batch_size=self.batch_size,
                              drop_last=True)
        self.num_batches = self.plan.num_batches(self.rank)
        self.shares = WorkerShares(num_batches=self.num_batches, batch_size=self.batch_size,
                                   settings={key: getattr(self, key) for key in self.order_keys})
        self._epoch = -1  # the epoch this process iterates (its worker's copy)
        self._yielded = 0
        self._template: dict[str, Any] | None = None
        # A resume on other ranks, workers or batch size: {"epoch", "stages"} until the next iteration takes it,
        # then the stages of the epoch it iterates and the length of its share (see stoker...shards.elastic).
        self._elastic: dict[str, Any] | None = None
        self._stages: list[dict[str, Any]] | None = None
        self._share = 0

    def prepare(self, workers: int) -> None:
        """Take litdata's resume state template in the main process (litdata refuses to make one in a worker)."""
        ds = self.dataset(max(1, workers))
        self._template = dict(ds.state_dict(0, max(1, workers), self.batch_size))
        if len(ds) < self.num_batches * self.batch_size:
            raise ValueError(f"litdata gives rank {self.rank} {len(ds)} samples of {self.location!r}, fewer than its "
                             f"{self.num_batches} batches of {self.batch_size}; the shard set and its metadata differ")

    def __iter__(self) -> Iterator[Any]:
        # Not a generator: the epoch is claimed when the loader builds its iterator (torchdata restores the
        # state first, then calls iter), and the iterator is not the dataset, so torchdata saves the state.
        if self._elastic is not None:
            elastic, self._elastic = self._elastic, None
            worker, workers = worker_slot()
            positions = self.rest_share(elastic["epoch"], elastic["stages"], workers)[worker]
            self.shares.start(worker, elastic["epoch"])
            self._epoch, self._yielded, self._stages = elastic["epoch"], 0, elastic["stages"]
            self._share = len(positions)
            return self._rest(positions, workers)
        claim = self.shares.claim()
        self._epoch, self._yielded, self._stages = claim.epoch, claim.start, None
        self._share = claim.quota
        return self._samples(claim.worker, claim.workers, claim.quota, claim.start)

    def rest_share(self, epoch: int, stages: list[dict[str, Any]], workers: int) -> list[list[int]]:
        """This rank's positions of what ``stages`` left of ``epoch``, one run per loader worker (see the module)."""
        from stoker.data.litdata_compat import worker_orders

        def litdata_orders(ranks: int, old_workers: int, batch: int) -> tuple[list[list[int]], int]:
            return worker_orders(self.new_dataset(), num_replicas=ranks, workers=old_workers, batch_size=batch,
                                 epoch=epoch + 1)  # litdata counts epochs from 1

        left = left_after(stages, litdata_orders)
        return deal(left, self.num_replicas, workers, self.batch_size)[self.rank]

    def resume_elsewhere(self, rank_states: list[dict[str, Any]], workers: int) -> int | None:
        """Take a mid-epoch checkpoint of other ranks, workers or batch size: the rest of its epoch, dealt again.

        Args:
            rank_states: Every saved rank's loader state (torchdata's layout).
            workers: This run's loader workers (1 for the main process).

        Returns:
            The batches this rank trains of the epoch's rest, or ``None`` when the checkpoint resumes as it is
            (the same ranks, workers and batch size, or an epoch's boundary).

        Raises:
            ValueError: The checkpoint was written with another seed or of another shard set.
        """
        found = rest_stages(rank_states, num_replicas=self.num_replicas, workers=workers, batch_size=self.batch_size,
                            settings={"seed": self.seed, "num_samples": self.num_samples}, what=self.location)
        if found is None:
            return None
        epoch, stages = found
        self._elastic = {"epoch": epoch, "stages": stages}
        self.shares.forget(epoch)
        return sum(len(run) for run in self.rest_share(epoch, stages, workers)) // self.batch_size

    def forget_elsewhere(self) -> None:
        """The loader's iterator took the rest (its workers hold copies): the next epoch streams again."""
        self._elastic = None

    def _rest(self, positions: list[int], workers: int) -> Iterator[Any]:
        from stoker.data.litdata_compat import read_whole_chunks

        ds = self.dataset(workers)
        read_whole_chunks(ds)
        for position in positions:
            self._yielded += 1  # before the yield: a state taken while suspended counts this sample
            yield self.decode(ds[position])

    def _samples(self, worker: int, workers: int, quota: int, start: int) -> Iterator[Any]:
        if start >= quota:
            return
        ds = self.dataset(workers)
        ds.reset_state_dict()
        if start:
            if self._template is None:
                raise RuntimeError("ShardStream.prepare() must run in the main process before a resumed iteration")
            # Whole rounds of `start // batch_size` batches per worker: litdata's replay then puts every worker,
            # this one included, at exactly `start` samples into its share.
            rounds = start // self.batch_size
            ds.load_state_dict({**self._template, "current_epoch": self._epoch + 1,
                                "num_samples_yielded": rounds * workers * self.batch_size})
        else:
            ds.set_epoch(self._epoch + 1)  # litdata counts epochs from 1
        source = iter(ds)
        for _ in range(start, quota):
            try:
                item = next(source)
            except StopIteration:
                raise RuntimeError(
                    f"litdata gave worker {worker} of rank {self.rank} only {self._yielded} of its {quota} samples of "
                    f"{self.location!r} in epoch {self._epoch}; stopping short would leave the other ranks waiting. "
                    "Check that the shard set is complete (re-pack it) and that every rank runs the same settings"
                ) from None
            self._yielded += 1  # before the yield: a state taken while suspended counts this sample
            yield self.decode(item)

    def state_dict(self) -> dict[str, Any]:
        """``{epoch, yielded}`` of this worker (or, in the main process, the next epoch to start) and the settings.

        In an epoch resumed on other ranks or workers, ``stages`` too: how its start was dealt and trained.
        """
        position: dict[str, Any] | None = None
        if self._epoch >= 0:
            position = {"epoch": self._epoch, "yielded": self._yielded, "share": self._share}
            if self._stages is not None:
                position["stages"] = self._stages
        return self.shares.state(position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` on the next iteration (see :class:`StreamPosition` for a whole epoch's state).

        A mid-epoch state of other ranks, workers or batch size (or of an epoch that was itself resumed so) is
        left to the loader's state, which holds every rank's and worker's position (:meth:`resume_elsewhere`).

        Raises:
            ValueError: The state was saved with other settings.
        """
        elsewhere = any(key in state and state[key] != mine for key, mine in
                        (("num_replicas", self.num_replicas), ("batch_size", self.batch_size)))
        if int(state.get("yielded", 0)) > 0 and ("stages" in state or elsewhere):
            return
        self.shares.restore(state, what=f"the shard stream of {self.location!r}")


class StreamPosition:
    """A training stream's position as the DataModule checkpoints it: a finished epoch is "the next one, from 0".

    Lightning restores a loader's own (per-worker) state only mid-epoch, and there a worker at the
    end of its share must yield nothing more for that epoch. From a checkpoint written at an
    epoch's end Lightning starts a fresh loader, which should begin the next epoch: this wrapper
    (the DataModule's :meth:`~stoker.datamodules.base.StokerDataModule.track_train_sampler` object)
    turns such a complete position into ``{epoch + 1, yielded 0}``.
    """

    def __init__(self, stream: ShardStream) -> None:
        self.stream = stream

    def state_dict(self) -> dict[str, Any]:
        state = self.stream.state_dict()
        if int(state["yielded"]) >= int(state.get("share", self.stream.quota(0, 1))):  # the main process's whole share
            state.update(epoch=int(state["epoch"]) + 1, yielded=0)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


class ShardPass(_LitdataSplit):
    """One pass over a rank's evaluation share, in packing order: over the ranks every sample exactly once.

    The rank's share is a contiguous block of the split's packed positions (blocks differ by at most one
    sample, so no rank is left without a step when there are at least as many samples as ranks), cut
    again into contiguous blocks for the loader's workers, and read by position through litdata (whole
    chunks, downloaded once each, stay with one rank). litdata's own uneven split of an evaluation set
    could give a rank nothing (20 samples, batches of 16, 2 ranks: 0 and 20), and a rank without an
    evaluation step hangs the others in the epoch-end metric reduction.

    Args:
        location: See :class:`_LitdataSplit` (so are the other arguments).
    """

    def positions(self, worker: int = 0, workers: int = 1) -> range:
        """The packed positions worker ``worker`` of this rank reads."""
        first, last = _block(self.num_samples, self.rank, self.num_replicas)
        start, stop = _block(last - first, worker, workers)
        return range(first + start, first + stop)

    def __iter__(self) -> Iterator[Any]:
        worker, workers = worker_slot()
        self._passes[worker] += 1
        return self._samples(self.positions(worker, workers))

    def _samples(self, positions: range) -> Iterator[Any]:
        from stoker.data.litdata_compat import read_whole_chunks

        ds = self.dataset(1)
        if ds.cache is None:  # before its first read: whole chunks, checked like the training stream's
            read_whole_chunks(ds)
        for position in positions:
            yield self.decode(ds[position])


def _block(total: int, part: int, parts: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``part`` of ``total`` items cut into ``parts`` contiguous blocks differing by one."""
    return part * total // parts, (part + 1) * total // parts
