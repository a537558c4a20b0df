"""What the map-style and streamed language-model DataModules share: the tokenizer, the task, packing and attention.

See :class:`~stoker.datamodules.language_model.HFLanguageModelingDataModule` for the arguments. The
``streaming=True`` switch (:class:`StreamingSwitch`) lives here too; the classification DataModule uses it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import warnings
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.data.lm.attention import packing_attention
from stoker.data.lm.collate import Attention, LMCollate
from stoker.data.lm.packing import OVERFLOWS, PACKINGS, Overflow, Packing, block_attention_mask, real_tokens
from stoker.data.lm.tokenize import TASKS, LMTokenize, Task, resolve_chat_template
from stoker.data.loader import WorkerType
from stoker.data.text import hf as td
from stoker.datamodules.base import StokerDataModule

EmptyTextPolicy = Literal["drop", "error"]
_FORMAT_VERSION = 1  # bump when LMTokenize's output changes, so old caches are not reused


class StreamingSwitch(type):
    """``Cls(..., streaming=True)`` builds the streaming class the map-style class names (the one branch).

    A class opts in with ``stream_class = "module:Class"``; the streamed class provides
    ``from_map_arguments``. A metaclass ``__call__`` rather than ``__new__``: LightningCLI (jsonargparse)
    reads a class's arguments from ``__new__`` when it has one, and would then show the streaming class's
    arguments. Pickling, ``isinstance`` and subclasses are unaffected (a subclass is always built as itself).
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        target = cls.__dict__.get("stream_class")
        if target and kwargs.get("streaming"):
            module, name = target.split(":")
            return getattr(importlib.import_module(module), name).from_map_arguments(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def stream_from_map_arguments(stream_cls: Any, map_cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Build ``stream_cls`` from ``map_cls``'s arguments, dropping (with a warning) the map-only settings given.

    Raises:
        TypeError: An argument ``map_cls`` does not take.
    """
    accepted = inspect.signature(stream_cls.__init__).parameters
    known = inspect.signature(map_cls.__init__).parameters
    kwargs = dict(kwargs)
    kwargs.pop("streaming", None)
    ignored = {}
    for key in list(kwargs):
        if key not in known:
            raise TypeError(f"{map_cls.__name__}() got an unexpected keyword argument {key!r}")
        if key not in accepted and (value := kwargs.pop(key)) != known[key].default:
            ignored[key] = value
    if ignored:
        rank_zero_warn(f"streaming=True ignores the map-style settings {ignored}: a stream is neither split by "
                       "fraction nor sorted as a whole. Give the data a validation file, or use streaming=False")
    return stream_cls(*args, **kwargs)


def given_source(owner: str, source: str | None, dataset: str | None, tokenizer: str | None) -> str:
    """``source``, or the deprecated ``dataset`` keyword (with a ``FutureWarning``), checked with the tokenizer.

    ``dataset=`` is what the text DataModules called their data until every DataModule said ``source=``;
    it keeps working for one release.

    Raises:
        ValueError: Neither ``source`` nor ``dataset``, both and different, or no tokenizer.
    """
    if dataset is not None:
        # Point the warning at the user's call, past the constructor chain and the streaming switch.
        frame, level, package = inspect.currentframe(), 1, os.path.dirname(os.path.dirname(__file__))
        while frame is not None and frame.f_code.co_filename.startswith(package):
            frame, level = frame.f_back, level + 1
        warnings.warn(f"{owner}(dataset=...) is deprecated and will be removed in the next release: use source= (the "
                      "name every stoker DataModule gives its data)", FutureWarning, stacklevel=level)
        if source is not None and os.fspath(source) != os.fspath(dataset):
            raise ValueError(f"{owner}: got source={source!r} and dataset={dataset!r}; give source= only (dataset= "
                             "is its deprecated name)")
        source = dataset
    if source is None:
        raise ValueError(f"{owner} needs source=: a hub dataset ('nyu-mll/glue' or 'hf://nyu-mll/glue'), a "
                         "save_to_disk folder, or local csv/tsv/json/jsonl/parquet files (a file, a folder or a glob)")
    if not tokenizer:
        raise ValueError(f"{owner} needs tokenizer=: a hub name, a local folder or pkg:<module> (a fast tokenizer)")
    return os.fspath(source)


class TokenizerMixin:
    """The tokenizer of a Hugging Face text DataModule: loaded on first use (never in ``__init__``), not pickled.

    The class sets ``tokenizer_name``, ``tokenizer_revision`` and ``_tokenizer = None`` in ``__init__``.
    """

    tokenizer_name: str
    tokenizer_revision: str | None
    _tokenizer: Any

    @property
    def tokenizer(self) -> Any:
        """The fast tokenizer (loaded on first use, never in ``__init__``)."""
        if self._tokenizer is None:
            self._tokenizer = td.load_tokenizer(self.tokenizer_name, revision=self.tokenizer_revision)
        return self._tokenizer

    def __getstate__(self) -> dict[str, Any]:
        # The loaded tokenizer is rebuilt on first use after unpickling (ddp_spawn); its Rust state is large.
        state: dict[str, Any] = super().__getstate__()  # type: ignore[misc,assignment]
        state["_tokenizer"] = None
        return state


class HFLanguageModelingBase(TokenizerMixin, StokerDataModule):
    """Causal-LM, SFT and masked-LM batches from Hugging Face text; subclasses say how splits are read and loaded.

    Batches are ``{"input_ids", "labels", ...}`` that ``model(**batch)`` accepts for
    ``AutoModelForCausalLM``/``AutoModelForMaskedLM``; with packing also ``position_ids`` and, once on the
    device, the 4-D mask (SDPA/eager/flex) or the varlen boundaries (flash attention).
    """

    input_key = "input_ids"
    target_key = "labels"

    def __init__(self, source: str, tokenizer: str, *, task: Task, text_field: str | None, subset: str | None,
                 revision: str | None, tokenizer_revision: str | None, max_length: int, packing: Packing,
                 overflow: Overflow | None, max_tokens_per_batch: int | None, attn_implementation: str,
                 chat_template: str | None, eos_token: str | None, add_special_tokens: bool, mlm_probability: float,
                 pad_multiple: int, empty_text: EmptyTextPolicy, max_bad_fraction: float, cache_dir: str | None,
                 batch_size: int, num_workers: int | None, worker_type: WorkerType, pin_memory: bool | None,
                 persistent_workers: bool,
                 prefetch_factor: int, seed: int) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
                         worker_type=worker_type)
        checks = (("task", task, TASKS), ("packing", packing, PACKINGS), ("empty_text", empty_text, ("drop", "error")),
                  ("overflow", overflow, (*OVERFLOWS, None)))
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8 tokens, got {max_length}")
        if max_tokens_per_batch is not None and max_tokens_per_batch < max_length:
            raise ValueError(f"max_tokens_per_batch ({max_tokens_per_batch}) must hold at least one row of max_length="
                             f"{max_length} tokens; raise it or lower max_length")
        if not 0.0 < mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}")
        self.source, self.tokenizer_name, self.task = source, tokenizer, task
        self.source_kind = td.text_source_kind(source)
        self.split_notes: list[str] = []  # where the splits came from (setup says it once)
        self.text_field = text_field or ("messages" if task == "sft" else "text")
        self.subset, self.revision, self.tokenizer_revision = subset, revision, tokenizer_revision
        self.max_length, self.packing, self.max_tokens_per_batch = max_length, packing, max_tokens_per_batch
        # A chat cut in two loses its prompt, so chats are truncated (and counted) unless told otherwise.
        self.overflow: Overflow = overflow or ("truncate" if task == "sft" else "split")
        self.attn_implementation, self.chat_template, self.eos_token = attn_implementation, chat_template, eos_token
        self.add_special_tokens, self.mlm_probability, self.pad_multiple = add_special_tokens, mlm_probability, \
            pad_multiple
        self.empty_text, self.max_bad_fraction, self.cache_dir = empty_text, max_bad_fraction, cache_dir
        self.attention: Attention = "none" if packing == "none" else "mask"
        self.position_start = 0
        self.datasets: dict[str, Any] = {}
        self.dropped: dict[str, dict[str, int]] = {}
        self._tokenizer: Any = None

    # ----------------------------------------------------------------- the tokenizer and its tokens
    @property
    def eos_id(self) -> int | None:
        """The token between causal-LM documents: ``eos_token`` if given, else the tokenizer's.

        Raises:
            ValueError: A causal LM whose tokenizer has no EOS token and none was given, or an unknown ``eos_token``.
        """
        tokenizer = self.tokenizer
        token = self.eos_token or tokenizer.eos_token
        if token is None:
            if self.task != "causal_lm":
                return None
            specials = [t for t in tokenizer.all_special_tokens if t != tokenizer.unk_token]
            raise ValueError(f"tokenizer {self.tokenizer_name!r} has no EOS token, which separates documents for "
                             f"task='causal_lm'. Set eos_token to one of its special tokens ({specials}, e.g. "
                             f"eos_token={specials[0]!r} for a BERT WordPiece tokenizer) or use a tokenizer with one")
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token):
            raise ValueError(f"eos_token={token!r} is not a token of {self.tokenizer_name!r}; give one of "
                             f"{tokenizer.all_special_tokens}")
        return int(token_id)

    @property
    def pad_id(self) -> int:
        """Padding id: the tokenizer's pad token, else the EOS (labels and masks ignore padding either way)."""
        pad = self.tokenizer.pad_token_id
        if pad is not None:
            return int(pad)
        eos = self.eos_id
        return 0 if eos is None else eos

    @property
    def model_columns(self) -> list[str]:
        """What the tokenized examples keep: ``input_ids`` (and ``labels`` for chats)."""
        return ["input_ids", "labels"] if self.task == "sft" else ["input_ids"]

    def _tokenize_fn(self, split: str) -> LMTokenize:
        template = resolve_chat_template(self.tokenizer, self.chat_template, self.tokenizer_name) \
            if self.task == "sft" else None
        if self.task == "mlm" and self.tokenizer.mask_token is None:
            raise ValueError(f"tokenizer {self.tokenizer_name!r} has no mask token, which task='mlm' needs; use a "
                             "masked-LM tokenizer (BERT's, RoBERTa's) or task='causal_lm'")
        return LMTokenize(self.tokenizer, task=self.task, field=self.text_field, eos_id=self.eos_id,
                          chat_template=template, add_special_tokens=self.add_special_tokens, split=split,
                          source=self.source)

    def _settings_fingerprint(self, parent: str) -> str:
        template = self.chat_template if self.task == "sft" else None
        return td.settings_fingerprint(parent, _FORMAT_VERSION, self.tokenizer.name_or_path, self.tokenizer_revision,
                                       self.tokenizer.vocab_size, self.task, self.text_field, template,
                                       self.eos_token, self.add_special_tokens)

    def _check_bad(self, split: str, problems: dict[str, int], total: int, first: list[str], *,
                   estimate: bool = False) -> None:
        self.dropped[split] = dict(problems)
        td.check_bad_rows(sum(problems.values()), total, first, split=split, dataset=self.source,
                          policy=self.empty_text, max_bad_fraction=self.max_bad_fraction, estimate=estimate,
                          reason="missing or empty text" if self.task != "sft" else
                          "no usable conversation (a messages list of {role, content} with known roles and text)")

    # ----------------------------------------------------------------- loaders
    def _loader(self, split: str, *, train: bool) -> StatefulDataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> StatefulDataLoader:
        if self.trainer is not None:  # setup may have run before this Trainer's model was attached
            self.resolve_attention()
        return self._loader("train", train=True)

    def val_dataloader(self) -> StatefulDataLoader | list[Any]:
        """The validation loader; none (Lightning then skips validation) when there is no validation split."""
        return self._loader("val", train=False) if "val" in self.datasets else []

    def test_dataloader(self) -> StatefulDataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> StatefulDataLoader:
        return self._loader("test" if "test" in self.datasets else "val", train=False)

    def _split_data(self, split: str) -> Any:
        if split not in self.datasets:
            raise ValueError(f"{type(self).__name__} has no {split} split for {self.source!r}; splits: "
                             f"{sorted(self.datasets)}")
        return self.datasets[split]

    # ----------------------------------------------------------------- attention and batches
    def resolve_attention(self) -> Attention:
        """Decide, from the attached model (or ``attn_implementation``), how batches keep packed examples apart.

        Raises:
            ValueError: The model's attention cannot keep packed examples apart (the message names what works).
        """
        trainer = self.trainer
        model = trainer.lightning_module if trainer is not None else None
        if model is None and self.attn_implementation == "auto" and self.packing != "none":
            rank_zero_warn(f"{type(self).__name__}: no model to read the attention implementation from; assuming "
                           "SDPA/eager (a 4-D block-diagonal mask). Set attn_implementation to be sure")
        self.attention, self.position_start = packing_attention(self.packing, self.attn_implementation, model)
        return self.attention

    def collate(self) -> LMCollate:
        """The collate function of this DataModule's loaders."""
        mlm = None
        if self.task == "mlm":
            from transformers import DataCollatorForLanguageModeling

            mlm = DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability)
        return LMCollate(pad_id=self.pad_id, attention=self.attention, flatten=self.packing == "padding_free",
                         capacity=self.max_length, pad_multiple=self.pad_multiple, mlm=mlm,
                         special_ids=list(self.tokenizer.all_special_ids), position_start=self.position_start)

    def device_transform(self, batch: Any, *, training: bool) -> Any:
        """Replace a packed batch's 2-D padding mask by the 4-D block-diagonal one, on the device."""
        if self.attention != "mask" or not isinstance(batch, dict) or "position_ids" not in batch:
            return batch
        padding = batch.get("attention_mask")
        if padding is not None and padding.dim() == 2:
            batch["attention_mask"] = block_attention_mask(batch["position_ids"], padding, causal=self.task != "mlm",
                                                           dtype=self._mask_dtype(), start=self.position_start)
        return batch

    def _mask_dtype(self) -> torch.dtype:
        # The model's dtype when it runs in half precision (a float32 mask would double the memory), else float32.
        trainer = self.trainer
        module = trainer.lightning_module if trainer is not None else None
        dtype = getattr(module, "dtype", torch.float32)
        return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32

    def token_counts(self, batch: Any) -> tuple[int, int]:
        """``(real tokens, tokens fed to the model)`` for padded, packed and flattened batches alike."""
        return real_tokens(batch)

    # ----------------------------------------------------------------- reporting
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        # "dataset" repeats "source" for the readers of describe() that still look for it (report, scan).
        info.update(source=self.source, source_kind=self.source_kind, dataset=self.source, split_notes=self.split_notes,
                    tokenizer=self.tokenizer_name, tokenizer_revision=self.tokenizer_revision,
                    task=self.task, max_length=self.max_length, max_tokens_per_batch=self.max_tokens_per_batch,
                    attention=self.attention, dropped_rows={k: dict(v) for k, v in self.dropped.items()})
        return info
