"""ImageFolderDataModule: layouts, splits, batches, bad files, pickling."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from stoker.datamodules import DigitsDataModule, ImageFolderDataModule
from tests.conftest import encode_image, natural_image


def make_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    defaults = {"batch_size": 4, "num_workers": 0, "image_size": 16, "val_fraction": 0.25}
    return ImageFolderDataModule(str(root), **{**defaults, **kwargs})


def test_single_folder_layout_is_split_and_labelled_by_sorted_class_names(image_tree) -> None:
    root = image_tree({"zebra": 8, "ant": 8, "moth": 8})
    dm = make_dm(root)
    assert dm.class_names == ["ant", "moth", "zebra"] and dm.num_classes == 3  # known before setup
    dm.setup("fit")
    sizes = {split: len(pairs) for split, pairs in dm.splits.items()}
    assert sizes["train"] + sizes["val"] == 24 and sizes["test"] == 0 and sizes["val"] > 0
    for split in ("train", "val"):
        for relative, label in dm.splits[split]:
            assert relative.split(os.sep)[0] == dm.class_names[label]


def test_presplit_layout_uses_its_own_folders(image_tree, tmp_path) -> None:
    root = tmp_path / "presplit"
    image_tree({"a": 5, "b": 4}, root=root, split="train")
    image_tree({"a": 2, "b": 3}, root=root, split="val", seed=1)
    image_tree({"a": 1, "c": 1}, root=root, split="test", seed=2)
    dm = make_dm(root)
    assert dm.class_names == ["a", "b", "c"]
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [9, 5, 2]
    assert all(rel.startswith("val" + os.sep) for rel, _ in dm.splits["val"])


def test_split_does_not_depend_on_listing_order(image_tree, monkeypatch) -> None:
    root = image_tree({"a": 10, "b": 10})
    first = make_dm(root, seed=7)
    first.setup()
    real_walk = os.walk

    def reversed_walk(top, *args, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            yield dirpath, dirnames[::-1], filenames[::-1]

    monkeypatch.setattr(os, "walk", reversed_walk)
    second = make_dm(root, seed=7)
    second.setup()
    assert first.splits == second.splits
    third = make_dm(root, seed=8)
    third.setup()
    assert third.splits["val"] != first.splits["val"]


def test_batches_are_uint8_on_the_host_and_normalized_float_after_transfer(image_tree) -> None:
    root = image_tree({"a": 6, "b": 6}, size=(30, 50))
    dm = make_dm(root, channels_last=True)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (4, 3, 16, 16)
    assert batch["label"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    eval_batch = next(iter(dm.val_dataloader()))
    assert eval_batch["image"].shape[1:] == (3, 16, 16)
    raw = batch["image"].clone()
    out = dm.on_after_batch_transfer(batch, 0)
    assert out["image"].dtype == torch.float32
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    expected = (raw.float() / 255 - torch.tensor(dm.mean).view(1, 3, 1, 1)) / torch.tensor(dm.std).view(1, 3, 1, 1)
    torch.testing.assert_close(out["image"], expected)


def test_training_loader_drops_the_last_partial_batch_and_eval_keeps_it(image_tree) -> None:
    root = image_tree({"a": 7, "b": 6})
    dm = make_dm(root, val_fraction=0.0)
    dm.setup()
    assert len(dm.datasets["train"]) == 13
    assert [len(b["label"]) for b in dm.train_dataloader()] == [4, 4, 4]
    dm.datasets["val"] = dm.datasets["train"]
    assert [len(b["label"]) for b in dm.val_dataloader()] == [4, 4, 4, 1]


def write_bad_files(root: Path) -> dict[str, str]:
    good = encode_image(natural_image(__import__("numpy").random.default_rng(0), 20, 20), "JPEG")
    png = encode_image(natural_image(__import__("numpy").random.default_rng(1), 20, 20), "PNG")
    bad = {
        os.path.join("a", "zero.jpg"): b"",
        os.path.join("a", "truncated.jpg"): good[: len(good) // 2],
        os.path.join("b", "text.png"): b"<html>not an image</html>",
        os.path.join("b", "cut.png"): png[:60],
    }
    for relative, data in bad.items():
        (root / relative).write_bytes(data)
    return {
        os.path.join("a", "zero.jpg"): "empty file (0 bytes)",
        os.path.join("a", "truncated.jpg"): "truncated JPEG (no end-of-image marker)",
        os.path.join("b", "text.png"): "not a readable image",
        os.path.join("b", "cut.png"): "truncated PNG (no IEND chunk)",
    }


def test_each_kind_of_bad_file_is_excluded_and_reported(image_tree) -> None:
    root = image_tree({"a": 10, "b": 10})
    expected = write_bad_files(root)
    dm = make_dm(root, max_bad_fraction=0.5)
    with pytest.warns(UserWarning, match="excluded 4 unusable image file"):
        dm.setup()
    assert set(dm.bad_files) == set(expected)
    for relative, reason in expected.items():
        assert dm.bad_files[relative].startswith(reason)
    kept = {rel for pairs in dm.splits.values() for rel, _ in pairs}
    assert len(kept) == 20 and not kept & set(expected)
    assert {item["path"] for item in dm.describe()["bad_files"]} == set(expected)


def test_too_many_bad_files_is_an_error_before_training(image_tree) -> None:
    root = image_tree({"a": 10, "b": 10})
    write_bad_files(root)
    dm = make_dm(root)  # default max_bad_fraction = 1%
    with pytest.raises(ValueError, match=r"4 of 24 image files .* \(16.7%\) are unusable, more than "
                                         r"max_bad_fraction=1.0%") as info:
        dm.setup()
    assert "zero.jpg: empty file (0 bytes)" in str(info.value)
    assert "raise max_bad_fraction" in str(info.value)


def test_quarantined_files_are_left_out(image_tree, tmp_path) -> None:
    root = image_tree({"a": 4, "b": 4})
    quarantine = tmp_path / "quarantine.txt"
    quarantine.write_text(f"# from stoker scan\n{os.path.join('a', 'a_0001.jpg')}\n")
    dm = make_dm(root, quarantine=str(quarantine), val_fraction=0.0)
    dm.setup()
    assert dm.quarantined == [os.path.join("a", "a_0001.jpg")]
    assert len(dm.datasets["train"]) == 7


def test_missing_and_empty_roots_are_clear_errors(tmp_path, image_tree) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist or is not a directory"):
        make_dm(tmp_path / "nowhere").setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folder, so there is no class to tell apart"):
        make_dm(tmp_path / "empty").setup()
    (tmp_path / "noimages" / "a").mkdir(parents=True)
    (tmp_path / "noimages" / "a" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no image files under .*other files found, e.g. \['a/notes.txt'\]"):
        make_dm(tmp_path / "noimages").setup()


def test_empty_class_folder_is_named_in_a_warning(image_tree) -> None:
    root = image_tree({"a": 4, "b": 4})
    (root / "c").mkdir()
    dm = make_dm(root)
    with pytest.warns(UserWarning, match=r"class folders with no image files under .*\['c'\]"):
        dm.setup()
    assert dm.num_classes == 3


def test_datamodule_pickles_before_and_after_setup(image_tree) -> None:
    dm = make_dm(image_tree({"a": 4, "b": 4}))
    clone = pickle.loads(pickle.dumps(dm))
    assert clone.class_names == ["a", "b"]
    dm.setup()
    dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)  # fills the device cache
    clone = pickle.loads(pickle.dumps(dm))
    assert len(clone.datasets["train"]) == len(dm.datasets["train"])
    assert clone.datasets["train"][0]["image"].dtype == torch.uint8


def test_input_settings_can_come_from_a_timm_model(image_tree) -> None:
    dm = make_dm(image_tree({"a": 2}), timm_model="vit_base_patch16_clip_224.openai")
    assert dm.image_size == 224
    assert dm.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    with pytest.raises(ValueError, match="timm does not know a model named 'no_such_net'"):
        make_dm(image_tree({"a": 2}), timm_model="no_such_net")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"num_workers": -1}, "num_workers must be >= 0 or None"),
        ({"max_bad_fraction": 2.0}, r"max_bad_fraction must be in \[0, 1\], got 2.0"),
        ({"verify": "maybe"}, "verify must be 'decode' or 'none', got 'maybe'"),
        ({"auto_augment": "bogus"}, "auto_augment must be one of"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_are_explained(tmp_path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_dm(tmp_path, **kwargs)


def test_augmentation_presets_run_on_uint8(image_tree) -> None:
    root = image_tree({"a": 4, "b": 4}, size=(40, 40))
    for policy in ("randaugment", "trivialaugment", "autoaugment"):
        dm = make_dm(root, auto_augment=policy, random_erasing=1.0, val_fraction=0.0)
        dm.setup()
        item = dm.datasets["train"][0]
        assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16)


def test_digits_datamodule_builds_its_images_offline(tmp_path) -> None:
    dm = DigitsDataModule(str(tmp_path / "digits"), batch_size=8, num_workers=0)
    assert dm.num_classes == 10
    dm.prepare_data()
    dm.setup()
    assert sum(len(p) for p in dm.splits.values()) == 1797
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32)
    skewed = DigitsDataModule(str(tmp_path / "digits"), imbalanced=True, num_workers=0)
    skewed.setup()
    counts = torch.bincount(torch.tensor([y for p in skewed.splits.values() for _, y in p]), minlength=10)
    assert counts[0] > 150 and counts[9] < 25 and counts.sum() < 600


def test_the_split_gives_every_class_exactly_its_quota(image_tree) -> None:
    # Asked for ~15% validation, a per-sample draw once gave 151 of 180; quotas are exact per class.
    dm = make_dm(image_tree({"a": 13, "b": 20, "c": 7}), val_fraction=0.15, test_fraction=0.1)
    dm.setup("fit")
    for label, n in enumerate((13, 20, 7)):
        counts = {split: sum(1 for _, y in pairs if y == label) for split, pairs in dm.splits.items()}
        assert counts == {"val": int(n * 0.15 + 0.5), "test": int(n * 0.1 + 0.5),
                          "train": n - int(n * 0.15 + 0.5) - int(n * 0.1 + 0.5)}


def test_normalize_gives_what_the_model_gets_outside_a_trainer(image_tree) -> None:
    dm = make_dm(image_tree({"a": 4, "b": 4}))
    dm.setup("fit")
    host = next(iter(dm.val_dataloader()))
    assert host["image"].dtype == torch.uint8, "loaders yield uint8 0-255"
    ready = dm.normalize(dict(host), device="cpu")
    assert ready["image"].dtype == torch.float32 and ready["image"].mean().abs() < 3


def test_unpacking_a_dict_batch_as_a_tuple_is_explained(image_tree) -> None:
    import lightning as L

    class TupleModel(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch  # the classic (input, target) habit
            return x

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = make_dm(image_tree({"a": 4, "b": 4}), val_fraction=0.0)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    explained = r"yields dict batches.*batch\['image'\] and batch\['label'\]"
    with pytest.warns(UserWarning, match=explained), pytest.raises(ValueError, match="too many values to unpack"):
        trainer.fit(TupleModel(), datamodule=dm)
