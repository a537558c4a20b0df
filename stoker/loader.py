"""Loader policy: how many workers, pinning, prefetching and worker seeding.

Every stoker DataModule builds its DataLoaders through :func:`build_loader`, so the policy lives
here once and subclasses only say *what* to load.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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


def seed_worker(worker_id: int) -> None:
    """Seed Python's and NumPy's generators in a DataLoader worker.

    PyTorch seeds each worker's torch generator with ``base_seed + worker_id`` (``base_seed`` is
    drawn from the loader's generator), but leaves ``random`` and ``numpy`` alone, so workers
    would otherwise repeat the same augmentation draws.
    """
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


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
    shuffle: bool | None = None,
    sampler: Sampler | Iterable[Any] | None = None,
    batch_sampler: Sampler | Iterable[Any] | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    drop_last: bool | None = None,
) -> DataLoader:
    """Create a DataLoader that follows the stoker loader policy.

    Args:
        dataset: Map-style or iterable dataset.
        batch_size: Samples per batch (ignored when ``batch_sampler`` is given).
        train: Training loaders shuffle and drop the last incomplete batch by default, so every
            step sees a full batch and every rank runs the same number of steps.
        num_workers: Worker processes; 0 loads in the main process.
        pin_memory: Page-locked host buffers for faster, asynchronous host-to-device copies.
        persistent_workers: Keep workers alive between epochs (no start-up cost per epoch).
        prefetch_factor: Batches each worker loads ahead.
        seed: Seeds the shuffling generator, so the order is reproducible without a global seed.
        shuffle: Overrides the training default (shuffle when ``train``).
        sampler: A sampler instead of shuffling.
        batch_sampler: A sampler yielding lists of indices (length-grouped batches).
        collate_fn: Batch collation.
        drop_last: Overrides the training default.
    """
    is_iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    kwargs: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": pin_memory,
        "collate_fn": collate_fn,
        "worker_init_fn": seed_worker,
        "generator": torch.Generator().manual_seed(seed),
    }
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["prefetch_factor"] = prefetch_factor
    if batch_sampler is not None:
        kwargs["batch_sampler"] = batch_sampler
    else:
        kwargs["batch_size"] = batch_size
        kwargs["drop_last"] = train if drop_last is None else drop_last
        if sampler is not None:
            kwargs["sampler"] = sampler
        elif not is_iterable:
            kwargs["shuffle"] = train if shuffle is None else shuffle
    return DataLoader(dataset, **kwargs)  # type: ignore[arg-type]
