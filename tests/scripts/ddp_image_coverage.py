"""Real 2-process CPU DDP (gloo) run of ImageFolderDataModule; rank 0 writes what each rank saw.

Usage: python ddp_image_coverage.py ROOT --out OUT.json [--batch-size N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stoker.datamodules import ImageFolderDataModule
from tests.scripts.ddp_common import ImageIndexRecorder, ddp_trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    dm = ImageFolderDataModule(args.root, batch_size=args.batch_size, num_workers=0, image_size=16, val_fraction=0.3)
    model = ImageIndexRecorder()
    trainer = ddp_trainer()
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        result = {
            "ranks": model.gathered,
            "train_size": len(dm.datasets["train"]),
            "val_size": len(dm.datasets["val"]),
        }
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
