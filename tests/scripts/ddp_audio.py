"""Real 2-process CPU DDP (gloo) run of AudioFolderDataModule; rank 0 writes what each rank saw.

Usage: python ddp_audio.py ROOT --out OUT.json [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stoker.datamodules import AudioFolderDataModule
from tests.scripts.ddp_common import RecordingModule, ddp_trainer


class Recorder(RecordingModule):
    """Records dataset indices and the spectrogram dtype and shape the model receives."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(1, 2))

    def record(self, stage: str, batch: dict) -> list[int]:
        spec = batch["audio"]
        self.notes.add(f"{spec.dtype} {list(spec.shape[1:])}")
        return batch["index"].tolist()

    def features(self, batch: dict) -> torch.Tensor:
        return batch["audio"].mean(dim=(2, 3))



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
    trainer = ddp_trainer()
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
