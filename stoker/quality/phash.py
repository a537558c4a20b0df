"""Perceptual hashes and thumbnails for near-duplicate images, and text normalisation for near-duplicate text.

The image hash is the DCT hash ("pHash") described by Zauner, *Implementation and Benchmarking
of Perceptual Image Hash Functions* (2010): shrink the grayscale image to 32x32, take the 2-D
DCT, keep the 8x8 lowest frequencies and set one bit per coefficient above their median. Low
frequencies survive re-encoding, resizing and mild colour changes, so copies land a few bits
apart while unrelated images differ in about half of the 64 bits.

Sign bits of 63 frequencies cannot tell a copy from a look-alike when an image holds little more
than those frequencies (8x8 scans upsampled to 32 px, blurred photos, skies). So the hash only
proposes pairs (:mod:`stoker.quality.near_index`), and each is confirmed on the pixels: a 16x16
grayscale thumbnail, kept per image (256 bytes), is compared by :func:`thumbnail_difference`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

HASH_BITS = 64
HASH_SIDE = 32  # the grid every image is shrunk to before the DCT
_KEEP = 8
THUMB_SIDE = 16  # the confirming thumbnail is THUMB_SIDE x THUMB_SIDE gray levels
# Contrast below this many gray levels counts as this many: on a near-flat image (a sky at a standard
# deviation of 3) the noise of JPEG and resampling would otherwise weigh as much as a real difference.
THUMB_FLOOR = 8.0


@lru_cache(maxsize=1)
def _dct_matrix(n: int = HASH_SIDE) -> np.ndarray:
    # Orthonormal DCT-II as a matrix: the 2-D transform is then D @ X @ D.T, no SciPy needed.
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


def luma(image: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """The grayscale (ITU-R 601 luma, PIL's "L" weights) of a ``uint8 [3, H, W]`` or ``[H, W]`` image.

    Raises:
        ValueError: When the array is not a 2-D or channels-first 3-D image.
    """
    if isinstance(image, Image.Image):
        return image.convert("L")
    array = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] == 3 and array.dtype == np.uint8:
        # PIL's own conversion is a few times faster than a float dot product on large images.
        return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0))).convert("L")
    if array.ndim == 3:
        weights = np.array([0.299, 0.587, 0.114], np.float32)[: array.shape[0]]
        array = np.tensordot(weights / weights.sum(), array.astype(np.float32), axes=1)
    elif array.ndim != 2:
        raise ValueError(f"expected an image [C, H, W] or [H, W], got shape {array.shape}")
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def image_phash(image: torch.Tensor | np.ndarray | Image.Image) -> int:
    """The 64-bit DCT hash of a ``uint8 [3, H, W]`` (or ``[H, W]``) image, or of a PIL image.

    Raises:
        ValueError: When the array is not a 2-D or channels-first 3-D image.
    """
    small = np.asarray(luma(image).resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    dct = _dct_matrix() @ small @ _dct_matrix().T
    low = dct[:_KEEP, :_KEEP].ravel()
    # The DC term only measures brightness; leaving it out of the median keeps the bits balanced.
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def image_thumbnail(image: torch.Tensor | np.ndarray | Image.Image) -> bytes:
    """The 16x16 grayscale thumbnail that confirms near duplicates: ``uint8``, row-major, 256 bytes.

    The shrinking filter is bicubic with antialiasing, not a box: a box aliases differently on an
    image and on its resized copy, which puts an upsampled 8x8 digit's 90% copy almost as far from it
    as a different digit (:func:`thumbnail_difference` up to 0.113 against at least 0.126; bicubic:
    0.027 against 0.133).

    Raises:
        ValueError: When the array is not a 2-D or channels-first 3-D image.
    """
    # reducing_gap: a box reduction to 3x the target first, then bicubic: about 2.5x faster on 300-500 px
    # photos than bicubic from full size, with the same differences on copies and look-alikes.
    small = luma(image).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return small.tobytes()


def thumbnail_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How far apart the pictures of pairs of thumbnails are, brightness and contrast aside: 0 for the same.

    Each thumbnail is standardised (minus its mean, over its standard deviation of at least
    :data:`THUMB_FLOOR` gray levels) and the result is the RMS difference of the two: ``sqrt(2 (1 - r))``
    for their correlation ``r`` when both have contrast. Brightness and contrast edits leave it near 0,
    so does a resized, re-encoded copy; different pictures whose hashes agree differ by more (see
    :mod:`stoker.quality.checks` for the measured figures). A pair whose mean brightness differs by more
    than the larger of their (floored) contrasts is ``inf``: standardising would make two blank images of
    different gray equal.

    Args:
        a: ``uint8 [P, N]`` thumbnails (rows of :func:`image_thumbnail` bytes).
        b: ``uint8 [P, N]``, the other side of each pair.

    Returns:
        ``float32 [P]``.

    Raises:
        ValueError: When ``a`` and ``b`` are not 2-D arrays of the same shape.

    Example:
        >>> ramp = np.arange(0, 256, 2, dtype=np.uint8)[None]  # a ramp: its half-contrast copy, then its mirror
        >>> thumbnail_difference(np.concatenate([ramp, ramp]), np.concatenate([ramp // 2 + 60, ramp[:, ::-1]])).round(3)
        array([0., 2.], dtype=float32)
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [P, N] arrays of the same shape, got {a.shape} and {b.shape}")
    rows = np.arange(len(a))
    table = np.concatenate([a, b])
    return _pair_differences(table, *_thumbnail_stats(table), np.stack([rows, rows + len(a)], axis=1))


def matching_pairs(thumbnails: np.ndarray, pairs: np.ndarray, max_difference: float, *,
                   chunk: int = 1 << 14) -> np.ndarray:
    """Mask of the ``pairs`` whose thumbnails show one picture: :func:`thumbnail_difference` at most ``max_difference``.

    Args:
        thumbnails: ``uint8 [N, THUMB_SIDE**2]``, one row per image.
        pairs: ``int [P, 2]`` rows of ``thumbnails``.
        max_difference: Largest difference still called one picture.
        chunk: Pairs (and, for the statistics, rows) handled at once: the float copies stay under
            ``chunk x 4 KB`` whatever ``N`` and ``P`` are.

    Returns:
        ``bool [P]``.
    """
    stats = _thumbnail_stats(thumbnails, chunk=chunk)
    keep = np.zeros(len(pairs), bool)
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        keep[start:start + chunk] = _pair_differences(thumbnails, *stats, part) <= max_difference
    return keep


def _thumbnail_stats(thumbnails: np.ndarray, *, chunk: int = 1 << 14) -> tuple[np.ndarray, np.ndarray]:
    """Mean and floored standard deviation of each row, computed once per thumbnail rather than once per pair."""
    mean = np.empty(len(thumbnails), np.float32)
    scale = np.empty(len(thumbnails), np.float32)
    for start in range(0, len(thumbnails), chunk):
        pixels = thumbnails[start:start + chunk].astype(np.float32)
        mean[start:start + chunk] = pixels.mean(1)
        scale[start:start + chunk] = np.maximum(pixels.std(1), THUMB_FLOOR)
    return mean, scale


def _pair_differences(thumbnails: np.ndarray, mean: np.ndarray, scale: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    left, right = pairs[:, 0], pairs[:, 1]
    x = (thumbnails[left].astype(np.float32) - mean[left, None]) / scale[left, None]
    y = (thumbnails[right].astype(np.float32) - mean[right, None]) / scale[right, None]
    difference = np.sqrt(np.mean((x - y) ** 2, axis=1))
    difference[np.abs(mean[left] - mean[right]) > np.maximum(scale[left], scale[right])] = np.inf
    return difference


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case, width, punctuation and whitespace folded away: ``"Hello,  WORLD!"`` -> ``"hello world"``."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", folded)).strip()
