"""The sharded DataModules: the folder modules' contract and data, bad samples named or skipped, DALI, resume."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning_utilities.core.imports import RequirementCache

pytest.importorskip("litdata")

import stoker._imports as imports  # noqa: E402
from stoker.data.file_dataset import SKIPPED_KEY, SampleReadError  # noqa: E402
from stoker.data.sources.shards.pack import pack_order  # noqa: E402
from stoker.datamodules import ImageFolderDataModule  # noqa: E402
from stoker.datamodules.sharded import ShardedImageDataModule  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402
from tests.data.test_shards import pack  # noqa: E402
from tests.datamodules.test_resume import check_kill_and_resume  # noqa: E402

# The shared shard fixtures (a packed tree, the loopback S3 server), by name for pytest.
image_tree_root = shared.image_tree_root
shard_copy = shared.shard_copy
shard_set = shared.shard_set

TINY = {"batch_size": 4, "num_workers": 0, "image_size": 8}


def _folder(root: Path) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(root), batch_size=4, num_workers=0, image_size=8, val_fraction=0.2)
    dm.setup()
    return dm


def _ready(source: Path, **kwargs: object) -> ShardedImageDataModule:
    dm = ShardedImageDataModule(str(source), **{**TINY, **kwargs})  # type: ignore[arg-type]
    dm.prepare_data()
    dm.setup()
    return dm


def _corrupt_first_sample(shards: Path, split: str) -> str:
    """Overwrite the JPEG signature of the split's sample at position 0; returns its key."""
    from litdata import StreamingDataset

    key = StreamingDataset(str(shards / split))[0]["key"]
    chunk = shards / split / "chunk-0-0.bin"
    data = bytearray(chunk.read_bytes())
    start = data.index(b"\xff\xd8\xff")
    data[start : start + 3] = b"\x00\x00\x00"
    chunk.write_bytes(bytes(data))
    return key


def test_num_classes_is_known_after_init_from_the_metadata(shard_set: Path) -> None:
    dm = ShardedImageDataModule(str(shard_set), **TINY)
    assert dm.num_classes == 3 and dm.class_names == ["a", "b", "c"]
    assert dm.split_sizes() == {"train": 29, "val": 8, "test": 0}
    assert pickle.loads(pickle.dumps(dm)).num_classes == 3


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, shard_set: Path) -> None:
    monkeypatch.setitem(imports._EXTRAS, "shards", (RequirementCache("stoker-test-absent-litdata"),))
    with pytest.raises(ModuleNotFoundError, match=r"ShardedImageDataModule needs .*pip install 'stoker\[shards\]'"):
        ShardedImageDataModule(str(shard_set))


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"decode": "gpu"}, "decode must be 'cpu' .* or 'dali', got 'gpu'"),
    ({"on_bad_sample": "ignore"}, r"on_bad_sample must be one of \('raise', 'skip'\)"),
    ({"batch_size": 32}, r"training split has 29 samples, which gives each of 1 rank\(s\) no whole batch"),
    ({"hflip": 2.0}, r"hflip is a probability in \[0, 1\], got 2.0"),
    ({"num_threads": 0}, r"num_threads must be >= 1 or None"),
    ({"crop_pct": 0.0}, r"crop_pct must be in \(0, 1\], got 0.0"),
])
def test_bad_arguments_are_explained(shard_set: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _ready(shard_set, **kwargs).train_dataloader()


def test_audio_shards_refuse_the_image_module_and_vice_versa(shard_set: Path) -> None:
    pytest.importorskip("torchaudio")
    from stoker.datamodules.sharded_audio import ShardedAudioDataModule

    with pytest.raises(ValueError, match="holds image shards, but ShardedAudioDataModule reads audio"):
        ShardedAudioDataModule(str(shard_set))


def test_same_split_fingerprint_transforms_and_pixels_as_the_folder_module(shard_set: Path,
                                                                           image_tree_root: Path) -> None:
    folder, dm = _folder(image_tree_root), _ready(shard_set)
    assert dm.fingerprint == folder.fingerprint, "the shard set holds exactly the folder module's split"
    assert repr(dm.train_transform) == repr(folder.train_transform)
    assert repr(dm.eval_transform) == repr(folder.eval_transform)
    train_order = pack_order(folder.splits["train"], dm.meta.seed, "train")
    assert dm.train_labels() == [label for _, _, label in train_order], "labels by packed position"
    order = pack_order(folder.splits["val"], dm.meta.seed, "val")
    position_of = {rel: i for i, (rel, _) in enumerate(folder.splits["val"])}
    for batch in dm.val_dataloader():
        assert batch["image"].dtype == torch.uint8 and batch["image"].shape[1:] == (3, 8, 8)
        for image, label, index in zip(batch["image"], batch["label"].tolist(), batch["index"].tolist()):
            _, rel, expected_label = order[index]
            item = folder.datasets["val"][position_of[rel]]
            assert label == expected_label and torch.equal(image, item["image"])
    sample = dm.train_dataloader().dataset[5]  # random access, as sample grids and reports use it
    assert (sample["index"], sample["label"], sample["image"].shape) == (5, train_order[5][2], (3, 8, 8))
    train = next(iter(dm.train_dataloader()))
    assert train["image"].shape == (4, 3, 8, 8) and train["label"].dtype == torch.int64
    moved = dm.device_transform(train, training=True)
    assert moved["image"].dtype == torch.float32 and abs(float(moved["image"].mean())) < 3


def test_a_corrupt_sample_is_named_by_key_and_shard(shard_copy: Path) -> None:
    key = _corrupt_first_sample(shard_copy, "val")
    dm = _ready(shard_copy)
    with pytest.raises(SampleReadError, match=rf"{key} \(shard .*val/chunk-0-0\.bin\): not a readable image.* "
                                              "on_bad_sample='skip'"):
        list(dm.val_dataloader())


def test_a_corrupt_sample_is_skipped_counted_and_reported_on_request(shard_copy: Path) -> None:
    key = _corrupt_first_sample(shard_copy, "val")
    dm = _ready(shard_copy, on_bad_sample="skip")
    batches = [dm.on_before_batch_transfer(batch, 0) for batch in dm.val_dataloader()]
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(1, 8))
    assert all(SKIPPED_KEY not in b for b in batches)
    with pytest.warns(UserWarning, match=rf"(?s)skipped 1 unreadable image sample\(s\) in epoch 0 .*{key}"):
        dm.teardown()
    assert dm.skipped_report == {0: 1}


def test_a_checkpoint_of_other_data_is_noticed(shard_set: Path) -> None:
    dm = _ready(shard_set, strict_fingerprint=True)
    with pytest.raises(ValueError, match="fingerprint 0123, but the data now has fingerprint"):
        dm.load_state_dict({"data_fingerprint": "0123"})


def test_two_epochs_under_lightning_are_full_and_differ(shard_set: Path, tmp_path: Path) -> None:
    from tests.scripts.ddp_dali import Recorder

    dm = ShardedImageDataModule(str(shard_set), batch_size=4, num_workers=1, image_size=8)
    model = Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, num_sanity_val_steps=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 7 and model.notes == {"torch.float32"}
    orders = []
    for epoch in (0, 1):
        train = [b["index"] for b in model.seen["train"] if b["epoch"] == epoch]
        assert len(train) == 7 and all(len(b) == 4 for b in train)
        orders.append([i for b in train for i in b])
        assert len(set(orders[-1])) == 28
        assert sorted(i for b in model.seen["val"] if b["epoch"] == epoch for i in b["index"]) == list(range(8))
    assert orders[0] != orders[1]


# ----------------------------------------------------------------------------- DALI
def test_dali_decodes_the_same_stream_in_cpu_only_mode(shard_set: Path) -> None:
    pytest.importorskip("nvidia.dali")
    cpu, dali = _ready(shard_set), _ready(shard_set, decode="dali", num_threads=1)
    cpu_train = [b["index"].tolist() for b in cpu.train_dataloader()]
    loader = dali.train_dataloader()
    assert len(loader) == len(cpu_train) == 7
    batches = list(loader)
    assert [b["index"].tolist() for b in batches] == cpu_train, "one engine decides the order for both back ends"
    assert all(b["image"].dtype == torch.uint8 and b["image"].shape == (4, 3, 8, 8) for b in batches)
    val = list(dali.val_dataloader())
    assert sorted(i for b in val for i in b["index"].tolist()) == list(range(8))
    cpu_val = torch.cat([b["image"] for b in cpu.val_dataloader()]).float()
    dali_val = torch.cat([b["image"] for b in val]).float()
    assert (cpu_val - dali_val).abs().mean() < 8, "the same crops, up to resampling differences"


def test_dali_names_or_skips_a_corrupt_sample(shard_copy: Path) -> None:
    pytest.importorskip("nvidia.dali")
    key = _corrupt_first_sample(shard_copy, "val")
    with pytest.raises(SampleReadError, match=rf"{key} \(shard .*val/chunk-0-0\.bin\): not a readable image"):
        list(_ready(shard_copy, decode="dali", num_threads=1).val_dataloader())
    batches = list(_ready(shard_copy, decode="dali", num_threads=1, on_bad_sample="skip").val_dataloader())
    assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(1, 8))
    skipped = [where for b in batches for where, _ in b.get(SKIPPED_KEY, [])]
    assert skipped == [f"{key} (shard {shard_copy / 'val' / 'chunk-0-0.bin'})"]


# ----------------------------------------------------------------------------- audio
def test_audio_shards_give_the_audio_folder_contract(tmp_path: Path) -> None:
    pytest.importorskip("torchaudio")
    from stoker.datamodules.sharded_audio import ShardedAudioDataModule
    from tests.datamodules.test_audio_datamodule import write_audio_tree

    write_audio_tree(tmp_path / "audio", {"low": 6, "mid": 6, "high": 6})
    assert pack(tmp_path / "audio", str(tmp_path / "shards")) == 0
    dm = ShardedAudioDataModule(str(tmp_path / "shards"), batch_size=4, num_workers=0, sample_rate=8000,
                                clip_seconds=0.25, n_fft=256, win_length=200, hop_length=80, n_mels=16)
    assert dm.num_classes == 3
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["audio"].shape == (4, 2000) and batch["audio"].dtype == torch.float32
    spec = dm.device_transform(batch, training=True)["audio"]
    assert spec.shape[:3] == (4, 1, 16)
    assert sorted(i for b in dm.val_dataloader() for i in b["index"].tolist()) == list(range(dm.meta.splits["val"]))


# ----------------------------------------------------------------------------- kill and resume
@pytest.fixture
def resume_data(shard_set: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shard_set, tmp_path / "data" / "shards"))


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "workers"), [("cpu", 2), ("dali", 0)])
def test_one_rank_resumes_exactly(tmp_path: Path, resume_data: Path, variant: str, workers: int) -> None:
    if variant == "dali":
        pytest.importorskip("nvidia.dali")
    check_kill_and_resume(tmp_path, f"resume_shards:{variant}", resume_data, ranks=1, workers=workers)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(("variant", "workers"), [("cpu", 1), ("dali", 1)])
def test_two_ranks_resume_exactly(tmp_path: Path, resume_data: Path, variant: str, workers: int) -> None:
    if variant == "dali":
        pytest.importorskip("nvidia.dali")
    check_kill_and_resume(tmp_path, f"resume_shards:{variant}", resume_data, ranks=2, workers=workers)


@pytest.mark.slow
def test_an_epoch_end_checkpoint_resumes_on_the_next_epochs_order(tmp_path: Path, resume_data: Path) -> None:
    check_kill_and_resume(tmp_path, "resume_shards:cpu", resume_data, ranks=1, workers=2, at_epoch_end=True)


def test_dali_shard_batches_seed_each_epoch_from_the_trainers_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    # The wrapper counted its own iterations from 0, so a run resumed at epoch 3 replayed epoch 0's draws.
    from stoker.data.sources.shards import dali as shard_dali
    from stoker.seeds import derive_seed

    seeds: list[int] = []
    monkeypatch.setattr(shard_dali, "build_encoded_pipeline", lambda spec, seed: seeds.append(seed))
    epoch = {"now": 3}
    batches = shard_dali.ShardDALIBatches([], None, None, seed=5, rank=1,  # type: ignore[arg-type]
                                          epoch_of=lambda: epoch["now"])
    list(batches)
    epoch["now"] = 4
    list(batches)
    assert seeds == [derive_seed(5, "dali-shards", 1, 3, bits=31), derive_seed(5, "dali-shards", 1, 4, bits=31)]
