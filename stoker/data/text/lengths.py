"""Token lengths of a tokenized split, and what each batching strategy feeds the model of them.

The figures :class:`~stoker.datamodules.text.HFTextDataModule` reports after tokenization (and the text
benchmark prints): length percentiles, truncation, and the share of real tokens under padding to the
maximum length, dynamic padding, length-grouped batches and token-budget batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]], *, multiple: int = 8) -> int:
    """Tokens a dynamically padded loader produces: each batch padded to its longest row (to ``multiple``)."""
    total = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        total += -(-longest // multiple) * multiple * len(batch)
    return total


def length_report(lengths: Sequence[int], full_lengths: Sequence[int], *, max_length: int, batch_size: int,
                  seed: int = 0, mega_batch_factor: int = 50, pad_multiple: int = 8,
                  max_tokens: int | None = None) -> dict[str, float]:
    """Token-length percentiles, truncation rate, and the real-token fraction of each padding strategy.

    ``real_fraction_*`` is real tokens over tokens fed to the model: padding everything to
    ``max_length``, dynamic padding of random batches, dynamic padding of length-grouped batches and,
    given ``max_tokens``, of token-budget batches (``real_fraction_token_budget``).
    """
    from stoker.samplers.length_grouped import length_grouped_batches
    from stoker.samplers.token_budget import token_budget_batches

    n = len(lengths)
    if n == 0:
        return {"samples": 0}
    arr = np.asarray(lengths)
    real = int(arr.sum())
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    random_batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    grouped = length_grouped_batches(lengths, batch_size, generator=generator, mega_batch_factor=mega_batch_factor)
    report = {
        "samples": n,
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": int(arr.max()),
        "truncation_rate": float(np.mean(np.asarray(full_lengths) > max_length)),
        "real_fraction_max_length": real / (n * max_length),
        "real_fraction_dynamic": real / padded_tokens(lengths, random_batches, multiple=pad_multiple),
        "real_fraction_bucketed": real / padded_tokens(lengths, grouped, multiple=pad_multiple),
    }
    if max_tokens is not None:
        budget = token_budget_batches(lengths, max_tokens, generator=generator, pad_multiple=pad_multiple,
                                      window=mega_batch_factor * batch_size)
        report["real_fraction_token_budget"] = real / padded_tokens(lengths, budget, multiple=pad_multiple)
    return report
