"""Counting samples and tokens in a batch, for any stoker DataModule or a plain DataLoader.

A stoker DataModule says how to count its batches (``batch_size_of`` and ``token_counts``); a
batch from a plain DataLoader is counted by the leading dimension of its first tensor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def first_tensor(batch: Any) -> torch.Tensor | None:
    """The first tensor found depth-first in a batch of dicts, lists and tuples (``None``: no tensor)."""
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


def samples_in(batch: Any, datamodule: Any = None) -> int:
    """Samples in ``batch``: the DataModule's ``batch_size_of`` when it has one, else the first
    tensor's leading dimension (0 for a batch without tensors or a 0-d tensor)."""
    count_fn = getattr(datamodule, "batch_size_of", None)
    if callable(count_fn):
        return int(count_fn(batch))
    tensor = first_tensor(batch)
    if tensor is None or tensor.dim() == 0:
        return 0
    return int(tensor.shape[0])


def tokens_in(batch: Any, datamodule: Any = None) -> tuple[int, int] | None:
    """``(real, padded)`` tokens from the DataModule's ``token_counts`` (``None``: not token data).

    Raises:
        ValueError: When the DataModule reports more real than padded tokens.
    """
    count_fn = getattr(datamodule, "token_counts", None)
    if not callable(count_fn):
        return None
    counts = count_fn(batch)
    if counts is None:
        return None
    real, padded = int(counts[0]), int(counts[1])
    if real > padded or real < 0:
        raise ValueError(
            f"{type(datamodule).__name__}.token_counts returned real={real}, padded={padded}; expected "
            "0 <= real <= padded (real tokens exclude padding, padded tokens are the batch's full length)"
        )
    return real, padded
