"""One node of a simulated 2-node run of ShardedImageDataModule: ``num_nodes=2, devices=1``, gloo on 127.0.0.1.

The test starts this twice (``NODE_RANK`` 0 and 1, the same ``MASTER_PORT``), each node with a cache
folder of its own, streaming one shard set (local or on the loopback S3 server). Each node writes
``OUT/node-<rank>.json``: the indices of every training and validation batch per epoch, and what its
cache holds (how often ``prepare_data`` ran there, how many chunk files litdata cached).

Usage: python ddp_shards.py SOURCE OUT --node-rank R --port P [--epochs E]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import torch

from tests.scripts.ddp_common import RecordingModule, ddp_trainer


class Recorder(RecordingModule):
    """Records ``{"epoch", "index"}`` of every batch."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(3, 2))

    def record(self, stage: str, batch: dict[str, Any]) -> dict[str, Any]:
        return {"epoch": self.current_epoch, "index": batch["index"].tolist()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("out", type=Path)
    parser.add_argument("--node-rank", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)
    for key in ("WORLD_SIZE", "RANK", "GLOBAL_RANK", "LOCAL_WORLD_SIZE", "NNODES"):
        os.environ.pop(key, None)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(args.port), NODE_RANK=str(args.node_rank),
                      LOCAL_RANK="0")  # LOCAL_RANK: the processes are launched from outside, one per node
    from stoker.datamodules.sharded import ShardedImageDataModule

    cache = args.out / f"cache-node{args.node_rank}"
    dm = ShardedImageDataModule(args.source, batch_size=4, num_workers=1, image_size=8, cache_dir=str(cache))
    model = Recorder()
    trainer = ddp_trainer(devices=1, num_nodes=2, max_epochs=args.epochs)
    trainer.fit(model, datamodule=dm)
    record = json.loads(dm.prepared_record_path().read_text())
    result = {"rank": trainer.global_rank, "world": trainer.world_size, "seen": model.seen,
              "prepared": record["prepared"], "cached_chunks": len(list(cache.rglob("chunk-*.bin"))),
              "train_size": dm.meta.splits["train"], "val_size": dm.meta.splits["val"]}
    (args.out / f"node-{args.node_rank}.json").write_text(json.dumps(result))


def run_node(argv: list[str], log: str, env: dict[str, str]) -> None:
    """Run :func:`main` with ``env`` and output to ``log`` (the test forks this from a preloaded forkserver).

    A forkserver child has the forkserver's environment, not the test's: ``env`` brings what the test set
    (the loopback S3 endpoint and its fake credentials).
    """
    os.environ.update(env)
    multiprocessing.set_start_method("fork", force=True)  # DataLoader workers start by fork, as in any Linux process
    with open(log, "w") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    main(argv)


if __name__ == "__main__":
    main()
