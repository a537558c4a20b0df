"""Near duplicates a user can trust: no look-alike digits called copies, every planted copy found, an exact index."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stoker.quality.checks import NEAR_MIN_DETAIL, analyze
from stoker.quality.near_index import choose_blocks, near_pairs
from stoker.quality.phash import image_detail
from stoker.quality.sources import scan_image_folder


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _copy_90_q60(image: Image.Image) -> bytes:
    """The near duplicate of the issue: resized to 90% and re-encoded at JPEG quality 60."""
    width, height = image.size
    return _jpeg(image.resize((round(width * 0.9), round(height * 0.9)), Image.Resampling.BICUBIC), 60)


@pytest.fixture(scope="module")
def digits_with_plants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list]]:
    """The demo's 1,797 digits (train/val by number) plus planted copies of two real photos and of digits."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_sample_images

    from stoker.demos.digits import build_digits_folder

    base = tmp_path_factory.mktemp("near")
    source = build_digits_folder(base / "digits")
    root = base / "planted"
    for png in sorted(source.glob("[0-9]/*.png")):
        split = "val" if int(png.stem) % 5 == 0 else "train"
        (root / split / png.parent.name).mkdir(parents=True, exist_ok=True)
        png.rename(root / split / png.parent.name / png.name)
    china, flower = (Image.fromarray(array) for array in load_sample_images().images)
    plants = {
        "train/0/china.jpg": _jpeg(china, 90),
        "train/0/china_90q60.jpg": _copy_90_q60(china),  # near duplicate inside train
        "train/1/flower.jpg": _jpeg(flower, 90),
        "val/1/flower_90q60.jpg": _copy_90_q60(flower),  # near leakage
    }
    plants["val/0/china_copy.jpg"] = plants["train/0/china.jpg"]  # exact leakage of a photo
    plants["train/2/0002_copy.png"] = (root / "train/2/0002.png").read_bytes()  # exact duplicate of a tiny image
    plants["val/3/0003_leak.png"] = (root / "train/3/0003.png").read_bytes()  # exact leakage of a tiny image
    for rel, data in plants.items():
        (root / rel).write_bytes(data)
    expected = {
        "exact_duplicates": [["train/0/china.jpg", "val/0/china_copy.jpg"],
                             ["train/2/0002.png", "train/2/0002_copy.png"],
                             ["train/3/0003.png", "val/3/0003_leak.png"]],
        "near_duplicates": [["train/0/china.jpg", "train/0/china_90q60.jpg", "val/0/china_copy.jpg"],
                            ["train/1/flower.jpg", "val/1/flower_90q60.jpg"]],
        "leakage": [("train/0/china.jpg", "val/0/china_copy.jpg", "exact"),
                    ("train/0/china_90q60.jpg", "val/0/china_copy.jpg", "near"),
                    ("train/1/flower.jpg", "val/1/flower_90q60.jpg", "near"),
                    ("train/3/0003.png", "val/3/0003_leak.png", "exact")],
    }
    return root, expected


def test_digit_look_alikes_are_not_copies_and_every_planted_copy_is_found(
        digits_with_plants: tuple[Path, dict[str, list]]) -> None:
    root, expected = digits_with_plants
    records, notes = scan_image_folder(root, num_workers=2)
    assert len(records) == 1797 + 7
    result = analyze(records, kind="image", notes=notes)
    # Precision and recall at once: exactly the planted relations, nothing among the 1,797 different digits.
    assert result["exact_duplicates"] == expected["exact_duplicates"]
    assert result["near_duplicates"] == expected["near_duplicates"]
    assert [(p["train"], p["other"], p["match"]) for p in result["leakage"]] == expected["leakage"]
    assert result["label_conflicts"] == [] and result["corrupt"] == []
    # Only the photos are compared by hash; the digits (upsampled 8x8 scans) are named in the caveat.
    assert result["near_duplicate_compared"] == 5
    assert "1799 of 1804 images are smaller than the 32 px hash grid or carry little detail" in \
        result["notes"]["near_duplicates_caveat"]
    # The gate is what keeps the look-alikes out: without it the same hash calls hundreds of digit pairs.
    ungated = analyze(records, kind="image", notes=notes, near_min_detail=0.0)
    assert sum(len(group) for group in ungated["near_duplicates"]) > 100
    assert sum(1 for p in ungated["leakage"] if p["match"] == "near") > 100


def test_image_detail_tells_upsampled_and_tiny_images_from_photos() -> None:
    rng = np.random.default_rng(0)
    scan = rng.integers(0, 17, (8, 8)).astype(np.uint8) * 15
    upsampled = np.asarray(Image.fromarray(scan).resize((32, 32), Image.Resampling.BICUBIC))
    assert image_detail(upsampled) < NEAR_MIN_DETAIL / 1.5
    assert image_detail(np.full((64, 64), 128, np.uint8)) == 0.0  # flat
    assert image_detail(rng.integers(0, 256, (12, 12), dtype=np.uint8)) == 0.0  # smaller than 16 px
    noise = rng.integers(0, 256, (3, 48, 64), dtype=np.uint8)
    assert image_detail(noise) > 0.5
    # A PIL image gives the same measure (its own luma conversion rounds a little differently).
    assert image_detail(Image.fromarray(noise.transpose(1, 2, 0))) == pytest.approx(image_detail(noise), abs=1e-3)


def _hashes(rng: np.random.Generator, n: int, *, biased: bool) -> np.ndarray:
    """Random 64-bit hashes (optionally with biased bits, like real image hashes), some planted near pairs."""
    p = rng.uniform(0.15, 0.85, 64) if biased else np.full(64, 0.5)
    bits = rng.random((n, 64)) < p
    values = (bits.astype(np.uint64) << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
    for source in rng.choice(n, n // 20, replace=False):
        target = rng.integers(n)
        flips = rng.choice(64, rng.integers(0, 11), replace=False)
        values[target] = values[source] ^ np.uint64(sum(1 << int(bit) for bit in flips))
    values[:4] = values[4]  # a group of equal hashes
    return values


def _exhaustive(values: np.ndarray, radius: int) -> np.ndarray:
    rows, cols = np.nonzero(np.bitwise_count(values[:, None] ^ values[None, :]) <= radius)
    keep = rows < cols
    return np.stack([rows[keep], cols[keep]], axis=1)


@pytest.mark.parametrize("biased", [False, True], ids=["uniform", "biased"])
def test_index_finds_exactly_the_pairs_of_the_exhaustive_search(biased: bool) -> None:
    rng = np.random.default_rng(1 + biased)
    values = _hashes(rng, 6000, biased=biased)
    for radius in (0, 3, 8, 12):
        expected = _exhaustive(values, radius)
        assert np.array_equal(near_pairs(values, radius), expected), radius
        for blocks in {radius + 1, radius + 3, choose_blocks(len(values), radius)} - {0}:
            if blocks > radius:
                assert np.array_equal(near_pairs(values, radius, blocks=blocks, workers=2), expected), (radius, blocks)
    assert near_pairs([5], 3).shape == (0, 2)
    assert near_pairs([0, 1, 0b111, (1 << 64) - 1], 1).tolist() == [[0, 1]]


def test_index_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"max_distance must be in \[0, 64\), got 64"):
        near_pairs([1, 2], 64)
    with pytest.raises(ValueError, match=r"blocks must be in \(8, 64\] for max_distance 8, got 8"):
        near_pairs([1, 2], 8, blocks=8)
    assert choose_blocks(1_000_000, 8) > choose_blocks(10_000, 8) >= 9
