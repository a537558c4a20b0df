"""What ``cache_dir`` means, in every DataModule: the node-local folder for everything it caches.

One argument, one meaning, laid out here once:

=====================  ==============================================================
``<cache_dir>/scan``   per-sample decode checks and content hashes (stoker)
``<cache_dir>/hf``     Hugging Face datasets' cache (converted tables, hub downloads)
``<cache_dir>/tokenized``  tokenized text and packed language-model rows (stoker, via datasets)
``<cache_dir>/webdataset``  tar indexes and downloaded remote tars (stoker)
``<cache_dir>/chunks``  litdata's cache of a remote shard set's chunks
``<cache_dir>/shards``  stoker's record of the shard-set checks of this node
=====================  ==============================================================

With ``cache_dir=None`` stoker's parts live under ``$STOKER_CACHE`` (default ``~/.cache/stoker``) and
each library's under its own default (``HF_DATASETS_CACHE``, litdata's), so a user's existing caches
are reused.
"""

from __future__ import annotations

import os
from pathlib import Path

PARTS: tuple[str, ...] = ("scan", "hf", "tokenized", "webdataset", "chunks", "shards")


def stoker_cache(cache_dir: str | os.PathLike[str] | None, part: str) -> Path:
    """Where stoker keeps ``part`` of its caches (always a folder: ``cache_dir`` or ``$STOKER_CACHE``)."""
    _check(part)
    base = Path(cache_dir) if cache_dir else Path(os.environ.get("STOKER_CACHE", "~/.cache/stoker"))
    return base.expanduser() / part


def library_cache(cache_dir: str | os.PathLike[str] | None, part: str) -> str | None:
    """Where a library keeps ``part`` of its cache under ``cache_dir``, or ``None`` for the library's own default."""
    _check(part)
    return os.path.join(os.path.expanduser(os.fspath(cache_dir)), part) if cache_dir else None


def _check(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"unknown cache part {part!r}; expected one of {PARTS}")
