"""GPU check: the image DataModule feeding a timm ResNet-50 on CUDA, watched by both monitors.

Needs torch, torchvision, lightning and timm (not datasets, not DALI). Writes synthetic JPEGs to a
temporary folder, then:

1. trains ``resnet50`` on CUDA from :class:`stoker.datamodules.ImageFolderDataModule` with
   ``DataThroughputMonitor`` and ``StarvationMonitor``, once with 0 workers and once with all
   cores, and prints the GPU idle fraction and samples/s of each;
2. checks that uint8-to-float normalization on the device matches the CPU result;
3. checks ``torchvision.io.decode_jpeg(device="cuda")`` on a batch against CPU decoding;
4. if ``stoker.transforms.mixup`` exists, runs MixUp/CutMix on a CUDA batch.

Without CUDA it prints why and exits with status 0 (``--allow-cpu`` runs the same steps on the
CPU with a small model, to check the script itself).

Run: python benchmarks/gpu_check.py [--images 1536] [--batch-size 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import logging
import os
import platform
import sys
import tempfile
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stoker.callbacks import DataThroughputMonitor, StarvationMonitor  # noqa: E402
from stoker.data.loader import available_cores  # noqa: E402
from stoker.datamodules import ImageFolderDataModule  # noqa: E402
from stoker.models import ImageClassifier  # noqa: E402


def write_jpegs(root: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` smooth random JPEGs of ``size`` x ``size`` split over two class folders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for index in range(count):
        folder = root / ("a" if index % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        f = rng.uniform(1, 6, 3)
        image = np.stack([127 + 100 * np.sin(6.28 * (f[c] * xx + f[(c + 1) % 3] * yy)) for c in range(3)], axis=-1)
        image += rng.normal(0, 8, image.shape)
        buffer = io.BytesIO()
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        path = folder / f"{index:05d}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def train(root: Path, workers: int, args: argparse.Namespace, device: str) -> tuple[float, float, str]:
    """Fit once; return (starvation fraction, samples/s, the starvation summary)."""
    dm = ImageFolderDataModule(str(root), batch_size=args.batch_size, num_workers=workers, image_size=args.size,
                               val_fraction=0.05)
    model = ImageClassifier(args.model, num_classes=2, channels_last=device == "cuda")
    starvation = StarvationMonitor(print_summary=False, summary_file=None)
    throughput = DataThroughputMonitor(window_size=5, print_summary=False)
    trainer = L.Trainer(accelerator=device, devices=1, max_epochs=args.epochs, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, log_every_n_steps=5, callbacks=[throughput, starvation],
                        precision="bf16-mixed" if device == "cuda" else "32-true")
    trainer.fit(model, datamodule=dm)
    assert starvation.final is not None and starvation.summary is not None
    seconds = max(throughput.totals["time_s"], 1e-9)
    return starvation.final.mean["starvation"], throughput.totals["samples"] / seconds, starvation.summary


def check_normalization(root: Path, device: str) -> str:
    dm = ImageFolderDataModule(str(root), batch_size=8, num_workers=0, image_size=64)
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    on_cpu = dm.device_transform({"image": images.clone()}, training=True)["image"]
    on_device = dm.device_transform({"image": images.to(device)}, training=True)["image"].cpu()
    error = (on_cpu - on_device).abs().max().item()
    verdict = "OK" if error < 1e-5 and on_device.dtype == torch.float32 else "MISMATCH"
    return f"uint8->float normalization on {device} vs CPU: max abs diff {error:.2e} ({verdict})"


def check_decode(paths: list[Path], device: str) -> str:
    if device != "cuda":
        return "decode_jpeg(device='cuda'): skipped (no CUDA)"
    from torchvision.io import decode_jpeg, read_file

    data = [read_file(str(path)) for path in paths[:16]]
    on_gpu = decode_jpeg(data, device="cuda")
    on_cpu = decode_jpeg(data)
    # nvJPEG and libjpeg may round IDCT output differently by a few levels.
    error = max((g.cpu().int() - c.int()).abs().float().mean().item() for g, c in zip(on_gpu, on_cpu))
    same_shape = all(g.shape == c.shape for g, c in zip(on_gpu, on_cpu))
    verdict = "OK" if same_shape and error < 3.0 else "MISMATCH"
    return f"decode_jpeg(device='cuda') on a batch of {len(data)}: mean abs diff vs CPU {error:.2f} levels ({verdict})"


def check_mixing(device: str) -> str:
    if importlib.util.find_spec("stoker.transforms.mixup") is None:
        return "MixUp/CutMix: stoker.transforms.mixup not present, skipped"
    from stoker.transforms.mixup import MixSettings, mix_batch

    images = torch.randn(16, 3, 32, 32, device=device)
    labels = torch.randint(0, 10, (16,), device=device)
    lines = []
    for mode in ("batch", "elem"):
        settings = MixSettings(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, mode=mode)
        mixed, soft, _ = mix_batch(images.clone(), labels, num_classes=10, settings=settings,
                                   generator=torch.Generator().manual_seed(0))
        sums = soft.sum(dim=1)
        ok = mixed.device.type == device and soft.shape == (16, 10) and torch.allclose(sums, torch.ones_like(sums))
        lines.append(f"{mode} mode {'OK' if ok else 'FAILED'}")
    return f"MixUp/CutMix on a {device} batch: " + ", ".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1536)
    parser.add_argument("--size", type=int, default=224, help="training crop side")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when CUDA is absent")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: CUDA is not available on this machine (torch.cuda.is_available() is False); "
              "nothing to check. Run it on a GPU machine, or pass --allow-cpu to dry-run the script on the CPU.")
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    name = torch.cuda.get_device_name() if device == "cuda" else platform.machine()
    cores = available_cores()
    print(f"device: {name}; {cores} cores; torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"lightning {L.__version__}; {args.model}, batch {args.batch_size}, crop {args.size}, {args.images} JPEGs")
    with tempfile.TemporaryDirectory(prefix="stoker-gpu-check-") as tmp:
        root = Path(tmp) / "images"
        paths = write_jpegs(root, args.images, size=max(args.size + 32, 64))
        print(check_normalization(root, device))
        print(check_decode(paths, device))
        print(check_mixing(device))
        results = {}
        for workers in (0, max(1, cores - 1)):
            starved, samples_per_s, summary = train(root, workers, args, device)
            results[workers] = (starved, samples_per_s)
            print(f"\n--- {workers} workers\n{summary}")
            kind = "GPU idle fraction" if device == "cuda" else "host fetch fraction"
            print(f"workers={workers}: {kind} {100 * starved:.1f}%, {samples_per_s:.1f} samples/s")
        (idle0, sps0), (idle_n, sps_n) = results.values()
        print(f"\nsummary: 0 workers {100 * idle0:.1f}% idle, {sps0:.1f} samples/s | {max(1, cores - 1)} workers "
              f"{100 * idle_n:.1f}% idle, {sps_n:.1f} samples/s | speed-up {sps_n / max(sps0, 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
