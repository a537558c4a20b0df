"""The embedded default: scikit-learn's handwritten digits as an image-folder tree, and its DataModule.

scikit-learn ships the UCI optical-recognition digits (1,797 grayscale 8x8 scans of
handwritten digits, 43 writers) inside its wheel, so a real image dataset can be built with no
network. Each scan is upsampled and written as a grayscale PNG under ``root/<digit>/``, which
also exercises the grayscale-to-RGB decode path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from stoker._imports import _SKLEARN_AVAILABLE
from stoker.data.loader import WorkerType
from stoker.datamodules.image_folder import ImageFolderDataModule
from stoker.demos.base import BuiltOnFirstUse
from stoker.transforms.image import AutoAugment

DIGIT_CLASSES: list[str] = [str(d) for d in range(10)]
_MARKER = ".stoker-digits.json"


def build_digits_folder(root: str | os.PathLike[str], *, size: int = 32, imbalanced: bool = False) -> Path:
    """Write the digits as ``root/<digit>/<n>.png`` once; later calls return at once.

    Args:
        root: Target directory (created).
        size: Side of the upsampled images in pixels.
        imbalanced: Keep only ``1/(k+1)`` of the images of digit ``k`` (a skewed dataset for the
            class-imbalance recipe), chosen deterministically.

    Raises:
        ModuleNotFoundError: scikit-learn is not installed.
    """
    root_path = Path(root).expanduser()
    settings = {"size": size, "imbalanced": imbalanced, "version": 1}
    marker = root_path / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root_path
    if not _SKLEARN_AVAILABLE:
        raise ModuleNotFoundError(
            "the digits dataset ships with scikit-learn, which is not installed: pip install scikit-learn "
            "(or pip install 'stoker[dev]')"
        )
    from sklearn.datasets import load_digits

    for stale in root_path.glob("[0-9]/*.png"):  # written by an earlier call with other settings
        stale.unlink()
    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    seen = {k: 0 for k in range(10)}
    for number, (pixels, label) in enumerate(zip(images, digits.target)):
        label = int(label)
        seen[label] += 1
        if imbalanced and (seen[label] - 1) % (label + 1) != 0:
            continue
        folder = root_path / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        upsampled = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
        upsampled.save(folder / f"{number:04d}.png")
    marker.write_text(json.dumps(settings))
    return root_path


class DigitsDataModule(BuiltOnFirstUse, ImageFolderDataModule):
    """:class:`ImageFolderDataModule` on a tree built offline from scikit-learn's digits.

    ``prepare_data`` writes the images under ``root`` the first time (a second of work), then
    everything runs through the ordinary image-folder path: the decode scan, the seeded split,
    uint8 batches and normalization on the device.

    Args:
        root: Where the images are cached.
        imbalanced: Keep ``1/(k+1)`` of digit ``k`` (for the class-imbalance recipe).
        image_size: Crop side; the images are stored at this size.
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process).
        val_fraction: Per-class fraction held out for validation.
        test_fraction: Per-class fraction held out for testing.
        seed: Seeds the split, shuffling and augmentation.
        scale: RandomResizedCrop area range (digits tolerate only mild cropping).
        auto_augment: Augmentation policy after the crop.
        random_erasing: Probability of RandomErasing in training.
        max_bad_fraction: Largest tolerated fraction of undecodable files.
        persistent_workers: Keep workers alive between epochs.
    """

    def __init__(
        self,
        root: str = "data/digits",
        *,
        imbalanced: bool = False,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        scale: tuple[float, float] = (0.7, 1.0),
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        max_bad_fraction: float = 0.01,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            num_workers=num_workers,
            worker_type=worker_type,
            image_size=image_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            # the digits' own statistics, as `stoker scan data/digits` measures them
            mean=(0.3085, 0.3085, 0.3085),
            std=(0.3488, 0.3488, 0.3488),
            crop_pct=1.0,
            scale=scale,
            hflip=0.0,  # a mirrored digit is another glyph (or no digit at all)
            auto_augment=auto_augment,
            random_erasing=random_erasing,
            max_bad_fraction=max_bad_fraction,
            class_names=DIGIT_CLASSES,
            persistent_workers=persistent_workers,
        )
        self.imbalanced = imbalanced

    def build(self) -> None:
        build_digits_folder(str(self.root), size=self.image_size, imbalanced=self.imbalanced)
