"""What map-style and streamed Hugging Face text classification share: :class:`HFTextBase`.

Labels (read once, before tokenizing), the tokenizer and its cache fingerprint, column and bad-row checks,
the token-length report and ``describe``; :class:`~stoker.datamodules.text.HFTextDataModule` (map-style)
and :class:`~stoker.datamodules.text_stream.HFTextStreamDataModule` build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info

from stoker.data.loader import WorkerType
from stoker.data.text import hf as td
from stoker.data.text import labels as text_labels
from stoker.data.text.lengths import length_report
from stoker.datamodules._arguments import as_sequence
from stoker.datamodules.base import StokerDataModule
from stoker.datamodules.lm_base import TokenizerMixin

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
