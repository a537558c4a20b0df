"""Shards against the folder path: training throughput per core, setup cost as the dataset grows, bytes on disk.

    python benchmarks/shards.py [--data DIR] [--per-class 100] [--workers 2] [--rounds 3] [--sizes 1000,10000,100000]

DIR is an image-folder tree of JPEGs; without it a sample of ImageNet-like JPEGs is built from the
photographs shipped with scikit-learn (short side 300-500 pixels, quality 75-95). The tree is packed
with ``stoker pack`` to a local folder and to a loopback S3 server (moto's standalone server on
127.0.0.1; nothing leaves the machine).

Throughput: one training epoch of 224x224 crops in batches of 32 with the same workers, decoded by
torchvision in the workers, the loader read to the end without a model. Rows, measured in turn
within each round, each round starting with the next one (median over rounds): the folder
DataModule; shards from local disk; shards from S3 with a cold cache (epoch 1, every chunk
downloaded) and warm (epoch 2); and, as the reference for stoker's loader choice, litdata's own
StreamingDataLoader over the same shards and decoder.
"per core" divides by the loader workers.

Setup: for each size, tiny synthetic JPEGs; folder ``prepare_data()`` + ``setup()`` with a cold scan
cache (every file decoded and hashed, as a node's first run) and warm (cached), against the sharded
module's ``__init__`` + ``prepare_data()`` + ``setup()`` (metadata, indexes and chunk listing only).

The last line is ``shards_vs_folder: X.XX``: shards from local disk against the folder path, images
per second per core, warm.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sample_images import build_sample  # noqa: E402

BATCH, IMAGE = 32, 224


def _s3_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    import boto3

    for _ in range(600):
        try:
            boto3.client("s3").create_bucket(Bucket="bench")
            break
        except Exception:
            time.sleep(0.1)
    return server, "s3://bench"


def _pack(root: Path, out: str, workers: int) -> float:
    from stoker.commands.pack import main

    start = time.perf_counter()
    if main([str(root), "--out", out, "--workers", str(workers), "--no-progress", "--chunk-bytes", "16MB"]) != 0:
        raise SystemExit(f"packing {root} to {out} failed")
    return time.perf_counter() - start


def _two_epochs(loader: Iterable) -> list[float]:
    rates = [_epoch_rate(loader), _epoch_rate(loader)]
    del loader
    gc.collect()  # shut persistent workers down now, not inside a later fork
    return rates


def _epoch_rate(loader: Iterable) -> float:
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += int(batch["image"].shape[0])
    return count / (time.perf_counter() - start)


def _folder(root: Path, workers: int) -> Callable[[], list[float]]:
    from stoker.datamodules import ImageFolderDataModule

    def run() -> list[float]:
        dm = ImageFolderDataModule(str(root), batch_size=BATCH, num_workers=workers, image_size=IMAGE,
                                   persistent_workers=True)
        dm.prepare_data()
        dm.setup()
        return _two_epochs(dm.train_dataloader())

    return run


def _shards(source: str, workers: int, cache: Path | None = None) -> Callable[[], list[float]]:
    from stoker.datamodules.sharded import ShardedImageDataModule

    def run() -> list[float]:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)  # a cold cache: every chunk is downloaded in epoch 1
        dm = ShardedImageDataModule(source, batch_size=BATCH, num_workers=workers, image_size=IMAGE,
                                    cache_dir=str(cache) if cache else None, persistent_workers=True)
        dm.prepare_data()
        dm.setup()
        return _two_epochs(dm.train_dataloader())

    return run


def _litdata_loader(source: Path, workers: int) -> Callable[[], list[float]]:
    from litdata import StreamingDataLoader, StreamingDataset

    from stoker.data.file_dataset import SkippingCollate
    from stoker.data.sources.shards.items import ImageItems, SampleLocator
    from stoker.data.sources.shards.meta import read_split_chunks
    from stoker.transforms.image import train_transform

    def run() -> list[float]:
        items = ImageItems(SampleLocator(str(source / "train"), read_split_chunks(str(source), "train")),
                           train_transform(IMAGE))
        ds = StreamingDataset(str(source / "train"), shuffle=True, drop_last=True, transform=items)
        return _two_epochs(StreamingDataLoader(ds, batch_size=BATCH, num_workers=workers, collate_fn=SkippingCollate(),
                                               persistent_workers=workers > 0, drop_last=True))

    return run


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tiny_tree(root: Path, count: int) -> Path:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(16):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buffer, "JPEG")
        payloads.append(buffer.getvalue())
    for i in range(count):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(payloads[i % len(payloads)])
    return root


def _setup_costs(base: Path, size: int, workers: int) -> dict[str, float]:
    from stoker.datamodules import ImageFolderDataModule
    from stoker.datamodules.sharded import ShardedImageDataModule

    root = _tiny_tree(base / f"tiny-{size}", size)
    os.environ["STOKER_CACHE"] = str(base / f"cache-{size}")
    timings: dict[str, float] = {}
    warm_up = ImageFolderDataModule(str(_tiny_tree(base / "warm-up", 20)), batch_size=BATCH, num_workers=0)
    warm_up.prepare_data()  # the first scan of a process starts its thread pools and decoders: not the data's cost
    for name in ("folder cold", "folder warm"):
        start = time.perf_counter()
        dm = ImageFolderDataModule(str(root), batch_size=BATCH, num_workers=0)
        dm.prepare_data()
        dm.setup()
        timings[name] = time.perf_counter() - start
    timings["pack (once)"] = _pack(root, str(base / f"tiny-{size}-shards"), workers)
    start = time.perf_counter()
    sharded = ShardedImageDataModule(str(base / f"tiny-{size}-shards"), batch_size=BATCH, num_workers=0)
    sharded.prepare_data()
    sharded.setup()
    timings["shards"] = time.perf_counter() - start
    return timings


def _median_rows(runs: dict[str, Callable[[], list[float]]], rounds: int) -> dict[str, list[float]]:
    samples: dict[str, list[list[float]]] = {name: [] for name in runs}
    names = list(runs)
    for number in range(rounds):
        # Each round starts with another pipeline, so none always runs first (cold) or last.
        for name in names[number % len(names):] + names[: number % len(names)]:
            samples[name].append(runs[name]())
    return {name: [statistics.median(r[e] for r in rows) for e in (0, 1)] for name, rows in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="an image-folder tree (default: a built sample)")
    parser.add_argument("--per-class", type=int, default=100, help="sample images per class (4 classes)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", default="1000,10000,100000", help="dataset sizes for the setup cost")
    args = parser.parse_args()
    import litdata
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="stoker-shards-bench-"))
    os.environ.setdefault("STOKER_CACHE", str(tmp / "stoker-cache"))
    server, bucket = _s3_server()
    try:
        root = args.data or build_sample(tmp / "sample", num_classes=4, per_class=args.per_class)
        count = sum(1 for _ in Path(root).rglob("*.jpg"))
        local = tmp / "shards"
        pack_local, pack_s3 = _pack(root, str(local), args.workers), _pack(root, f"{bucket}/shards", args.workers)
        runs = {
            "folder (ImageFolderDataModule)": _folder(root, args.workers),
            "shards, local disk": _shards(str(local), args.workers),
            "shards, loopback S3": _shards(f"{bucket}/shards", args.workers, cache=tmp / "s3-cache"),
            "litdata StreamingDataLoader, local (reference)": _litdata_loader(local, args.workers),
        }
        rates = _median_rows(runs, args.rounds)
        costs = {size: _setup_costs(tmp, size, args.workers) for size in (int(s) for s in args.sizes.split(","))}
        sizes = {"folder": _bytes(root), "shards": _bytes(local)}
    finally:
        server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    cores = max(1, args.workers)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, torch {torch.__version__}, litdata {litdata.__version__}")
    print(f"data: {count} JPEGs; {args.workers} "
          f"loader workers, batch {BATCH}, {IMAGE}x{IMAGE} crops; median of {args.rounds} rounds; packing took "
          f"{pack_local:.1f} s (local) and {pack_s3:.1f} s (S3)\n")
    print("| pipeline | epoch 1 img/s | epoch 2 img/s | epoch 2 img/s per core |\n|---|---:|---:|---:|")
    for name, (first, second) in rates.items():
        print(f"| {name} | {first:.0f} | {second:.0f} | {second / cores:.0f} |")
    print("\n| files | folder prepare+setup, cold (s) | folder, warm (s) | pack, once (s) | shards setup (s) |\n"
          "|---:|---:|---:|---:|---:|")
    for size, t in costs.items():
        print(f"| {size} | {t['folder cold']:.2f} | {t['folder warm']:.2f} | {t['pack (once)']:.1f} | "
              f"{t['shards']:.3f} |")
    print(f"\nbytes on disk: folder {sizes['folder'] / 2**20:.1f} MiB, shards {sizes['shards'] / 2**20:.1f} MiB "
          f"(ratio {sizes['shards'] / max(1, sizes['folder']):.3f})")
    folder, shards = rates["folder (ImageFolderDataModule)"][1], rates["shards, local disk"][1]
    print(f"shards_vs_folder: {shards / folder:.2f}")


if __name__ == "__main__":
    main()
