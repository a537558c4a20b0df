"""Real 2-process CPU DDP (gloo) run of AudioFolderDataModule; rank 0 writes what each rank saw.

Usage: python ddp_audio.py ROOT --out OUT.json [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist

from stoker.datamodules import AudioFolderDataModule


class Recorder(L.LightningModule):
    """Records dataset indices and input shapes per batch; a tiny linear layer keeps DDP's gradients real."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 2)
        self.seen: dict[str, list[list[int]]] = {"train": [], "val": []}
        self.inputs: set[str] = set()

    def _record(self, stage: str, batch: dict) -> torch.Tensor:
        self.seen[stage].append(batch["index"].tolist())
        spec = batch["audio"]
        self.inputs.add(f"{spec.dtype} {list(spec.shape[1:])}")
        return self.layer(spec.mean(dim=(2, 3))).sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._record("train", batch)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._record("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {"seen": self.seen, "inputs": sorted(self.inputs)})
        self.gathered = gathered


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    dm = AudioFolderDataModule(args.root, batch_size=args.batch_size, num_workers=0, sample_rate=8000,
                               clip_seconds=0.25, n_fft=256, win_length=200, hop_length=80, n_mels=16,
                               freq_mask_width=4, time_mask_width=5, val_fraction=0.3)
    model = Recorder()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        result = {
            "ranks": model.gathered,
            "train_size": len(dm.datasets["train"]),
            "val_size": len(dm.datasets["val"]),
            "bad_files": dm.bad_files,
        }
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
