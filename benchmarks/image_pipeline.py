"""Training-pipeline throughput on the CPU: stoker against the torchvision and timm references.

    python benchmarks/image_pipeline.py [--data DIR] [--rounds 3] [--batches 6]

DIR is an image-folder tree of JPEGs; without it a sample of ImageNet-like JPEGs is built from
real photographs shipped with scikit-learn (short side 300-500 pixels, quality 75-95).

Every pipeline produces 224x224 training crops (RandomResizedCrop + horizontal flip) in batches
of 32 from the same files, with 0 workers (main process, one thread) and 2 workers. Pipelines
are measured in turn within each round and the median over rounds is reported, so they share
the machine's conditions. "per core" divides by the processes doing the work.

* torchvision reference: ImageFolder + PIL + v2 RandomResizedCrop(224), flip, ToTensor, Normalize.
* timm create_loader: timm's training transforms on the CPU (no CUDA prefetcher).
* stoker: ImageFolderDataModule's training dataset: torchvision's native decoder to uint8 and
  v2 crop/flip on uint8; normalization happens later on the accelerator, so it is not here.
* stoker + CPU normalize: the same plus normalization on the CPU, for a machine with no GPU.
* DALI CPU: stoker's DALI pipeline in CPU-only mode, when DALI is installed.

The last line is ``speedup_vs_torchvision_reference: X.XX`` (stoker against the reference,
0 workers, one core).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sample_images import build_sample  # noqa: E402

BATCH = 32
IMAGE = 224


def torchvision_reference(root: Path, workers: int) -> Iterable:
    from torchvision import datasets
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.RandomResizedCrop(IMAGE), v2.RandomHorizontalFlip(), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    dataset = datasets.ImageFolder(str(root), transform=transform)
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, drop_last=True)


def timm_loader(root: Path, workers: int) -> Iterable:
    from timm.data import ImageDataset, create_loader

    return create_loader(ImageDataset(str(root)), input_size=(3, IMAGE, IMAGE), batch_size=BATCH, is_training=True,
                         use_prefetcher=False, num_workers=workers, persistent_workers=False)


def _stoker_module(root: Path, workers: int):
    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(root), batch_size=BATCH, num_workers=workers, image_size=IMAGE, val_fraction=0.0,
                               verify="none", persistent_workers=False)
    dm.setup("fit")
    return dm


def stoker_loader(root: Path, workers: int) -> Iterable:
    return _stoker_module(root, workers).train_dataloader()


def stoker_cpu_normalize(root: Path, workers: int) -> Iterable:
    dm = _stoker_module(root, workers)
    return (dm.device_transform(batch, training=True) for batch in dm.train_dataloader())


def measure(make: Callable[[Path, int], Iterable], root: Path, workers: int, batches: int) -> float:
    """Images per second over ``batches`` batches, after one warm-up batch (worker start-up)."""
    iterator = iter(make(root, workers))
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * BATCH / (time.perf_counter() - start)


def dali_row(root: Path, workers: int, batches: int) -> float | None:
    try:
        from dali_row import measure_dali_cpu
    except ImportError:
        return None
    try:
        return measure_dali_cpu(str(root), image_size=IMAGE, batch_size=BATCH, num_threads=max(1, workers),
                                max_batches=batches)
    except ModuleNotFoundError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="image-folder tree of JPEGs (default: build a sample)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    root = args.data or build_sample(Path(tempfile.gettempdir()) / "stoker-bench-images")
    files = sum(1 for _ in root.rglob("*.jpg")) + sum(1 for _ in root.rglob("*.JPEG"))
    needed = (args.batches + 1) * BATCH
    if files < needed:
        raise SystemExit(f"{root} holds {files} JPEGs; --batches {args.batches} needs at least {needed}")
    torch.set_num_threads(1)  # one core per process: the per-core comparison the goal is stated in
    pipelines: dict[str, Callable[[Path, int], Iterable]] = {
        "torchvision reference": torchvision_reference,
        "timm create_loader": timm_loader,
        "stoker": stoker_loader,
        "stoker + CPU normalize": stoker_cpu_normalize,
    }
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for workers in args.workers:
            for name, make in pipelines.items():
                rates.setdefault((name, workers), []).append(measure(make, root, workers, args.batches))
            dali = dali_row(root, workers, args.batches)
            if dali is not None:
                rates.setdefault(("DALI CPU", workers), []).append(dali)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s) per process, "
          f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"data: {files} JPEGs under {root}; batch {BATCH}; crop {IMAGE}; median of {args.rounds} rounds\n")
    print("| pipeline | workers | images/s | images/s per core | vs reference |\n|---|---:|---:|---:|---:|")
    for (name, workers), values in rates.items():
        rate = statistics.median(values)
        reference = statistics.median(rates[("torchvision reference", workers)])
        per_core = rate / max(1, workers)
        print(f"| {name} | {workers} | {rate:.1f} | {per_core:.1f} | {rate / reference:.2f}x |")
    speedup = statistics.median(rates[("stoker", 0)]) / statistics.median(rates[("torchvision reference", 0)])
    print(f"\nspeedup_vs_torchvision_reference: {speedup:.2f}")


if __name__ == "__main__":
    main()
