"""`stoker scan`: a folder with planted problems is found exactly, no more and no less."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stoker.commands.scan import main as scan_main
from stoker.data.sources.folder_tree import read_path_list
from stoker.quality.checks import parse_problems
from stoker.quality.near_index import near_pairs
from stoker.quality.phash import hamming, image_phash, normalize_text
from stoker.quality.scan import scan_dataset


def blocks(rng: np.random.Generator, side: int = 48, cells: int = 8) -> np.ndarray:
    """Random coloured blocks: perceptual hashes of two such images are ~32 bits apart."""
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    return np.kron(grid, np.ones((side // cells, side // cells, 1), np.uint8))


def save(path: Path, array: np.ndarray, fmt: str = "JPEG", **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    path.write_bytes(buffer.getvalue())
    return path


def resized(array: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((side, side), Image.Resampling.BILINEAR))


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "planted"
    rng = np.random.default_rng(7)
    base: dict[str, np.ndarray] = {}
    for split, per_class in (("train", 8), ("val", 3)):
        for name in ("cat", "dog"):
            for i in range(per_class):
                rel = f"{split}/{name}/{i}.png"
                base[rel] = blocks(rng)
                save(root / rel, base[rel], "PNG")
    # corrupt: empty, truncated JPEG, not an image at all
    (root / "train/cat/empty.jpg").write_bytes(b"")
    whole = save(root / "train/cat/whole.jpg", blocks(rng), quality=95).read_bytes()
    (root / "train/cat/whole.jpg").unlink()
    (root / "train/cat/truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "train/dog/text.png").write_bytes(b"this is not a png file at all" * 10)
    # exact duplicate within train and label
    (root / "train/cat/0_copy.png").write_bytes((root / "train/cat/0.png").read_bytes())
    # near duplicates: re-encoded as JPEG, and resized
    save(root / "train/dog/1_reencoded.jpg", base["train/dog/1.png"], quality=60)
    save(root / "train/cat/2_small.png", resized(base["train/cat/2.png"], 36), "PNG")
    # leakage: an exact copy and a resized copy of training images in val
    (root / "val/cat/leak_exact.png").write_bytes((root / "train/cat/3.png").read_bytes())
    save(root / "val/dog/leak_resized.png", resized(base["train/dog/4.png"], 40), "PNG")
    # label conflict: a cat image filed under dog
    (root / "train/dog/conflict.png").write_bytes((root / "train/cat/5.png").read_bytes())
    # outliers: tiny, wide (same area as the rest), and one grayscale image
    save(root / "train/cat/tiny.png", blocks(rng, side=16), "PNG")
    save(root / "train/dog/wide.png", np.concatenate([blocks(rng), blocks(rng), blocks(rng)], axis=1)[:, ::1][::1],
         "PNG")
    save(root / "train/dog/gray.png", blocks(rng)[..., 0], "PNG")
    expected = {
        "corrupt": {"train/cat/empty.jpg", "train/cat/truncated.jpg", "train/dog/text.png"},
        "exact_duplicates": [["train/cat/0.png", "train/cat/0_copy.png"],
                             ["train/cat/3.png", "val/cat/leak_exact.png"],
                             ["train/cat/5.png", "train/dog/conflict.png"]],
        "near_duplicates": [["train/cat/2.png", "train/cat/2_small.png"],
                            ["train/dog/1.png", "train/dog/1_reencoded.jpg"],
                            ["train/dog/4.png", "val/dog/leak_resized.png"]],
        "leakage": [("train/cat/3.png", "val/cat/leak_exact.png", "exact"),
                    ("train/dog/4.png", "val/dog/leak_resized.png", "near")],
        "label_conflicts": [[("train/cat/5.png", "cat"), ("train/dog/conflict.png", "dog")]],
        "outliers": {("train/cat/tiny.png", "size"), ("train/dog/wide.png", "aspect"), ("train/dog/gray.png", "mode")},
    }
    return root, expected


def test_scan_finds_exactly_the_planted_problems(planted: tuple[Path, dict]) -> None:
    root, expected = planted
    result = scan_dataset(root, num_workers=2)
    assert result["kind"] == "image"
    assert {c["path"] for c in result["corrupt"]} == expected["corrupt"]
    reasons = {c["path"]: c["reason"] for c in result["corrupt"]}
    assert reasons["train/cat/empty.jpg"] == "empty file (0 bytes)"
    assert result["exact_duplicates"] == expected["exact_duplicates"]
    assert result["near_duplicates"] == expected["near_duplicates"]
    assert [(p["train"], p["other"], p["match"]) for p in result["leakage"]] == expected["leakage"]
    assert [[(m["path"], m["label"]) for m in g] for g in result["label_conflicts"]] == expected["label_conflicts"]
    assert {(o["path"], o["check"]) for o in result["outliers"]} == expected["outliers"]
    assert result["missing"] == []
    usable_train = 8 + 8 + 1 + 1 + 1 + 1 + 3  # clean + copy + reencoded + small + conflict + tiny/wide/gray
    assert sum(result["class_counts"]["train"].values()) == usable_train
    assert result["class_counts"]["val"] == {"cat": 4, "dog": 4}
    assert len(result["mean"]) == 3 and all(0.3 < m < 0.7 for m in result["mean"])
    assert all(0.2 < s < 0.45 for s in result["std"])


def test_mean_std_match_a_direct_computation(image_tree) -> None:
    root = image_tree({"a": 3, "b": 2}, fmt="PNG", size=(16, 20))
    result = scan_dataset(root, num_workers=1)
    pixels = np.concatenate([np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3) / 255.0
                             for p in sorted(root.rglob("*.png"))])
    assert result["mean"] == pytest.approx(pixels.mean(0).tolist(), abs=1e-4)
    assert result["std"] == pytest.approx(pixels.std(0).tolist(), abs=1e-4)
    assert result["imbalance_ratio"] == pytest.approx(1.5)


def test_cli_writes_json_markdown_quarantine_and_fails_on_request(planted: tuple[Path, dict], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, expected = planted
    out = tmp_path / "out"
    code = scan_main([str(root), "--json", str(out / "s.json"), "--markdown", str(out / "s.md"),
                      "--quarantine", str(out / "q.json"), "--no-progress", "--fail-on", "leakage,corrupt"])
    assert code == 1
    assert "failing on leakage, corrupt" in capsys.readouterr().err
    data = json.loads((out / "s.json").read_text())
    for key in ("corrupt", "exact_duplicates", "near_duplicates", "leakage", "label_conflicts", "class_counts",
                "mean", "std", "outliers", "missing"):
        assert key in data
    quarantined = read_path_list(out / "q.json")
    assert expected["corrupt"] <= quarantined
    assert {"val/cat/leak_exact.png", "val/dog/leak_resized.png", "train/dog/conflict.png",
            "train/cat/5.png", "train/cat/0_copy.png"} <= quarantined
    assert "train/cat/0.png" not in quarantined
    markdown = (out / "s.md").read_text()
    assert "### Leakage: 2" in markdown and "`train/cat/3.png` (train)" in markdown
    assert scan_main([str(root), "--no-progress", "--fail-on", "missing"]) == 0


def test_clean_single_folder_split_by_seed_has_no_problems(image_tree) -> None:
    rng = np.random.default_rng(3)
    root = Path(image_tree({"x": 0})).parent / "clean"
    for name in ("x", "y"):
        for i in range(10):
            save(root / name / f"{i}.png", blocks(rng), "PNG")
    result = scan_dataset(root, val_fraction=0.3, seed=1)
    assert set(result["splits"]) == {"train", "val"}
    assert all(result["summary"][name] == 0 for name in result["summary"]), result["summary"]


def test_audio_folder_scan(tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    rng = np.random.default_rng(0)
    root = tmp_path / "audio"
    for name in ("yes", "no"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            soundfile.write(root / name / f"{i}.wav", rng.normal(0, 0.1, 16000).astype(np.float32), 16000)
    soundfile.write(root / "yes/long.wav", rng.normal(0, 0.1, 16000 * 10).astype(np.float32), 16000)
    soundfile.write(root / "no/rate.wav", rng.normal(0, 0.1, 8000).astype(np.float32), 8000)
    (root / "no/copy.wav").write_bytes((root / "yes/0.wav").read_bytes())
    (root / "yes/broken.wav").write_bytes((root / "yes/1.wav").read_bytes()[:30])
    result = scan_dataset(root)
    assert result["kind"] == "audio"
    assert [c["path"] for c in result["corrupt"]] == ["yes/broken.wav"]
    assert result["exact_duplicates"] == [["no/copy.wav", "yes/0.wav"]]
    assert [[m["path"] for m in g] for g in result["label_conflicts"]] == [["no/copy.wav", "yes/0.wav"]]
    assert {(o["path"], o["check"]) for o in result["outliers"]} == {("yes/long.wav", "duration"),
                                                                     ("no/rate.wav", "sample_rate")}


def test_text_table_scan(tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "text"
    folder.mkdir()
    train = ["a fine film", "Dull and slow.", "dull and SLOW", "great acting", "", "x" * 400, "plot holes", "fun"]
    labels = ["pos", "neg", "neg", "pos", "pos", "neg", None, "pos"]
    pd.DataFrame({"text": train, "label": labels}).to_csv(folder / "train.csv", index=False)
    pd.DataFrame({"text": ["great acting", "fun"], "label": ["pos", "neg"]}).to_json(
        folder / "val.jsonl", orient="records", lines=True)
    result = scan_dataset(folder)
    assert result["kind"] == "text"
    assert result["splits"] == {"train": 8, "val": 2}
    assert result["near_duplicates"] == [["train.csv#1", "train.csv#2"]]
    assert [(p["train"], p["other"]) for p in result["leakage"]] == [("train.csv#3", "val.jsonl#0"),
                                                                      ("train.csv#7", "val.jsonl#1")]
    assert [[m["path"] for m in g] for g in result["label_conflicts"]] == [["train.csv#7", "val.jsonl#1"]]
    assert {(m["path"], tuple(m["fields"])) for m in result["missing"]} == {("train.csv#4", ("text",)),
                                                                            ("train.csv#6", ("label",))}
    assert [(o["path"], o["check"]) for o in result["outliers"]] == [("train.csv#5", "length")]
    with pytest.raises(ValueError, match="has no column 'review'"):
        scan_dataset(folder, text_column="review")


def test_perceptual_hash_and_text_normalisation() -> None:
    rng = np.random.default_rng(1)
    image = blocks(rng)
    original = image_phash(image.transpose(2, 0, 1))
    assert hamming(original, image_phash(resized(image, 30).transpose(2, 0, 1))) <= 6
    assert hamming(original, image_phash(blocks(rng).transpose(2, 0, 1))) > 16
    assert near_pairs([0, 1, 0b111, (1 << 64) - 1], 1).tolist() == [[0, 1]]
    assert normalize_text("Hello,  WORLD!") == "hello world"
    assert not math.isnan(original)


def test_bad_arguments_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown problem name.*'leak'.*choose from corrupt"):
        parse_problems("leak")
    assert scan_main([str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert scan_main(["--no-progress"]) == 2
    assert "give a dataset PATH or --config RECIPE" in capsys.readouterr().err


def test_the_retired_detail_gate_is_accepted_and_ignored_with_a_note(image_tree,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = image_tree({"a": 2, "b": 2})
    assert scan_main([str(root), "--near-min-detail", "0.08", "--no-progress", "--fail-on", "corrupt"]) == 0
    captured = capsys.readouterr()
    assert "--near-min-detail is deprecated and ignored" in captured.err and "scanned 4 image samples" in captured.out
    assert scan_main([str(root), "--no-progress"]) == 0
    assert "deprecated" not in capsys.readouterr().err


def test_a_core_install_names_the_extra_a_table_or_audio_scan_needs(tmp_path, monkeypatch, capsys) -> None:
    from lightning_utilities.core.imports import RequirementCache

    import stoker._imports as imports
    from stoker.commands.scan import main as scan_main

    table = tmp_path / "t.csv"
    table.write_text("text,label\nhello,a\n")
    monkeypatch.setitem(imports._EXTRAS, "text", (RequirementCache("stoker-test-absent-pandas"),))
    assert scan_main([str(table)]) == 2
    assert "pip install 'stoker[text]'" in capsys.readouterr().err
