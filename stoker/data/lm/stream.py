"""Streamed language-model data: examples tokenized on the fly and packed into rows as they arrive.

:class:`PackedStream` is :class:`~stoker.data.text.streams.FixedLengthStream` (equal batches per rank,
the seeded block shuffle, exact resume with any number of workers; see that module for how the
shuffle resumes) whose unit is a packed row: each worker reads examples from its own shards and
packs them with :class:`OnlinePacker`, best fit among a few open rows (a stream cannot sort the
whole split first, as the map-style plan does). Its epoch holds a fixed number of rows, so every
rank runs the same number of steps; a worker whose shards run dry starts another pass (the
repeated examples are counted), and the rows still open when its share is complete are left out.

**What a resume restores.** The block-shuffle cursor says which examples were consumed; the open
rows (the tokens of their pieces) and any rows finished but not handed out yet travel in the same
state. The state is taken while the stream is suspended at a row it handed out, and every example
is placed before any row it completes is handed out, so a resumed worker continues with exactly the
rows the uninterrupted one would have produced.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from stoker.data.lm.packing import Overflow, Packing, split_spans
from stoker.data.lm.tokenize import ASSISTANT_TRUNCATED, LM_PROBLEMS, PROMPT_ONLY, first_target, target_within
from stoker.data.text.streams import FixedLengthStream, StreamPass
from stoker.seeds import derive_seed

Piece = dict[str, Any]


class OnlinePacker:
    """Best-fit packing of pieces into at most ``open_rows`` open rows; full or displaced rows come out.

    Args:
        capacity: Tokens per row.
        mode: ``"bfd"`` packs; ``"none"`` and ``"padding_free"`` emit every piece as a row of its own.
        open_rows: Rows kept open at once (more: fuller rows, a larger resume state).
        bins: Open rows to start from (a resumed state).
    """

    def __init__(self, capacity: int, mode: Packing, open_rows: int = 8, bins: list[list[Piece]] | None = None) -> None:
        self.capacity, self.mode, self.open_rows = capacity, mode, max(1, open_rows)
        self.bins: list[list[Piece]] = bins if bins is not None else []

    @staticmethod
    def size(row: list[Piece]) -> int:
        """Tokens in a row."""
        return sum(len(piece["input_ids"]) for piece in row)

    def add(self, piece: Piece) -> list[list[Piece]]:
        """Place ``piece``; return the rows this closes (full ones, or the fullest one displaced)."""
        length = len(piece["input_ids"])
        if self.mode != "bfd" or length >= self.capacity:
            return [[piece]]
        rooms = [self.capacity - self.size(row) for row in self.bins]
        fitting = [i for i, room in enumerate(rooms) if room >= length]
        if fitting:
            best = min(fitting, key=lambda i: rooms[i])
            self.bins[best].append(piece)
            return [self.bins.pop(best)] if rooms[best] == length else []
        closed = []
        if len(self.bins) >= self.open_rows:
            closed.append(self.bins.pop(min(range(len(rooms)), key=lambda i: rooms[i])))
        self.bins.append([piece])
        return closed

    def flush(self) -> list[list[Piece]]:
        """Every open row, fullest first (the end of an evaluation pass)."""
        rows, self.bins = sorted(self.bins, key=self.size, reverse=True), []
        return rows


def example_pieces(example: dict[str, Any], capacity: int, overflow: Overflow, overlap: int, labels: bool,
                   ) -> list[Piece]:
    """The pieces of one tokenized example that fit rows of ``capacity`` (see :func:`.packing.split_spans`)."""
    ids = list(example["input_ids"])
    targets = list(example["labels"]) if labels else []
    out = []
    for start, end in split_spans(len(ids), capacity, overflow, overlap):
        piece: Piece = {"input_ids": ids[start:end]}
        if labels:
            piece["labels"] = targets[start:end]
        out.append(piece)
    return out


class _Targets:
    """What both packed streams skip beyond tokenization's problems: SFT chats truncated before any target.

    The map-style module drops them before planning; a stream counts them under ``ASSISTANT_TRUNCATED``.
    """

    problems: tuple[str, ...] = (*LM_PROBLEMS, PROMPT_ONLY, ASSISTANT_TRUNCATED)
    labels: bool
    overflow: Overflow
    capacity: int
    _counts: Any

    def _usable(self, row: dict[str, Any], worker: int) -> bool:
        if not super()._usable(row, worker):  # type: ignore[misc]
            return False
        if self.labels and self.overflow == "truncate" and not target_within(first_target(row["labels"]),
                                                                              self.capacity):
            self._counts[worker, 2 + self.problems.index(ASSISTANT_TRUNCATED)] += 1
            return False
        return True


class PackedStream(_Targets, FixedLengthStream):
    """Exactly ``num_batches * batch_size`` packed rows of a rank's stream per epoch, resumable mid-epoch.

    Args:
        dataset: The rank's tokenized ``datasets.IterableDataset`` (split by node), rows from
            :class:`~stoker.data.lm.tokenize.LMTokenize`.
        num_batches: Batches this rank yields per epoch (the same on every rank).
        batch_size: Rows per batch.
        capacity: Tokens per row.
        mode: ``"bfd"``, ``"none"`` or ``"padding_free"``.
        overflow: What happens to an example longer than a row (see :func:`stoker.data.lm.packing.split_spans`).
        overlap: Tokens a split piece repeats (1 causal, 0 masked LM).
        labels: Pieces carry the example's ``labels`` (SFT).
        mlm_seed: The run's seed for masked-LM pieces (``None``: no masking).
        open_rows: Rows the packer keeps open.
        seed: The run's seed.
        rank: This rank.
        block_size: Examples per shuffled block.
        shuffle: Shuffle shards and blocks per epoch.
    """

    order_keys: tuple[str, ...] = (*FixedLengthStream.order_keys, "capacity", "mode", "open_rows")

    def __init__(self, dataset: Any, *, num_batches: int, batch_size: int, capacity: int, mode: Packing,
                 overflow: Overflow, overlap: int = 1, labels: bool = False, mlm_seed: int | None = None,
                 open_rows: int = 8, seed: int = 0, rank: int = 0, block_size: int = 10_000,
                 shuffle: bool = True) -> None:
        # Set before the base's __init__, which records the order-defining settings (order_keys) for resumes.
        self.capacity, self.mode, self.overflow, self.overlap = capacity, mode, overflow, overlap
        self.labels, self.mlm_seed, self.open_rows = labels, mlm_seed, open_rows
        super().__init__(dataset, num_batches=num_batches, batch_size=batch_size,
                         columns=["input_ids", "labels"] if labels else ["input_ids"], seed=seed, rank=rank,
                         block_size=block_size, shuffle=shuffle)

    def _rows(self, c: Any, quota: int, worker: int) -> Iterator[list[Piece]]:  # type: ignore[override]
        extra = copy.deepcopy(c.extra) if c.extra else {"bins": [], "pending": []}
        c.extra = extra  # the live state: state_dict() copies it while this generator is suspended
        packer = OnlinePacker(self.capacity, self.mode, self.open_rows, bins=extra["bins"])
        examples = self._examples(c, worker)
        while c.yielded < quota:
            if not extra["pending"]:
                example = next(examples)
                for piece in example_pieces(example, self.capacity, self.overflow, self.overlap, self.labels):
                    extra["pending"].extend(packer.add(piece))  # the packer's open rows are extra["bins"]
                continue
            row = extra["pending"].pop(0)
            if self.mlm_seed is not None:
                for number, piece in enumerate(row):
                    piece["mlm_seed"] = derive_seed(self.mlm_seed, "mlm", self.rank, worker, c.epoch, c.yielded, number)
            c.yielded += 1
            yield row


class PackedPass(_Targets, StreamPass):
    """One pass over a rank's evaluation stream, packed as it arrives; every usable example exactly once.

    Args:
        dataset: The split's tokenized ``datasets.IterableDataset`` (the whole split: see :class:`StreamPass`).
        capacity: Tokens per row.
        mode: ``"bfd"``, ``"none"`` or ``"padding_free"``.
        overflow: What happens to an example longer than a row.
        overlap: Tokens a split piece repeats.
        labels: Pieces carry the example's ``labels`` (SFT).
        mlm_seed: The run's seed for masked-LM pieces (``None``: no masking).
        open_rows: Rows the packer keeps open.
        rank: This rank.
        world: The number of ranks.
    """

    def __init__(self, dataset: Any, *, capacity: int, mode: Packing, overflow: Overflow, overlap: int = 1,
                 labels: bool = False, mlm_seed: int | None = None, open_rows: int = 8, rank: int = 0,
                 world: int = 1) -> None:
        super().__init__(dataset, columns=["input_ids", "labels"] if labels else ["input_ids"], rank=rank,
                         world=world)
        self.capacity, self.mode, self.overflow, self.overlap = capacity, mode, overflow, overlap
        self.labels, self.mlm_seed, self.open_rows = labels, mlm_seed, open_rows

    def _rows(self, worker: int) -> Iterator[list[Piece]]:  # type: ignore[override]
        packer, count = OnlinePacker(self.capacity, self.mode, self.open_rows), 0
        rows = (r for r in self._mine() if self._usable(r, worker))
        done = False
        while not done:
            example = next(rows, None)
            if example is None:
                done, ready = True, packer.flush()
            else:
                pieces = example_pieces(example, self.capacity, self.overflow, self.overlap, self.labels)
                ready = [row for piece in pieces for row in packer.add(piece)]
            for row in ready:
                if self.mlm_seed is not None:
                    for number, piece in enumerate(row):
                        piece["mlm_seed"] = derive_seed(self.mlm_seed, "mlm-eval", self.rank, worker, count, number)
                count += 1
                yield row
