"""DALIImageNetDataModule in DALI's CPU-only mode: contract, epochs, shards, exclusions, parity, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning_utilities.core.imports import RequirementCache
from PIL import Image

import stoker._imports as imports
from stoker.datamodules import DALIImageNetDataModule, ImageFolderDataModule
from stoker.io.dali_batches import DALIBatches
from stoker.samplers import ShardPlan
from tests.conftest import REPO, run_script, write_image_tree
from tests.scripts.ddp_dali import Recorder

pytest.importorskip("nvidia.dali")

TINY = {"batch_size": 4, "image_size": 16, "num_threads": 2}


def _class_of(dm: DALIImageNetDataModule, split: str, index: int) -> str:
    return Path(dm.splits[split][index][0]).parent.name


def _presplit(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    write_image_tree(root, train, size=(20, 24), split="train")
    write_image_tree(root, val, size=(20, 24), split="val", seed=1)
    return root


def _fit(dm: DALIImageNetDataModule, model: Recorder, root: Path, *, epochs: int, ckpt: str | None = None,
         every_step: bool = False) -> L.Trainer:
    callbacks = [  # one checkpoint after every batch, and one at the end of every epoch
        ModelCheckpoint(dirpath=root, every_n_train_steps=1, save_top_k=-1, filename="{epoch}-{step}"),
        ModelCheckpoint(dirpath=root, save_top_k=-1, filename="end-{epoch}"),
    ]
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, num_sanity_val_steps=1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=every_step,
        callbacks=callbacks if every_step else [], default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    return trainer


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(imports._EXTRAS, "dali", (RequirementCache("stoker-test-absent-dali-dist"),))
    with pytest.raises(ModuleNotFoundError, match=r"DALIImageNetDataModule needs .*pip install 'stoker\[dali\]'"):
        DALIImageNetDataModule(str(tmp_path))


def test_importing_stoker_does_not_import_dali() -> None:
    code = "import sys, stoker.datamodules; assert 'nvidia.dali' not in sys.modules, 'DALI imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size must be a positive integer, got 0"),
        ({"hw_decoder_load": 1.5}, r"hw_decoder_load is a share of the JPEGs in \[0, 1\], got 1.5"),
        ({"decode_device": "gpu"}, r"decode_device must be one of \('auto', 'mixed', 'cpu'\), got 'gpu'"),
        ({"scale": (0.5, 0.2)}, r"scale must be an area range 0 < low <= high <= 1, got \(0.5, 0.2\)"),
        ({"num_threads": 0}, "num_threads must be >= 1 or None"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DALIImageNetDataModule(str(tmp_path), **kwargs)


def test_the_plan_is_the_samplers_training_pads_and_evaluation_is_unrepeated(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", {"a": 13, "b": 11, "c": 13}, size=(20, 24))
    dm = DALIImageNetDataModule(str(tmp_path / "tree"), val_fraction=0.3, **TINY)
    dm.setup("fit")
    train, evaluation = dm.plan("train", 2), dm.plan("val", 2)
    assert (train.mode, train.drop_last, evaluation.mode) == ("cut", True, "unrepeated")
    for rank in (0, 1):
        assert len(dm.batches("train", rank=rank, world_size=2)) == train.num_batches(rank)
        assert len(dm.batches("val", rank=rank, world_size=2)) == evaluation.num_batches(rank)
    info = dm.describe()
    assert info["train_batches_per_rank"] == len(dm.batches("train")) and info["val_padding"] == 0


def test_batches_follow_the_contract_and_labels_match_folders(tmp_path: Path) -> None:
    root = _presplit(tmp_path / "tree", {"ant": 5, "bee": 7}, {"ant": 3, "bee": 2})
    dm = DALIImageNetDataModule(str(root), **TINY)
    assert dm.num_classes == 2 and dm.class_names == ["ant", "bee"]
    dm.setup("fit")
    for split in ("train", "val"):
        for batch in dm.batches(split):
            assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, 16, 16)
            assert batch["label"].dtype == torch.int64 and batch["label"].shape == batch["index"].shape
            assert dm.batch_size_of(batch) == batch["label"].shape[0]
            names = [_class_of(dm, split, i) for i in batch["index"].tolist()]
            assert [dm.class_names[y] for y in batch["label"].tolist()] == names


def test_one_epoch_covers_every_file_once(tmp_path: Path) -> None:
    # 12 training images in batches of 4 divide evenly: nothing dropped, nothing repeated.
    root = _presplit(tmp_path / "tree", {"a": 6, "b": 6}, {"a": 3, "b": 4})
    dm = DALIImageNetDataModule(str(root), **TINY)
    dm.setup("fit")
    for split, size in (("train", 12), ("val", 7)):
        seen = [i for batch in dm.batches(split) for i in batch["index"].tolist()]
        assert sorted(seen) == list(range(size)), split


def test_two_epochs_in_a_row_are_both_full_under_lightning(tmp_path: Path) -> None:
    root = _presplit(tmp_path / "tree", {"a": 7, "b": 7}, {"a": 3, "b": 2})
    dm = DALIImageNetDataModule(str(root), **TINY)
    model = Recorder()
    trainer = _fit(dm, model, tmp_path, epochs=2)
    assert isinstance(trainer.train_dataloader, DALIBatches), "Lightning must not re-wrap the iterable"
    assert trainer.num_training_batches == 3  # 14 images, batches of 4, last partial batch dropped
    assert model.notes == {"torch.float32"}, "uint8 must be normalized on the device"
    for epoch in (0, 1):
        train = [b["index"] for b in model.seen["train"] if b["epoch"] == epoch]
        assert len(train) == 3 and all(len(b) == 4 for b in train)
        assert len({i for b in train for i in b}) == 12
        # The sanity check abandoned a validation epoch; every real one is still complete.
        val = [i for b in model.seen["val"] if b["epoch"] == epoch for i in b["index"]]
        assert sorted(val) == list(range(5))
    orders = [[i for b in model.seen["train"] if b["epoch"] == e for i in b["index"]] for e in (0, 1)]
    assert orders[0] != orders[1], "each epoch draws a new permutation"


def test_two_shards_in_one_process_are_disjoint_equal_and_complete(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "tree", {"a": 13, "b": 11, "c": 13}, size=(20, 24))
    dm = DALIImageNetDataModule(str(tmp_path / "tree"), val_fraction=0.3, **TINY)
    dm.setup("fit")
    for split in ("train", "val"):
        shards = [[b["index"].tolist() for b in dm.batches(split, rank=r, world_size=2)] for r in (0, 1)]
        seen = [[i for b in s for i in b] for s in shards]
        if split == "val":  # every sample exactly once over the ranks
            assert sorted(seen[0] + seen[1]) == list(range(len(dm.splits["val"])))
        else:
            assert len(shards[0]) == len(shards[1]) == dm.plan(split, 2).num_batches()
            assert len(set(seen[0]) & set(seen[1])) <= dm.plan(split, 2).padding
            assert all(len(b) == 4 for s in shards for b in s)
    with pytest.raises(ValueError, match=r"rank must be in \[0, world_size=2\), got 2"):
        dm.batches("train", rank=2, world_size=2)


def test_corrupt_quarantined_and_gif_files_are_left_out_and_reported(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    paths = write_image_tree(root, {"a": 8, "b": 8}, size=(20, 24))
    paths[0].write_bytes(paths[0].read_bytes()[:200])  # truncated JPEG
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(root / "b" / "anim.gif")
    quarantine = tmp_path / "quarantine.txt"
    quarantine.write_text(f"{paths[9].relative_to(root)}\n")
    dm = DALIImageNetDataModule(str(root), val_fraction=0.25, max_bad_fraction=0.2, quarantine=str(quarantine),
                                **TINY)
    with pytest.warns(UserWarning, match=r"excluded 2 unusable image file\(s\)"):
        dm.setup("fit")
    corrupt, gif, held = str(paths[0].relative_to(root)), "b/anim.gif", str(paths[9].relative_to(root))
    assert set(dm.bad_files) == {corrupt, gif} and "JPEG" in dm.bad_files[corrupt]
    assert dm.bad_files[gif] == "GIF is not decoded by DALI"
    assert dm.quarantined == [held]
    kept = {rel for pairs in dm.splits.values() for rel, _ in pairs}
    assert kept.isdisjoint({corrupt, gif, held}) and len(kept) == 14
    for split in ("train", "val"):  # DALI reads every remaining file without failing
        assert sum(len(b["index"]) for b in dm.batches(split)) > 0
    strict = DALIImageNetDataModule(str(root), **TINY)
    with pytest.raises(ValueError, match=r"2 of 17 image files .* are unusable, more than max_bad"):
        strict.setup("fit")


def test_evaluation_output_matches_the_torchvision_path(tmp_path: Path) -> None:
    # Odd sizes and both orientations exercise the resize rounding and the half-pixel crop offset.
    root = tmp_path / "tree"
    write_image_tree(root, {"a": 4, "b": 4}, size=(60, 81))
    write_image_tree(root, {"a": 3, "b": 3}, size=(71, 53), fmt="PNG", seed=1)
    settings = {"batch_size": 4, "image_size": 33, "val_fraction": 0.5, "seed": 3}
    dali = DALIImageNetDataModule(str(root), num_threads=2, **settings)
    torchvision = ImageFolderDataModule(str(root), num_workers=0, **settings)
    dali.setup("fit")
    torchvision.setup("fit")
    assert dali.splits == torchvision.splits, "both back ends must split the tree identically"
    ours = torch.cat([b["image"] for b in dali.batches("val")]).float()
    theirs = torch.cat([b["image"] for b in torchvision.val_dataloader()]).float()
    diff = (ours - theirs).abs()
    # Both decode with libjpeg-turbo/libpng here (identical pixels) and crop the same window, so only
    # the antialiased resize kernels' rounding differs: at most 2 grey levels, well under 1 on average.
    assert diff.max() <= 2 and diff.mean() < 0.5


@pytest.mark.cuda
def test_gpu_decoding_matches_the_torchvision_path(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_image_tree(root, {"a": 4, "b": 4}, size=(60, 81))
    settings = {"batch_size": 4, "image_size": 32, "val_fraction": 0.5, "seed": 3}
    dali = DALIImageNetDataModule(str(root), num_threads=2, decode_device="mixed", **settings)
    torchvision = ImageFolderDataModule(str(root), num_workers=0, **settings)
    dali.setup("fit")
    torchvision.setup("fit")
    batches = list(dali.batches("val"))
    assert all(b["image"].is_cuda for b in batches)
    ours = torch.cat([b["image"].cpu() for b in batches]).float()
    theirs = torch.cat([b["image"] for b in torchvision.val_dataloader()]).float()
    # nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's: a few grey levels on average.
    assert (ours - theirs).abs().mean() < 4


def test_resume_mid_epoch_reads_exactly_the_remaining_batches(tmp_path: Path) -> None:
    root = _presplit(tmp_path / "tree", {"a": 7, "b": 7}, {"a": 2, "b": 2})
    reference = Recorder()
    _fit(DALIImageNetDataModule(str(root), **TINY), reference, tmp_path / "ckpt", epochs=2, every_step=True)
    epoch1 = [b["index"] for b in reference.seen["train"] if b["epoch"] == 1]
    resumed = Recorder()  # one batch of epoch 1 trained (global step 4)
    _fit(DALIImageNetDataModule(str(root), **TINY), resumed, tmp_path / "r", epochs=2,
         ckpt=str(tmp_path / "ckpt" / "epoch=1-step=4.ckpt"))
    assert [b["index"] for b in resumed.seen["train"]] == epoch1[1:]
    at_boundary = Recorder()  # saved after the last batch of epoch 0
    _fit(DALIImageNetDataModule(str(root), **TINY), at_boundary, tmp_path / "b", epochs=2,
         ckpt=str(tmp_path / "ckpt" / "epoch=0-step=3.ckpt"))
    assert [b["index"] for b in at_boundary.seen["train"]] == epoch1
    after_epoch = Recorder()  # saved by the end-of-epoch checkpoint of epoch 0
    _fit(DALIImageNetDataModule(str(root), **TINY), after_epoch, tmp_path / "e", epochs=2,
         ckpt=str(tmp_path / "ckpt" / "end-epoch=0.ckpt"))
    assert [b["index"] for b in after_epoch.seen["train"]] == epoch1


def test_errors_before_setup_and_for_oversized_batches(tmp_path: Path) -> None:
    root = _presplit(tmp_path / "tree", {"a": 3, "b": 2}, {"a": 1, "b": 1})
    dm = DALIImageNetDataModule(str(root), batch_size=8, image_size=16, num_threads=1)
    with pytest.raises(ValueError, match=r"call setup\(\) before asking for batches"):
        dm.batches("train")
    dm.setup("fit")
    with pytest.raises(ValueError, match="batch_size=8 is larger than the 5 training samples each of 1 rank"):
        dm.batches("train")


@pytest.mark.ddp
def test_real_two_process_ddp_covers_the_split_with_equal_batches(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_image_tree(root, {"a": 13, "b": 11, "c": 13}, size=(20, 24))
    result = run_script(REPO / "tests" / "scripts" / "ddp_dali.py", str(root), "--batch-size", "4")
    ranks = result["ranks"]
    assert result["loader_type"] == "DALIBatches" and len(ranks) == 2
    assert all(r["notes"] == ["torch.float32"] for r in ranks)
    n_train, n_val = result["train_size"], result["val_size"]
    for epoch in (0, 1):
        train = [[b for b in r["seen"]["train"] if b["epoch"] == epoch] for r in ranks]
        assert len(train[0]) == len(train[1]) == result["train_batches"] > 0
        shards = [{i for b in batches for i in b["index"]} for batches in train]
        assert len(shards[0] & shards[1]) <= ShardPlan(n_train, 2, mode="cut", batch_size=4, drop_last=True).padding
        for batches in train:
            assert all(result["train_labels"][i] == y for b in batches for i, y in zip(b["index"], b["label"]))
        val = [[i for b in r["seen"]["val"] if b["epoch"] == epoch for i in b["index"]] for r in ranks]
        assert sorted(val[0] + val[1]) == list(range(n_val)), "validation sees every sample exactly once"


def test_a_file_name_that_is_not_utf8_is_named_and_left_out_not_a_dali_error(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    paths = write_image_tree(root, {"a": 6, "b": 6}, size=(20, 24))
    odd = os.fsencode(root / "a") + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(odd, "wb") as handle:
        handle.write(paths[0].read_bytes())
    dm = DALIImageNetDataModule(str(root), val_fraction=0.25, max_bad_fraction=0.2, **TINY)
    with pytest.warns(UserWarning, match=r"excluded 1 unusable image file"):
        dm.setup("fit")
    (name, reason), = dm.bad_files.items()
    assert os.fsencode(name) == b"a/caf\xe9.jpg" and "not valid UTF-8" in reason
    assert sum(len(b["index"]) for b in dm.batches("train")) > 0  # DALI reads the rest
