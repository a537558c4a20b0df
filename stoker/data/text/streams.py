"""Streamed (iterable) text: equal training batches on every rank, a seeded block shuffle, exact resume.

``datasets.distributed.split_dataset_by_node`` gives each rank whole shards when the shard count
divides the world size, else every ``world_size``-th example, and inside a DataLoader worker
datasets hands each worker its own shards. Ranks can end up with different amounts of data, and a
rank that runs out first leaves the others waiting in an all-reduce forever, so a training stream
(:class:`FixedLengthStream`) yields exactly its rank's share of batches (from
:class:`~stoker.samplers.ShardPlan`): it stops early when its shard is longer and reads its shard
again (reshuffled, the repeats counted) when it is shorter. An evaluation stream
(:class:`StreamPass`) reads the rank's split once, so over the ranks every example is seen exactly once.

**How the shuffle resumes.** datasets' ``shuffle(buffer_size=...)`` keeps a buffer whose content a
``state_dict`` cannot hold: on resume the buffer is refilled with other rows (datasets documents
this), so a resumed run would train other samples than an uninterrupted one. stoker therefore does
not use it. The rank's stream is read unshuffled, in **blocks** of ``block_size`` rows, and each block
is permuted by a generator seeded from ``derive_seed(seed, "stream", rank, worker, epoch, pass, block)``;
the order of the shards changes every epoch (datasets' ``set_epoch`` with ``derive_seed(seed, "shards",
epoch)``, the same on every rank and worker, so the node and worker splits stay disjoint). The state
is small: the underlying stream's ``state_dict`` at the start of the current block, the position
inside the block and a few counters. On resume the block is read again from that state, permuted
with the same seed, and the positions already handed out are skipped, so the continuation is exact.
torchdata's ``StatefulDataLoader`` saves and restores that state inside every worker, so this holds
with any number of workers. The cost is one block in memory (as a buffer would be) and, on resume,
reading one block again.

**The epoch** of a stream is the number of passes its loader started: each worker counts the
iterators made from it in shared memory (persistent workers or not), and the count travels in the state.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import torch
from torch.utils.data import IterableDataset

from stoker.data.loader import MAX_WORKERS, worker_slot
from stoker.data.stream_shares import WholeBatchStream, WorkerShares
from stoker.data.text.hf import PROBLEMS
from stoker.seeds import derive_seed

_REPEATED = 1  # counter columns: 0 is unused (the epoch lives in WorkerShares), then repeats, then skips per problem




class _CountingStream(IterableDataset):
    """Counters shared by the loader's workers and the main process (torch shared memory survives fork and spawn)."""

    problems: tuple[str, ...] = PROBLEMS  # the values of the rows' ``problem`` column, counted when skipped

    def __init__(self, dataset: Any, columns: list[str]) -> None:
        super().__init__()
        self.dataset = dataset
        self.columns = columns
        self._counts = torch.zeros(MAX_WORKERS, 2 + len(self.problems), dtype=torch.int64).share_memory_()

    @property
    def skipped(self) -> dict[str, int]:
        """Rows left out in the current (or last) epoch, summed over workers, by problem (empty text, bad label...)."""
        totals = self._counts[:, 2:].sum(dim=0).tolist()
        return {problem: int(n) for problem, n in zip(self.problems, totals) if n}

    @property
    def repeated(self) -> int:
        """Rows yielded a second time this epoch because the rank's shard was shorter than its share."""
        return int(self._counts[:, _REPEATED].sum())

    def _usable(self, row: dict[str, Any], worker: int) -> bool:
        problem = row.get("problem") or ""
        if problem:
            self._counts[worker, 2 + self.problems.index(problem)] += 1
        return not problem


@dataclass
class _Cursor:
    """Where a worker is: epoch, pass over its shard, block, position in the block, rows yielded."""

    epoch: int
    pass_: int = 0
    block: int = 0
    block_state: dict[str, Any] | None = None  # the underlying stream's state at the block's start (None: pass start)
    offset: int = 0
    yielded: int = 0
    extra: dict[str, Any] | None = None  # what a subclass keeps between rows (a packer's open rows)


class FixedLengthStream(WholeBatchStream, _CountingStream):
    """Yield exactly ``num_batches * batch_size`` usable rows of a rank's stream per epoch, block-shuffled, resumable.

    Args:
        dataset: The rank's tokenized ``datasets.IterableDataset`` (already split by node). Rows whose
            ``problem`` column is set are skipped and counted in :attr:`skipped`.
        num_batches: Batches this rank yields per epoch (the same on every rank).
        batch_size: Samples per batch; the workers' shares are whole batches.
        columns: Columns handed to the collator (the model inputs and ``labels``).
        seed: The run's seed.
        rank: This rank, for the block seeds.
        block_size: Rows per shuffled block (the buffer's memory, and what a resume reads again).
        shuffle: Shuffle shards per epoch and rows inside blocks; ``False`` keeps the stream's order.

    Raises:
        ValueError: A whole pass over the worker's shard yielded no usable row (nothing to repeat), or a state
            from a run with other settings.
    """

    order_keys: tuple[str, ...] = ("seed", "rank", "num_batches", "batch_size", "block_size", "shuffle")

    def __init__(self, dataset: Any, *, num_batches: int, batch_size: int, columns: list[str], seed: int = 0,
                 rank: int = 0, block_size: int = 10_000, shuffle: bool = True) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        super().__init__(dataset, columns)
        self.num_batches, self.batch_size, self.seed, self.rank = num_batches, batch_size, seed, rank
        self.block_size, self.shuffle = block_size, shuffle
        self.shares = WorkerShares(num_batches=num_batches, batch_size=batch_size,
                                   settings={key: getattr(self, key) for key in self.order_keys})
        self._cursor: _Cursor | None = None
        self._own: tuple[int, Any] | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # Not a generator: the epoch is claimed when the loader builds its iterator, before any index is sent.
        claim = self.shares.claim()
        counts = self._counts[claim.worker]
        if claim.resumed is not None and claim.start < claim.quota:
            cursor = _Cursor(**{k: claim.resumed[k] for k in _Cursor.__dataclass_fields__ if k in claim.resumed})
        else:
            cursor = _Cursor(epoch=claim.epoch, yielded=claim.start)
        if claim.resumed is not None:
            counts[1:] = torch.tensor(claim.resumed["counts"])
        else:
            counts[1:] = 0
        self._cursor = cursor
        return self._rows(cursor, claim.quota, claim.worker)

    def _source(self) -> Any:
        # datasets keeps its epoch in a tensor shared with every worker and updates it with a read-modify-write;
        # workers setting it at once could race, so each process iterates its own copy.
        if self._own is None or self._own[0] != os.getpid():
            self._own = (os.getpid(), copy.deepcopy(self.dataset))
        return self._own[1]

    def _rows(self, c: _Cursor, quota: int, worker: int) -> Iterator[dict[str, Any]]:
        if c.yielded >= quota:
            return
        for row in self._examples(c, worker):
            c.yielded += 1
            yield {key: row[key] for key in self.columns}
            if c.yielded >= quota:
                return

    def _examples(self, c: _Cursor, worker: int) -> Iterator[dict[str, Any]]:
        """Usable rows of the worker's stream from the cursor on, pass after pass (block-shuffled), without end.

        The cursor is advanced before each row is handed out, so a state taken while the consumer holds
        it counts that row as consumed.
        """
        source = self._source()
        while True:
            whole_pass, produced = c.block_state is None and c.offset == 0, 0
            source.set_epoch(derive_seed(self.seed, "shards", c.epoch) if self.shuffle else 0)
            source.load_state_dict(c.block_state)  # None: from the start of the pass
            rows = iter(source)
            while block := list(islice(rows, self.block_size)):
                order = self._order(len(block), worker, c)
                for position in range(c.offset, len(block)):
                    c.offset = position + 1  # before the yield: a state taken while suspended counts this row
                    row = block[order[position]]
                    if not self._usable(row, worker):
                        continue
                    produced += 1
                    self._counts[worker, _REPEATED] += c.pass_ > 0
                    yield row
                c.block, c.offset, c.block_state = c.block + 1, 0, source.state_dict()
            if whole_pass and produced == 0:
                raise ValueError(
                    f"rank {self.rank} worker {worker}: a whole pass over its stream gave no usable row "
                    f"({self.skipped} skipped), so it cannot fill its share of the epoch. Check the data files and "
                    "the text field, or use fewer ranks/workers (each worker reads whole shards)"
                )
            c.pass_, c.block, c.offset, c.block_state = c.pass_ + 1, 0, 0, None

    def _order(self, n: int, worker: int, c: _Cursor) -> list[int]:
        if not self.shuffle:
            return list(range(n))
        seed = derive_seed(self.seed, "stream", self.rank, worker, c.epoch, c.pass_, c.block)
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()

    def state_dict(self) -> dict[str, Any]:
        """The cursor (epoch, pass, block, block start state, offset, yielded), the counters and the settings."""
        worker = worker_slot()[0]
        cursor = self._cursor or _Cursor(epoch=self.shares.next_epoch(worker))
        return {**self.shares.state(asdict(cursor)), "counts": self._counts[worker, 1:].tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` on the next iteration (a complete epoch resumes at the next one).

        Raises:
            ValueError: The state was saved with other settings or another number of workers.
        """
        self.shares.restore(state, what="this stream")


class StreamPass(_CountingStream):
    """One pass over a rank's evaluation stream: every usable row once, in order; skipped rows counted.

    Every rank reads the whole split and keeps every ``world``-th row (``rank``, ``rank + world``, ...,
    counted per loader worker, each worker reading its own shards): over the ranks every example is seen
    exactly once, and the ranks' shares differ by at most one row per loader worker, where splitting by
    node (whole shards per rank) could leave one rank with most of the split or none of it, and a rank
    with no evaluation step hangs the others in the epoch-end metric reduction. The price is that every
    rank reads the evaluation split, which is small beside training.

    Args:
        dataset: The split's tokenized ``datasets.IterableDataset`` (the whole split, not split by node).
        columns: Columns handed to the collator.
        rank: This rank.
        world: The number of ranks.
    """

    def __init__(self, dataset: Any, columns: list[str], *, rank: int = 0, world: int = 1) -> None:
        super().__init__(dataset, columns)
        self.rank, self.world = rank, world

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = worker_slot()[0]
        self._counts[worker, 1:] = 0
        return self._rows(worker)

    def _mine(self) -> Iterator[dict[str, Any]]:
        """This rank's rows of the split: every ``world``-th, starting at ``rank`` (unusable ones included)."""
        for number, row in enumerate(self.dataset):
            if number % self.world == self.rank:
                yield row

    def _rows(self, worker: int) -> Iterator[dict[str, Any]]:
        for row in self._mine():
            if self._usable(row, worker):
                yield {key: row[key] for key in self.columns}
