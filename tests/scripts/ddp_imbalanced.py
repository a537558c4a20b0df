"""Real 2-process CPU DDP (gloo) run of ImbalancedDataModule wrapping ImageFolderDataModule.

Every rank records the dataset indices of its training batches per epoch and of its validation
batches; rank 0 gathers them with the global draw each rank computed and writes JSON.

Usage: python ddp_imbalanced.py ROOT --out OUT.json [--batch-size N] [--num-samples N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from stoker.datamodules import ImageFolderDataModule, ImbalancedDataModule
from tests.scripts.ddp_common import ddp_trainer


class Recorder(L.LightningModule):
    """Records the indices of every batch per epoch; a tiny linear layer keeps DDP's gradients real."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)
        self.train_seen: dict[int, list[int]] = {}
        self.val_seen: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.train_seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
        return self.layer(batch["image"].mean(dim=(2, 3))).sum()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if self.current_epoch == 0:
            self.val_seen.extend(batch["index"].tolist())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        datamodule = self.trainer.datamodule
        sampler = self.trainer.train_dataloader.sampler
        record = {
            "train_seen": {str(e): seen for e, seen in self.train_seen.items()},
            "val_seen": self.val_seen,
            "sampler_type": type(sampler).__name__,
            "num_replicas": sampler.num_replicas,
            "rank": sampler.rank,
            "global_draws": {str(e): sampler.global_draw(e).tolist() for e in self.train_seen},
            "class_weights": datamodule.class_weights.tolist(),
        }
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, record)
        self.gathered = gathered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    inner = ImageFolderDataModule(args.root, batch_size=args.batch_size, num_workers=0, image_size=8, val_fraction=0.25)
    dm = ImbalancedDataModule(inner, strategy="inverse", num_samples=args.num_samples, seed=3)
    model = Recorder()
    trainer = ddp_trainer(max_epochs=args.epochs)
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        result = {
            "ranks": model.gathered,
            "train_labels": inner.train_labels(),
            "val_size": len(inner.datasets["val"]),
            "report": dm.class_mix_report(),
        }
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
