"""Perceptual hashes for near-duplicate images, and text normalisation for near-duplicate text.

The image hash is the DCT hash ("pHash") described by Zauner, *Implementation and Benchmarking
of Perceptual Image Hash Functions* (2010): shrink the grayscale image to 32x32, take the 2-D
DCT, keep the 8x8 lowest frequencies and set one bit per coefficient above their median. Low
frequencies survive re-encoding, resizing and mild colour changes, so copies land a few bits
apart while unrelated images differ in about half of the 64 bits.

The hash tells copies from look-alikes only where an image holds far more than its 64 bits:
:func:`image_detail` measures what a 16 px version of the image loses, and the scan compares
hashes only between images with enough of it (tiny and upsampled images fall below; see
:mod:`stoker.quality.checks`). Finding the pairs is :mod:`stoker.quality.near_index`.
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
# image_detail: the side an image is shrunk to, and the largest side it is measured at.
DETAIL_SIDE = 16
_DETAIL_CAP = 128


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


def image_detail(image: torch.Tensor | np.ndarray | Image.Image) -> float:
    """How much of an image a 16 px version of it loses: 0 (nothing) to about 1 (all its variation).

    The image (at most 128 px on its short side) is shrunk to 16 px on its short side and enlarged
    back; the result is the RMS difference over the image's standard deviation. Images smaller than
    16 px, flat images and images upsampled from 16 px or less score near 0: for them the hash's
    8x8 frequencies are most of what the image holds, so look-alikes collide as copies do.
    """
    gray = luma(image)
    width, height = gray.size
    short = min(width, height)
    if short <= DETAIL_SIDE:
        return 0.0
    if short > _DETAIL_CAP:
        # Finer detail than 128 px says nothing more about "more than 16 px", and costs time.
        gray = gray.resize(_scaled(width, height, _DETAIL_CAP), Image.Resampling.BOX)
    work = gray.convert("F")
    pixels = np.asarray(work, np.float64)
    spread = float(pixels.std())
    if spread < 1.0:  # a flat image (within one gray level) holds no detail at all
        return 0.0
    small = work.resize(_scaled(*work.size, DETAIL_SIDE), Image.Resampling.LANCZOS)
    back = np.asarray(small.resize(work.size, Image.Resampling.BICUBIC), np.float64)
    return float(np.sqrt(np.mean((back - pixels) ** 2)) / spread)


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    short = min(width, height)
    return max(1, round(width * short_side / short)), max(1, round(height * short_side / short))


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two hashes."""
    return (a ^ b).bit_count()


_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+", re.UNICODE)


def normalize_text(text: str) -> str:
    """Case, width, punctuation and whitespace folded away: ``"Hello,  WORLD!"`` -> ``"hello world"``."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", _PUNCTUATION.sub(" ", folded)).strip()
