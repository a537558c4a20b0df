"""Near duplicates a user can trust: no look-alike called a copy, every planted copy found, an exact index.

The hash proposes pairs and 16x16 thumbnails confirm them, so tiny upsampled images (the demo's 8x8
digits) and smooth photos (blurred, skies) are compared as well as detailed photos are.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from stoker.commands.scan import main as scan_main
from stoker.quality.checks import NEAR_MAX_DIFFERENCE, analyze
from stoker.quality.near_index import choose_blocks, near_pairs
from stoker.quality.phash import THUMB_SIDE, image_phash, image_thumbnail, thumbnail_difference
from stoker.quality.scan import scan_dataset
from stoker.quality.sources import Record, scan_image_folder

OLD_GATE = 0.08  # the --near-min-detail default before issue 20: images below it were compared by SHA-256 only


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _copy_90_q60(image: Image.Image) -> bytes:
    """The near duplicate of the issue: resized to 90% and re-encoded at JPEG quality 60."""
    width, height = image.size
    return _jpeg(image.resize((round(width * 0.9), round(height * 0.9)), Image.Resampling.BICUBIC), 60)


def _old_detail(data: bytes) -> float:
    """The measure the old gate used: what a 16 px version of an image loses, over the image's contrast.

    Kept here (the scan no longer computes it) to show that the smooth photos below are ones the old
    scan left to SHA-256 alone.
    """
    work = Image.open(io.BytesIO(data)).convert("L")
    if min(work.size) > 128:
        scale = 128 / min(work.size)
        work = work.resize((round(work.width * scale), round(work.height * scale)), Image.Resampling.BOX)
    work = work.convert("F")
    pixels = np.asarray(work, np.float64)
    scale = 16 / min(work.size)
    small = work.resize((round(work.width * scale), round(work.height * scale)), Image.Resampling.LANCZOS)
    back = np.asarray(small.resize(work.size, Image.Resampling.BICUBIC), np.float64)
    return float(np.sqrt(np.mean((back - pixels) ** 2)) / pixels.std())


@pytest.fixture(scope="module")
def photos() -> tuple[Image.Image, Image.Image]:
    """scikit-learn's two sample photographs (427x640): a temple against the sky, a dahlia."""
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(array) for array in load_sample_images().images)
    return china, flower


def _smooth(photo: Image.Image) -> Image.Image:
    """A smooth photo: heavy Gaussian blur, as out-of-focus shots and backgrounds are."""
    return photo.filter(ImageFilter.GaussianBlur(12))


@pytest.fixture(scope="module")
def digits_with_plants(tmp_path_factory: pytest.TempPathFactory,
                       photos: tuple[Image.Image, Image.Image]) -> tuple[Path, dict[str, list]]:
    """The demo's 1,797 digits (train/val by number) plus planted copies of real photos, smooth photos and digits."""
    from stoker.demos.digits import build_digits_folder

    base = tmp_path_factory.mktemp("near")
    source = build_digits_folder(base / "digits")
    root = base / "planted"
    for png in sorted(source.glob("[0-9]/*.png")):
        split = "val" if int(png.stem) % 5 == 0 else "train"
        (root / split / png.parent.name).mkdir(parents=True, exist_ok=True)
        png.rename(root / split / png.parent.name / png.name)
    china, flower = photos
    # Smooth photos: blurred halves (a blurred copy of the whole photo would be a near duplicate of it).
    smooth_china, smooth_flower = _smooth(china.crop((0, 0, 320, 427))), _smooth(flower.crop((320, 0, 640, 427)))
    digit = next(root.glob("train/*/0006.png"))
    plants = {
        "train/0/china.jpg": _jpeg(china, 90),
        "train/0/china_90q60.jpg": _copy_90_q60(china),  # near duplicate inside train
        "train/1/flower.jpg": _jpeg(flower, 90),
        "val/1/flower_90q60.jpg": _copy_90_q60(flower),  # near leakage
        "train/4/china_blur.jpg": _jpeg(smooth_china, 90),
        "val/4/china_blur_90q60.jpg": _copy_90_q60(smooth_china),  # near leakage of a smooth photo
        "train/5/flower_blur.jpg": _jpeg(smooth_flower, 90),
        "train/5/flower_blur_90q60.jpg": _copy_90_q60(smooth_flower),  # near duplicate of a smooth photo
        f"val/{digit.parent.name}/0006_90q60.jpg": _copy_90_q60(Image.open(digit)),  # near leakage of a digit
    }
    plants["val/0/china_copy.jpg"] = plants["train/0/china.jpg"]  # exact leakage of a photo
    plants["train/2/0002_copy.png"] = (root / "train/2/0002.png").read_bytes()  # exact duplicate of a tiny image
    plants["val/3/0003_leak.png"] = (root / "train/3/0003.png").read_bytes()  # exact leakage of a tiny image
    for rel, data in plants.items():
        (root / rel).write_bytes(data)
    digit_rel = digit.relative_to(root).as_posix()
    copy_rel = f"val/{digit.parent.name}/0006_90q60.jpg"
    expected = {
        "smooth": ["train/4/china_blur.jpg", "val/4/china_blur_90q60.jpg", "train/5/flower_blur.jpg",
                   "train/5/flower_blur_90q60.jpg"],
        "exact_duplicates": [["train/0/china.jpg", "val/0/china_copy.jpg"],
                             ["train/2/0002.png", "train/2/0002_copy.png"],
                             ["train/3/0003.png", "val/3/0003_leak.png"]],
        "near_duplicates": sorted([["train/0/china.jpg", "train/0/china_90q60.jpg", "val/0/china_copy.jpg"],
                                   ["train/1/flower.jpg", "val/1/flower_90q60.jpg"],
                                   ["train/4/china_blur.jpg", "val/4/china_blur_90q60.jpg"],
                                   ["train/5/flower_blur.jpg", "train/5/flower_blur_90q60.jpg"],
                                   [digit_rel, copy_rel]]),
        "leakage": sorted([("train/0/china.jpg", "val/0/china_copy.jpg", "exact"),
                           ("train/0/china_90q60.jpg", "val/0/china_copy.jpg", "near"),
                           ("train/1/flower.jpg", "val/1/flower_90q60.jpg", "near"),
                           ("train/4/china_blur.jpg", "val/4/china_blur_90q60.jpg", "near"),
                           (digit_rel, copy_rel, "near"),
                           ("train/3/0003.png", "val/3/0003_leak.png", "exact")]),
    }
    return root, expected


def test_digit_look_alikes_are_not_copies_and_every_planted_copy_is_found(
        digits_with_plants: tuple[Path, dict[str, list]]) -> None:
    root, expected = digits_with_plants
    records, notes = scan_image_folder(root, num_workers=2)
    assert len(records) == 1797 + 12
    # The old scan compared the smooth photos (and the digits) by SHA-256 only: below its detail gate.
    assert all(_old_detail((root / rel).read_bytes()) < OLD_GATE for rel in expected["smooth"])
    result = analyze(records, kind="image", notes=notes)
    # Precision and recall at once: exactly the planted relations, nothing among the 1,797 different digits.
    assert result["exact_duplicates"] == expected["exact_duplicates"]
    assert result["near_duplicates"] == expected["near_duplicates"]
    assert [(p["train"], p["other"], p["match"]) for p in result["leakage"]] == expected["leakage"]
    assert result["label_conflicts"] == [] and result["corrupt"] == []
    # The hash proposed well over a thousand pairs of different digits; the thumbnails confirmed only the
    # five planted copy pairs (distinct contents: china, china 90q60, flower, the two blurred photos, the digit).
    assert result["near_duplicate_candidates"] > 1000
    assert result["near_duplicate_confirmed"] == 5
    assert result["near_duplicate_max_difference"] == NEAR_MAX_DIFFERENCE
    assert "near_duplicates_caveat" not in result["notes"]
    # Taking the hash's word alone calls hundreds of digit pairs: the confirmation is what keeps them out.
    hash_only = analyze(records, kind="image", notes=notes, near_max_difference=math.inf)
    assert sum(len(group) for group in hash_only["near_duplicates"]) > 100
    assert sum(1 for p in hash_only["leakage"] if p["match"] == "near") > 100
    assert "look-alikes rather than copies" in hash_only["notes"]["near_duplicates_caveat"]


def test_scan_finds_the_resized_reencoded_copy_of_a_smooth_photo(
        tmp_path: Path, photos: tuple[Image.Image, Image.Image], capsys: pytest.CaptureFixture[str]) -> None:
    china, flower = photos
    root = tmp_path / "smooth"
    files = {"train/temple/blurred.jpg": _jpeg(_smooth(china), 90),
             "val/temple/blurred_90q60.jpg": _copy_90_q60(_smooth(china)),
             "train/dahlia/blurred.jpg": _jpeg(_smooth(flower), 90),
             "train/dahlia/blurred_90q60.jpg": _copy_90_q60(_smooth(flower)),
             "train/dahlia/sharp.jpg": _jpeg(flower, 90)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    # The old scan compared these by SHA-256 only (below its detail gate), and missed both copies.
    assert all(_old_detail(data) < OLD_GATE for rel, data in files.items() if "blurred" in rel)
    out = tmp_path / "scan.json"
    assert scan_main([str(root), "--json", str(out), "--markdown", str(tmp_path / "scan.md"), "--no-progress",
                      "--fail-on", "leakage"]) == 1
    assert "failing on leakage" in capsys.readouterr().err
    result = json.loads(out.read_text())
    # Blurring is an edit like any other: the sharp original joins its blurred copies' group.
    assert result["near_duplicates"] == [["train/dahlia/blurred.jpg", "train/dahlia/blurred_90q60.jpg",
                                          "train/dahlia/sharp.jpg"],
                                         ["train/temple/blurred.jpg", "val/temple/blurred_90q60.jpg"]]
    assert [(p["train"], p["other"], p["match"]) for p in result["leakage"]] == [
        ("train/temple/blurred.jpg", "val/temple/blurred_90q60.jpg", "near")]
    assert result["exact_duplicates"] == []
    markdown = (tmp_path / "scan.md").read_text()
    assert f"{result['near_duplicate_confirmed']} confirmed as one picture by their 16x16 gray thumbnails" in markdown


def _gradient(angle: float, side: int = 256) -> Image.Image:
    """A smooth RGB ramp across the image at ``angle`` degrees (a sky, a studio backdrop)."""
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1) - 0.5
    ramp = np.cos(np.radians(angle)) * xx + np.sin(np.radians(angle)) * yy
    gray = 60 + 140 * (ramp - ramp.min()) / (ramp.max() - ramp.min())
    return Image.fromarray(np.stack([gray, gray * 0.9 + 20, 255 - gray * 0.5], axis=-1).astype(np.uint8))


def test_distinct_smooth_photos_are_not_called_duplicates(tmp_path: Path,
                                                          photos: tuple[Image.Image, Image.Image]) -> None:
    china, flower = photos
    images = {"blurred/china": _smooth(china), "blurred/flower": _smooth(flower),
              # two out-of-focus backgrounds of one photo, side by side
              "bokeh/left": flower.crop((0, 0, 170, 330)).filter(ImageFilter.GaussianBlur(4)),
              "bokeh/right": flower.crop((450, 0, 640, 330)).filter(ImageFilter.GaussianBlur(4)),
              "flat/black": Image.new("RGB", (64, 64), (10, 10, 10)),
              "flat/white": Image.new("RGB", (64, 64), (245, 245, 245))}
    images.update({f"gradient/{angle}": _gradient(angle) for angle in (0, 45, 90, 180, 270)})
    root = tmp_path / "distinct"
    for name, image in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.png").write_bytes(_encode_png(image))
    result = scan_dataset(root, num_workers=2)
    assert result["near_duplicates"] == [] and result["exact_duplicates"] == []
    # The hash keeps most of these apart already; the two flat images, which it cannot tell apart (their
    # bits are rounding noise), reach the thumbnails and are set aside there (the digits above are the
    # large case of look-alikes the hash proposes).
    assert result["near_duplicate_candidates"] >= 1 and result["near_duplicate_confirmed"] == 0


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_thumbnail_difference_ignores_brightness_and_contrast_but_not_the_picture(
        photos: tuple[Image.Image, Image.Image]) -> None:
    china, flower = photos
    thumbs = {name: np.frombuffer(image_thumbnail(image), np.uint8)
              for name, image in {"china": china, "flower": flower, "mirror": china.transpose(Image.FLIP_LEFT_RIGHT),
                                  "brighter": Image.eval(china, lambda v: int(v * 0.85) + 30),
                                  "copy": Image.open(io.BytesIO(_copy_90_q60(china))),
                                  "gray": Image.new("L", (40, 30), 128), "dark": Image.new("L", (40, 30), 100)}.items()}
    assert all(len(t) == THUMB_SIDE * THUMB_SIDE for t in thumbs.values())

    def difference(a: str, b: str) -> float:
        return float(thumbnail_difference(thumbs[a][None], thumbs[b][None])[0])

    assert difference("china", "copy") < NEAR_MAX_DIFFERENCE / 3
    assert difference("china", "brighter") < NEAR_MAX_DIFFERENCE / 2
    assert difference("china", "flower") > 1.0 and difference("china", "mirror") > 0.5
    assert difference("gray", "gray") == 0.0 and difference("gray", "dark") == math.inf  # flat: brightness counts
    with pytest.raises(ValueError, match=r"same shape, got \(1, 256\) and \(2, 256\)"):
        thumbnail_difference(thumbs["china"][None], np.stack([thumbs["china"]] * 2))


def test_records_without_thumbnails_keep_the_hash_word_and_bad_thresholds_are_refused() -> None:
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (3, 40, 40), dtype=np.uint8) for _ in range(2)]
    # Two different pictures under one hash, as look-alikes collide: only their thumbnails tell them apart.
    records = [Record(f"train/x/{i}.png", "train", "x", sha=str(i), near=image_phash(pictures[0])) for i in range(2)]
    assert analyze(records, kind="image")["near_duplicates"] == [["train/x/0.png", "train/x/1.png"]]
    for record, picture in zip(records, pictures):
        record.thumbnail = image_thumbnail(picture)
    result = analyze(records, kind="image")
    assert result["near_duplicates"] == []
    assert (result["near_duplicate_candidates"], result["near_duplicate_confirmed"]) == (1, 0)
    assert analyze(records, kind="image", near_max_difference=math.inf)["near_duplicate_confirmed"] == 1
    with pytest.raises(ValueError, match=r"near_max_difference must be >= 0 .* got -0.1"):
        analyze(records, kind="image", near_max_difference=-0.1)


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
