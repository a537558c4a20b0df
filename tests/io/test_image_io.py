"""Decoding every kind of image file to RGB uint8, and normalization on the device."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from stoker.io.image import ImageDecodeError, decode_image_bytes, is_image_file, read_image
from stoker.transforms.image import normalize_uint8
from tests.conftest import encode_image, natural_image

RNG = np.random.default_rng(0)
RGB = natural_image(RNG, 24, 36)


def pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("JPEG", None), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("WEBP", None),
     ("GIF", "P"), ("BMP", None), ("TIFF", None), ("PNG", "L")],
)
def test_every_mode_decodes_to_the_same_rgb_as_pil(fmt: str, mode: str | None) -> None:
    data = encode_image(RGB, fmt, mode, **({"quality": 95} if fmt == "JPEG" else {}))
    decoded = decode_image_bytes(data, f"x.{fmt.lower()}")
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 24, 36)
    # libjpeg-turbo (torchvision) and PIL's libjpeg may round the IDCT differently by a level or two.
    diff = np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - pil_rgb(data).astype(int))
    assert diff.max() <= (3 if fmt == "JPEG" else 0)


def test_sixteen_bit_png_keeps_its_most_significant_bits() -> None:
    gray = RGB[..., 0].astype(np.uint16) * 257
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "PNG")
    decoded = decode_image_bytes(buffer.getvalue())
    assert decoded.dtype == torch.uint8
    assert torch.equal(decoded[0], torch.from_numpy(RGB[..., 0].copy()))
    assert torch.equal(decoded[0], decoded[2])


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(RGB)  # 36 wide, 24 high
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decode_image_bytes(buffer.getvalue())
    assert decoded.shape == (3, 36, 24)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"this is not an image", "not a readable image"),
        (encode_image(RGB, "JPEG")[:300], "truncated JPEG (no end-of-image marker)"),
        (encode_image(RGB, "PNG")[:120], "truncated PNG (no IEND chunk)"),
    ],
)
def test_bad_data_names_the_file_and_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=re.escape(reason)) as info:
        decode_image_bytes(data, "class/broken.jpg")
    assert info.value.path == "class/broken.jpg"
    assert str(info.value).startswith("class/broken.jpg: ")


def test_read_image_reports_missing_file(tmp_path) -> None:
    with pytest.raises(ImageDecodeError, match="unreadable file"):
        read_image(tmp_path / "missing.jpg")


def test_is_image_file_is_case_insensitive() -> None:
    assert is_image_file("a/B.JPG") and is_image_file("c.webp") and not is_image_file("notes.txt")


def test_normalize_uint8_matches_float_reference() -> None:
    images = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    out = normalize_uint8(images, mean, std, channels_last=True)
    expected = (images.float() / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_normalize_uint8_rejects_wrong_input() -> None:
    mean = std = torch.ones(3)
    with pytest.raises(ValueError, match=r"expected a uint8 batch \[N, C, H, W\], got torch.float32"):
        normalize_uint8(torch.zeros(1, 3, 2, 2), mean, std)
    with pytest.raises(ValueError, match="images have 1 channels but mean/std have 3/3 values"):
        normalize_uint8(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), mean, std)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_channels_last_resized_crop_equals_torchvision(interpolation: str) -> None:
    from torchvision.transforms import InterpolationMode, v2

    from stoker.transforms.image import RandomResizedCrop

    mode = InterpolationMode(interpolation)
    image = decode_image_bytes(encode_image(natural_image(np.random.default_rng(3), 90, 120), "JPEG"))
    assert image.stride() == (1, 360, 3), "torchvision decodes to interleaved (HWC) memory"
    reference, fast = v2.RandomResizedCrop(32, interpolation=mode), RandomResizedCrop(32, interpolation=mode)
    for _ in range(5):
        params = reference.make_params([image])
        assert torch.equal(fast.transform(image, params), reference.transform(image, params))
    as_float = image.float()
    params = reference.make_params([as_float])
    torch.testing.assert_close(fast.transform(as_float, params), reference.transform(as_float, params))


def test_a_reason_names_the_file_and_no_memory_address() -> None:
    from stoker.io.image import check_image_bytes

    reason = check_image_bytes(b"not an image at all", "photos/cat.png")
    assert reason == "not a readable image (UnidentifiedImageError: cannot identify image file 'cat.png')"
    assert "0x" not in reason and "BytesIO" not in reason
