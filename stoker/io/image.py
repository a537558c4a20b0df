"""Decoding image files to uint8 RGB tensors on the CPU (torchvision's native decoders, PIL for the rest)."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.io import ImageReadMode, decode_image

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
)

_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")

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
        # PIL names the buffer it read by its repr ("<_io.BytesIO object at 0x7f...>"): a memory address says
        # nothing to a user, and would make the same file's reason differ from run to run.
        detail = _OBJECT_REPR.sub(repr(os.path.basename(os.fspath(path))), str(err))
        reason = native_reason or f"not a readable image ({type(err).__name__}: {detail})"
        raise ImageDecodeError(path, reason) from err
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read and decode an image file to ``uint8 [3, H, W]`` RGB (see :func:`decode_image_bytes`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageDecodeError(path, f"unreadable file ({err.strerror or err})") from err
    return decode_image_bytes(data, path)


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Why a file is unusable as an image (``None`` when it decodes).

    A full decode is the only check that finds a JPEG truncated after its header or corrupt in
    its entropy data.
    """
    try:
        read_image(path)
    except ImageDecodeError as err:
        return err.reason
    return None


def check_image_bytes(data: bytes, name: str = "<bytes>") -> str | None:
    """Why encoded bytes are unusable as an image (``None`` when they decode), as :func:`check_image` for a file."""
    try:
        decode_image_bytes(data, name)
    except ImageDecodeError as err:
        return err.reason
    return None
