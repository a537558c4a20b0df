"""`stoker split`, manifests and the data fingerprint in DataModules and checkpoints."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from stoker.commands.split import main as split_main
from stoker.data.manifest import build_manifest, dataset_fingerprint, read_manifest, write_manifest
from stoker.datamodules import ImageFolderDataModule


def _samples(n: int = 200) -> list[tuple[str, str, str]]:
    return [(f"{c}/{i:03d}.jpg", c, "all") for c in ("cat", "dog") for i in range(n // 2)]


def test_split_ignores_listing_order_and_is_stratified() -> None:
    samples = _samples()
    hashes = {path: f"h{path}" for path, _, _ in samples}
    first = build_manifest(samples, hashes, val_fraction=0.2, test_fraction=0.1, seed=3)
    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    second = build_manifest(shuffled, hashes, val_fraction=0.2, test_fraction=0.1, seed=3)
    assert first.rows == second.rows and first.fingerprint == second.fingerprint
    for label in ("cat", "dog"):
        val = sum(1 for r in first.rows if r.label == label and r.split == "val")
        assert 10 <= val <= 30  # 20 expected per class of 100
    other_seed = build_manifest(samples, hashes, val_fraction=0.2, test_fraction=0.1, seed=4)
    assert other_seed.split_of() != first.split_of()


@pytest.mark.parametrize(("method", "allowed"), [("quota", 2), ("hash", 0)])
def test_adding_a_file_moves_at_most_what_its_method_allows(method: str, allowed: int) -> None:
    samples = _samples()
    hashes = {path: "x" for path, _, _ in samples + [("cat/new.jpg", "cat", "all")]}
    options = {"val_fraction": 0.2, "test_fraction": 0.1, "seed": 0, "method": method}
    before = build_manifest(samples, hashes, **options).split_of()
    after = build_manifest(samples + [("cat/new.jpg", "cat", "all")], hashes, **options).split_of()
    moved = [path for path, split in before.items() if after[path] != split]
    assert len(moved) <= allowed and all(path.startswith("cat/") for path in moved), moved


def test_presplit_tree_keeps_its_val_folder() -> None:
    samples = [("train/a/1.jpg", "a", "train"), ("val/a/2.jpg", "a", "val")]
    manifest = build_manifest(samples, {"train/a/1.jpg": "1", "val/a/2.jpg": "2"}, val_fraction=0.5,
                              test_fraction=0.0, seed=0)
    assert manifest.split_of() == {"train/a/1.jpg": "train", "val/a/2.jpg": "val"}


def test_fingerprint_changes_with_one_byte(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 6, "dog": 6})
    out = tmp_path / "m.csv"
    assert split_main([str(root), "--val", "0.3", "--out", str(out)]) == 0
    first = out.read_text()
    assert split_main([str(root), "--val", "0.3", "--out", str(out)]) == 0
    assert out.read_text() == first  # the same data gives the same bytes, run after run
    victim = root / "cat" / "cat_0003.jpg"
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0x01
    victim.write_bytes(bytes(data))
    assert split_main([str(root), "--val", "0.3", "--out", str(out)]) == 0
    changed = read_manifest(out)
    assert changed.fingerprint != read_manifest_text(first, tmp_path).fingerprint
    assert [r.path for r in changed.rows if r.sha256 != _row(first, r.path)] == ["cat/cat_0003.jpg"]


def read_manifest_text(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "copy.csv"
    path.write_text(text)
    return read_manifest(path)


def _row(text: str, path: str) -> str:
    return next(line.split(",")[3] for line in text.splitlines() if line.startswith(path + ","))


def test_fingerprint_is_order_free_and_content_sensitive() -> None:
    items = [("train", "a", "x.jpg", "1"), ("val", "b", "y.jpg", "2")]
    assert dataset_fingerprint(items) == dataset_fingerprint(items[::-1])
    assert dataset_fingerprint(items) != dataset_fingerprint([items[0], ("train", "b", "y.jpg", "2")])


def test_manifest_errors_name_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.jpg,a\n")
    with pytest.raises(ValueError, match="must have the columns path,label,split,sha256"):
        read_manifest(bad)
    manifest = build_manifest([("a/1.jpg", "a", "all")], {"a/1.jpg": "1"}, val_fraction=0.0, test_fraction=0.0,
                              seed=0)
    good = tmp_path / "good.csv"
    write_manifest(manifest, good)
    good.write_text(good.read_text().replace(",train,", ",val,"))
    with pytest.raises(ValueError, match="edited by hand: rewrite it with `stoker split`"):
        read_manifest(good)
    with pytest.raises(FileNotFoundError, match="write one with `stoker split`"):
        read_manifest(tmp_path / "none.csv")


def test_datamodule_follows_the_manifest(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 8, "dog": 8})
    out = tmp_path / "m.csv"
    assert split_main([str(root), "--val", "0.25", "--test", "0.25", "--seed", "5", "--out", str(out)]) == 0
    manifest = read_manifest(out)
    dm = ImageFolderDataModule(str(root), manifest=str(out), num_workers=0, image_size=32, val_fraction=0.5)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        assert sorted(rel for rel, _ in dm.splits[split]) == sorted(r.path for r in manifest.rows if r.split == split)
    assert dm.fingerprint == manifest.fingerprint
    assert dm.hparams_initial["data_fingerprint"] == manifest.fingerprint
    assert dm.state_dict() == {"data_fingerprint": manifest.fingerprint}
    assert dm.describe()["fingerprint"] == manifest.fingerprint
    (root / "dog" / "dog_0001.jpg").unlink()
    drifted = ImageFolderDataModule(str(root), manifest=str(out), num_workers=0, image_size=32)
    with pytest.warns(UserWarning, match="files changed, went missing or were excluded"):
        drifted.setup("fit")


def test_manifest_with_foreign_labels_is_rejected(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 2, "dog": 2})
    manifest = build_manifest([("cow/1.jpg", "cow", "all")], {"cow/1.jpg": "1"}, val_fraction=0.0,
                              test_fraction=0.0, seed=0)
    write_manifest(manifest, tmp_path / "m.csv")
    dm = ImageFolderDataModule(str(root), manifest=str(tmp_path / "m.csv"), num_workers=0)
    with pytest.raises(ValueError, match=r"uses labels \['cow'\] that are not class names"):
        dm.setup("fit")


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path: Path) -> L.Trainer:
    return L.Trainer(max_steps=1, accelerator="cpu", logger=CSVLogger(tmp_path, name="logs"),
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     default_root_dir=tmp_path)


def test_checkpoint_keeps_the_fingerprint_and_resume_checks_it(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 4, "dog": 4}, size=(16, 16))
    options: dict[str, Any] = {"num_workers": 0, "image_size": 16, "batch_size": 4, "val_fraction": 0.0}
    dm = ImageFolderDataModule(str(root), **options)
    trainer = _trainer(tmp_path)
    trainer.fit(_Tiny(), datamodule=dm)
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=False)["ImageFolderDataModule"]
    assert saved["data_fingerprint"] == dm.fingerprint
    logged = (Path(trainer.logger.log_dir) / "hparams.yaml").read_text()
    assert f"data_fingerprint: {dm.fingerprint}" in logged
    victim = root / "cat" / "cat_0000.jpg"
    victim.write_bytes(victim.read_bytes() + b"\x00")  # a byte after the JPEG end: still decodes, new content
    strict = ImageFolderDataModule(str(root), strict_fingerprint=True, **options)
    with pytest.raises(ValueError, match=f"trained on data with fingerprint {dm.fingerprint}"):
        L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False).fit(_Tiny(), datamodule=strict, ckpt_path=ckpt)
    lenient = ImageFolderDataModule(str(root), **options)
    lenient.setup("fit")
    with pytest.warns(UserWarning, match="strict_fingerprint=True makes this an error"):
        lenient.load_state_dict(saved)


def test_split_of_a_text_table_and_an_audio_folder(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    import soundfile

    table = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(20)] + [""], "label": ["a", "b"] * 10 + ["a"]}).to_csv(
        table, index=False)
    out = tmp_path / "text.csv"
    assert split_main([str(table), "--val", "0.25", "--out", str(out)]) == 0
    rows = read_manifest(out).rows
    assert len(rows) == 20 and all(r.path.startswith("reviews.csv#") for r in rows)  # the empty row is left out
    assert {r.split for r in rows} == {"train", "val"}
    audio = tmp_path / "audio"
    for name in ("yes", "no"):
        (audio / name).mkdir(parents=True)
        for i in range(3):
            soundfile.write(audio / name / f"{i}.wav", np.zeros(800, np.float32) + i / 10, 8000)
    assert split_main([str(audio), "--val", "0.3", "--out", str(tmp_path / "audio.csv")]) == 0
    assert {r.label for r in read_manifest(tmp_path / "audio.csv").rows} == {"yes", "no"}
