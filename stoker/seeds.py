"""One seed scheme: every random stream of stoker derives from ``(seed, purpose, ...)`` here.

Sampler orders, DataLoader workers, DALI pipelines and MixUp/CutMix draws each take their seed
from :func:`derive_seed` with the run's seed, a purpose string and the coordinates that must
separate streams (rank, worker, epoch, draw number). Two streams share numbers only if all their
parts are equal, so ranks and workers never draw the same augmentation, and a run is reproducible
from its seed alone.

Changing this function changes every order and draw once (old checkpoints then resume onto
different orders); it is kept stable on purpose, and tests pin a few of its values.

Worker streams: :class:`WorkerSeeding` is the ``worker_init_fn`` of every stoker DataLoader.
Each worker seeds ``torch``, ``random`` and ``numpy`` from ``(seed, "worker", rank, worker,
epoch)``. Persistent workers outlive an epoch, so the sampler mirrors its epoch in shared memory;
a worker reseeds at the first sample it loads in a new epoch (:func:`reseed_worker`, called by
stoker's datasets).
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info


def derive_seed(*parts: int | str, bits: int = 63) -> int:
    """A non-negative seed of ``bits`` bits from ``parts`` (``seed, purpose, rank, worker, epoch, ...``).

    A cryptographic hash (BLAKE2b) of the parts' ``repr``: stable across processes, platforms
    and Python versions (unlike ``hash()``), and unrelated for parts that differ in one place.

    Args:
        parts: Integers and strings; conventionally the run's seed first, then a purpose string.
        bits: Width of the result (DALI takes 31-bit seeds; torch and NumPy take 63).

    Raises:
        TypeError: A part is not an ``int`` or ``str`` (floats and objects have unstable reprs).
        ValueError: ``bits`` outside ``[1, 63]``.
    """
    for part in parts:
        if not isinstance(part, (int, str)) or isinstance(part, bool):
            raise TypeError(f"derive_seed parts must be int or str, got {type(part).__name__} ({part!r})")
    if not 1 <= bits <= 63:
        raise ValueError(f"bits must be in [1, 63], got {bits}")
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)


def seed_generators(seed: int) -> None:
    """Seed this process's ``torch``, ``random`` and ``numpy`` generators from one 63-bit seed."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


class WorkerSeeding:
    """The ``worker_init_fn`` of stoker's DataLoaders: one stream per ``(seed, rank, worker, epoch)``.

    PyTorch seeds a worker's torch generator from the loader's generator (identical on every rank
    when every rank seeds it the same) and leaves ``random`` and ``numpy`` alone; that makes two
    ranks draw the same crops and flips for different images. Here a worker's three generators
    are seeded from :func:`derive_seed` with the rank and worker in it.

    The epoch comes from the loader's stoker sampler, which mirrors it in shared memory
    (:attr:`stoker.samplers.ResumableSampler.epoch_counter`); persistent workers reseed when they
    see it change (:func:`reseed_worker`). Without such a sampler the epoch counts as 0.

    Args:
        seed: The run's seed.
        rank: This process's global rank.
        epoch_counter: A shared ``multiprocessing`` value holding the epoch, or ``None``.
    """

    def __init__(self, seed: int, rank: int, epoch_counter: Any = None) -> None:
        self.seed = int(seed)
        self.rank = int(rank)
        self.epoch_counter = epoch_counter

    @property
    def epoch(self) -> int:
        """The epoch the workers load for."""
        return 0 if self.epoch_counter is None else int(self.epoch_counter.value)

    def worker_seed(self, worker: int, epoch: int) -> int:
        """The seed of ``worker``'s stream in ``epoch`` on this rank."""
        return derive_seed(self.seed, "worker", self.rank, worker, epoch)

    def __call__(self, worker_id: int) -> None:
        _WORKER_STATE.update(seeding=self, epoch=None)
        reseed_worker()


_WORKER_STATE: dict[str, Any] = {"seeding": None, "epoch": None}


def reseed_worker() -> None:
    """In a stoker DataLoader worker, reseed the worker's generators when a new epoch began.

    Cheap (one shared-memory read) and a no-op in the main process or under another loader, so
    datasets call it at the top of ``__getitem__``.
    """
    seeding: WorkerSeeding | None = _WORKER_STATE["seeding"]
    if seeding is None:
        return
    epoch = seeding.epoch
    if epoch == _WORKER_STATE["epoch"]:
        return
    info = get_worker_info()
    worker = info.id if info is not None else 0
    seed_generators(seeding.worker_seed(worker, epoch))
    _WORKER_STATE["epoch"] = epoch


_GLOBAL_RNG = threading.Lock()  # torch's global generator is one per process, shared by loader threads


class _FixedEpoch:
    """An epoch counter frozen at a value (what a pickled :class:`SampleSeeding` keeps)."""

    def __init__(self, value: int) -> None:
        self.value = value


class SampleSeeding:
    """Augmentation randomness per sample: ``(seed, "augment", epoch, sample)``, whoever loads it.

    A worker's stream (:class:`WorkerSeeding`) depends on which worker drew which sample, so a run
    resumed mid-epoch, or on another number of ranks or workers, crops and flips the rest of the
    epoch differently from an uninterrupted run. Seeding each sample's transform from the epoch and
    the sample's identity instead (its position in the split) gives every sample the same draws
    wherever and whenever it is loaded: a resumed run trains on exactly the tensors the uninterrupted
    run would have. Each sample gets generators of its own (:meth:`generator`), so loader threads never
    share a stream and the process's own (dropout in the main process) is left alone.

    Args:
        seed: The run's seed.
        epoch_counter: A shared value holding the epoch (the sampler's or the stream's), or ``None`` (epoch 0).
    """

    def __init__(self, seed: int = 0, epoch_counter: Any = None) -> None:
        self.seed = int(seed)
        self.epoch_counter = epoch_counter

    @property
    def epoch(self) -> int:
        return 0 if self.epoch_counter is None else int(self.epoch_counter.value)

    def __getstate__(self) -> dict[str, Any]:
        # A shared counter belongs to its process tree (forked workers share it); a pickled copy keeps its value.
        state = self.__dict__.copy()
        if state["epoch_counter"] is not None:
            state["epoch_counter"] = _FixedEpoch(int(state["epoch_counter"].value))
        return state

    def seed_of(self, sample: int, epoch: int | None = None, part: str = "augment") -> int:
        """The seed of ``sample``'s draws for ``part`` (``"augment"``, ``"read"``...) in ``epoch`` (default: now)."""
        return derive_seed(self.seed, part, self.epoch if epoch is None else epoch, int(sample))

    def generator(self, sample: int, epoch: int | None = None, part: str = "augment") -> torch.Generator:
        """A CPU generator of ``sample``'s draws (for code that takes one)."""
        return torch.Generator().manual_seed(self.seed_of(sample, epoch, part))

    def run(self, function: Any, value: Any, sample: int, epoch: int | None = None, part: str = "augment") -> Any:
        """``function(value)`` with torch's global generator seeded for ``sample``, then restored.

        For code that draws from the global generator (prefer :meth:`generator`): calls are serialized,
        since threads share that generator.
        """
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_of(sample, epoch, part))
            return function(value)
