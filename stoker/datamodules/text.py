"""Hugging Face text classification, map-style: tokenize once per node, pad dynamically, bucket by length.

:class:`~stoker.datamodules.text_base.HFTextBase` holds what map-style and streamed text share (labels,
the tokenizer, column and bad-row checks, the token-length report, ``describe``); :class:`HFTextDataModule`
is the map-style DataModule, and ``HFTextDataModule(..., streaming=True)`` builds the streaming one,
:class:`~stoker.datamodules.text_stream.HFTextStreamDataModule`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.datasets_compat import fingerprint_of
from stoker.data.loader import WorkerType
from stoker.data.splits import stratified_split, validate_fractions
from stoker.data.text import hf as td
from stoker.datamodules.lm_base import StreamingSwitch, given_source
from stoker.datamodules.text_base import EmptyTextPolicy, HFTextBase, Padding
from stoker.samplers.length_grouped import LengthGroupedBatchSampler
from stoker.samplers.token_budget import TokenBudgetBatchSampler


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
