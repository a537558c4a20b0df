"""HFLanguageModelingDataModule: causal LM, SFT and MLM batches, packing counts, bad input, resume (no network)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from stoker.data.text.hf import load_tokenizer
from stoker.datamodules.language_model import HFLanguageModelingDataModule
from tests.conftest import REPO
from tests.datamodules.test_text_datamodule import TOKENIZER, rows, write_csv, write_jsonl

# The report author renders these; keep them stable.
PACKING_KEYS = {"mode", "capacity", "overflow", "attention", "examples", "pieces", "rows", "tokens", "fill_rate",
                "examples_split", "split_repeated_tokens", "examples_truncated", "tokens_truncated", "examples_dropped",
                "tokens_dropped", "skipped_rows", "prompt_only_rows", "assistant_truncated_rows", "batches_per_rank",
                "rows_left_out_per_epoch", "rows_repeated_per_epoch", "real_token_fraction"}
TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }}{% if m['role'] == 'assistant' %} [SEP]"
            "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<assistant> {% endif %}")
TAGGED = ("{% for m in messages %}<{{ m['role'] }}> {% if m['role'] == 'assistant' %}{% generation %}"
          "{{ m['content'] }} [SEP]{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}")


def make(tmp_path: Path, dataset: Path | str, world: tuple[int, int] | None = None, setup: bool = True,
         **kwargs: Any) -> Any:
    options: dict[str, Any] = {"eos_token": "[SEP]", "max_length": 32, "batch_size": 4, "num_workers": 0,
                               "attn_implementation": "sdpa", "val_fraction": 0.0, "cache_dir": str(tmp_path / "hf")}
    options.update(kwargs)
    if options.get("streaming"):
        options.pop("val_fraction")  # a stream is not split by fraction
    dm = HFLanguageModelingDataModule(str(dataset), TOKENIZER, **options)
    if world is not None:
        dm.world = lambda: world
    if setup:
        dm.prepare_data()
        dm.setup("fit")
    return dm


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "corpus.csv", rows(40))


def segments(batch: dict[str, torch.Tensor]) -> list[tuple[list[int], list[int]]]:
    """``(input_ids, labels)`` of every example in a packed (or padded) batch, from the restarting positions."""
    out = []
    real = batch["attention_mask"] if batch["attention_mask"].dim() == 2 else None
    positions = batch.get("position_ids")
    for r in range(batch["input_ids"].shape[0]):
        keep = int(real[r].sum()) if real is not None else batch["input_ids"].shape[1]
        ids, labels = batch["input_ids"][r, :keep].tolist(), batch["labels"][r, :keep].tolist()
        starts = [0] if positions is None else [i for i, p in enumerate(positions[r, :keep].tolist()) if p == 0]
        for a, b in zip(starts, [*starts[1:], keep]):
            out.append((ids[a:b], labels[a:b]))
    return out


def test_packed_batches_and_what_describe_reports(tmp_path: Path, corpus: Path) -> None:
    dm = make(tmp_path, corpus)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels", "position_ids"}
    assert batch["input_ids"].shape == (4, 32)
    on_device = dm.device_transform(dict(batch), training=True)
    assert on_device["attention_mask"].shape == (4, 1, 32, 32)
    assert dm.token_counts(batch) == dm.token_counts(on_device) == (int(batch["attention_mask"].sum()), 128)
    for ids, labels in segments(batch):
        assert labels[0] == -100 and labels[1:] == ids[1:], "the first label of every example is -100"
    report = dm.describe()["packing"]
    assert set(report) == PACKING_KEYS
    assert report["fill_rate"] > 0.9 and report["rows"] < report["examples"] and report["attention"] == "mask"
    assert dm.describe()["task"] == "causal_lm" and dm.describe()["tokenizer_revision"] is None


@pytest.mark.parametrize("packing", ["bfd", "padding_free", "none"])
def test_every_token_is_trained_exactly_once_per_epoch(tmp_path: Path, corpus: Path, packing: str) -> None:
    dm = make(tmp_path, corpus, packing=packing, max_length=24, max_tokens_per_batch=96)
    report = dm.describe()["packing"]
    assert report["examples_split"] > 0 and report["rows_left_out_per_epoch"] == 0
    trained = Counter()
    for batch in dm.train_dataloader():
        for _, labels in segments(batch):
            assert labels[0] == -100
            trained.update(t for t in labels if t != -100)
    examples = dm.datasets["train"].examples["input_ids"]
    assert trained == Counter(t for ids in examples for t in ids[1:]), "each target once: no drop, no repeat"
    dropped = make(tmp_path, corpus, packing=packing, max_length=24, overflow="drop").describe()["packing"]
    assert dropped["examples_dropped"] == report["examples_split"] and dropped["tokens_dropped"] > 0


@pytest.mark.parametrize("template", [TEMPLATE, TAGGED], ids=["rendered-per-turn", "generation-tags"])
def test_sft_labels_cover_exactly_the_assistant_spans(tmp_path: Path, template: str) -> None:
    chat = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a fox"},
            {"role": "assistant", "content": "a quick brown animal"}, {"role": "user", "content": "and a dog"},
            {"role": "assistant", "content": "a lazy one"}]
    long_chat = [{"role": "user", "content": "tell " * 80}, {"role": "assistant", "content": "no"}]
    data = write_jsonl(tmp_path / "chats.jsonl", [{"messages": chat}, {"messages": chat[:2]},
                                                  {"messages": long_chat}])
    dm = make(tmp_path, data, task="sft", chat_template=template, packing="none", max_length=64, batch_size=1)
    batch = next(iter(dm.train_dataloader()))
    ((ids, labels),) = segments(batch)
    tokenizer = load_tokenizer(TOKENIZER)
    expected = [t for answer in ("a quick brown animal", "a lazy one")
                for t in tokenizer(answer + " [SEP]", add_special_tokens=False)["input_ids"]]
    assert [t for t in labels if t != -100] == expected
    kept = [i for i, t in enumerate(labels) if t != -100]
    assert [ids[i] for i in kept] == expected, "labels are the tokens themselves, at their own positions"
    report = dm.describe()["packing"]
    assert report["prompt_only_rows"] == 1 and report["assistant_truncated_rows"] == 1


def test_bad_input_is_an_error_or_a_counted_skip(tmp_path: Path) -> None:
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in ["one doc", None, "two docs", "  "] * 5])
    with pytest.raises(ValueError, match=r"10 of 20 rows .* have missing or empty text, more than allowed"):
        make(tmp_path, docs)
    dm = make(tmp_path, docs, max_bad_fraction=0.5)
    assert dm.describe()["packing"]["skipped_rows"] == {"missing text": 5, "empty text": 5}
    with pytest.raises(ValueError, match="has no EOS token.*eos_token='\\[SEP\\]'"):
        make(tmp_path, docs, eos_token=None, max_bad_fraction=0.5)
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    chats = write_jsonl(tmp_path / "chats.jsonl", [good, good, {"messages": [{"role": "human", "content": "hi"}]},
                                                   {"messages": [{"role": "user"}, {"role": "assistant",
                                                                                    "content": "x"}]}])
    with pytest.raises(ValueError, match=r"row 2 \(unknown role\), row 3 \(missing content\)"):
        make(tmp_path, chats, task="sft", chat_template=TEMPLATE)
    with pytest.raises(ValueError, match="has no chat template.*chat_template="):
        make(tmp_path, chats, task="sft")
    numbers = write_jsonl(tmp_path / "numbers.jsonl", [{"text": "fine"}, {"text": 3}])
    with pytest.raises(ValueError, match="row 1, field 'text': expected text"):
        make(tmp_path, numbers)
    with pytest.raises(ValueError, match="packing must be one of"):
        make(tmp_path, docs, packing="greedy", setup=False)
    with pytest.raises(ValueError, match="cannot keep examples apart with attention implementation 'paged"):
        make(tmp_path, docs, attn_implementation="paged|sdpa", max_bad_fraction=0.5)
    assert make(tmp_path, docs, attn_implementation="paged|sdpa", packing="none", max_bad_fraction=0.5).attention \
        == "none", "without packing, any attention"


def test_masking_is_seeded_resumable_and_new_every_epoch(tmp_path: Path, corpus: Path) -> None:
    options = {"task": "mlm", "eos_token": None, "num_workers": 2, "persistent_workers": True}
    loader = make(tmp_path, corpus, **options).train_dataloader()
    epochs = []
    for epoch in range(2):  # Lightning calls set_epoch; the masks follow the sampler's epoch into the workers
        loader.sampler.set_epoch(epoch)
        epochs.append({tuple(b["input_ids"].flatten().tolist()): b["labels"] for b in loader})
    assert sorted(epochs[0]) != sorted(epochs[1]), "a new mask every epoch"
    epochs = [list(e.values()) for e in epochs]
    loader.sampler.set_epoch(0)
    epochs[0] = [b["labels"] for b in loader]
    first = make(tmp_path, corpus, **options).train_dataloader()
    iterator = iter(first)
    head = [next(iterator)["labels"] for _ in range(2)]
    state = first.state_dict()
    del iterator, first
    resumed = make(tmp_path, corpus, **options).train_dataloader()
    resumed.load_state_dict(state)
    rest = [b["labels"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(head + rest, epochs[0])) and len(head + rest) == len(epochs[0])
    masked = torch.cat([labels.flatten() for labels in epochs[0]])
    assert 0.05 < float((masked != -100).float().mean()) < 0.25, "about mlm_probability of the tokens"


@pytest.mark.parametrize("budget", [None, 128])
def test_injected_ranks_get_equal_steps_over_disjoint_rows(tmp_path: Path, corpus: Path, budget: int | None) -> None:
    seen = []
    for rank in range(2):
        dm = make(tmp_path, corpus, world=(2, rank), packing="none", max_tokens_per_batch=budget)
        batches = list(dm.train_dataloader())
        assert len(batches) == len(dm.train_dataloader())
        seen.append(batches)
    assert len(seen[0]) == len(seen[1]) > 0
    keys = [{tuple(ids) for b in batches for ids, _ in segments(b)} for batches in seen]
    assert not keys[0] & keys[1]


def test_streaming_packs_on_the_fly_with_equal_batches_and_exact_resume(tmp_path: Path) -> None:
    from stoker.datamodules.language_model_stream import HFLanguageModelingStreamDataModule

    for part in range(4):
        write_csv(tmp_path / "s" / f"part{part}.csv", rows(16, offset=100 * part, seed=part))
    options = {"streaming": True, "shuffle_buffer": 8, "num_workers": 2, "persistent_workers": True}
    dm = make(tmp_path, tmp_path / "s", **options)
    assert isinstance(dm, HFLanguageModelingStreamDataModule)
    loader = dm.train_dataloader()
    full = [[b["input_ids"] for b in loader] for _ in range(2)]
    assert len(full[0]) == dm.datasets["train"].num_batches
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(*full)), "reshuffled every epoch"
    first = make(tmp_path, tmp_path / "s", **options).train_dataloader()
    iterator = iter(first)
    head = [next(iterator)["input_ids"] for _ in range(3)]
    state = first.state_dict()
    del iterator, first
    resumed = make(tmp_path, tmp_path / "s", **options).train_dataloader()
    resumed.load_state_dict(state)
    rest = [b["input_ids"] for b in resumed]
    assert all(torch.equal(a, b) for a, b in zip(head + rest, full[0])) and len(head + rest) == len(full[0])
    counts = [len(list(make(tmp_path, tmp_path / "s", world=(2, r), streaming=True).train_dataloader()))
              for r in range(2)]
    assert counts[0] == counts[1] > 0
    assert set(dm.describe()["packing"]) >= {"mode", "rows_per_epoch", "batches_per_rank", "repeated_examples"}
    with pytest.raises(ValueError, match="a streamed token budget needs packing='bfd'"):
        make(tmp_path, tmp_path / "s", streaming=True, packing="none", max_tokens_per_batch=64, setup=False)


def test_the_causal_lm_recipe_runs_one_step(tmp_path: Path) -> None:
    from stoker.cli import run_cli

    cli = run_cli(["fit", "--config", str(REPO / "recipes" / "causal_lm.yaml"), "--trainer.fast_dev_run=true",
                   f"--data.init_args.root={tmp_path / 'docstrings'}", "--data.init_args.num_workers=0",
                   f"--data.init_args.cache_dir={tmp_path / 'hf'}"])
    assert cli.trainer.state.finished and cli.datamodule.describe()["packing"]["fill_rate"] > 0.95


@pytest.mark.slow
@pytest.mark.ddp
def test_two_processes_get_equal_steps_and_disjoint_complete_rows(tmp_path: Path, corpus: Path) -> None:
    from tests.conftest import run_script

    for part in range(2):
        write_csv(tmp_path / "s" / f"part{part}.csv", rows(20, offset=100 * part, seed=part))
    result = run_script(REPO / "tests" / "scripts" / "ddp_lm.py", str(corpus), str(tmp_path / "s"),
                        str(tmp_path / "hf"))
    for name in ("packed", "budget", "stream"):
        ranks = result[name]["ranks"]
        assert len(ranks[0]) == len(ranks[1]) > 0, f"{name}: equal steps on both ranks"
        seen = [{row for batch in r for row in batch} for r in ranks]
        assert not seen[0] & seen[1], f"{name}: disjoint"
        if name != "stream":
            everything = set(result[name]["all_rows"])
            assert seen[0] | seen[1] <= everything
            assert len(everything - (seen[0] | seen[1])) == result[name]["left_out"], f"{name}: complete"


def test_a_stream_skips_and_counts_chats_truncated_before_their_answer(tmp_path: Path) -> None:
    # Only the map-style module dropped them; streamed, such rows trained with no target at all.
    chat = [{"role": "user", "content": "what is a fox"}, {"role": "assistant", "content": "a quick brown animal"}]
    long_chat = [{"role": "user", "content": "tell " * 80}, {"role": "assistant", "content": "no"}]
    data = write_jsonl(tmp_path / "s" / "chats.jsonl", [{"messages": chat}, {"messages": long_chat}] * 4)
    dm = make(tmp_path, data.parent, task="sft", chat_template=TEMPLATE, packing="none", max_length=64,
              batch_size=1, streaming=True, rows_per_epoch=8)
    batches = list(dm.train_dataloader())
    assert batches and all((b["labels"] != -100).any() for b in batches), "every row has something to learn"
    assert dm.datasets["train"].skipped.get("assistant truncated", 0) >= 1


def test_a_number_in_one_chat_does_not_drop_the_others(tmp_path: Path) -> None:
    # One row's integer content once changed how the whole column decoded, and valid chats were dropped as
    # "missing content". Only the row with the number is skipped, counted, and said to hold no text.
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    number = {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": 6}]}
    chats = write_jsonl(tmp_path / "mixed.jsonl", [good, number, good, good])
    dm = make(tmp_path, chats, task="sft", chat_template=TEMPLATE, packing="none", max_length=64, batch_size=1,
              max_bad_fraction=0.5)
    report = dm.describe()["packing"]
    assert report["skipped_rows"] == {"content not text": 1}
    assert report["examples"] == 3
