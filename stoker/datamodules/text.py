"""Hugging Face text classification: tokenize once per node, pad dynamically, bucket by length, stream."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from stoker import text_data as td
from stoker.datamodules.base import StokerDataModule, as_sequence
from stoker.loader import available_cores, build_loader
from stoker.samplers.length_grouped import LengthGroupedBatchSampler
from stoker.splits import stratified_split, validate_fractions
from stoker.text_stream import FixedLengthStream, batches_per_rank

Padding = Literal["dynamic", "max_length"]
EmptyTextPolicy = Literal["drop", "error"]
_FORMAT_VERSION = 1  # bump when Tokenize's output changes, so old caches are not reused


class HFTextDataModule(StokerDataModule):
    """Text classification from a Hugging Face dataset or local csv/json/jsonl/parquet/text files.

    Tokenization runs in ``prepare_data`` (once per node) with ``Dataset.map(batched=True)`` and is
    cached under an explicit datasets fingerprint, so ``setup`` on every rank (and every later run)
    reads the cache. Batches are padded per batch (``DataCollatorWithPadding``, multiples of 8) and,
    with ``bucket_by_length``, drawn by :class:`~stoker.samplers.LengthGroupedBatchSampler` so a
    batch holds texts of similar length. With ``streaming`` nothing is materialised: rows are
    tokenized on the fly, shuffled in a buffer, split by node, and every rank gets the same
    number of batches (:class:`~stoker.text_stream.FixedLengthStream`).

    Batches are ``{"input_ids", "attention_mask"[, "token_type_ids"], "labels"}`` (int64), so
    ``model(**batch)`` works with transformers models.

    Args:
        dataset: A hub name (``"glue"``), or a local file, folder or glob of csv/tsv/json/jsonl/parquet/txt.
            Files named ``train``/``validation``/``test`` become those splits.
        tokenizer: Hub name, local folder or ``pkg:<module>`` (a folder shipped in a Python package); must be fast.
        subset: The dataset configuration (``"sst2"`` for GLUE).
        revision: Hub revision.
        text_field: One column, or two for sentence-pair tasks.
        label_field: The label column: a ClassLabel, or values mapped to ids in sorted order.
        class_names: Fix the classes (and order) for string labels; known without reading data.
        max_length: Tokens per text after truncation.
        padding: ``"dynamic"`` (each batch to its longest text) or ``"max_length"``.
        bucket_by_length: Group texts of similar length into batches (dynamic padding only).
        mega_batch_factor: Batches per sorted mega-batch for bucketing.
        streaming: Stream rows instead of converting and caching the dataset.
        shuffle_buffer: Streaming shuffle buffer size (0: no shuffle).
        samples_per_epoch: Streaming: rows in the training split, when the dataset does not say.
        val_fraction: Per-class held-out fraction when the dataset has no validation split.
        test_fraction: Per-class held-out fraction when the dataset has no test split.
        empty_text: Rows with missing/empty text or label: ``"drop"`` them (counted and reported) or ``"error"``.
        num_proc: Processes for tokenization (``None``: the cores available for datasets over 20,000 rows).
        cache_dir: The datasets cache (default: ``HF_DATASETS_CACHE``).
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.
        seed: Seeds the split, the shuffles and the buckets.

    Raises:
        ValueError: Bad arguments, an unknown column (the message lists the columns), labels in
            validation/test that training never had, or empty text with ``empty_text="error"``.
        TypeError: A slow (Python) tokenizer.

    Example::

        dm = HFTextDataModule("glue", "bert-base-uncased", subset="sst2", text_field="sentence")
        trainer.fit(TextClassifier("bert-base-uncased", num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "input_ids"
    target_key = "labels"

    def __init__(
        self,
        dataset: str,
        tokenizer: str,
        *,
        subset: str | None = None,
        revision: str | None = None,
        text_field: str | list[str] = "text",
        label_field: str = "label",
        class_names: list[str] | None = None,
        max_length: int = 128,
        padding: Padding = "dynamic",
        bucket_by_length: bool = True,
        mega_batch_factor: int = 50,
        streaming: bool = False,
        shuffle_buffer: int = 10_000,
        samples_per_epoch: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        empty_text: EmptyTextPolicy = "drop",
        num_proc: int | None = None,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed)
        validate_fractions(val_fraction, test_fraction)
        self.text_fields = as_sequence(text_field)
        if not 1 <= len(self.text_fields) <= 2:
            raise ValueError(f"text_field must name one column or a pair of columns, got {text_field!r}")
        if padding not in ("dynamic", "max_length"):
            raise ValueError(f"padding must be 'dynamic' or 'max_length', got {padding!r}")
        if empty_text not in ("drop", "error"):
            raise ValueError(f"empty_text must be 'drop' or 'error', got {empty_text!r}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {max_length}")
        self.dataset, self.tokenizer_name, self.subset, self.revision = dataset, tokenizer, subset, revision
        self.label_field, self.max_length, self.padding = label_field, max_length, padding
        self.bucket_by_length = bucket_by_length and padding == "dynamic"
        self.mega_batch_factor, self.streaming, self.shuffle_buffer = mega_batch_factor, streaming, shuffle_buffer
        self.samples_per_epoch, self.val_fraction, self.test_fraction = samples_per_epoch, val_fraction, test_fraction
        self.empty_text, self.num_proc, self.cache_dir = empty_text, num_proc, cache_dir
        self._explicit_classes = list(class_names) if class_names is not None else None
        self._labels: tuple[list[str], dict[str, int] | None] | None = None
        self._tokenizer: Any = None
        self.datasets: dict[str, Any] = {}
        self.lengths: dict[str, list[int]] = {}
        self.dropped: dict[str, int] = {}
        self.token_stats: dict[str, float] = {}
        self.train_batch_sampler: LengthGroupedBatchSampler | None = None
        self._train_position = 0
        self._train_epoch = -1
        self._pending_state: dict[str, Any] | None = None

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._labels is None:
            names, values = td.label_values(self.dataset, self.label_field, subset=self.subset,
                                         revision=self.revision, cache_dir=self.cache_dir)
            self._labels = td.label_mapping(names, values, self._explicit_classes)
        return self._labels[0]

    @property
    def label_to_id(self) -> dict[str, int] | None:
        """Raw label value (as a string) to class id; ``None`` when the column is a ClassLabel."""
        self.class_names  # noqa: B018 - resolves the mapping
        assert self._labels is not None
        return self._labels[1]

    @property
    def tokenizer(self) -> Any:
        """The fast tokenizer (loaded on first use, never in ``__init__``)."""
        if self._tokenizer is None:
            self._tokenizer = td.load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def token_counts(self, batch: Any) -> tuple[int, int]:
        """``(real tokens, tokens fed to the model)`` from the attention mask."""
        mask = batch["attention_mask"]
        return int(mask.sum()), int(mask.numel())

    def train_labels(self) -> list[int]:
        """Class ids of the training split in dataset order (map-style only, after ``setup``)."""
        if self.streaming:
            raise ValueError("train_labels() needs a map-style dataset; a stream has no order. Set streaming=False")
        return list(self.datasets["train"]["labels"])

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Convert and tokenize every split once per node; the result lands in the datasets cache."""
        if not self.streaming:
            self._tokenized()

    def setup(self, stage: str | None = None) -> None:
        """Read the tokenized splits from the cache (or open the streams), drop bad rows, split."""
        if self.datasets:
            return
        if self.streaming:
            self._setup_streams()
            return
        splits = {name: self._drop_invalid(name, ds) for name, ds in self._tokenized().items()}
        splits = self._split(splits)
        columns = [c for c in self.tokenizer.model_input_names if c in splits["train"].column_names] + ["labels"]
        for name, ds in splits.items():
            self.lengths[name] = list(ds["length"])
            self.datasets[name] = ds.select_columns(columns)
        # datasets fingerprints follow the source files, tokenization and split: they version the data.
        parts = "|".join(f"{name}:{ds._fingerprint}" for name, ds in sorted(self.datasets.items()))
        self.record_fingerprint(hashlib.sha256(parts.encode()).hexdigest()[:32])
        self.token_stats = td.length_report(self.lengths["train"], list(splits["train"]["full_length"]),
                                         max_length=self.max_length, batch_size=self.batch_size, seed=self.seed,
                                         mega_batch_factor=self.mega_batch_factor)
        self._report()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        split = "test" if "test" in self.datasets else "val"
        return self.make_loader(self.datasets[split], train=False, collate_fn=self._collate())

    # ----------------------------------------------------------------- resume
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training:
            if trainer.current_epoch != self._train_epoch:
                self._train_epoch, self._train_position = trainer.current_epoch, 0
            self._train_position += 1  # batches this epoch that reached the model (prefetched ones do not count)
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def state_dict(self) -> dict[str, Any]:
        """Where training is in the epoch, saved in checkpoints for mid-epoch resume."""
        state = super().state_dict()  # the data fingerprint
        if self.streaming:
            stream = self.datasets.get("train")
            if isinstance(stream, FixedLengthStream):
                state["stream"] = stream.state_dict()
            return state
        return {**state, "epoch": self._train_epoch, "position": self._train_position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Applied when the next training loader is built: it resumes on the remaining batches."""
        super().load_state_dict(state_dict)  # compares the data fingerprints
        position = {key: value for key, value in state_dict.items() if key != "data_fingerprint"}
        self._pending_state = position or None

    # ----------------------------------------------------------------- internals
    def _tokenized(self) -> dict[str, Any]:
        raw = td.load_raw(self.dataset, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir)
        fields = [*self.text_fields, self.label_field]
        for name, ds in raw.items():
            td.check_columns(ds.column_names, fields, dataset=self.dataset, split=name)
        for name in ("val", "test"):
            if name in raw:
                unseen = td.unseen_labels(raw[name].unique(self.label_field), self.label_to_id, len(self.class_names))
                if unseen:
                    raise ValueError(f"labels {unseen[:10]} in the {name} split of {self.dataset!r} never occur in "
                                     f"training (classes: {self.class_names[:10]}); fix the data or pass class_names")
        out = {}
        for name, ds in raw.items():
            fn = self._tokenize_fn(name)
            fingerprint = td.settings_fingerprint(ds._fingerprint, _FORMAT_VERSION, self.tokenizer.name_or_path,
                                               self.tokenizer.vocab_size, fields, self.label_to_id, self.max_length)
            num_proc = self.num_proc or (min(8, available_cores()) if len(ds) > 20_000 else None)
            out[name] = ds.map(fn, batched=True, with_indices=True, remove_columns=ds.column_names,
                               num_proc=num_proc, new_fingerprint=fingerprint, desc=f"tokenizing {name}")
        return out

    def _tokenize_fn(self, split: str) -> td.Tokenize:
        return td.Tokenize(self.tokenizer, self.text_fields, self.label_field, self.label_to_id, self.max_length, split)

    def _drop_invalid(self, name: str, ds: Any) -> Any:
        valid = ds["valid"]
        bad = [row for row, ok in zip(ds["row"], valid) if not ok]
        self.dropped[name] = len(bad)
        if not bad:
            return ds
        if self.empty_text == "error":
            raise ValueError(f"{len(bad)} row(s) of the {name} split of {self.dataset!r} have missing or empty text"
                             f" in {self.text_fields} or no label (rows {bad[:10]}); clean them or set "
                             "empty_text='drop'")
        rank_zero_warn(f"dropped {len(bad)} row(s) with missing or empty text or label from the {name} split "
                       f"of {self.dataset!r} (rows {bad[:10]})")
        keep = [i for i, ok in enumerate(valid) if ok]
        return ds.select(keep, new_fingerprint=td.settings_fingerprint(ds._fingerprint, "valid"))

    def _split(self, splits: dict[str, Any]) -> dict[str, Any]:
        need = {"val": self.val_fraction if "val" not in splits else 0.0,
                "test": self.test_fraction if "test" not in splits else 0.0}
        if any(need.values()):
            train = splits["train"]
            parts = stratified_split([str(r) for r in train["row"]], list(train["labels"]), seed=self.seed,
                                     val_fraction=need["val"], test_fraction=need["test"])
            for name, fraction in need.items():
                if fraction:
                    splits[name] = train.select(parts[name])
            splits["train"] = train.select(parts["train"])
        return splits

    def _setup_streams(self) -> None:
        from datasets.distributed import split_dataset_by_node

        raw = td.load_raw(self.dataset, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir,
                       streaming=True)
        world, rank = self._world()
        for name, ds in raw.items():
            columns = ds.column_names or list(next(iter(ds)).keys())
            td.check_columns(columns, [*self.text_fields, self.label_field], dataset=self.dataset, split=name)
            fn = self._tokenize_fn(name)
            stream = ds.map(fn, batched=True, remove_columns=columns)
            if name == "train":  # a stream has no length column to scan: estimate from its first rows
                head = list(stream.take(1000))
                self.token_stats = td.length_report(
                    [r["length"] for r in head], [r["full_length"] for r in head], max_length=self.max_length,
                    batch_size=self.batch_size, seed=self.seed, mega_batch_factor=self.mega_batch_factor)
            if name == "train" and self.shuffle_buffer > 0:
                stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            stream = split_dataset_by_node(stream, rank=rank, world_size=world)
            total = self._stream_size(name, ds)
            model_columns = [c for c in self.tokenizer.model_input_names if c != "special_tokens_mask"] + ["labels"]
            self.datasets[name] = FixedLengthStream(
                stream, batch_size=self.batch_size, columns=model_columns, seed=self.seed,
                num_batches=batches_per_rank(total, world, self.batch_size, drop_last=name == "train"))
        self._report()
        if "val" not in self.datasets:
            rank_zero_warn("streaming: the dataset has no validation split, so there is no validation; "
                           "add a validation file or use streaming=False for a seeded split")

    def _stream_size(self, name: str, ds: Any) -> int:
        if name == "train" and self.samples_per_epoch is not None:
            return self.samples_per_epoch
        local = td.local_data_files(self.dataset)
        if local is not None:  # one column read with pyarrow: no conversion of the whole dataset
            builder, files = local
            return len(td.read_local_column(builder, files[name], self.label_field, self.dataset))
        splits = getattr(ds.info, "splits", None) or {}
        size = getattr(splits.get(ds.split or name), "num_examples", None) if splits else None
        if not size:
            raise ValueError(f"streaming {self.dataset!r}: its {name} split does not say how many rows it has; "
                             "set samples_per_epoch so every rank can run the same number of batches")
        return int(size)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return max(1, trainer.world_size), trainer.global_rank

    def _collate(self) -> td.PadCollate:
        return td.PadCollate(self.tokenizer, self.padding, self.max_length)

    def _loader(self, split: str, *, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"{type(self).__name__} has no {split} split for {self.dataset!r}; splits: "
                             f"{sorted(self.datasets)}")
        ds = self.datasets[split]
        if isinstance(ds, FixedLengthStream):
            workers = min(self.num_workers, max(1, ds.dataset.num_shards))
            if train and self._pending_state and "stream" in self._pending_state:
                ds.load_state_dict(self._pending_state.pop("stream"))
            return build_loader(ds, batch_size=self.batch_size, train=train, num_workers=workers,
                                pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
                                prefetch_factor=self.prefetch_factor, seed=self.seed, collate_fn=self._collate(),
                                drop_last=False)
        if not self.bucket_by_length or (train and self.train_sampler is not None):
            return self.make_loader(ds, train=train, collate_fn=self._collate())
        world, rank = self._world()
        sampler = LengthGroupedBatchSampler(self.lengths[split], self.batch_size, num_replicas=world, rank=rank,
                                            shuffle=train, seed=self.seed, mega_batch_factor=self.mega_batch_factor,
                                            drop_last=train)
        if train:
            self.train_batch_sampler = sampler
            if self._pending_state and self._pending_state.get("epoch", -1) >= 0:
                sampler.load_state_dict({"epoch": self._pending_state["epoch"],
                                         "position": self._pending_state["position"]})
                self._train_epoch, self._train_position = self._pending_state["epoch"], self._pending_state["position"]
            self._pending_state = None
        # batch_size=None: the sampler yields whole batches, and datasets fetches each as one slice.
        return build_loader(ds, batch_size=None, train=train, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
                            prefetch_factor=self.prefetch_factor, seed=self.seed, sampler=sampler,
                            collate_fn=self._collate(), drop_last=False)

    def _report(self) -> None:
        sizes = ", ".join(f"{name} {len(ds)}" for name, ds in self.datasets.items())
        s = self.token_stats
        if not s.get("samples"):
            return
        rank_zero_info(
            f"{type(self).__name__}: {len(self.class_names)} classes; {sizes} (per rank for streams). "
            f"Train token lengths{' (first rows of the stream)' if self.streaming else ''} p50 {s['p50']:.0f}, "
            f"p90 {s['p90']:.0f}, p99 {s['p99']:.0f}, max {s['max']}; {s['truncation_rate']:.1%} truncated at "
            f"max_length={self.max_length}. Real-token fraction: pad-to-max {s['real_fraction_max_length']:.2f}, "
            f"dynamic {s['real_fraction_dynamic']:.2f}, dynamic+bucketing {s['real_fraction_bucketed']:.2f}"
        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            dataset=self.dataset, tokenizer=self.tokenizer_name, max_length=self.max_length, padding=self.padding,
            bucket_by_length=self.bucket_by_length, streaming=self.streaming, dropped_rows=dict(self.dropped),
            split_sizes={name: len(ds) for name, ds in self.datasets.items()}, token_stats=dict(self.token_stats),
        )
        return info

    def __getstate__(self) -> dict[str, Any]:
        # The loaded tokenizer is rebuilt on first use after unpickling (ddp_spawn); its Rust state is large.
        state = super().__getstate__()
        state["_tokenizer"] = None
        return state
