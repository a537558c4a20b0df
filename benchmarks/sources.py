"""Every source form against the folder path: training throughput per core of ``ImageDataModule`` over the same photos.

    python benchmarks/sources.py [--data DIR] [--per-class 100] [--workers 0 2] [--rounds 9] [--epochs 1]

DIR is an image-folder tree of JPEGs; without it a sample of ImageNet-like JPEGs is built from the
photographs shipped with scikit-learn (4 classes, short side 300-500 pixels, quality 75-95). The
tree is then written, byte for byte, in every other form ``ImageDataModule(source)`` reads (see
``_source_forms.py``): a csv table of the files' paths, a ``save_to_disk`` dataset and Hub-layout
parquet (``data/train-00000-of-00001.parquet``) with the JPEGs embedded in an ``Image()`` column,
WebDataset tars, and a stoker shard set (``stoker pack``).

Each source gets one training loader of an ``ImageDataModule`` with the same settings for every
source: every sample trains (``val_fraction=0``), read + decode (torchvision) + RandomResizedCrop 224 +
flip, batch 32, collate, persistent workers (the default), read to the end of each epoch without a
model. Not timed: ``__init__``, ``prepare_data`` and ``setup`` (decode checks and hashes are cached by
a warm-up pass before, as on a node's second run), building the loader, and a warm-up epoch per
source (workers started, files opened, Arrow views built, the first batch). Timed: the epochs after.

With 0 workers (the main process makes each batch inside ``next()``) an epoch of every source runs
at once, one batch of each in turn, each ``next()`` timed, so every source meets the same machine.
With workers (which prefetch in the background) whole epochs run one source after another, each
timed from ``iter()`` to its last batch. Either way a round covers every source and each round
starts with the next one. Medians over rounds are reported; a ratio is the median of the rounds'
ratios (each source against the folder in the same round). "per core" divides by the processes
doing the work (the main process with 0 workers, else the workers); torch runs one thread per
process. "images per CPU-s" divides by the CPU time the main process and its workers spent in the
timed part instead of the wall time: on a machine shared with other jobs it moves less than the
wall clock, so it is printed beside it as a check of the ratios (the ratios and the last line are
the wall clock's).

The last line is ``min_ratio_vs_folder: X.XX``: the smallest ratio of a source's images/s to the
folder's, over every source and worker count.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sample_images import build_sample  # noqa: E402
from _source_forms import write_all  # noqa: E402

BATCH, IMAGE = 32, 224
LABELS = {
    "folder": "folder of class folders",
    "table": "table: csv of paths",
    "hf_saved": "Hugging Face save_to_disk",
    "hf_parquet": "Hugging Face Hub parquet",
    "webdataset": "WebDataset tars",
    "shards": "stoker shards (pack)",
}


def _prepared(source: str, workers: int, cache: Path) -> Any:
    """A set-up ``ImageDataModule`` (the same settings for every source)."""
    from stoker.datamodules import ImageDataModule

    dm = ImageDataModule(source, batch_size=BATCH, num_workers=workers, image_size=IMAGE, val_fraction=0.0,
                         cache_dir=str(cache), persistent_workers=True)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class _Clock:
    """Wall seconds and CPU seconds (this process and its loader workers) spent while it runs."""

    def __init__(self, workers: bool) -> None:
        self.workers = workers
        self.wall = self.cpu = 0.0
        self._process = psutil.Process()

    def _cpu_now(self) -> float:
        if not self.workers:  # the precise clock of this process (psutil's counts 10 ms ticks)
            return time.process_time()
        total = 0.0
        for process in [self._process, *self._process.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    def __enter__(self) -> _Clock:
        self._cpu, self._wall = self._cpu_now(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += self._cpu_now() - self._cpu


def _epoch(loader: Iterable[Any]) -> int:
    """Images of one epoch."""
    return sum(int(batch["image"].shape[0]) for batch in loader)


def _batches_in_turn(loaders: dict[str, Iterable[Any]], epochs: int) -> dict[str, tuple[float, float]]:
    """One round with 0 workers: an epoch of every source at once, one batch of each in turn, each ``next()`` timed.

    With no workers a batch is made inside ``next()``, so the timing is exact, and drawing batches in
    turn gives every source the same moment's machine (others' load, the caches).
    """
    counts, clocks = dict.fromkeys(loaders, 0), {name: _Clock(workers=False) for name in loaders}
    for _ in range(epochs):
        iterators = {name: iter(loader) for name, loader in loaders.items()}
        while iterators:
            for name, iterator in list(iterators.items()):
                with clocks[name]:
                    batch = next(iterator, None)
                if batch is None:
                    del iterators[name]
                else:
                    counts[name] += int(batch["image"].shape[0])
    return {name: (counts[name] / clocks[name].wall, counts[name] / clocks[name].cpu) for name in loaders}


def _epochs_in_turn(loaders: dict[str, Iterable[Any]], epochs: int) -> dict[str, tuple[float, float]]:
    """One round with workers: one source's whole epoch after another's, each timed from ``iter()`` to its end.

    Workers prefetch in the background, so sources cannot share the moment batch by batch. Whole
    epochs of persistent workers (started by the warm-up epoch) leave no doubt about what was timed:
    every worker starts at ``iter()`` and works until the epoch's last batch.
    """
    counts, clocks = dict.fromkeys(loaders, 0), {name: _Clock(workers=True) for name in loaders}
    for _ in range(epochs):
        for name, loader in loaders.items():
            with clocks[name]:
                counts[name] += _epoch(loader)
    return {name: (counts[name] / clocks[name].wall, counts[name] / clocks[name].cpu) for name in loaders}


def _rounds(sources: dict[str, str], workers: list[int], cache: Path, rounds: int,
            epochs: int) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """``(images per second, images per CPU-second)`` of every source and worker count, one pair per round."""
    samples: dict[tuple[str, int], list[tuple[float, float]]] = {}
    names = list(sources)
    for count in workers:
        loaders = {name: _prepared(source, count, cache).train_dataloader() for name, source in sources.items()}
        for loader in loaders.values():
            _epoch(loader)  # warm-up, not timed: workers started, files opened, arrow views built, first batches
        for number in range(rounds):
            # Each round starts with another source, so none always runs first (cold) or last.
            order = {name: loaders[name] for name in names[number % len(names):] + names[: number % len(names)]}
            rates = _batches_in_turn(order, epochs) if count == 0 else _epochs_in_turn(order, epochs)
            for name, rate in rates.items():
                samples.setdefault((name, count), []).append(rate)
        del loaders
        gc.collect()  # persistent workers stop now, not during the next worker count's rounds
    return samples


def _quiet() -> None:
    """Keep the DataModules' set-up reports and the libraries' progress bars out of the table."""
    import datasets
    import lightning.pytorch  # noqa: F401 - sets its loggers' levels on import; ours come after

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities", "stoker", "litdata"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _versions() -> str:
    import datasets
    import litdata
    import pyarrow
    import torchvision

    return (f"python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"datasets {datasets.__version__}, pyarrow {pyarrow.__version__}, litdata {litdata.__version__}")


def _print_table(samples: dict[tuple[str, int], list[tuple[float, float]]], workers: list[int]) -> float:
    """The table; returns the smallest ratio to the folder (wall clock).

    A ratio is the median over rounds of the source's rate over the folder's in the same round (the
    conditions a round shares cancel); the range is the lowest and highest of those.
    """
    print("| source | workers | images/s | images/s per core | vs folder | rounds' range | images per CPU-s | "
          "vs folder, CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    lowest = float("inf")
    for count in workers:
        folder = samples[("folder", count)]
        for name in LABELS:
            rates = samples[(name, count)]
            ratios = [rate[0] / base[0] for rate, base in zip(rates, folder)]
            cpu_ratios = [rate[1] / base[1] for rate, base in zip(rates, folder)]
            rate, ratio = statistics.median(r[0] for r in rates), statistics.median(ratios)
            if name != "folder":
                lowest = min(lowest, ratio)
            print(f"| {LABELS[name]} | {count} | {rate:.1f} | {rate / max(1, count):.1f} | {ratio:.2f}x | "
                  f"{min(ratios):.2f}-{max(ratios):.2f} | {statistics.median(r[1] for r in rates):.1f} | "
                  f"{statistics.median(cpu_ratios):.2f}x |")
    return lowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an image-folder tree of JPEGs (default: a built sample)")
    parser.add_argument("--per-class", type=int, default=100, help="sample images per class (4 classes)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader workers to measure with")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per source and round")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process: the per-core comparison the goal is stated in
    _quiet()
    tmp = Path(tempfile.mkdtemp(prefix="stoker-sources-bench-"))
    os.environ["STOKER_CACHE"] = str(tmp / "stoker-cache")
    cache = tmp / "cache"
    load_before = os.getloadavg()[0]
    try:
        root = args.data or build_sample(tmp / "sample", num_classes=4, per_class=args.per_class)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # stoker pack's own report
            sources = write_all(Path(root), tmp / "forms", workers=max(args.workers))
        written = time.perf_counter() - start
        start = time.perf_counter()
        sizes = {name: _prepared(source, 0, cache).split_sizes()["train"]  # warm-up: fills the caches
                 for name, source in sources.items()}
        warm_up = time.perf_counter() - start
        if len(set(sizes.values())) != 1:
            raise SystemExit(f"the sources' training splits differ: {sizes}")
        files = sum(1 for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
        mib = sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file()) / 2**20
        samples = _rounds(sources, args.workers, cache, args.rounds, args.epochs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (load average "
          f"{load_before:.1f} before, {load_after:.1f} after), {torch.get_num_threads()} torch thread per process")
    print(f"versions: {_versions()}")
    print(f"data: {files} JPEGs ({mib:.1f} MiB) in {len(LABELS)} forms, {sizes['folder']} training samples each; "
          f"forms written in {written:.1f} s, first prepare_data+setup of all {warm_up:.1f} s (not timed)")
    print(f"timed: {args.epochs} training epoch(s) per source and round after an untimed warm-up epoch, batch "
          f"{BATCH}, RandomResizedCrop {IMAGE} + flip; median of {args.rounds} rounds\n")
    lowest = _print_table(samples, args.workers)
    print(f"\nmin_ratio_vs_folder: {lowest:.2f}")


if __name__ == "__main__":
    main()
