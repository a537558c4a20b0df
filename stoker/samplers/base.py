"""The base of every stoker sampler: a ``DistributedSampler`` that resumes mid-epoch.

A subclass says what one rank yields in one epoch (:meth:`ResumableSampler.epoch_items`); the
base keeps the position, saves it in ``state_dict`` and resumes it in ``load_state_dict``.
torchdata's ``StatefulDataLoader`` (every stoker DataModule's loader) calls both: it snapshots
the sampler's state when it hands out a batch's indices, so the saved position matches the
batches the model has consumed even with workers loading ahead, and Lightning stores that state
in its checkpoints. Nothing here reads a Trainer's loop counters.

Being ``DistributedSampler`` subclasses, Lightning neither wraps stoker samplers again nor
replaces them under DDP, and it calls ``set_epoch`` on them at the start of every epoch.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
from torch.utils.data import DistributedSampler


def resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``(num_replicas, rank)``: as given, else from the initialised process group, else ``(1, 0)``.

    Raises:
        ValueError: ``num_replicas < 1`` or ``rank`` outside ``[0, num_replicas)``.
    """
    initialized = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialized else 1
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    if not 0 <= rank < num_replicas:
        raise ValueError(f"rank must be in [0, {num_replicas - 1}] for num_replicas={num_replicas}, got {rank}")
    return num_replicas, rank


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose position in the epoch is saved and restored.

    The state is ``{"epoch", "yielded", "size"}`` plus the attributes named in :attr:`order_keys`
    (what fixes the epoch's order: seed, ranks, source length...): after
    :meth:`load_state_dict` the next iteration yields exactly the items of ``epoch`` that were not
    handed out yet. A state that had handed out its whole epoch (a checkpoint written at an
    epoch's last batch) resumes at the start of the next epoch.

    The epoch is mirrored in a counter in shared memory (:attr:`epoch_counter`) that DataLoader
    workers read, so persistent workers reseed their augmentation stream per epoch
    (:class:`stoker.seeds.WorkerSeeding`).

    Args:
        length: Items in the source (the dataset's length).
        num_replicas: Ranks (default: the process group's world size, else 1).
        rank: This rank (default: the process group's rank, else 0).
        shuffle: Whether the order is random (drawn from ``(seed, epoch)``).
        seed: Seed shared by all ranks.
        drop_last: Drop what does not divide evenly (subclasses say exactly what).
    """

    order_keys: tuple[str, ...] = ("seed", "num_replicas", "length")
    # Whether a mid-epoch state from another number of ranks resumes (the rest of the epoch dealt again,
    # see rest_items); samplers whose shares are not cut from one global order refuse such a state.
    elastic: bool = False

    def __init__(
        self,
        length: int,
        *,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        self._counter: Any = multiprocessing.RawValue("q", 0)
        num_replicas, rank = resolve_replicas(num_replicas, rank)
        # DistributedSampler only takes len() of its dataset.
        super().__init__(range(length), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,  # type: ignore[arg-type]
                         drop_last=drop_last)
        self.length = length
        self.yielded = 0
        self._resume_at: int | None = None
        # An epoch resumed on another number of ranks: the world sizes and per-rank counts that consumed its
        # start, and the count this rank's share of the rest is reported after (see load_state_dict).
        self._stages: list[dict[str, Any]] = []
        self._offset = 0

    # ----------------------------------------------------------------- what a subclass provides
    def epoch_items(self) -> list[Any]:
        """This rank's items of :attr:`epoch`, in order (the whole epoch, ignoring any resume point)."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def rest_items(self, stages: list[dict[str, Any]]) -> list[Any]:
        """This rank's share of what :attr:`epoch` has left once ``stages`` consumed its start (elastic samplers).

        Each stage is ``{"num_replicas": W, "yielded": [count per rank]}``: a run on ``W`` ranks whose rank
        ``r`` handed out the first ``yielded[r]`` items of its share of what the earlier stages had left.
        """
        raise NotImplementedError(f"{type(self).__name__} does not resume on another number of ranks")

    @property
    def elastic_rest(self) -> int | None:
        """Items this rank yields in an epoch resumed from another number of ranks (``None`` otherwise)."""
        return len(self) - self._offset if self._stages else None

    # ----------------------------------------------------------------- the epoch
    @property  # type: ignore[override]
    def epoch(self) -> int:
        """The epoch whose items are (or will be) yielded."""
        return int(self._counter.value)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._counter.value = int(value)

    @property
    def epoch_counter(self) -> Any:
        """The shared-memory copy of :attr:`epoch` that DataLoader workers read."""
        return self._counter

    def set_epoch(self, epoch: int) -> None:
        """Select ``epoch`` (Lightning calls this at every epoch); a new epoch forgets any resume point."""
        if epoch != self.epoch:
            self._resume_at = None
            self.yielded = 0
            self._stages, self._offset = [], 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        # A generator: the epoch's items are computed at the first next(), after Lightning's set_epoch
        # and the loader's load_state_dict have had their say.
        resume_at, self._resume_at = self._resume_at, None
        if resume_at is None:  # a fresh pass over the epoch, whatever an earlier resume had set up
            self._stages, self._offset = [], 0
        start = resume_at or 0
        items = self.rest_items(self._stages) if self._stages else self.epoch_items()
        self.yielded = start
        for item in items[start - self._offset:]:
            self.yielded += 1
            yield item

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """Where this rank is in the epoch, and what would make the position meaningless if changed."""
        state: dict[str, Any] = {"epoch": self.epoch, "yielded": self.yielded, "size": len(self)}
        state.update({key: getattr(self, key) for key in self.order_keys})
        if self._stages:
            state.update(stages=[dict(stage) for stage in self._stages], offset=self._offset)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the state's position: the next iteration yields the rest of its epoch.

        A state gathered from every rank of a run on another number of ranks (``ranks_yielded``, see
        :func:`stoker.data.loader.own_state`) resumes an :attr:`elastic` sampler: what the old ranks had
        handed out is left out and the rest of the epoch is dealt again over this run's ranks
        (:meth:`rest_items`); :attr:`yielded` then counts from ``len(self) - len(rest)``, so the epoch still
        ends after ``len(self)`` items.

        Raises:
            ValueError: A key is missing, or the state was saved mid-epoch with another value of one of
                :attr:`order_keys` (the epoch's order would differ, so no position in it can be trusted).
        """
        missing = {"epoch", "yielded"} - set(state_dict)
        if missing:
            raise ValueError(f"{type(self).__name__} state lacks {sorted(missing)}; pass what state_dict() returned")
        epoch, yielded = int(state_dict["epoch"]), int(state_dict["yielded"])
        size = int(state_dict.get("size", len(self)))
        ranks = [int(y) for y in state_dict.get("ranks_yielded", [yielded])]
        if not all(0 <= y <= size for y in ranks):
            raise ValueError(f"{type(self).__name__} state has yielded={yielded}, outside [0, {size}] for this rank")
        if all(y == size for y in ranks) or all(y == 0 for y in ranks):
            # The whole epoch was handed out (or nothing of it): start an epoch afresh.
            self.set_epoch(epoch + 1 if yielded else epoch)
            return
        saved_world = int(state_dict.get("num_replicas", self.num_replicas))
        for key in self.order_keys:
            mine = getattr(self, key)
            if key not in state_dict or state_dict[key] == mine or (key == "num_replicas" and self.elastic):
                continue
            raise ValueError(
                f"cannot resume {type(self).__name__} mid-epoch: the checkpoint has {key}={state_dict[key]}, this "
                f"run has {key}={mine}, so the epoch's order differs. Resume with the same {key}, or from a "
                "checkpoint written at the end of an epoch"
            )
        stages = [dict(stage) for stage in state_dict.get("stages", [])]
        offset = int(state_dict.get("offset", 0))
        if saved_world != self.num_replicas or "ranks_yielded" in state_dict:
            if len(ranks) != saved_world:
                raise ValueError(
                    f"cannot resume {type(self).__name__} on {self.num_replicas} rank(s) from a checkpoint of "
                    f"{saved_world} ranks that holds the position of {len(ranks)}: every rank's position is needed "
                    "(checkpoints written by stoker gather them)"
                )
            stages.append({"num_replicas": saved_world, "yielded": [y - offset for y in ranks]})
            self._stages = stages
            self._offset = len(self) - len(self.rest_items(stages))
            yielded = self._offset
        else:
            self._stages, self._offset = stages, offset
        self.epoch = epoch
        self.yielded = yielded
        self._resume_at = yielded

    def __getstate__(self) -> dict[str, Any]:
        # The shared counter is tied to this process tree; a pickled copy gets its own.
        state = self.__dict__.copy()
        state["_counter"] = int(self._counter.value)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        counter = multiprocessing.RawValue("q", int(state.pop("_counter")))
        self.__dict__.update(state)
        self._counter = counter
