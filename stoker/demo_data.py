"""The embedded default dataset: scikit-learn's handwritten digits as an image-folder tree.

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
