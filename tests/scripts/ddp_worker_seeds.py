"""Real 2-process CPU DDP run with seed_everything(0, workers=True): what each rank's workers drew.

Each sample returns the first number its worker's torch generator gives after the worker (re)seeded
for the epoch, with the worker id. Rank 0 writes every rank's draws as JSON.

Usage: python ddp_worker_seeds.py --out OUT.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import Dataset, get_worker_info

from stoker.datamodules import StokerDataModule
from stoker.seeds import reseed_worker
from tests.scripts.ddp_common import RecordingModule, ddp_trainer


class Draws(Dataset):
    """``{"x": a draw of the worker's stream, "worker": id, "index": i}``; an augmentation stands in."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict[str, Any]:
        reseed_worker()
        info = get_worker_info()
        return {"x": torch.rand(1), "worker": info.id if info is not None else -1, "index": index}


class DrawsDataModule(StokerDataModule):
    input_key = "x"

    def train_dataloader(self) -> Any:
        return self.make_loader(Draws(), train=True)


class Recorder(RecordingModule):
    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(1, 1))

    def record(self, stage: str, batch: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": self.current_epoch, "x": batch["x"].flatten().tolist(), "worker": batch["worker"].tolist()}

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["x"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    L.seed_everything(0, workers=True)  # Lightning's rank-aware worker seeding, which stoker's must keep
    model = Recorder()
    trainer = ddp_trainer(max_epochs=2)
    trainer.fit(model, datamodule=DrawsDataModule(batch_size=2, num_workers=2, seed=0))
    if trainer.global_rank == 0:
        Path(args.out).write_text(json.dumps({"ranks": model.gathered}))


if __name__ == "__main__":
    main()
