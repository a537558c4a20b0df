"""Text and language-model sources as users have them: Hub-named split files, ``data/`` layouts, saved datasets.

A source that brings splits keeps them (never merged and re-split); ``val_fraction`` carves validation out of
train only when there is none; ``dataset=`` still works, with a FutureWarning, for one release.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from stoker.data.text import hf
from stoker.data.text.files import local_data_files, source_splits, split_origin, text_source_kind
from stoker.datamodules.text import HFTextDataModule
from stoker.datamodules.text_stream import HFTextStreamDataModule
from tests.datamodules import test_language_model as lm
from tests.datamodules.test_text_datamodule import TOKENIZER, keys, make, ready, rows, write_csv

SIZES = {"train": 24, "validation": 8, "test": 6}
OURS = {"train": 24, "val": 8, "test": 6}


def write_parquet(path: Path, data: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(data), path)
    return path


def hub_folder(root: Path, *, under_data: bool = False) -> Path:
    """A folder laid out as a Hub dataset repository: ``<split>-00000-of-00001.parquet``, maybe under ``data/``."""
    where = root / "data" if under_data else root
    for i, (split, n) in enumerate(SIZES.items()):
        write_parquet(where / f"{split}-00000-of-00001.parquet", rows(n, offset=1000 * i, seed=i))
    if under_data:
        (root / "README.md").write_text("---\nconfigs: [default]\n---\n")
    return root


def saved_dict(root: Path, splits: dict[str, int]) -> Path:
    import datasets

    datasets.DatasetDict({split: datasets.Dataset.from_list(rows(n, offset=1000 * i, seed=i))
                          for i, (split, n) in enumerate(splits.items())}).save_to_disk(str(root))
    return root


@pytest.mark.parametrize("under_data", [False, True])
def test_hub_named_split_files_keep_their_splits(tmp_path: Path, under_data: bool,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    # Before, only exact stems (train.csv) named splits: these three files were read as one table and re-split
    # 90/10, so the given validation and test rows trained.
    folder = hub_folder(tmp_path / "hub", under_data=under_data)
    with caplog.at_level("INFO"):
        dm = ready(make(tmp_path, folder, val_fraction=0.25, test_fraction=0.25))
    assert dm.split_sizes() == OURS, "given splits are the splits: nothing carved, nothing merged"
    assert "splits as the source names them: train, val, test" in caplog.text
    info = dm.describe()
    assert info["source"] == str(folder) and info["source_kind"] == "table" and info["split_sizes"] == OURS
    assert info["split_notes"] == ["splits as the source names them: train, val, test"]
    val = {k for b in dm.val_dataloader() for k in keys(b)}
    assert len(val) == 8 and not val & {k for b in dm.train_dataloader() for k in keys(b)}


def test_files_that_name_no_split_are_the_training_data_unless_a_train_file_exists(tmp_path: Path) -> None:
    for i in range(2):
        write_csv(tmp_path / "pool" / f"part{i}.csv", rows(12, offset=100 * i))
    builder, files = local_data_files(str(tmp_path / "pool")) or ("", {})
    assert builder == "csv" and list(files) == ["train"] and len(files["train"]) == 2
    write_csv(tmp_path / "pool" / "validation.csv", rows(4, offset=500))
    files = (local_data_files(str(tmp_path / "pool")) or ("", {}))[1]
    assert {split: len(f) for split, f in files.items()} == {"train": 2, "val": 1}
    write_csv(tmp_path / "pool" / "train.csv", rows(4, offset=700))
    with pytest.raises(ValueError, match=r"name their splits, but 2 file\(s\) name none .* rename them"):
        local_data_files(str(tmp_path / "pool"))


def test_the_language_model_keeps_the_given_splits(tmp_path: Path) -> None:
    folder = hub_folder(tmp_path / "hub")
    dm = lm.make(tmp_path, folder, val_fraction=0.25)
    assert dm.describe()["split_sizes"] == OURS and dm.describe()["source_kind"] == "table"
    assert dm.split_notes == ["splits as the source names them: train, val, test"]
    pooled = lm.make(tmp_path, write_csv(tmp_path / "corpus.csv", rows(40)), val_fraction=0.25)
    assert pooled.split_notes == ["val carved out of train (val_fraction=0.25)"]
    assert pooled.describe()["split_sizes"] == {"train": 30, "val": 10}


def test_the_text_stream_keeps_the_given_splits(tmp_path: Path) -> None:
    folder = hub_folder(tmp_path / "hub")
    dm = make(tmp_path, folder, streaming=True, shuffle_buffer=0)
    assert isinstance(dm, HFTextStreamDataModule)
    dm.setup("fit")
    assert dm.describe()["split_sizes"] == OURS and dm.split_notes == [split_origin(["train", "val", "test"], {})]
    assert len([k for b in dm.val_dataloader() for k in keys(b)]) == 8
    assert len(list(dm.train_dataloader())) == 24 // 4


def test_a_saved_dataset_dict_loads_with_its_splits(tmp_path: Path) -> None:
    folder = saved_dict(tmp_path / "saved", SIZES)
    dm = ready(make(tmp_path, folder, val_fraction=0.25))
    assert dm.split_sizes() == OURS and dm.describe()["source_kind"] == "hf" == text_source_kind(str(folder))
    assert dm.class_names == ["neg", "pos"]
    assert not list(folder.rglob("cache-*.arrow")), "tokenized tables go to cache_dir, never into the user's folder"
    calls = hf.TOKENIZE_CALLS[0]
    ready(make(tmp_path, folder, val_fraction=0.25))
    assert hf.TOKENIZE_CALLS[0] == calls, "a second setup reads the tokenization cache"
    assert lm.make(tmp_path, folder, val_fraction=0.25).describe()["split_sizes"] == OURS
    stream = make(tmp_path, folder, streaming=True, shuffle_buffer=0)  # to_iterable_dataset, rows scanned at setup
    stream.setup("fit")
    assert stream.split_sizes() == OURS and len([k for b in stream.val_dataloader() for k in keys(b)]) == 8


def test_a_saved_dataset_is_one_pool_split_by_val_fraction(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list(rows(40)).save_to_disk(str(tmp_path / "pool"))
    dm = ready(make(tmp_path, tmp_path / "pool", val_fraction=0.25))
    assert dm.split_sizes() == {"train": 30, "val": 10}
    assert dm.split_notes == ["val carved out of train (val_fraction=0.25)"]


def test_splits_that_are_none_of_train_validation_test_are_left_out_with_a_warning(tmp_path: Path) -> None:
    folder = saved_dict(tmp_path / "saved", {"train": 24, "test": 6, "unsupervised": 10})
    with pytest.warns(UserWarning, match=r"left out the split\(s\) \['unsupervised'\]"):
        dm = ready(make(tmp_path, folder, val_fraction=0.25))
    assert dm.split_sizes() == {"train": 18, "val": 6, "test": 6}, "val carved out of train, never of 'unsupervised'"
    assert dm.split_notes == ["splits as the source names them: train, test; val carved out of train "
                              "(val_fraction=0.25)"]
    assert source_splits(["train", "validation_matched", "test_matched"], source="mnli") == (
        {"train": "train"}, ["validation_matched", "test_matched"])
    assert source_splits(["full"], source="x") == ({"full": "train"}, [])
    with pytest.raises(ValueError, match="two splits that mean 'val': 'validation' and 'dev'"):
        source_splits(["train", "validation", "dev"], source="x")
    with pytest.raises(ValueError, match="has no training split"):
        source_splits(["validation", "test"], source="x")


def test_dataset_is_a_deprecated_name_for_source(tmp_path: Path) -> None:
    path = str(write_csv(tmp_path / "data.csv", rows(20)))
    cache = str(tmp_path / "hf-cache")
    with pytest.warns(FutureWarning, match="dataset=.* is deprecated .* use source="):
        dm = HFTextDataModule(dataset=path, tokenizer=TOKENIZER, cache_dir=cache, batch_size=4, num_workers=0)
    assert dm.source == path and dm.hparams["source"] == path and dm.hparams["dataset"] is None
    assert dm.describe()["source"] == path and dm.num_classes == 2
    with pytest.warns(FutureWarning, match="use source="):
        stream = HFTextDataModule(dataset=path, tokenizer=TOKENIZER, streaming=True, cache_dir=cache)
    assert isinstance(stream, HFTextStreamDataModule) and stream.source == path
    with pytest.warns(FutureWarning, match="use source="):
        model = lm.HFLanguageModelingDataModule(dataset=path, tokenizer=TOKENIZER, eos_token="[SEP]")
    assert model.source == path and model.hparams["source"] == path
    with pytest.raises(ValueError, match="HFTextDataModule needs source="):
        HFTextDataModule(tokenizer=TOKENIZER)
    with pytest.raises(ValueError, match="needs tokenizer="):
        HFTextDataModule(path)
    with pytest.raises(ValueError, match="give source= only"), pytest.warns(FutureWarning):
        HFTextDataModule(path, TOKENIZER, dataset=str(tmp_path / "other.csv"))
