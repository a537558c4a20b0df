"""Loader threads against worker processes: throughput per core, memory and time to the first batch.

    python benchmarks/loader_backends.py [--data DIR] [--rounds 5] [--batches 6] [--workers 1 2 4]

DIR is an image-folder tree of JPEGs; without it a sample of ImageNet-like JPEGs is built from real
photographs shipped with scikit-learn (short side 300-500 pixels, quality 75-95). Both backends run
the same ImageFolderDataModule training pipeline (read, decode, RandomResizedCrop 224 + flip, batches
of 32, collate), ``worker_type="process"`` or ``"thread"``, at each number of workers.

Measured per setting, in rounds that alternate the backends (so both share the machine's state), the
median over rounds:

* **images/s**: training batches read after the first (the steady state), and per core (divided by the
  workers loading in parallel);
* **memory**: proportional set size (PSS: shared pages split between the processes that share them, so
  copy-on-write pages of forked workers are not counted twice) of the main process and its workers,
  minus the main process's before the loader started;
* **first batch**: seconds from creating an epoch's iterator (workers not persistent: processes start
  and each imports its share of the dataset; threads start) to its first batch.

The last line is ``threads_vs_processes: X memory_ratio: Y first_batch_ratio: Z`` at 2 workers:
threads' images/s over processes', threads' memory over processes', threads' first-batch time over
processes'.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sample_images import build_sample  # noqa: E402

BATCH = 32
IMAGE = 224


def _pss_mb(process: psutil.Process) -> float:
    try:
        return process.memory_full_info().pss / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def loader_memory_mb() -> float:
    """PSS of this process and every child (the worker processes), in MiB."""
    me = psutil.Process()
    return _pss_mb(me) + sum(_pss_mb(child) for child in me.children(recursive=True))


def measure(root: Path, worker_type: str, workers: int, batches: int) -> dict[str, float]:
    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(root), batch_size=BATCH, num_workers=workers, worker_type=worker_type,  # type: ignore[arg-type]
                               image_size=IMAGE, val_fraction=0.0, verify="none", persistent_workers=False)
    dm.setup("fit")
    gc.collect()
    before = loader_memory_mb()
    loader = dm.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    next(iterator)
    first = time.perf_counter() - start
    begin, seen = time.perf_counter(), 0
    peak = loader_memory_mb()
    for _ in range(batches):
        try:
            seen += len(next(iterator)["index"])
        except StopIteration:
            break
        peak = max(peak, loader_memory_mb())
    elapsed = time.perf_counter() - begin
    del iterator, loader
    gc.collect()
    return {"images_s": seen / elapsed, "memory_mb": peak - before, "first_batch_s": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    root = args.data or build_sample(Path(tempfile.gettempdir()) / "stoker-bench-photos-400", num_classes=4,
                                     per_class=100)
    print(f"machine: {platform.machine()}, {psutil.cpu_count(logical=True)} cores, Python {platform.python_version()}, "
          f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads)")
    print(f"data: {root} ({sum(1 for _ in root.rglob('*.jpg'))} JPEGs); batch {BATCH}, {IMAGE}px crops; "
          f"{args.rounds} rounds of {args.batches} batches after the first\n")
    settings = [(backend, n) for n in args.workers for backend in ("process", "thread")]
    results: dict[tuple[str, int], list[dict[str, float]]] = {key: [] for key in settings}
    for round_number in range(args.rounds):
        order = settings[round_number % len(settings):] + settings[: round_number % len(settings)]
        for backend, workers in order:
            results[(backend, workers)].append(measure(root, backend, workers, args.batches))
    median: dict[tuple[str, int], dict[str, Any]] = {
        key: {name: statistics.median(r[name] for r in runs) for name in runs[0]} for key, runs in results.items()}
    print(f"{'backend':>8} {'workers':>7} {'images/s':>9} {'per core':>9} {'memory MiB':>11} {'first batch s':>14}")
    for backend, workers in settings:
        m = median[(backend, workers)]
        print(f"{backend:>8} {workers:>7} {m['images_s']:>9.1f} {m['images_s'] / workers:>9.1f} "
              f"{m['memory_mb']:>11.0f} {m['first_batch_s']:>14.3f}")
    threads, processes = median[("thread", 2)], median[("process", 2)]
    print(f"\nthreads_vs_processes: {threads['images_s'] / processes['images_s']:.2f} "
          f"memory_ratio: {threads['memory_mb'] / max(processes['memory_mb'], 1e-9):.2f} "
          f"first_batch_ratio: {threads['first_batch_s'] / processes['first_batch_s']:.2f}")


if __name__ == "__main__":
    main()
