"""Real 2-process CPU DDP (gloo) run of MixUpCutMix; rank 0 writes what each rank drew and saw.

Usage: python ddp_mixup.py --out OUT.json [--mode batch|pair|elem] [--seed S]

Also home of :class:`TensorDataModule`, a tiny in-memory image DataModule the callback tests reuse.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from stoker.callbacks import MixUpCutMix
from stoker.datamodules import StokerDataModule
from tests.scripts.ddp_common import ddp_trainer


class _TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": self.labels[index], "index": index}


class TensorDataModule(StokerDataModule):
    """Random uint8 images ``[3, size, size]`` and labels, normalized on the device by the base class."""

    input_key = "image"
    target_key = "label"

    def __init__(
        self, num_samples: int = 24, *, num_classes: int | None = 4, size: int = 8, batch_size: int = 4, seed: int = 0
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=0, persistent_workers=False, seed=seed)
        self._classes = num_classes
        generator = torch.Generator().manual_seed(1234)
        self.images = torch.randint(0, 256, (num_samples, 3, size, size), dtype=torch.uint8, generator=generator)
        self.labels = torch.randint(0, num_classes or 4, (num_samples,), generator=generator)
        self.mean = (0.5, 0.5, 0.5)
        self.std = (0.25, 0.25, 0.25)

    @property
    def class_names(self) -> list[str] | None:
        return None if self._classes is None else [f"c{i}" for i in range(self._classes)]

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(_TensorImages(self.images, self.labels), train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(_TensorImages(self.images, self.labels), train=False)


class MixRecorder(L.LightningModule):
    """Records lambdas, target shapes and validation batches; a linear layer keeps DDP's gradients real."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, num_classes)
        self.lams: list[list[float]] = []
        self.train_targets: list[tuple[str, list[int]]] = []
        self.val_batches: list[dict[str, Any]] = []

    def _mixer(self) -> MixUpCutMix:
        return next(cb for cb in self.trainer.callbacks if isinstance(cb, MixUpCutMix))  # type: ignore[attr-defined]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        target = batch["label"]
        self.train_targets.append((str(target.dtype), list(target.shape)))
        params = self._mixer().last_params
        active = target.is_floating_point()
        self.lams.append(params.lam.tolist() if active and params is not None else [])
        logits = self.layer(batch["image"].mean(dim=(2, 3)))
        return torch.nn.functional.cross_entropy(logits, target)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_batches.append({key: value.clone() for key, value in batch.items()})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            record = {"lams": self.lams, "targets": self.train_targets, "state": self._mixer().state_dict()}
            dist.all_gather_object(gathered, record)
            self.gathered = gathered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--mode", default="elem")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    dm = TensorDataModule(num_samples=32, batch_size=4, seed=args.seed)
    model = MixRecorder()
    trainer = ddp_trainer(limit_val_batches=0, callbacks=[MixUpCutMix(mode=args.mode, label_smoothing=0.0)])
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        Path(args.out).write_text(json.dumps({"ranks": model.gathered, "seed": args.seed}))


if __name__ == "__main__":
    main()
