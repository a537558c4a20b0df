"""Build a sample of ImageNet-like JPEGs offline from real photographs shipped with scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def build_sample(root: Path, *, num_classes: int = 4, per_class: int = 40, seed: int = 0) -> Path:
    """Write ``num_classes x per_class`` JPEGs under ``root/<class>/``; return ``root``.

    Sources are scikit-learn's two sample photographs (427x640). Each output is a random crop
    (40-100% of each side), resized so its short side is 300-500 pixels, randomly mirrored and
    colour-scaled, and saved at JPEG quality 75-95: the size and compression range of ImageNet.
    """
    marker = root / ".sample-complete"
    if marker.exists():
        return root
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(image) for image in load_sample_images().images]
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            photo = photos[rng.integers(len(photos))]
            h, w = photo.shape[:2]
            ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = photo[y:y + ch, x:x + cw].astype(np.float32) * rng.uniform(0.8, 1.2, 3)
            image = Image.fromarray(crop.clip(0, 255).astype(np.uint8))
            short = int(rng.integers(300, 501))
            scale = short / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
            if rng.random() < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
            image.save(folder / f"{i:04d}.jpg", quality=int(rng.integers(75, 96)))
    marker.touch()
    return root
