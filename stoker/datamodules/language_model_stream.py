"""Streamed language-model data: tokenized and packed on the fly, equal batches per rank, exact mid-epoch resume."""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.lm.packing import Overflow, Packing
from stoker.data.lm.stream import OnlinePacker, PackedPass, PackedStream, example_pieces
from stoker.data.lm.tokenize import LM_PROBLEMS, Task
from stoker.data.loader import WorkerType
from stoker.data.text import hf as td
from stoker.data.text.files import count_local_rows, count_rows
from stoker.datamodules.language_model import HFLanguageModelingDataModule
from stoker.datamodules.lm_base import EmptyTextPolicy, HFLanguageModelingBase, given_source, stream_from_map_arguments
from stoker.datamodules.text_stream import declared_size, source_signature, stream_loader
from stoker.profiling.attribution import TimedStage
from stoker.samplers.shard_plan import ShardPlan

_HEAD_ROWS = 1000  # examples read ahead at setup: the bad-row estimate (hub data) and the rows-per-epoch estimate
_RESUME_BLOCK = 1000  # examples per block without shuffling: bounds what a resume reads again


class HFLanguageModelingStreamDataModule(HFLanguageModelingBase):
    """Causal-LM, SFT and masked-LM batches from a streamed corpus: nothing is converted or cached.

    Examples are read with ``load_dataset(..., streaming=True)``, tokenized on the fly, split by node,
    and packed as they arrive by :class:`~stoker.data.lm.stream.PackedStream` (best fit among
    ``open_rows`` open rows). A training epoch is ``rows_per_epoch`` rows (by default estimated by
    packing the first examples of the stream and scaling by the split's size), so every rank runs the
    same number of batches; it is shuffled in seeded blocks of ``shuffle_buffer`` examples, because
    datasets' shuffle buffer cannot be restored (a resumed run would train other examples): the block
    shuffle keeps a cursor instead, and the packer's open rows travel in the same state, so a resume is
    exact with any number of loader workers. Evaluation streams are packed the same way over one pass.
    ``HFLanguageModelingDataModule(..., streaming=True)`` builds this class; see it for the arguments.

    Args:
        source: A hub dataset, a ``save_to_disk`` folder (streamed with ``to_iterable_dataset``, its rows counted
            at setup), or a local file, folder or glob (see the map-style class).
        tokenizer: Hub name, local folder or ``pkg:<module>``; must be fast.
        task: ``"causal_lm"``, ``"sft"`` or ``"mlm"``.
        text_field: The text column, or the messages column for SFT.
        subset: The dataset configuration.
        revision: The dataset's hub revision.
        tokenizer_revision: The tokenizer's hub revision.
        max_length: Tokens per row.
        packing: ``"bfd"`` (online best fit), ``"padding_free"`` or ``"none"``.
        overflow: ``"split"``, ``"truncate"`` or ``"drop"`` examples longer than a row.
        max_tokens_per_batch: With ``packing="bfd"``: ``max_tokens_per_batch // max_length`` rows per batch.
        attn_implementation: ``"auto"`` or the implementation the model will run.
        chat_template: A Jinja chat template for SFT.
        eos_token: The token between causal-LM documents.
        add_special_tokens: Let the tokenizer add its special tokens to each document.
        mlm_probability: Fraction of tokens masked for MLM.
        pad_multiple: Pad widths to a multiple of this.
        shuffle_buffer: Examples per shuffled block (memory, and what a resume reads again); 0: stream order.
        rows_per_epoch: Packed rows per training epoch over all ranks (default: estimated at setup).
        open_rows: Rows the packer keeps open (fuller rows against a larger resume state).
        empty_text: ``"drop"`` unusable rows (counted) or ``"error"``.
        max_bad_fraction: Largest tolerated fraction of unusable rows (local files: all of them; hub: the first rows).
        cache_dir: Node-local folder for everything this DataModule caches (see :mod:`stoker.data.cache`).
        batch_size: Rows per batch per rank.
        num_workers: Loader workers per rank, at most the shards per rank.
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.
        seed: Seeds the shard order, the block shuffles and the masking.
        dataset: Deprecated name of ``source`` (a ``FutureWarning``; removed in the next release).

    Raises:
        ValueError: As the map-style class; also a token budget without ``packing="bfd"``, a training split whose
            size is unknown (set ``rows_per_epoch``), or one too small for a batch per rank.
    """

    def __init__(
        self,
        source: str | None = None,
        tokenizer: str | None = None,
        *,
        task: Task = "causal_lm",
        text_field: str | None = None,
        subset: str | None = None,
        revision: str | None = None,
        tokenizer_revision: str | None = None,
        max_length: int = 2048,
        packing: Packing = "bfd",
        overflow: Overflow | None = None,
        max_tokens_per_batch: int | None = None,
        attn_implementation: str = "auto",
        chat_template: str | None = None,
        eos_token: str | None = None,
        add_special_tokens: bool = True,
        mlm_probability: float = 0.15,
        pad_multiple: int = 8,
        shuffle_buffer: int = 10_000,
        rows_per_epoch: int | None = None,
        open_rows: int = 8,
        empty_text: EmptyTextPolicy = "drop",
        max_bad_fraction: float = 0.01,
        cache_dir: str | None = None,
        batch_size: int = 8,
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
        super().__init__(source, str(tokenizer), task=task, text_field=text_field, subset=subset, revision=revision,
                         tokenizer_revision=tokenizer_revision, max_length=max_length, packing=packing,
                         overflow=overflow, max_tokens_per_batch=max_tokens_per_batch,
                         attn_implementation=attn_implementation, chat_template=chat_template, eos_token=eos_token,
                         add_special_tokens=add_special_tokens, mlm_probability=mlm_probability,
                         pad_multiple=pad_multiple, empty_text=empty_text, max_bad_fraction=max_bad_fraction,
                         cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        if max_tokens_per_batch is not None:
            if packing != "bfd":
                raise ValueError("a streamed token budget needs packing='bfd' (rows of max_length tokens, so the "
                                 f"budget is a row count); got packing={packing!r}. Set batch_size instead")
            self.batch_size = max_tokens_per_batch // max_length
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 examples (0: no shuffle), got {shuffle_buffer}")
        if rows_per_epoch is not None and rows_per_epoch < 1:
            raise ValueError(f"rows_per_epoch must be a positive number of rows or None, got {rows_per_epoch}")
        self.shuffle_buffer, self.rows_per_epoch, self.open_rows = shuffle_buffer, rows_per_epoch, open_rows
        self.split_rows: dict[str, int] = {}
        self.estimate: dict[str, Any] = {}
        self.rows_per_epoch_used: int | None = None

    @classmethod
    def from_map_arguments(cls, *args: Any, **kwargs: Any) -> HFLanguageModelingStreamDataModule:
        """Build from :class:`~stoker.datamodules.language_model.HFLanguageModelingDataModule`'s arguments.

        Raises:
            TypeError: An argument the map-style class does not take.
        """
        return stream_from_map_arguments(cls, HFLanguageModelingDataModule, args, kwargs)

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to convert or cache: the stream is read where it lives."""

    def setup(self, stage: str | None = None) -> None:
        """Check the splits, estimate the rows per epoch, then open each rank's training and evaluation streams."""
        if self.datasets:
            return
        from datasets.distributed import split_dataset_by_node

        raw = td.load_raw(self.source, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir,
                          streaming=True, fields=[self.text_field])
        self.split_notes = [td.split_origin(list(raw), {})]  # a stream keeps the source's splits and carves none
        rank_zero_info(f"{type(self).__name__}: {self.split_notes[0]}")
        self.resolve_attention()
        world, rank = self.world()
        for name, ds in raw.items():
            columns = self._check_split(name, ds)
            stream = ds.map(TimedStage(self._tokenize_fn(name), "tokenize"), batched=True, remove_columns=columns)
            options: dict[str, Any] = dict(capacity=self.max_length, mode=self.packing, overflow=self.overflow,
                           overlap=0 if self.task == "mlm" else 1, labels=self.task == "sft",
                           mlm_seed=self.seed if self.task == "mlm" else None, open_rows=self.open_rows)
            if name == "train":
                batches = self._batches_per_rank(stream, ds, world, rank)
                node = split_dataset_by_node(stream, rank=rank, world_size=world)
                self.datasets[name] = PackedStream(node, num_batches=batches, batch_size=self.batch_size,
                                                   seed=self.seed, rank=rank, shuffle=self.shuffle_buffer > 0,
                                                   block_size=self.shuffle_buffer or _RESUME_BLOCK, **options)
            else:
                self.datasets[name] = PackedPass(stream, rank=rank, world=world, **options)  # the whole split
        self.record_fingerprint(self._fingerprint())
        if "val" not in self.datasets:
            rank_zero_warn("streaming: the dataset has no validation split, so there is no validation; "
                           "add a validation file or use streaming=False for a seeded split")

    def teardown(self, stage: str | None = None) -> None:
        """Report, on every rank, what its streams skipped in their last epoch."""
        rank = self.world()[1]
        for name, stream in self.datasets.items():
            if stream.skipped:
                warnings.warn(f"rank {rank}: the {name} stream of {self.source!r} skipped "
                              f"{sum(stream.skipped.values())} example(s) in its last epoch ({stream.skipped})",
                              stacklevel=2)

    # ----------------------------------------------------------------- internals
    def _loader(self, split: str, *, train: bool) -> StatefulDataLoader:
        return stream_loader(self, self._split_data(split), split, train=train,
                             collate_fn=self.profiled(self.collate()))

    def _check_split(self, name: str, ds: Any) -> list[str]:
        scan = self._scan(name)
        if scan is not None:  # read with pyarrow now: empty documents and malformed files fail before training
            self._check_bad(name, {"empty text": scan["bad"]} if scan["bad"] else {}, scan["rows"], scan["first"])
            self.split_rows[name] = scan["rows"] - scan["bad"]
        columns = ds.column_names or list(next(iter(ds)).keys())
        td.check_columns(columns, [self.text_field], dataset=self.source, split=name)
        return list(columns)

    def _scan(self, name: str) -> dict[str, Any] | None:
        """Rows and empty texts of a split of local files or of a saved dataset (``None``: a hub stream)."""
        local = td.local_data_files(self.source)
        if local is not None:
            return count_local_rows(local[0], local[1].get(name, []), self.text_field)
        saved = td.load_saved(self.source)
        if saved is not None:
            td.check_columns(saved[name].column_names, [self.text_field], dataset=self.source, split=name)
            column = saved[name].select_columns([self.text_field]).with_format("arrow")[:].column(0)
            return count_rows([(f"{self.source!r} ({name} split)", column)])
        return None

    def _batches_per_rank(self, stream: Any, raw: Any, world: int, rank: int) -> int:
        head = list(stream.take(_HEAD_ROWS))
        usable = [r for r in head if not r["problem"]]
        if "train" not in self.split_rows:  # a hub stream: its first examples stand in for the split
            bad = [f"row {i} ({r['problem']})" for i, r in enumerate(head) if r["problem"] in LM_PROBLEMS]
            counts = {p: n for p in LM_PROBLEMS if (n := sum(r["problem"] == p for r in head))}
            self._check_bad("train", counts, len(head), bad, estimate=True)
        rows = self.rows_per_epoch
        if rows is None:
            if not usable:
                raise ValueError(f"streaming {self.source!r}: the first {len(head)} examples hold no usable one; "
                                 "check text_field and the data")
            head_rows = self._pack_head(usable)
            examples = self.split_rows.get("train") or declared_size(raw, self.source, "rows_per_epoch")
            # Scale the head's rows per example to the split (rows with a problem are skipped as they stream).
            rows = max(1, int(examples * head_rows / len(head)))
            self.estimate = {"head_examples": len(head), "head_rows": head_rows, "split_examples": examples}
        batches = ShardPlan(rows, world, mode="cut", batch_size=self.batch_size, drop_last=True).num_batches(rank)
        if batches == 0:
            raise ValueError(f"{type(self).__name__}: the training stream gives about {rows} rows, which gives each "
                             f"of {world} rank(s) no whole batch of batch_size={self.batch_size}; lower batch_size "
                             "or add data")
        rank_zero_info(f"{type(self).__name__}: {rows} rows of <= {self.max_length} tokens per epoch "
                       f"({'given' if self.rows_per_epoch else 'estimated from the first examples'}), "
                       f"{batches} batches per rank")
        self.rows_per_epoch_used = rows
        return batches

    def _pack_head(self, usable: list[dict[str, Any]]) -> int:
        """Rows the stream's own packer closes over the first examples.

        Rows still open at the end are not counted: the stream too ends its epoch with up to ``open_rows`` open.
        """
        packer = OnlinePacker(self.max_length, self.packing, self.open_rows)
        overlap = 0 if self.task == "mlm" else 1
        closed = sum(len(packer.add(piece)) for example in usable
                     for piece in example_pieces(example, self.max_length, self.overflow, overlap, False))
        return closed

    def _fingerprint(self) -> str:
        source = source_signature(self.source, self.subset, self.revision)
        parts = f"{self._settings_fingerprint(repr(source))}|{self.packing}|{self.max_length}|{self.seed}"
        return hashlib.sha256(parts.encode()).hexdigest()[:32]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        train = self.datasets.get("train")
        info.update(streaming=True, shuffle_buffer=self.shuffle_buffer, split_sizes=dict(self.split_rows),
                    packing={"mode": self.packing, "capacity": self.max_length, "overflow": self.overflow,
                             "attention": self.attention, "open_rows": self.open_rows,
                             "rows_per_epoch": self.rows_per_epoch_used,
                             "rows_per_epoch_estimate": dict(self.estimate),
                             "batches_per_rank": train.num_batches if train is not None else None,
                             "skipped_rows": {name: s.skipped for name, s in self.datasets.items()},
                             "repeated_examples": train.repeated if train is not None else 0})
        return info
