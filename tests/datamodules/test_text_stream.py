"""HFTextStreamDataModule and the streams under it: equal batches per rank, block shuffle, exact resume with workers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from stoker.data.text.streams import FixedLengthStream, StreamPass
from stoker.datamodules.text import HFTextDataModule
from stoker.datamodules.text_stream import HFTextStreamDataModule
from stoker.samplers import ShardPlan
from tests.datamodules.test_text_datamodule import keys, make, rows, write_csv


def stream(tmp_path: Path, dataset: Path, world: tuple[int, int] | None = None, **kwargs: Any) -> Any:
    dm = make(tmp_path, dataset, streaming=True, **kwargs)
    if world is not None:
        dm.world = lambda: world
    dm.setup("fit")
    return dm


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """Four training files of 24 rows (one shard each) and a validation file of 9."""
    for i in range(4):
        write_csv(tmp_path / "s" / f"part{i}.csv", rows(24, offset=100 * i, seed=i))
    write_csv(tmp_path / "s" / "validation.csv", rows(9, offset=1000, seed=9))
    return tmp_path / "s"


def test_streaming_true_builds_the_stream_module(tmp_path: Path, shards: Path) -> None:
    dm = make(tmp_path, shards, streaming=True)
    assert isinstance(dm, HFTextStreamDataModule) and not isinstance(dm, HFTextDataModule)
    with pytest.warns(UserWarning, match=r"streaming=True ignores the map-style settings \{'val_fraction': 0.3\}"):
        make(tmp_path, shards, streaming=True, val_fraction=0.3, bucket_by_length=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bucket'"):
        make(tmp_path, shards, streaming=True, bucket=True)
    with pytest.raises(ValueError, match="train_labels\\(\\) needs a map-style dataset"):
        dm.train_labels()


def test_fixed_batches_and_every_validation_row_once(tmp_path: Path, shards: Path) -> None:
    dm = stream(tmp_path, shards, shuffle_buffer=0)
    train = list(dm.train_dataloader())
    assert len(train) == 96 // 4 and all(b["input_ids"].shape[0] == 4 for b in train)
    assert set(train[0]) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    val = [k for b in dm.val_dataloader() for k in keys(b)]
    assert len(val) == len(set(val)) == 9, "evaluation reads the split once: no padding, no repeats"
    info = dm.describe()
    assert info["streaming"] is True and info["split_sizes"] == {"train": 96, "val": 9}
    assert info["train_batches_per_rank"] == 24 and info["repeated_rows"] == 0


def test_shards_and_blocks_reshuffle_every_epoch(tmp_path: Path, shards: Path) -> None:
    dm = stream(tmp_path, shards, shuffle_buffer=8)
    loader = dm.train_dataloader()
    epochs = [[k for b in loader for k in keys(b)] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and len(set(epochs[0])) == 96, "every row once per epoch"
    assert epochs[0] != epochs[1]
    unshuffled = [k for b in stream(tmp_path, shards, shuffle_buffer=0).train_dataloader() for k in keys(b)]
    assert epochs[0] != unshuffled and sorted(epochs[0]) == sorted(unshuffled)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop", [3, 13])  # mid-block and past a block boundary, mid-epoch
def test_resume_is_exact_with_workers_and_the_next_epoch_matches(tmp_path: Path, shards: Path, workers: int,
                                                                 stop: int) -> None:
    options = {"shuffle_buffer": 8, "num_workers": workers, "persistent_workers": True}
    loader = stream(tmp_path, shards, **options).train_dataloader()
    uninterrupted = [[keys(b) for b in loader] for _ in range(2)]
    first = stream(tmp_path, shards, **options).train_dataloader()
    iterator = iter(first)
    consumed = [keys(next(iterator)) for _ in range(stop)]
    state = first.state_dict()
    del iterator, first
    resumed = stream(tmp_path, shards, **options).train_dataloader()
    resumed.load_state_dict(state)
    assert consumed + [keys(b) for b in resumed] == uninterrupted[0]
    assert [keys(b) for b in resumed] == uninterrupted[1], "the epoch after the resumed one is the same epoch"


def test_a_worker_that_had_finished_its_share_waits_for_the_next_epoch(tmp_path: Path, shards: Path) -> None:
    # 96 rows in batches of 32: 3 batches, 2 for worker 0 and 1 for worker 1. After two batches worker 1 is
    # done and worker 0 owes one: the resumed epoch must give exactly that one.
    options = {"shuffle_buffer": 8, "num_workers": 2, "persistent_workers": True, "batch_size": 32}
    loader = stream(tmp_path, shards, **options).train_dataloader()
    uninterrupted = [[keys(b) for b in loader] for _ in range(2)]
    assert len(uninterrupted[0]) == 3
    first = stream(tmp_path, shards, **options).train_dataloader()
    iterator = iter(first)
    consumed = [keys(next(iterator)) for _ in range(2)]
    state = first.state_dict()
    del iterator, first
    resumed = stream(tmp_path, shards, **options).train_dataloader()
    resumed.load_state_dict(state)
    rest = [keys(b) for b in resumed]
    assert consumed + rest == uninterrupted[0], "worker 1 must not start its next epoch early"
    assert [keys(b) for b in resumed] == uninterrupted[1]


def test_a_state_saved_at_the_end_of_an_epoch_resumes_at_the_next(tmp_path: Path, shards: Path) -> None:
    loader = stream(tmp_path, shards, shuffle_buffer=8).train_dataloader()
    epochs = [[keys(b) for b in loader] for _ in range(2)]
    ended = stream(tmp_path, shards, shuffle_buffer=8).train_dataloader()
    iterator = iter(ended)
    for _ in range(24):
        next(iterator)  # the epoch's last batch, not yet StopIteration: a checkpoint at the last step
    resumed = stream(tmp_path, shards, shuffle_buffer=8).train_dataloader()
    resumed.load_state_dict(ended.state_dict())
    assert [keys(b) for b in resumed] == epochs[1]


def test_injected_ranks_get_equal_disjoint_batches_and_validation_once(tmp_path: Path, shards: Path) -> None:
    train, val = [], Counter()
    for rank in range(3):  # 4 files, 3 ranks: datasets deals every 3rd row, so the shares are uneven
        dm = stream(tmp_path, shards, world=(3, rank), shuffle_buffer=8)
        train.append([k for b in dm.train_dataloader() for k in keys(b)])
        val.update(k for b in dm.val_dataloader() for k in keys(b))
    plan = ShardPlan(96, 3, mode="cut", batch_size=4, drop_last=True)
    assert [len(t) for t in train] == [plan.num_batches(r) * 4 for r in range(3)] == [32, 32, 32]
    flat = [k for t in train for k in t]
    assert len(flat) == len(set(flat)) == 96
    assert len(val) == 9 and set(val.values()) == {1}


def test_uneven_shards_still_give_every_rank_the_same_count(tmp_path: Path) -> None:
    from datasets import Dataset, concatenate_datasets
    from datasets.distributed import split_dataset_by_node

    # Two shards of 5 and 25 rows: with 2 ranks each rank gets one whole shard.
    data = Dataset.from_dict({"x": list(range(30))})
    source = concatenate_datasets([data.select(range(5)).to_iterable_dataset(num_shards=1),
                                   data.select(range(5, 30)).to_iterable_dataset(num_shards=1)])
    per_rank = []
    for rank in range(2):
        node = split_dataset_by_node(source, rank=rank, world_size=2)
        batches = ShardPlan(30, 2, mode="cut", batch_size=4, drop_last=True).num_batches(rank)
        fixed = FixedLengthStream(node, num_batches=batches, batch_size=4, columns=["x"], rank=rank, block_size=4)
        per_rank.append(([row["x"] for row in fixed], fixed.repeated))
    assert [len(r[0]) for r in per_rank] == [12, 12]
    assert sorted(r[1] for r in per_rank) == [0, 7], "the short shard repeats, and says so"
    short = next(r[0] for r in per_rank if r[1])
    assert sorted(set(short)) == [0, 1, 2, 3, 4] or sorted(set(short)) == list(range(5, 30))


def test_resume_inside_a_repeated_pass_is_exact() -> None:
    from datasets import Dataset

    source = Dataset.from_dict({"x": list(range(10)), "problem": [""] * 9 + ["empty text"]}).to_iterable_dataset()

    def fresh() -> FixedLengthStream:
        return FixedLengthStream(source, num_batches=6, batch_size=4, columns=["x"], seed=3, block_size=4)

    full = [row["x"] for row in fresh()]
    assert len(full) == 24 and sorted(set(full)) == list(range(9)), "the empty row is skipped, the rest repeats"
    for stop in (5, 11, 19):
        first = fresh()
        iterator = iter(first)
        head = [next(iterator)["x"] for _ in range(stop)]
        resumed = fresh()
        resumed.load_state_dict(first.state_dict())
        assert head + [row["x"] for row in resumed] == full
    counted = fresh()
    list(counted)
    assert counted.skipped == {"empty text": 2} and counted.repeated == 15


def test_a_state_from_other_settings_is_refused() -> None:
    from datasets import Dataset

    source = Dataset.from_dict({"x": list(range(8))}).to_iterable_dataset()
    saved = FixedLengthStream(source, num_batches=2, batch_size=4, columns=["x"], seed=1).state_dict()
    other = FixedLengthStream(source, num_batches=2, batch_size=4, columns=["x"], seed=2)
    with pytest.raises(ValueError, match="the checkpoint has seed=1, this run has seed=2"):
        other.load_state_dict(saved)
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        FixedLengthStream(source, num_batches=2, batch_size=4, columns=["x"], block_size=0)


def test_skipped_rows_are_counted_reported_and_limited(tmp_path: Path) -> None:
    data = rows(40)
    data[2]["text"], data[9]["label"] = "", ""
    write_csv(tmp_path / "bad" / "train.csv", data)
    write_csv(tmp_path / "bad" / "validation.csv", rows(6, offset=500))
    with pytest.raises(ValueError, match=r"2 of 40 rows of the train split .* First ones: .*train.csv, row 2 "
                                         r"\(missing text\), .*train.csv, row 9 \(missing label\)\. Clean or remove"):
        stream(tmp_path, tmp_path / "bad")  # counted by the pyarrow scan at setup: before any training
    with pytest.warns(UserWarning, match="dropped 2 of 40 rows of the train split"):
        dm = stream(tmp_path, tmp_path / "bad", max_bad_fraction=0.1, shuffle_buffer=0)
    assert dm.describe()["split_sizes"]["train"] == 38 and len(list(dm.train_dataloader())) == 38 // 4
    assert dm.describe()["skipped_rows"]["train"] == {"missing text": 1, "missing label": 1}
    with pytest.warns(UserWarning, match=r"rank 0: the train stream of .* skipped 2 row\(s\) in its last epoch"):
        dm.teardown("fit")


def test_stream_pass_counts_what_it_skips() -> None:
    from datasets import Dataset

    source = Dataset.from_dict({"x": [1, 2, 3], "problem": ["", "unknown label", ""]}).to_iterable_dataset()
    evaluation = StreamPass(source, columns=["x"])
    assert [r["x"] for r in evaluation] == [1, 3] and evaluation.skipped == {"unknown label": 1}
    assert [r["x"] for r in evaluation] == [1, 3] and evaluation.skipped == {"unknown label": 1}, "per pass"


def test_a_training_split_too_small_for_a_batch_per_rank(tmp_path: Path) -> None:
    write_csv(tmp_path / "tiny" / "train.csv", rows(6))
    with pytest.raises(ValueError, match=r"6 usable rows, which gives each of 2 rank\(s\) no whole batch of "
                                         r"batch_size=4; lower batch_size \(at most 3\)"):
        stream(tmp_path, tmp_path / "tiny", world=(2, 0))
    assert torch.utils.data.get_worker_info() is None
