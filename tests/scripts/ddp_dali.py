"""Real 2-process CPU DDP (gloo) run of DALIImageNetDataModule in DALI's CPU-only mode.

Rank 0 writes, per rank, the dataset indices of every batch of two epochs (training and
validation), the dtypes the model saw and the loader lengths.

Usage: python ddp_dali.py ROOT --out OUT.json [--batch-size N] [--epochs E]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from stoker.datamodules import DALIImageNetDataModule
from tests.scripts.ddp_common import RecordingModule, ddp_trainer


class Recorder(RecordingModule):
    """Records ``(epoch, indices, labels)`` of every batch and the image dtype."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(3, 2))

    def record(self, stage: str, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        self.notes.add(str(batch["image"].dtype))
        return {"epoch": self.current_epoch, "index": batch["index"].tolist(), "label": batch["label"].tolist()}



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    dm = DALIImageNetDataModule(args.root, batch_size=args.batch_size, image_size=16, num_threads=1,
                                val_fraction=0.3)
    model = Recorder()
    trainer = ddp_trainer(max_epochs=args.epochs, num_sanity_val_steps=1)
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        result = {
            "ranks": model.gathered,
            "train_size": len(dm.splits["train"]),
            "val_size": len(dm.splits["val"]),
            "train_batches": len(dm.batches("train")),
            "val_batches": len(dm.batches("val")),
            "loader_type": type(trainer.train_dataloader).__name__,
            "val_labels": [label for _, label in dm.splits["val"]],
            "train_labels": dm.train_labels(),
        }
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
