"""Bad input in class-folder trees reaches the user as a named file and a reason, never as a crash hours in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from stoker.data.file_dataset import SampleReadError
from stoker.data.manifest import build_manifest, content_hashes, read_manifest, write_manifest
from stoker.datamodules import ImageFolderDataModule
from stoker.report.summary import quality_section
from tests.conftest import encode_image, natural_image

needs_posix = pytest.mark.skipif(sys.platform == "win32", reason="symlinks and byte file names are POSIX here")


def make(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"batch_size": 2, "num_workers": 0, "image_size": 8, "val_fraction": 0.0, **kwargs}
    return ImageFolderDataModule(str(root), **kwargs)


def jpeg(seed: int) -> bytes:
    return encode_image(natural_image(np.random.default_rng(seed), 16, 16))


def test_notebook_checkpoints_and_appledouble_files_neither_train_nor_count_as_bad(image_tree) -> None:
    root = image_tree({"cat": 4, "dog": 4}, size=(16, 16))
    (root / "cat" / ".ipynb_checkpoints").mkdir()
    (root / "cat" / ".ipynb_checkpoints" / "cat_0000-checkpoint.jpg").write_bytes(jpeg(9))
    for name in ("cat", "dog"):
        for i in range(4):
            (root / name / f"._{name}_{i:04d}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    dm = make(root)  # 8 AppleDouble files would be 50% "corrupt": far past max_bad_fraction
    dm.setup("fit")
    assert dm.bad_files == {} and len(dm.splits["train"]) == 8
    assert all(".ipynb_checkpoints" not in rel and "/._" not in rel for rel, _ in dm.splits["train"])
    assert dm.describe()["skipped"] == len(dm.skipped) == 9
    cleaning = quality_section(dm, dm.describe(), {})["cleaning"]
    assert any("skipped 9 hidden or tool folder(s) and file(s)" in line for line in cleaning)


@needs_posix
def test_dangling_symlinks_and_unreadable_files_are_bad_files_even_unverified(image_tree) -> None:
    root = image_tree({"cat": 30, "dog": 30}, size=(16, 16))
    os.symlink(root / "cat" / "gone.jpg", root / "cat" / "dangling.jpg")
    for verify in ("decode", "none"):
        dm = make(root, verify=verify, max_bad_fraction=0.05)
        dm.prepare_data()  # used to raise FileNotFoundError while hashing
        dm.setup("fit")
        assert set(dm.bad_files) == {"cat/dangling.jpg"}, verify
        assert dm.bad_files["cat/dangling.jpg"].startswith("unreadable file (No such file")


@needs_posix
def test_a_file_name_that_is_not_utf8_trains_and_round_trips_through_a_manifest(image_tree, tmp_path: Path) -> None:
    root = image_tree({"cat": 3, "dog": 3}, size=(16, 16))
    name = os.fsdecode(b"caf\xe9.jpg")
    (root / "cat" / name).write_bytes(jpeg(7))
    dm = make(root)
    dm.setup("fit")  # used to fail on every rank with UnicodeEncodeError
    assert (f"cat/{name}", 0) in dm.splits["train"] and dm.fingerprint
    samples = [(rel, ["cat", "dog"][y], "all") for rel, y in dm.splits["train"]]
    hashes, _ = content_hashes(root, [rel for rel, _, _ in samples])
    manifest = build_manifest(samples, hashes, val_fraction=0.0, test_fraction=0.0, seed=0)
    write_manifest(manifest, tmp_path / "splits.csv")
    assert read_manifest(tmp_path / "splits.csv").rows == manifest.rows
    pinned = make(root, manifest=str(tmp_path / "splits.csv"))
    pinned.setup("fit")
    assert pinned.fingerprint == dm.fingerprint


def test_batch_size_larger_than_the_training_split_is_an_error_before_training(image_tree) -> None:
    dm = make(image_tree({"cat": 3, "dog": 2}, size=(16, 16)), batch_size=8)
    dm.setup("fit")
    with pytest.raises(ValueError, match=r"training split has 5 samples.*batch_size=8.*lower batch_size"):
        dm.train_dataloader()


class _Steps(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.extend(batch["index"].tolist())
        return self.layer(batch["image"].mean(dim=(1, 2, 3))[:, None]).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(dm: ImageFolderDataModule, epochs: int = 1) -> _Steps:
    model = _Steps()
    L.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0).fit(model, datamodule=dm)
    return model


def test_a_file_corrupted_after_the_scan_raises_naming_it(image_tree) -> None:
    root = image_tree({"cat": 4, "dog": 4}, size=(16, 16))
    dm = make(root)
    dm.setup("fit")
    victim = root / "dog" / "dog_0002.jpg"
    victim.write_bytes(victim.read_bytes()[:100])  # truncated while the run goes on
    with pytest.raises(SampleReadError, match=r"dog_0002\.jpg: truncated JPEG.*passed the check before training"):
        _fit(dm)


def test_with_skip_a_file_deleted_after_the_scan_is_left_out_counted_and_reported(image_tree) -> None:
    root = image_tree({"cat": 4, "dog": 4}, size=(16, 16))
    dm = make(root, on_bad_sample="skip")
    dm.setup("fit")
    victim = "cat/cat_0001.jpg"
    (root / victim).unlink()
    reported = r"(?s)skipped 1 unreadable image file\(s\) in epoch 0 .*cat_0001\.jpg: unreadable"
    with pytest.warns(UserWarning, match=reported):
        model = _fit(dm, epochs=2)
    position = [rel for rel, _ in dm.splits["train"]].index(victim)
    assert position not in model.seen and len(model.seen) == 2 * 7, "7 good samples per epoch, nothing substituted"
    assert dm.skipped_report == {0: 1, 1: 1} and dm.describe()["skipped_in_training"] == {0: 1, 1: 1}


def test_a_class_only_in_validation_is_named(image_tree) -> None:
    root = image_tree({"cat": 3, "dog": 3}, size=(16, 16), split="train")
    image_tree({"cat": 1, "bird": 2}, size=(16, 16), split="val", root=root)
    with pytest.warns(UserWarning, match=r"\{'bird': \['val'\]\} .* have no train/ folder"):
        dm = make(root)
        assert dm.class_names == ["bird", "cat", "dog"]
