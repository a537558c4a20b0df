"""Training samples before and after augmentation, side by side, as one uint8 image grid.

Framework-free: the Data Pipeline Summary saves the grid as a PNG and
:class:`stoker.callbacks.SampleGridLogger` sends it to the Trainer's logger.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F
from torchvision.utils import make_grid


def _image_of(item: Any, key: str) -> torch.Tensor | None:
    value = item.get(key) if isinstance(item, dict) else (item[0] if isinstance(item, (tuple, list)) else item)
    if isinstance(value, torch.Tensor) and value.ndim == 3:
        return value
    return None


def _as_uint8_rgb(image: torch.Tensor) -> torch.Tensor:
    if image.dtype != torch.uint8:
        # A float image is assumed to be in [0, 1], as torchvision's ToDtype(scale=True) makes it.
        image = (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image[:3]


def sample_pairs(dataset: Any, count: int = 8, *, key: str = "image",
                 seed: int = 0) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """``(original, augmented)`` images of ``count`` training samples spread over the dataset.

    The original is the same item read with the dataset's ``transform`` turned off (on a shallow
    copy, so the dataset itself is untouched); it is ``None`` when the dataset has no ``transform``
    attribute. Augmentation draws use a fixed seed, so the grid is the same on every call.

    Raises:
        ValueError: ``count`` is not positive, or the dataset yields no ``[C, H, W]`` image under ``key``.
    """
    if count < 1:
        raise ValueError(f"count must be a positive integer, got {count}")
    size = len(dataset)
    if size == 0:
        raise ValueError("cannot draw samples from an empty training dataset")
    positions = sorted({round(i * (size - 1) / max(1, count - 1)) for i in range(min(count, size))})
    plain = None
    if hasattr(dataset, "transform"):
        plain = copy.copy(dataset)
        plain.transform = None
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        pairs: list[tuple[torch.Tensor | None, torch.Tensor]] = []
        for position in positions:
            augmented = _image_of(dataset[position], key)
            if augmented is None:
                raise ValueError(f"dataset item {position} has no [C, H, W] image tensor under {key!r}")
            original = _image_of(plain[position], key) if plain is not None else None
            pairs.append((original, augmented))
    finally:
        torch.random.set_rng_state(state)
    return pairs


def pair_grid(pairs: list[tuple[torch.Tensor | None, torch.Tensor]], *, pairs_per_row: int = 4,
              cell: int | None = None) -> torch.Tensor:
    """A ``uint8 [3, H, W]`` grid: each original next to its augmented version (augmented only if unknown).

    Originals are resized to the augmented side (``cell``) so that all cells line up.
    """
    if not pairs:
        raise ValueError("pair_grid needs at least one (original, augmented) pair")
    side = cell or int(pairs[0][1].shape[-1])
    tiles: list[torch.Tensor] = []
    with_originals = all(original is not None for original, _ in pairs)
    for original, augmented in pairs:
        shown = [original, augmented] if with_originals else [augmented]
        for image in shown:
            assert image is not None  # guaranteed by with_originals
            tiles.append(F.resize(_as_uint8_rgb(image), [side, side], antialias=True))
    per_row = pairs_per_row * (2 if with_originals else 1)
    return make_grid(torch.stack(tiles), nrow=per_row, padding=2, pad_value=255)
