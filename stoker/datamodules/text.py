"""Hugging Face text classification, map-style: tokenize once per node, pad dynamically, bucket by length.

:class:`HFTextBase` holds what map-style and streamed text share (labels, the tokenizer, column and
bad-row checks, the token-length report, ``describe``); :class:`HFTextDataModule` is the map-style
DataModule, and ``HFTextDataModule(..., streaming=True)`` builds the streaming one,
:class:`~stoker.datamodules.text_stream.HFTextStreamDataModule`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.datasets_compat import fingerprint_of
from stoker.data.loader import WorkerType
from stoker.data.splits import stratified_split, validate_fractions
from stoker.data.text import hf as td
from stoker.data.text import labels as text_labels
from stoker.data.text.lengths import length_report
from stoker.datamodules._arguments import as_sequence
from stoker.datamodules.base import StokerDataModule
from stoker.datamodules.lm_base import StreamingSwitch, TokenizerMixin, given_source
from stoker.samplers.length_grouped import LengthGroupedBatchSampler
from stoker.samplers.token_budget import TokenBudgetBatchSampler

Padding = Literal["dynamic", "max_length"]
EmptyTextPolicy = Literal["drop", "error"]
_FORMAT_VERSION = 2  # bump when Tokenize's output changes, so old caches are not reused


class HFTextBase(TokenizerMixin, StokerDataModule):
    """What every Hugging Face text DataModule shares; subclasses say how splits are read and loaded.

    Batches are ``{"input_ids", "attention_mask"[, "token_type_ids"], "labels"}`` (int64), so
    ``model(**batch)`` works with transformers models. Rows with missing or empty text or an unusable
    label are kept out and counted (:attr:`dropped`); more than ``max_bad_fraction`` of a split is an
    error before training. See :class:`HFTextDataModule` for the arguments.
    """

    input_key = "input_ids"
    target_key = "labels"
    mega_batch_factor = 50  # for the bucketing estimate in the length report; map-style makes it an argument

    def __init__(self, source: str, tokenizer: str, *, subset: str | None, revision: str | None,
                 tokenizer_revision: str | None, text_field: str | list[str], label_field: str,
                 class_names: list[str] | None, max_length: int, padding: Padding, pad_multiple: int,
                 empty_text: EmptyTextPolicy, max_bad_fraction: float, cache_dir: str | None,
                 batch_size: int, num_workers: int | None, worker_type: WorkerType, pin_memory: bool | None,
                 persistent_workers: bool,
                 prefetch_factor: int, seed: int) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        self.text_fields = as_sequence(text_field)
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"text_field must name one column or a pair of columns, got {text_field!r}")
        if padding not in ("dynamic", "max_length"):
            raise ValueError(f"padding must be 'dynamic' or 'max_length', got {padding!r}")
        if empty_text not in ("drop", "error"):
            raise ValueError(f"empty_text must be 'drop' or 'error', got {empty_text!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {max_length}")
        self.source, self.tokenizer_name, self.subset, self.revision = source, tokenizer, subset, revision
        self.source_kind = td.text_source_kind(source)
        self.split_notes: list[str] = []  # where the splits came from (setup says it once)
        self.tokenizer_revision = tokenizer_revision
        self.label_field, self.max_length, self.padding = label_field, max_length, padding
        self.pad_multiple = pad_multiple
        self.max_tokens_per_batch: int | None = None  # map-style makes it an argument
        self.empty_text, self.max_bad_fraction, self.cache_dir = empty_text, max_bad_fraction, cache_dir
        self._explicit_classes = list(class_names) if class_names is not None else None
        self._labels: tuple[list[str], dict[str, int] | None] | None = None
        self._tokenizer: Any = None
        self.datasets: dict[str, Any] = {}
        self.dropped: dict[str, int] = {}
        self.token_stats: dict[str, float] = {}

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._labels is None:
            names, values = text_labels.label_values(self.source, self.label_field, subset=self.subset,
                                                     revision=self.revision, cache_dir=self.cache_dir,
                                                     text_fields=self.text_fields)
            self._labels = text_labels.label_mapping(names, values, self._explicit_classes)
        return self._labels[0]

    @property
    def label_to_id(self) -> dict[str, int] | None:
        """Raw label value (as a string) to class id; ``None`` when the column is a ClassLabel."""
        self.class_names  # noqa: B018 - resolves the mapping
        assert self._labels is not None
        return self._labels[1]

    @property
    def fields(self) -> list[str]:
        """The columns read from the data: the text column(s), then the label column."""
        return [*self.text_fields, self.label_field]

    @property
    def model_columns(self) -> list[str]:
        """The columns of a batch: the tokenizer's model inputs and ``labels``."""
        return [c for c in self.tokenizer.model_input_names if c != "special_tokens_mask"] + ["labels"]

    def token_counts(self, batch: Any) -> tuple[int, int]:
        """``(real tokens, tokens fed to the model)`` from the attention mask."""
        mask = batch["attention_mask"]
        return int(mask.sum()), int(mask.numel())

    # ----------------------------------------------------------------- shared pieces
    def _tokenize_fn(self, split: str, files: Sequence[str] = ()) -> td.Tokenize:
        return td.Tokenize(self.tokenizer, self.text_fields, self.label_field, self.label_to_id, self.max_length,
                           split, source=self.source, files=files)

    def _settings_fingerprint(self, parent: str) -> str:
        return td.settings_fingerprint(parent, _FORMAT_VERSION, self.tokenizer.name_or_path, self.tokenizer_revision,
                                       self.tokenizer.vocab_size, self.fields, self.label_to_id, self.max_length)

    def _check_unseen(self, split: str, values: Sequence[Any]) -> None:
        unseen = text_labels.unseen_labels(values, self.label_to_id, len(self.class_names))
        if unseen:
            raise ValueError(f"labels {unseen[:10]} in the {split} split of {self.source!r} never occur in training "
                             f"(classes: {self.class_names[:10]}); fix the data or pass class_names")

    def _check_bad_rows(self, split: str, bad: int, total: int, first: Sequence[str], *,
                        estimate: bool = False) -> None:
        """Count a split's unusable rows; more than the tolerated fraction is an error before training."""
        self.dropped[split] = bad
        td.check_bad_rows(bad, total, first, split=split, dataset=self.source, policy=self.empty_text,
                          max_bad_fraction=self.max_bad_fraction, reason="missing or empty text or an unusable label",
                          estimate=estimate)

    def _record_stats(self, lengths: Sequence[int], full_lengths: Sequence[int], *, note: str = "") -> None:
        self.token_stats = length_report(lengths, full_lengths, max_length=self.max_length, batch_size=self.batch_size,
                                         seed=self.seed, mega_batch_factor=self.mega_batch_factor,
                                         pad_multiple=self.pad_multiple, max_tokens=self.max_tokens_per_batch)
        s = self.token_stats
        if not s.get("samples"):
            return
        rank_zero_info(
            f"{type(self).__name__}: {len(self.class_names)} classes. Train token lengths{note} p50 {s['p50']:.0f}, "
            f"p90 {s['p90']:.0f}, p99 {s['p99']:.0f}, max {s['max']}; {s['truncation_rate']:.1%} truncated at "
            f"max_length={self.max_length}. Real-token fraction: pad-to-max {s['real_fraction_max_length']:.2f}, "
            f"dynamic {s['real_fraction_dynamic']:.2f}, dynamic+bucketing {s['real_fraction_bucketed']:.2f}"
            + (f", token budget {s['real_fraction_token_budget']:.2f}" if "real_fraction_token_budget" in s else "")
        )

    def _collate(self) -> Any:
        return self.profiled(td.PadCollate(self.tokenizer, self.padding, self.max_length,
                                           pad_multiple=self.pad_multiple))

    def _split_data(self, split: str) -> Any:
        if split not in self.datasets:
            raise ValueError(f"{type(self).__name__} has no {split} split for {self.source!r}; splits: "
                             f"{sorted(self.datasets)}")
        return self.datasets[split]

    def split_sizes(self) -> dict[str, int]:
        """Usable rows per split (after ``setup``)."""
        return {name: len(ds) for name, ds in self.datasets.items()}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        # "dataset" repeats "source" for the readers of describe() that still look for it (report, scan).
        info.update(source=self.source, source_kind=self.source_kind, dataset=self.source, split_notes=self.split_notes,
                    tokenizer=self.tokenizer_name, max_length=self.max_length,
                    padding=self.padding, pad_multiple=self.pad_multiple, tokenizer_revision=self.tokenizer_revision,
                    streaming=False, dropped_rows=dict(self.dropped),
                    split_sizes=self.split_sizes(), token_stats=dict(self.token_stats))
        return info


class HFTextDataModule(HFTextBase, metaclass=StreamingSwitch):
    """Text classification from a Hugging Face dataset or local csv/tsv/json/jsonl/parquet files.

    Tokenization runs in ``prepare_data`` (once per node) with ``Dataset.map(batched=True)`` and is
    cached under an explicit datasets fingerprint, so ``setup`` on every rank (and every later run)
    reads the cache. Batches are padded per batch (``DataCollatorWithPadding``, multiples of 8) and,
    with ``bucket_by_length``, drawn by :class:`~stoker.samplers.LengthGroupedBatchSampler` so a
    batch holds texts of similar length. Every loader is a ``StatefulDataLoader`` whose sampler
    resumes mid-epoch; under DDP validation and test see every row exactly once.

    ``streaming=True`` returns an :class:`~stoker.datamodules.text_stream.HFTextStreamDataModule`
    instead (nothing materialised; rows tokenized on the fly): one constructor for both, as the
    README shows, with the two data models in two classes. Map-only arguments (``bucket_by_length``,
    ``mega_batch_factor``, the fractions, ``num_proc``) are then ignored with a warning.

    Splits the source brings are its splits, never merged and re-split: ``val_fraction`` (``test_fraction``)
    carves a seeded, per-class share out of train only when the source has no validation (test) split,
    and ``setup`` says which happened in one line (also in ``describe()["split_notes"]``).

    Args:
        source: A hub dataset (``"nyu-mll/glue"`` or ``"hf://nyu-mll/glue"``: ``describe()["source_kind"]`` is
            ``"hf"``), a ``save_to_disk`` folder (``"hf"``: a ``Dataset`` is one pool, a ``DatasetDict`` brings its
            splits), or a local file, folder or glob of csv/tsv/json/jsonl/parquet (``"table"``). Files named
            ``train``, ``validation`` (``valid``, ``val``, ``dev``) or ``test``, alone or as Hugging Face's shards
            (``train-00000-of-00001.parquet``), in the folder, under ``data/`` or in ``<split>/`` folders, are
            those splits; files that name none are the training data. Hub splits that are none of these
            (``validation_matched``, ``unsupervised``) are left out with a warning.
        tokenizer: Hub name, local folder or ``pkg:<module>`` (a folder shipped in a Python package); must be fast.
        subset: The dataset configuration (``"sst2"`` for GLUE).
        revision: The dataset's hub revision (a tag, branch or commit).
        tokenizer_revision: The tokenizer's hub revision, pinned as ``revision`` pins the dataset's.
        text_field: One column, or two for sentence-pair tasks.
        label_field: The label column: a ClassLabel, or values mapped to ids in sorted order.
        class_names: Fix the classes (and order) for string labels; known without reading data.
        max_length: Tokens per text after truncation.
        padding: ``"dynamic"`` (each batch to its longest text) or ``"max_length"``.
        pad_multiple: Pad batch widths to a multiple of this: 8 suits GPU tensor cores, 1 pads least (CPU).
        max_tokens_per_batch: Size training and evaluation batches by padded tokens instead of ``batch_size``
            (:class:`~stoker.samplers.TokenBudgetBatchSampler`: length-grouped, equal steps per rank; dynamic
            padding only).
        bucket_by_length: Group texts of similar length into batches (dynamic padding only).
        mega_batch_factor: Batches per sorted mega-batch for bucketing.
        streaming: Stream rows instead of converting and caching the dataset (see above).
        shuffle_buffer: Streaming only: rows per shuffled block.
        samples_per_epoch: Streaming only: rows in the training split, when the dataset does not say.
        val_fraction: Per-class fraction of train held out for validation when the source has no validation split.
        test_fraction: Per-class fraction of train held out for testing when the source has no test split.
        empty_text: Unusable rows (missing/empty text, missing label): ``"drop"`` them (counted, reported, up to
            ``max_bad_fraction``) or ``"error"`` on the first one.
        max_bad_fraction: Largest tolerated fraction of unusable rows per split before setup raises.
        num_proc: Processes for tokenization (``None``: the cores available for datasets over 20,000 rows).
        cache_dir: Node-local folder for everything this DataModule caches (see :mod:`stoker.data.cache`).
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.
        seed: Seeds the split, the shuffles and the buckets.
        dataset: Deprecated name of ``source`` (a ``FutureWarning``; removed in the next release).

    Raises:
        ValueError: Bad arguments, an unknown column (the message lists the columns), labels in
            validation/test that training never had, too many unusable rows, or malformed input (a bad JSON
            or CSV line, text that is not a string, labels mixing numbers and strings: the file, row and column).
        TypeError: A slow (Python) tokenizer.

    Example::

        dm = HFTextDataModule("nyu-mll/glue", "bert-base-uncased", subset="sst2", text_field="sentence")
        trainer.fit(TextClassifier("bert-base-uncased", num_classes=dm.num_classes), datamodule=dm)
    """

    stream_class = "stoker.datamodules.text_stream:HFTextStreamDataModule"

    def __init__(
        self,
        source: str | None = None,
        tokenizer: str | None = None,
        *,
        subset: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        text_field: str | list[str] = "text",
        label_field: str = "label",
        class_names: list[str] | None = None,
        max_length: int = 128,
        padding: Padding = "dynamic",
        pad_multiple: int = 8,
        max_tokens_per_batch: int | None = None,
        bucket_by_length: bool = True,
        mega_batch_factor: int = 50,
        streaming: bool = False,
        shuffle_buffer: int = 10_000,
        samples_per_epoch: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        empty_text: EmptyTextPolicy = "drop",
        max_bad_fraction: float = 0.01,
        num_proc: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        seed: int = 0,
        dataset: str | None = None,
    ) -> None:
        # Reassigned before the base saves the arguments: the hyperparameters hold source=, never dataset=.
        source, dataset = given_source(type(self).__name__, source, dataset, tokenizer), None
        if streaming:
            raise ValueError(f"{type(self).__name__} is map-style; streaming=True is HFTextDataModule's shortcut "
                             "to HFTextStreamDataModule, so subclass that one to stream")
        super().__init__(source, str(tokenizer), subset=subset, revision=revision,
                         tokenizer_revision=tokenizer_revision, text_field=text_field,
                         label_field=label_field, class_names=class_names, max_length=max_length, padding=padding,
                         pad_multiple=pad_multiple, empty_text=empty_text, max_bad_fraction=max_bad_fraction,
                         cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        validate_fractions(val_fraction, test_fraction)
        if max_tokens_per_batch is not None and (padding != "dynamic" or max_tokens_per_batch < max_length):
            raise ValueError(f"max_tokens_per_batch={max_tokens_per_batch} needs padding='dynamic' and room for one "
                             f"text of max_length={max_length} tokens; got padding={padding!r}")
        self.max_tokens_per_batch = max_tokens_per_batch
        if mega_batch_factor < 1:
            raise ValueError(f"mega_batch_factor must be a positive integer, got {mega_batch_factor}")
        self.bucket_by_length = bucket_by_length and padding == "dynamic"
        self.mega_batch_factor, self.num_proc = mega_batch_factor, num_proc
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.lengths: dict[str, list[int]] = {}

    def train_labels(self) -> list[int]:
        """Class ids of the training split in dataset order (after ``setup``)."""
        return list(self.datasets["train"]["labels"])

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Convert and tokenize every split once per node; the result lands in the datasets cache."""
        self._tokenized()

    def setup(self, stage: str | None = None) -> None:
        """Read the tokenized splits from the cache, drop unusable rows (counted, up to the threshold), split."""
        if self.datasets:
            return
        splits = {name: self._drop_invalid(name, ds) for name, ds in self._tokenized().items()}
        splits = self._split(splits)
        columns = [c for c in self.model_columns if c in splits["train"].column_names]
        for name, ds in splits.items():
            self.lengths[name] = list(ds["length"])
            self.datasets[name] = ds.select_columns(columns)
        # datasets fingerprints follow the source files, tokenization and split: they version the data.
        parts = "|".join(f"{name}:{fingerprint_of(ds)}" for name, ds in sorted(self.datasets.items()))
        self.record_fingerprint(hashlib.sha256(parts.encode()).hexdigest()[:32])
        self._record_stats(self.lengths["train"], list(splits["train"]["full_length"]))

    def train_dataloader(self) -> StatefulDataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> StatefulDataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("test" if "test" in self.datasets else "val", train=False)

    # ----------------------------------------------------------------- internals
    def _tokenized(self) -> dict[str, Any]:
        raw = td.load_raw(self.source, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir,
                          fields=self.fields)
        for name, ds in raw.items():
            td.check_columns(ds.column_names, self.fields, dataset=self.source, split=name)
        for name in ("val", "test"):
            if name in raw:
                self._check_unseen(name, raw[name].unique(self.label_field))
        local = td.local_data_files(self.source)
        out = {}
        for name, ds in raw.items():
            files = local[1].get(name, []) if local is not None else []
            out[name] = td.tokenize_split(ds, self._tokenize_fn(name, files), name=name, source=self.source,
                                          cache_dir=self.cache_dir, num_proc=self.num_proc,
                                          fingerprint=self._settings_fingerprint(fingerprint_of(ds)))
        return out

    def _drop_invalid(self, name: str, ds: Any) -> Any:
        bad = [(row, problem) for row, problem in zip(ds["row"], ds["problem"]) if problem]
        self._check_bad_rows(name, len(bad), len(ds), [f"row {row} ({problem})" for row, problem in bad])
        if not bad:
            return ds
        keep = [i for i, ok in enumerate(ds["valid"]) if ok]
        return ds.select(keep, new_fingerprint=td.settings_fingerprint(ds._fingerprint, "valid"))

    def _split(self, splits: dict[str, Any]) -> dict[str, Any]:
        # Only a split the source does not bring is carved out of train: given splits are never re-split.
        need = {"val": self.val_fraction if "val" not in splits else 0.0,
                "test": self.test_fraction if "test" not in splits else 0.0}
        self.split_notes = [td.split_origin(list(splits), {name: f for name, f in need.items() if f})]
        rank_zero_info(f"{type(self).__name__}: {self.split_notes[0]}")
        if any(need.values()):
            train = splits["train"]
            parts = stratified_split([str(r) for r in train["row"]], list(train["labels"]), seed=self.seed,
                                     val_fraction=need["val"], test_fraction=need["test"])
            for name, fraction in need.items():
                if fraction:
                    splits[name] = train.select(parts[name])
            splits["train"] = train.select(parts["train"])
        return splits

    def _loader(self, split: str, *, train: bool) -> StatefulDataLoader:
        ds = self._split_data(split)
        if not train:
            self.check_evaluation_size(split, len(ds))
        world, rank = self.world()
        if self.max_tokens_per_batch is not None and not (train and self.train_sampler is not None):
            budget = TokenBudgetBatchSampler(self.lengths[split], self.max_tokens_per_batch, num_replicas=world,
                                             rank=rank, shuffle=train, seed=self.seed, pad_multiple=self.pad_multiple,
                                             window=self.mega_batch_factor * self.batch_size, even=train)
            return self.make_loader(ds, train=train, sampler=budget, collate_fn=self._collate(), batch_size=None)
        if not self.bucket_by_length or (train and self.train_sampler is not None):
            return self.make_loader(ds, train=train, collate_fn=self._collate())
        # Training: a new random draw per epoch, equal whole batches per rank (the rows that fall off are the
        # tail of that epoch's permutation, so they change every epoch). Evaluation: every row exactly once.
        sampler = LengthGroupedBatchSampler(self.lengths[split], self.batch_size, num_replicas=world, rank=rank,
                                            shuffle=train, seed=self.seed, mega_batch_factor=self.mega_batch_factor,
                                            drop_last=train, even=train)
        # batch_size=None: the sampler yields whole batches, and datasets fetches each as one slice.
        return self.make_loader(ds, train=train, sampler=sampler, collate_fn=self._collate(), batch_size=None)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(bucket_by_length=self.bucket_by_length, max_tokens_per_batch=self.max_tokens_per_batch)
        return info
