"""Framework-free image operations: decoding files to uint8 RGB, and normalization on the device."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
)

# Formats torchvision's native decoders read; anything else goes straight to PIL.
_NATIVE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF")


class ImageDecodeError(ValueError):
    """A file could not be decoded as an image.

    Attributes:
        path: The file.
        reason: Why, in a few words (``"empty file (0 bytes)"``, ``"truncated JPEG"``...).
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether a path has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def decode_image_bytes(data: bytes, path: str | os.PathLike[str] = "<bytes>") -> torch.Tensor:
    """Decode encoded image bytes to a ``uint8`` tensor ``[3, H, W]`` in RGB.

    torchvision's libjpeg-turbo/libpng decoders handle JPEG (including grayscale and CMYK), PNG
    (palette, alpha, 16-bit), WebP and GIF, with EXIF orientation applied. Formats they do not
    read (BMP, TIFF...) fall back to PIL. Alpha is dropped as PIL's ``convert("RGB")`` does, so
    both paths give the same pixels; 16-bit images keep their 8 most significant bits.

    Raises:
        ImageDecodeError: Empty, truncated or non-image data, naming ``path`` and the reason.
    """
    if len(data) == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    if data.startswith(_NATIVE_MAGIC):
        try:
            buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image = decode_image(buffer, mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except RuntimeError as err:
            # libjpeg/libpng refuse truncated data; PIL below would refuse it too, but with a
            # vaguer reason, so keep theirs unless PIL really can read the file.
            return _decode_with_pil(data, path, _explain_native_failure(data, err))
        if image.dtype == torch.uint16:
            image = image.to(torch.int32).div_(257, rounding_mode="floor").to(torch.uint8)
        return image
    return _decode_with_pil(data, path, None)


def _explain_native_failure(data: bytes, err: Exception) -> str:
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    if data.startswith(b"\xff\xd8\xff"):
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return "truncated JPEG (no end-of-image marker)"
        return f"corrupt JPEG ({detail})"
    if data.startswith(b"\x89PNG"):
        if b"IEND" not in data[-16:]:
            return "truncated PNG (no IEND chunk)"
        return f"corrupt PNG ({detail})"
    return f"undecodable image ({detail})"


def _decode_with_pil(data: bytes, path: str | os.PathLike[str], native_reason: str | None) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened) or opened
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # PIL's convert("RGB") clips 16-bit values to 255; rescale to 8 bits first.
                array = np.asarray(image, dtype=np.float64)
                peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
                image = Image.fromarray(np.clip(array * (255.0 / peak), 0, 255).astype(np.uint8))
            rgb = np.asarray(image.convert("RGB"))
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        reason = native_reason or f"not a readable image ({type(err).__name__}: {err})"
        raise ImageDecodeError(path, reason) from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read and decode an image file to ``uint8 [3, H, W]`` RGB (see :func:`decode_image_bytes`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageDecodeError(path, f"unreadable file ({err.strerror or err})") from err
    return decode_image_bytes(data, path)


def normalize_uint8(
    images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, channels_last: bool = False
) -> torch.Tensor:
    """Convert a ``uint8 [N, C, H, W]`` batch to normalized float32 on its own device.

    ``mean`` and ``std`` are per-channel, in the 0-1 range (ImageNet's ``(0.485, 0.456, 0.406)``).
    The division by 255 is folded into the statistics, so it costs one conversion and two
    in-place arithmetic kernels on the device.

    Raises:
        ValueError: When ``images`` is not uint8 ``[N, C, H, W]`` or channels disagree with ``mean``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected a uint8 batch [N, C, H, W], got {images.dtype} of shape {tuple(images.shape)}")
    if images.shape[1] != mean.numel() or mean.numel() != std.numel():
        raise ValueError(
            f"images have {images.shape[1]} channels but mean/std have {mean.numel()}/{std.numel()} values"
        )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = images.to(dtype=torch.float32, memory_format=memory_format)
    out.sub_((mean * 255.0).view(1, -1, 1, 1)).div_((std * 255.0).view(1, -1, 1, 1))
    return out
