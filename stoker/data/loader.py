"""Loader policy: how many workers, pinning, prefetching, sampling and worker seeding.

Every stoker DataModule builds its DataLoaders through :func:`build_loader`, so the policy lives
here once and subclasses only say *what* to load. Every loader is torchdata's
``StatefulDataLoader``: Lightning saves its ``state_dict`` in checkpoints and restores it, which is
stoker's one mid-epoch resume mechanism.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.seeds import WorkerSeeding, derive_seed
from stoker.samplers.distributed import ResumableDistributedSampler


MAX_WORKERS = 256  # loader workers a stoker stream keeps shared counters for


def worker_slot() -> tuple[int, int]:
    """``(this worker's id, the loader's workers)``; ``(0, 1)`` in the main process.

    Raises:
        ValueError: More workers than the streams' shared counters hold (:data:`MAX_WORKERS`).
    """
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    if worker >= MAX_WORKERS:
        raise ValueError(f"a stoker stream supports at most {MAX_WORKERS} loader workers, got {workers}")
    return worker, workers


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
    """This rank's part of a state from :func:`per_rank_state` (rank zero's when the world size changed)."""
    if "per_rank" not in state:
        return state
    states = state["per_rank"]
    return states[rank] if len(states) == num_replicas else states[0]


class StokerDataLoader(StatefulDataLoader):
    """torchdata's ``StatefulDataLoader`` whose checkpointed state holds every rank's position.

    Built by :func:`build_loader`; ``state_dict``/``load_state_dict`` wrap torchdata's with
    :func:`per_rank_state`/:func:`own_state`, so each rank resumes at its own position.
    """

    def __init__(self, dataset: Any, *, rank: int = 0, num_replicas: int = 1, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.rank, self.num_replicas = rank, num_replicas

    def state_dict(self) -> dict[str, Any]:
        return per_rank_state(super().state_dict(), self.num_replicas)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(own_state(state_dict, self.rank, self.num_replicas))


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
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["prefetch_factor"] = prefetch_factor
    if sampler is not None:
        kwargs["sampler"] = sampler
    return StokerDataLoader(dataset, rank=rank, num_replicas=num_replicas, **kwargs)
