"""A 2-rank DDP fit in which rank 1's data raises, or rank 1 is killed, at its third training batch.

Usage: python ddp_no_hang.py {raise,kill,raise_in_worker} DATA --out OUT

Every rank must end (the test bounds the time); rank 0 writes ``OUT`` only if its fit returned, which it must not.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.scripts.ddp_common import RecordingModule, ddp_trainer  # noqa: E402


class Failing(RecordingModule):
    def __init__(self, mode: str) -> None:
        import torch

        super().__init__(torch.nn.Linear(3, 2))
        self.mode = mode

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        if self.global_rank == 1 and batch_idx == 2 and self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)  # like a node lost mid-step
        return super().training_step(batch, batch_idx)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["raise", "kill", "raise_in_worker"])
    parser.add_argument("data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from stoker.datamodules import ImageFolderDataModule

    class BadOnRankOne(ImageFolderDataModule):
        def setup(self, stage: str | None = None) -> None:
            super().setup(stage)
            train = self.datasets["train"]
            if self.trainer is not None and self.trainer.global_rank == 1 and args.mode != "kill":
                read = train.__class__.__getitem__
                order = list(self.make_loader(train, train=True).sampler)  # this rank's first epoch
                poisoned = order[2 * self.batch_size]  # the first sample of its third batch

                def getitem(self: Any, index: int) -> Any:
                    if index == poisoned:
                        raise OSError(f"sample {index}: the storage returned an I/O error (injected)")
                    return read(self, index)

                train.__class__ = type("Poisoned", (train.__class__,), {"__getitem__": getitem})

    workers = 2 if args.mode == "raise_in_worker" else 0
    dm = BadOnRankOne(str(args.data), batch_size=4, num_workers=workers, image_size=8, val_fraction=0.2)
    trainer = ddp_trainer(max_epochs=2)
    trainer.fit(Failing(args.mode), datamodule=dm)
    if trainer.global_rank == 0:
        args.out.write_text(json.dumps({"finished": True}))


if __name__ == "__main__":
    main()
