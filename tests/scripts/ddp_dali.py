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

import lightning as L
import torch
import torch.distributed as dist

from stoker.datamodules import DALIImageNetDataModule


class Recorder(L.LightningModule):
    """Records ``(epoch, indices, labels)`` of every batch; a tiny linear layer keeps DDP's gradients real."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        self.seen: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
        self.dtypes: set[str] = set()
        self.gathered: list[Any] = []

    def _record(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.trainer.sanity_checking:
            self.seen[stage].append(
                {"epoch": self.current_epoch, "index": batch["index"].tolist(), "label": batch["label"].tolist()}
            )
        self.dtypes.add(str(batch["image"].dtype))
        return self.layer(batch["image"].mean(dim=(2, 3))).sum()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        if dist.is_available() and dist.is_initialized():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, {"seen": self.seen, "dtypes": sorted(self.dtypes)})
            self.gathered = gathered


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
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=args.epochs, num_sanity_val_steps=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
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
