"""The DALI CPU row of benchmarks/image_pipeline.py, and a side-by-side run of its own.

    python benchmarks/dali_row.py [--data DIR] [--rounds 3] [--batches 6] [--threads 1 2]

:func:`measure_dali_cpu` times stoker's DALI training pipeline in DALI's CPU-only mode
(``device_id=None``): file reader, ``decoders.image_random_crop`` on the CPU, resize, random flip
and ``crop_mirror_normalize`` to uint8 CHW, exactly what ``DALIImageNetDataModule`` runs without a
GPU. Run on its own, it prints it beside stoker's torchvision training dataset (0 workers, same
files, same crop size and batch) measured in the same rounds, and the ratio of the two.

On a GPU machine the same module decodes with ``device="mixed"`` (nvJPEG); that path is not timed
here.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def measure_dali_cpu(data_dir: str, *, image_size: int, batch_size: int, num_threads: int, max_batches: int) -> float:
    """Training-pipeline images/s of the DALI CPU pipeline, over ``max_batches`` batches after one warm-up.

    Args:
        data_dir: An image-folder tree (``<class>/<image>`` or ``train/<class>/<image>``).
        image_size: Side of the square training crop.
        batch_size: Images per batch.
        num_threads: DALI CPU threads.
        max_batches: Timed batches (epochs are chained if the tree is smaller).

    Raises:
        ModuleNotFoundError: DALI is not installed (``pip install 'stoker[dali]'``).
    """
    from stoker.datamodules import DALIImageNetDataModule

    dm = DALIImageNetDataModule(data_dir, batch_size=batch_size, image_size=image_size, num_threads=num_threads,
                                val_fraction=0.0, verify="none", decode_device="cpu")
    dm.setup("fit")
    loader = dm.batches("train")

    def endless():  # a new epoch (and pipeline) when one ends, so a small tree still gives max_batches
        while True:
            yield from loader

    batches = endless()
    next(batches)  # warm-up: pipeline build and thread start
    start = time.perf_counter()
    for _ in range(max_batches):
        next(batches)
    elapsed = time.perf_counter() - start
    loader.close()
    return max_batches * batch_size / elapsed


def _stoker_torchvision(data_dir: str, *, image_size: int, batch_size: int, max_batches: int) -> float:
    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(data_dir, batch_size=batch_size, num_workers=0, image_size=image_size,
                               val_fraction=0.0, verify="none", persistent_workers=False)
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    next(iterator)
    start = time.perf_counter()
    for _ in range(max_batches):
        next(iterator)
    return max_batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="image-folder tree of JPEGs (default: build a sample)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="DALI CPU threads to try")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nvidia.dali
    from _sample_images import build_sample

    root = args.data or build_sample(Path(tempfile.gettempdir()) / "stoker-bench-images")
    torch.set_num_threads(1)
    common = {"image_size": args.image_size, "batch_size": args.batch_size, "max_batches": args.batches}
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        rates.setdefault("stoker torchvision, 0 workers", []).append(_stoker_torchvision(str(root), **common))
        for threads in args.threads:
            rates.setdefault(f"DALI CPU, {threads} thread(s)", []).append(
                measure_dali_cpu(str(root), num_threads=threads, **common)
            )
    files = sum(1 for _ in root.rglob("*.jpg"))
    print(f"machine: {platform.machine()}, python {platform.python_version()}, torch {torch.__version__}, "
          f"DALI {nvidia.dali.__version__}")
    print(f"data: {files} JPEGs under {root}; batch {args.batch_size}; crop {args.image_size}; "
          f"median of {args.rounds} rounds\n")
    reference = statistics.median(rates["stoker torchvision, 0 workers"])
    print("| pipeline | images/s | vs stoker torchvision |\n|---|---:|---:|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {statistics.median(values) / reference:.2f}x |")
    one_thread = statistics.median(rates[f"DALI CPU, {args.threads[0]} thread(s)"])
    print(f"\ndali_cpu_vs_stoker_torchvision: {one_thread / reference:.2f}")


if __name__ == "__main__":
    main()
