"""Packing token sequences into rows that never let one example see another: the plan and the attention masks.

Packing puts several short examples into one row of ``capacity`` tokens so that little of the
batch is padding. It is only correct if nothing about an example changes when it shares a row:

* **positions**: every example's ``position_ids`` restart at 0 (rotary and absolute position
  embeddings then see the same positions as for the example alone);
* **attention**: a token attends only to earlier tokens *of its own example*. SDPA, eager and flex
  attention get a 4-D block-diagonal causal mask (:func:`block_attention_mask`, built on the
  device from ``position_ids``); flash-attention kernels get the varlen boundaries
  ``cu_seq_lens_q/k`` and ``max_length_q/k`` of a flattened batch instead;
* **labels**: the first token of each example carries ``-100``, so the last token of the previous
  example is never asked to predict it (transformers' models shift labels inside the loss).

This module is the plan: which example (or which piece of a long one) goes into which row. A row
holds whole pieces; an example longer than a row is split into pieces of at most ``capacity``
tokens (``overflow="split"``), cut to one row (``"truncate"``) or left out (``"drop"``), and each
is counted. Split pieces of a causal example overlap by one token: the first token of a piece is
context only (label ``-100``), and its target was the last target of the piece before, so a split
loses no target and trains none twice.

Bins are filled best-fit-decreasing (Johnson, 1973, "Near-optimal bin packing algorithms"): pieces
in decreasing length, each into the open row with the least room that still fits it. The packing
is computed once (deterministically) at setup; each epoch only reorders the rows.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

Packing = Literal["none", "bfd", "padding_free"]
Overflow = Literal["split", "truncate", "drop"]
PACKINGS: tuple[str, ...] = ("none", "bfd", "padding_free")
OVERFLOWS: tuple[str, ...] = ("split", "truncate", "drop")


def split_spans(length: int, capacity: int, overflow: Overflow, overlap: int = 1) -> list[tuple[int, int]]:
    """``(start, end)`` token spans of one example for rows of ``capacity`` tokens.

    Args:
        length: Tokens in the example.
        capacity: Tokens per row.
        overflow: ``"split"``, ``"truncate"`` or ``"drop"`` an example longer than a row.
        overlap: Tokens a split piece repeats from the end of the piece before it (1 for causal models, whose
            first token of a piece is context only; 0 for masked language modelling).

    Raises:
        ValueError: ``capacity`` not larger than ``overlap``, or an unknown ``overflow``.
    """
    if capacity <= overlap:
        raise ValueError(f"capacity ({capacity}) must exceed the split overlap ({overlap})")
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}")
    if length <= capacity:
        return [(0, length)] if length > 0 else []
    if overflow == "drop":
        return []
    if overflow == "truncate":
        return [(0, capacity)]
    spans, start = [], 0
    while True:
        end = min(start + capacity, length)
        spans.append((start, end))
        if end == length:
            return spans
        start = end - overlap


def best_fit_decreasing(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) of at most ``capacity``: each item, largest first, into the fullest bin it fits.

    Ties go to the lower index, so the result is deterministic. Open bins are kept by their room left
    (at most ``capacity`` distinct values), which makes each placement a bisection.

    Raises:
        ValueError: An item larger than ``capacity`` (split it first).
    """
    order = sorted(range(len(sizes)), key=lambda i: (-int(sizes[i]), i))
    if order and int(sizes[order[0]]) > capacity:
        raise ValueError(f"an item of {sizes[order[0]]} tokens does not fit a row of {capacity}; split it first")
    rooms: list[int] = []  # sorted, distinct: the room left in some open bin
    bins_with_room: dict[int, list[int]] = {}
    bins: list[list[int]] = []
    for item in order:
        size = int(sizes[item])
        k = bisect_left(rooms, size)
        if k == len(rooms):
            target, left = len(bins), capacity - size
            bins.append([item])
        else:
            room = rooms[k]
            waiting = bins_with_room[room]
            target = waiting.pop()
            if not waiting:
                del bins_with_room[room]
                rooms.pop(k)
            bins[target].append(item)
            left = room - size
        if left > 0:
            if left not in bins_with_room:
                insort(rooms, left)
                bins_with_room[left] = []
            bins_with_room[left].append(target)
    return bins


@dataclass
class PackPlan:
    """Which pieces of which examples each row holds.

    Attributes:
        capacity: Tokens per row.
        mode: ``"bfd"`` (rows of several pieces), ``"none"`` or ``"padding_free"`` (one piece per item).
        pieces: ``[P, 3]`` int64: ``(example, start, end)`` of every piece, row by row.
        offsets: ``[R + 1]``: row ``r`` holds ``pieces[offsets[r]:offsets[r + 1]]``.
        stats: Counts for reports (see :meth:`describe`).
    """

    capacity: int
    mode: str
    pieces: np.ndarray
    offsets: np.ndarray
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, index: int) -> np.ndarray:
        """The ``(example, start, end)`` pieces of row ``index``."""
        return self.pieces[self.offsets[index] : self.offsets[index + 1]]

    def row_lengths(self) -> np.ndarray:
        """Tokens in each row (before padding)."""
        spans = self.pieces[:, 2] - self.pieces[:, 1]
        return np.add.reduceat(spans, self.offsets[:-1]) if len(self) else np.zeros(0, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        """``mode``, ``capacity``, ``examples``, ``pieces``, ``rows``, ``tokens``, ``fill_rate``, overflow counts."""
        return {"mode": self.mode, "capacity": self.capacity, **self.stats}


def plan_packing(lengths: Sequence[int], capacity: int, *, mode: Packing = "bfd", overflow: Overflow = "split",
                 overlap: int = 1) -> PackPlan:
    """Cut examples into pieces that fit a row and, with ``mode="bfd"``, pack the pieces into rows.

    Args:
        lengths: Tokens of every usable example (its index is the example id).
        capacity: Tokens per row (``max_length``).
        mode: ``"bfd"`` packs pieces into rows; ``"none"`` and ``"padding_free"`` keep one piece per item
            (the batch is padded, or flattened, later).
        overflow: What happens to an example longer than a row (see :func:`split_spans`).
        overlap: Tokens a split piece repeats (1 for causal LMs, 0 for masked LMs).

    Raises:
        ValueError: An unknown ``mode``, or bad ``capacity``/``overflow`` (see :func:`split_spans`).
    """
    if mode not in PACKINGS:
        raise ValueError(f"packing must be one of {PACKINGS}, got {mode!r}")
    pieces: list[tuple[int, int, int]] = []
    split = dropped = truncated = dropped_tokens = truncated_tokens = repeated_tokens = 0
    for example, length in enumerate(lengths):
        spans = split_spans(int(length), capacity, overflow, overlap)
        if length > capacity:
            split += overflow == "split"
            dropped += overflow == "drop"
            truncated += overflow == "truncate"
            dropped_tokens += int(length) if overflow == "drop" else 0
            truncated_tokens += int(length) - capacity if overflow == "truncate" else 0
            repeated_tokens += overlap * (len(spans) - 1) if overflow == "split" else 0
        pieces += [(example, start, end) for start, end in spans]
    array = np.asarray(pieces, dtype=np.int64).reshape(-1, 3)
    sizes = array[:, 2] - array[:, 1]
    if mode == "bfd":
        bins = best_fit_decreasing(sizes.tolist(), capacity)
        # Row order is irrelevant (the sampler shuffles rows); inside a row keep the pieces in example order.
        order = np.asarray([i for b in bins for i in sorted(b)], dtype=np.int64)
        array = array[order] if len(order) else array
        counts = np.asarray([len(b) for b in bins], dtype=np.int64)
    else:
        counts = np.ones(len(array), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    tokens = int(sizes.sum())
    rows = len(offsets) - 1
    stats = {
        "examples": len(lengths), "pieces": len(array), "rows": rows, "tokens": tokens,
        "fill_rate": tokens / (rows * capacity) if rows and mode == "bfd" else None,
        "examples_split": split, "split_repeated_tokens": repeated_tokens,
        "examples_truncated": truncated, "tokens_truncated": truncated_tokens,
        "examples_dropped": dropped, "tokens_dropped": dropped_tokens,
    }
    return PackPlan(capacity=capacity, mode=mode, pieces=array, offsets=offsets, stats=stats)


# ----------------------------------------------------------------------------- attention
def segment_ids(position_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
    """Which example each token belongs to, from ``position_ids`` that restart at ``start`` for every example."""
    return (position_ids == start).cumsum(dim=-1)


def block_attention_mask(position_ids: torch.Tensor, padding_mask: torch.Tensor | None = None, *, causal: bool = True,
                         dtype: torch.dtype = torch.float32, start: int = 0) -> torch.Tensor:
    """The additive 4-D mask ``[B, 1, L, L]`` that keeps the examples of a packed row apart.

    Query ``i`` may attend key ``j`` when both belong to the same example (``position_ids`` restart at
    ``start`` where an example begins), neither is padding and, with ``causal``, ``j <= i``. Allowed
    entries are 0, the rest the dtype's minimum (not ``-inf``: a padding query, which attends nothing,
    then gets a uniform, finite softmax instead of NaN; its label is ``-100``). Eager attention adds
    the mask to the scores; SDPA and flex attention take it as is.

    Args:
        position_ids: ``[B, L]`` positions, restarting at ``start`` for every example.
        padding_mask: ``[B, L]``, 1 for real tokens and 0 for padding (``None``: no padding).
        causal: Also forbid attending to later tokens (causal LMs); ``False`` for masked LMs.
        dtype: The model's floating dtype.
        start: The position of every example's first token.
    """
    segments = segment_ids(position_ids, start)
    allowed = segments[:, :, None] == segments[:, None, :]
    if padding_mask is not None:
        real = padding_mask.bool()
        allowed &= real[:, :, None] & real[:, None, :]
    if causal:
        length = position_ids.shape[-1]
        allowed &= torch.ones(length, length, dtype=torch.bool, device=position_ids.device).tril()
    mask = torch.zeros(allowed.shape, dtype=dtype, device=position_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min).unsqueeze(1)


def real_tokens(batch: dict[str, Any]) -> tuple[int, int]:
    """``(real tokens, tokens fed to the model)`` of a token batch in any of the layouts stoker emits.

    A 2-D ``attention_mask`` counts its ones; a 4-D additive mask from :func:`block_attention_mask`
    counts the tokens allowed to attend to themselves (padding attends nothing); a flattened batch
    without a mask (flash-attention varlen) has no padding at all.
    """
    total = int(batch["input_ids"].numel())
    mask = batch.get("attention_mask")
    if mask is None:
        return total, total
    if mask.dim() == 2:
        return int(mask.sum()), total
    diagonal = torch.diagonal(mask[:, 0], dim1=-2, dim2=-1)
    real = diagonal if diagonal.dtype == torch.bool else diagonal == 0
    return int(real.sum()), total
