"""Loader policy: how many workers, pinning, prefetching, sampling and worker seeding.

Every stoker DataModule builds its DataLoaders through :func:`build_loader`, so the policy lives
here once and subclasses only say *what* to load. Every loader is torchdata's
``StatefulDataLoader``: Lightning saves its ``state_dict`` in checkpoints and restores it, which is
stoker's one mid-epoch resume mechanism.
"""

from __future__ import annotations

import itertools
import os
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, get_worker_info
from torch.utils.data._utils.pin_memory import pin_memory
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.stateful_dataloader import (
    _ITERATOR_FINISHED,
    _StatefulSingleProcessDataLoaderIter,
)

from stoker.samplers.distributed import ResumableDistributedSampler
from stoker.seeds import WorkerSeeding, derive_seed

MAX_WORKERS = 256  # loader workers a stoker stream keeps shared counters for
WorkerType = Literal["process", "thread"]
WORKER_TYPES: tuple[str, ...] = ("process", "thread")
_THREAD_SLOT = threading.local()  # a loader thread's (id, workers), set when the pool starts it


def worker_slot() -> tuple[int, int]:
    """``(this worker's id, the loader's workers)``: a worker process's, a loader thread's, or ``(0, 1)`` elsewhere.

    Raises:
        ValueError: More workers than the streams' shared counters hold (:data:`MAX_WORKERS`).
    """
    info = get_worker_info()
    slot = getattr(_THREAD_SLOT, "slot", None)
    if info is not None:
        worker, workers = info.id, info.num_workers
    elif slot is not None:
        worker, workers = slot
    else:
        worker, workers = 0, 1
    if worker >= MAX_WORKERS:
        raise ValueError(f"a stoker stream supports at most {MAX_WORKERS} loader workers, got {workers}")
    return worker, workers


def current_worker() -> int:
    """The id of the worker (process or thread) running this code, or -1 in the main process (for attribution)."""
    info = get_worker_info()
    if info is not None:
        return int(info.id)
    slot = getattr(_THREAD_SLOT, "slot", None)
    return int(slot[0]) if slot is not None else -1


def available_cores() -> int:
    """CPU cores this process may run on (respects affinity masks and cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity API
        return os.cpu_count() or 1


def local_world_size() -> int:
    """Processes per node, from the launcher's environment (1 outside distributed runs)."""
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def default_num_workers(processes_per_node: int | None = None) -> int:
    """Workers per DataLoader: the cores available divided among the ranks on this node.

    The main process of each rank keeps working (collation, transfer, the training step), so it
    counts as one of the cores: with 8 cores and 2 ranks each rank gets 3 workers.
    """
    per_rank = available_cores() // max(1, processes_per_node or local_world_size())
    return max(0, per_rank - 1)


def per_rank_state(local: dict[str, Any], num_replicas: int) -> dict[str, Any]:
    """Every rank's ``local`` state, gathered, so that the checkpoint rank zero writes holds all of them.

    Lightning checkpoints what rank zero's loaders and DataModule report. Where ranks' positions
    differ (a rank's stream sits at its own place in its own shards), that would resume every rank
    at rank zero's position. Under an initialised process group with ``num_replicas > 1`` this is
    a collective: every rank must call it, as Lightning's checkpointing does.
    """
    if num_replicas <= 1 or not (dist.is_available() and dist.is_initialized()):
        return local
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return {"per_rank": gathered}


def own_state(state: dict[str, Any], rank: int, num_replicas: int) -> dict[str, Any]:
    """This rank's part of a state from :func:`per_rank_state`.

    When the world size changed, rank zero's state with every sampler position in it replaced by the
    positions of all the saved ranks (``ranks_yielded``): a sampler that can deal the rest of its epoch
    over the new ranks (:class:`stoker.samplers.ResumableSampler` with ``elastic``) needs all of them.
    Other positions (a stream's, which belong to its rank's files) stay rank zero's, for their own
    checks to refuse.
    """
    if "per_rank" not in state:
        return state
    states = state["per_rank"]
    if len(states) == num_replicas:
        return states[rank]
    return _gather_positions(states)


def _is_sampler_state(value: Any) -> bool:
    return isinstance(value, dict) and {"epoch", "yielded", "num_replicas"} <= set(value)


def _gather_positions(states: list[Any]) -> Any:
    """Rank zero's state, each sampler position in it given ``ranks_yielded``: that position on every rank."""
    first = states[0]
    if _is_sampler_state(first) and all(_is_sampler_state(other) for other in states):
        return {**first, "ranks_yielded": [int(other["yielded"]) for other in states]}
    if isinstance(first, dict) and all(isinstance(other, dict) for other in states):
        return {key: _gather_positions([other.get(key) for other in states]) if all(key in other for other in states)
                else value for key, value in first.items()}
    return first


class StokerDataLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` whose checkpointed state holds every rank's position, with process or
    thread workers.

    Built by :func:`build_loader`; ``state_dict``/``load_state_dict`` wrap torchdata's with
    :func:`per_rank_state`/:func:`own_state`, so each rank resumes at its own position.

    ``worker_type="thread"`` loads with ``thread_workers`` threads of this process instead of worker
    processes (see :class:`_ThreadedIter`): torchdata's single-process loader, whose batches are fetched
    ahead by a thread pool. Its state is the single-process loader's, taken when each batch's indices
    were handed out, so it resumes exactly and a process-worker checkpoint's sampler position applies.
    """

    def __init__(self, dataset: Any, *, rank: int = 0, num_replicas: int = 1, worker_type: WorkerType = "process",
                 thread_workers: int = 0, thread_prefetch: int = 2, **kwargs: Any) -> None:
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be one of {WORKER_TYPES}, got {worker_type!r}")
        super().__init__(dataset, **kwargs)
        self.rank, self.num_replicas = rank, num_replicas
        self.worker_type, self.thread_workers, self.thread_prefetch = worker_type, thread_workers, thread_prefetch
        self._pool: ThreadPoolExecutor | None = None
        # Told (loader, batches left for this rank) when a checkpoint of another number of ranks was resumed
        # mid-epoch, so a Trainer's count of the epoch's batches can follow (see StokerDataModule).
        self.on_elastic_resume: Callable[[Any, int], None] | None = None
        self._stream_rest: int | None = None

    @property
    def loading_workers(self) -> int:
        """Workers loading in parallel, processes or threads."""
        return self.thread_workers if self.worker_type == "thread" else self.num_workers

    def thread_pool(self) -> ThreadPoolExecutor:
        """The loader's threads, started on first use and kept across epochs (they cost nothing to keep)."""
        if self._pool is None:
            ids = itertools.count()
            workers = self.thread_workers

            def name_slot() -> None:  # each thread knows its worker id, for attribution and the streams' slots
                _THREAD_SLOT.slot = (next(ids), workers)

            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stoker-loader",
                                            initializer=name_slot)
            weakref.finalize(self, self._pool.shutdown, wait=False, cancel_futures=True)
        return self._pool

    def _get_iterator(self) -> Any:
        restoring = self.next_iter_state is not None  # type: ignore[has-type]
        if self.worker_type == "thread" and self.thread_workers > 0:
            iterator = _ThreadedIter(self, self.next_iter_state)  # type: ignore[has-type]
            self.next_iter_state = None
        else:
            iterator = super()._get_iterator()
        rest = getattr(self.sampler, "elastic_rest", None)  # the sampler took the restored state just now
        batches: int | None = None
        if restoring and rest is not None:
            if self.batch_size is None:  # the sampler yields whole batches
                batches = rest
            else:
                batches = rest // self.batch_size if self.drop_last else -(-rest // self.batch_size)
        elif self._stream_rest is not None:  # a stream dealt its epoch's rest again (see load_state_dict)
            batches, self._stream_rest = self._stream_rest, None
            self.dataset.forget_elsewhere()  # type: ignore[attr-defined]  # the workers took it
        if batches is not None and self.on_elastic_resume is not None:
            self.on_elastic_resume(self, batches)
        return iterator

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None  # threads stay in their process
        return state

    def state_dict(self) -> dict[str, Any]:
        return per_rank_state(super().state_dict(), self.num_replicas)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        resume_elsewhere = getattr(self.dataset, "resume_elsewhere", None)
        if callable(resume_elsewhere):  # a stream resumed on other ranks or workers deals its epoch's rest again
            ranks = state_dict.get("per_rank", [state_dict])
            self._stream_rest = resume_elsewhere(ranks, max(1, self.num_workers))
            if self._stream_rest is not None:
                return
        mine = own_state(state_dict, self.rank, self.num_replicas)
        super().load_state_dict(loader_state_for(mine, self.num_workers))


_SNAPSHOT, _MAIN, _WORKERS, _STEP = "_snapshot", "_main_snapshot", "_worker_snapshots", "_snapshot_step"
_SHARED = ("_sampler_iter_state", "_index_sampler_state", "_sampler_iter_yielded", "_IterableDataset_len_called",
           "_shared_seed")


def loader_state_for(state: dict[str, Any], num_workers: int) -> dict[str, Any]:
    """A map-style loader's state in the layout of a loader with ``num_workers`` worker processes.

    torchdata keeps a single-process loader's state (which threads use too) and a worker loader's in
    different layouts, each tied to its number of workers. For a map-style dataset both hold the same
    position (the sampler's, taken when the last consumed batch's indices were drawn) and no worker
    holds anything else, so a checkpoint written with threads, with worker processes or in the main
    process resumes under any of them, with any number of workers. States of streams, whose workers
    each hold their own position, are returned as they are.
    """
    if not state:
        return state
    multi = _SNAPSHOT in state
    if multi:
        workers = state[_SNAPSHOT].get(_WORKERS, {})
        if any(w.get("dataset_state") is not None or w.get("fetcher_state") is not None for w in workers.values()):
            return state  # a stream: its workers' own positions cannot move to other workers
        main = state[_SNAPSHOT][_MAIN]
        saved_workers, yielded = int(main.get("_num_workers", len(workers))), int(state[_SNAPSHOT][_STEP])
    else:
        if state.get("dataset_state") is not None or state.get("fetcher_state") is not None:
            return state
        main, saved_workers, yielded = state, 0, int(state.get("_num_yielded", 0))
    if saved_workers == num_workers:
        return state
    finished = bool(state.get(_ITERATOR_FINISHED, False))
    shared = {key: main.get(key) for key in _SHARED}
    if num_workers == 0:
        return {**shared, "_num_yielded": yielded, "fetcher_state": None, "dataset_state": None,
                _ITERATOR_FINISHED: finished}
    snapshots = {f"worker_{w}": {"worker_id": w, "dataset_state": None, "fetcher_state": None}
                 for w in range(num_workers)}
    return {_SNAPSHOT: {_STEP: yielded, "_last_yielded_worker_id": (yielded - 1) % num_workers,
                        _MAIN: {"_num_workers": num_workers, "_base_seed": main.get("_base_seed", 0), **shared},
                        _WORKERS: snapshots},
            "_steps_since_snapshot": 0, _ITERATOR_FINISHED: finished}


class _ThreadedIter(_StatefulSingleProcessDataLoaderIter):
    """torchdata's single-process iterator whose batches are fetched ahead by the loader's threads.

    The main thread draws each batch's indices from the sampler (so the sampler is never shared) and
    submits its fetch (read, decode, transform, collate: the work that releases the GIL) to the pool,
    keeping ``thread_workers * thread_prefetch`` batches in flight; batches come back in order. The
    state a checkpoint takes is the one recorded when the last batch handed to the model had its indices
    drawn: exactly the position the model consumed, whatever is still being fetched.
    """

    def __init__(self, loader: StokerDataLoader, next_iter_state: dict[str, Any] | None = None) -> None:
        self._pending: deque[tuple[Future, dict[str, Any]]] = deque()
        super().__init__(loader, next_iter_state)
        self._loader = loader  # keeps the loader, and so its threads, alive while this epoch is read
        self._pool = loader.thread_pool()
        self._depth = max(1, loader.thread_workers * loader.thread_prefetch)
        self._served: dict[str, Any] = super().state_dict()

    def _reset(self, loader: Any, first_iter: bool = False) -> None:
        for future, _ in getattr(self, "_pending", ()):
            future.cancel()
        self._pending = deque()
        super()._reset(loader, first_iter)

    def _fill(self) -> None:
        while len(self._pending) < self._depth:
            try:
                index = self._next_index()
            except StopIteration:
                return
            self._pending.append((self._pool.submit(self._dataset_fetcher.fetch, index), super().state_dict()))

    def _next_data(self) -> Any:
        self._fill()
        if not self._pending:
            raise StopIteration
        future, state = self._pending.popleft()
        self._fill()  # the next batches start while this one is handed over
        data = future.result()
        self._served = {**state, self._NUM_YIELDED: self._num_yielded + 1}
        if self._pin_memory:
            data = pin_memory(data, self._pin_memory_device)
        return data

    def state_dict(self) -> dict[str, Any]:
        return {**self._served, _ITERATOR_FINISHED: self._finished}


def build_loader(
    dataset: Dataset | Iterable[Any],
    *,
    batch_size: int | None,
    train: bool,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    prefetch_factor: int | None,
    seed: int,
    rank: int = 0,
    num_replicas: int = 1,
    shuffle: bool | None = None,
    sampler: Sampler | Iterable[Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_last: bool | None = None,
    worker_type: WorkerType = "process",
) -> StatefulDataLoader:
    """A torchdata ``StatefulDataLoader`` that follows the stoker loader policy.

    A map-style dataset without a ``sampler`` is sampled by a
    :class:`~stoker.samplers.ResumableDistributedSampler` over ``num_replicas`` ranks: in training
    a new permutation every epoch, an equal share per rank and whole batches only; in evaluation
    the natural order, unrepeated, so every sample is seen exactly once over the ranks. The loader's
    ``state_dict`` holds the sampler's position, which Lightning checkpoints, so a run killed
    mid-epoch resumes on exactly the remaining batches (each rank at its own position, see
    :class:`StokerDataLoader`).

    Args:
        dataset: Map-style or iterable dataset.
        batch_size: Samples per batch; ``None`` when the sampler yields whole batches.
        train: Training loaders shuffle and drop what does not fill a whole batch on every rank.
        num_workers: Worker processes; 0 loads in the main process.
        pin_memory: Page-locked host buffers for faster, asynchronous host-to-device copies.
        persistent_workers: Keep workers alive between epochs (no start-up cost per epoch).
        prefetch_factor: Batches each worker loads ahead.
        seed: The run's seed: sampler orders and worker streams derive from it.
        rank: This process's global rank.
        num_replicas: Ranks sharing the dataset (the world size).
        shuffle: Overrides the training default (shuffle when ``train``).
        sampler: A stoker sampler instead of the default one (weighted, length-grouped batches).
        collate_fn: Batch collation.
        drop_last: Overrides the training default.
        worker_type: ``"process"`` workers, or ``"thread"``: ``num_workers`` threads of this process (map-style
            datasets; see :class:`StokerDataLoader`).
    """
    is_iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    if sampler is None and not is_iterable:
        sampler = ResumableDistributedSampler(
            len(dataset), num_replicas=num_replicas, rank=rank,  # type: ignore[arg-type]
            shuffle=train if shuffle is None else shuffle, seed=seed,
            drop_last=train if drop_last is None else drop_last, batch_size=batch_size, even=train,
        )
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "collate_fn": collate_fn,
        # Who knows the epoch: the sampler, or an iterable dataset that orders itself (shard streams).
        "worker_init_fn": WorkerSeeding(seed, rank, getattr(dataset if sampler is None else sampler,
                                                            "epoch_counter", None)),
        # Only seeds torch's per-worker base seed, which WorkerSeeding replaces; per rank all the same.
        "generator": torch.Generator().manual_seed(derive_seed(seed, "loader", rank)),
    }
    threads = 0
    if worker_type == "thread" and num_workers > 0 and is_iterable:
        # A stream's workers each own a reader (litdata's, or datasets' shards) and do per-row Python work that
        # holds the GIL: they stay processes.
        warnings.warn("worker_type='thread' loads map-style sources; this stream keeps worker processes",
                      stacklevel=2)
        worker_type = "process"
    if worker_type == "thread" and num_workers > 0:
        threads, kwargs["num_workers"] = num_workers, 0  # torchdata's single-process loader, fed by the threads
    elif num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["prefetch_factor"] = prefetch_factor
    if sampler is not None:
        kwargs["sampler"] = sampler
    return StokerDataLoader(dataset, rank=rank, num_replicas=num_replicas, worker_type=worker_type,
                            thread_workers=threads, thread_prefetch=prefetch_factor or 2, **kwargs)
