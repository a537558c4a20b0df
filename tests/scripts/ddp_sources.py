"""Real 2-process CPU DDP (gloo) run of ImageDataModule on a source that is not class folders; rank 0 writes
what each rank saw.

The source is any that ImageDataModule reads (the test passes WebDataset tars); loader workers read it in
processes of their own, as in training.

Usage: python ddp_sources.py SOURCE --out OUT.json [--batch-size N] [--workers W] [--class-names a,b,c]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stoker.datamodules import ImageDataModule
from tests.scripts.ddp_common import ImageIndexRecorder, ddp_trainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--class-names", default=None, help="comma-separated (WebDataset .cls holds indices)")
    args = parser.parse_args()
    names = args.class_names.split(",") if args.class_names else None
    # Caches go to $STOKER_CACHE, which the tests point at their session's temporary folder.
    dm = ImageDataModule(args.source, batch_size=args.batch_size, num_workers=args.workers, image_size=16,
                         class_names=names)
    model = ImageIndexRecorder()
    trainer = ddp_trainer()
    trainer.fit(model, datamodule=dm)
    if trainer.global_rank == 0:
        result = {"ranks": model.gathered, "source_kind": dm.source_kind, "train_size": len(dm.datasets["train"]),
                  "val_size": len(dm.datasets["val"])}
        Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
