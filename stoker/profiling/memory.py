"""Memory of a training process and its DataLoader workers: the one memory probe of stoker.

Read with psutil: the resident set of this process, plus the memory unique to each DataLoader
worker (the direct child processes that belong to this rank). The starvation monitor samples it
during training and the loader probe while it times a loader alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import psutil


@dataclass
class MemoryUsage:
    """Memory (MiB): the main process's resident set and its DataLoader workers' unique sets."""

    main_mb: float
    workers_mb: float
    num_workers: int


def measure_memory(pid: int | None = None) -> MemoryUsage:
    """Resident memory of a process and of the workers it forked.

    Workers are the direct children; a child whose ``LOCAL_RANK`` differs from ours is another
    DDP rank launched by this one, not a worker, and is left out. A forked worker's resident set
    mostly repeats pages it shares with the main process (torch's libraries), so workers are
    counted by their unique set size (USS) where the platform reports it, else by resident size.
    """
    process = psutil.Process(pid or os.getpid())
    own_rank = os.environ.get("LOCAL_RANK", "0")
    workers_mb, count = 0.0, 0
    for child in process.children(recursive=False):
        try:
            if child.environ().get("LOCAL_RANK", own_rank) != own_rank:
                continue
            workers_mb += _unique_mb(child)
            count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # a worker that exited between listing and reading
    return MemoryUsage(main_mb=process.memory_info().rss / 2**20, workers_mb=workers_mb, num_workers=count)


def _unique_mb(process: psutil.Process) -> float:
    try:
        return float(process.memory_full_info().uss) / 2**20
    except (AttributeError, psutil.AccessDenied):  # no USS on this platform or not allowed
        return float(process.memory_info().rss) / 2**20
