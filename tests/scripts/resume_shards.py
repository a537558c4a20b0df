"""Kill-and-resume variants of the sharded DataModules (see tests/datamodules/test_resume.py).

``build(variant, data, workers)``: ``data`` is a shard set written by ``stoker pack``; ``"cpu"``
decodes with torchvision in the loader workers, ``"dali"`` feeds the streamed bytes to DALI in
its CPU-only mode. Samples are identified by their position in the packed split (``index``).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L


def build(variant: str, data: Path, workers: int) -> L.LightningDataModule:
    from stoker.datamodules.sharded import ShardedImageDataModule

    if variant not in ("cpu", "dali"):
        raise ValueError(f"unknown sharded variant {variant!r}; expected 'cpu' or 'dali'")
    return ShardedImageDataModule(str(data), batch_size=4, num_workers=workers, image_size=8, decode=variant,
                                  num_threads=1, cache_dir=str(data.parent / f"shard-cache-{variant}"))
