"""Training samples before and after augmentation, side by side, with their labels.

Framework-free: :func:`stoker.report.plots.sample_grid_figure` draws the samples as tiles titled
with their class names; the Data Pipeline Summary saves that figure as a PNG and
:class:`stoker.callbacks.SampleGridLogger` sends the same picture to the Trainer's logger.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

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


class GridSample(NamedTuple):
    """One training sample of the grid: the image as read, as augmented, and its label (``None``: unlabelled)."""

    original: torch.Tensor | None
    augmented: torch.Tensor
    label: int | None


def _label_of(item: Any, target_key: str | None) -> int | None:
    value = item.get(target_key) if isinstance(item, dict) and target_key else (
        item[1] if isinstance(item, (tuple, list)) and len(item) > 1 else None)
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None  # a soft or multi-hot target has no single class
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None  # a float is a score, no class


def short_name(name: str, max_chars: int = 20) -> str:
    """``name`` cut to ``max_chars`` with an ellipsis, for tile titles and tick labels."""
    return name if len(name) <= max_chars else name[: max_chars - 1] + "…"


def class_title(label: int | None, class_names: list[str] | None, *, max_chars: int = 20) -> str:
    """The class name of ``label`` for a tile title (the index when it has no name, ``""`` when unlabelled).

    A label outside ``class_names`` is shown as its number, so a bad label stays visible instead of vanishing.
    """
    if label is None:
        return ""
    names = class_names or []
    return short_name(names[label] if 0 <= label < len(names) else str(label), max_chars)


def sample_pairs(dataset: Any, count: int = 8, *, key: str = "image",
                 seed: int = 0) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """``(original, augmented)`` images of ``count`` training samples spread over the dataset.

    :func:`draw_samples` without the labels.
    """
    return [(sample.original, sample.augmented) for sample in draw_samples(dataset, count, key=key, seed=seed)]


def draw_samples(dataset: Any, count: int = 8, *, key: str = "image", target_key: str | None = "label",
                 seed: int = 0) -> list[GridSample]:
    """``count`` training samples spread over the dataset: original, augmented image and label.

    The original is the same item read with the dataset's ``transform`` turned off (on a shallow
    copy, so the dataset itself is untouched); it is ``None`` when the dataset has no ``transform``
    attribute. Augmentation draws use a fixed seed, so the grid is the same on every call. The label
    is the item's ``target_key`` entry (the second element of a tuple item), ``None`` when there is
    no single class (unlabelled data, soft targets).

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
        samples: list[GridSample] = []
        for position in positions:
            item = dataset[position]
            augmented = _image_of(item, key)
            if augmented is None:
                raise ValueError(f"dataset item {position} has no [C, H, W] image tensor under {key!r}")
            original = _image_of(plain[position], key) if plain is not None else None
            samples.append(GridSample(original, augmented, _label_of(item, target_key)))
    finally:
        torch.random.set_rng_state(state)
    return samples


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
