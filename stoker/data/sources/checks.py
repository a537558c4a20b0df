"""Reading every sample of a source once before training: the decode check and the content hashes.

Both run in threads over :func:`stoker.data.file_cache.per_item_cached`, cached per sample under
the source's signature of it, so the second ``setup`` (another rank, another run) re-reads only
what changed. Files on the local disk are checked and hashed as files (the folder and table
readers); samples stored inside something else (a Hugging Face table, a tar) through their bytes.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

from stoker.data.cache import stoker_cache
from stoker.data.file_cache import per_item_cached
from stoker.data.manifest import file_sha256
from stoker.data.sources.base import Source


def source_cache_path(source: Source, cache_dir: str | os.PathLike[str] | None, purpose: str) -> Path:
    """Where per-sample results of ``source`` are kept: ``<cache>/scan/<source id>.<purpose>.json``.

    ``cache_dir`` defaults to ``$STOKER_CACHE`` or ``~/.cache/stoker``.
    """
    return stoker_cache(cache_dir, "scan") / f"{source.cache_id()}.{purpose}.json"


def find_bad_samples(source: Source, keys: Iterable[str], *, num_workers: int = 4, cache_path: Path | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, str]:
    """``{key: reason}`` of the samples the media's check refuses (a full decode), or that cannot be read."""
    media = source.media
    if source.local_files:
        def compute(key: str) -> str | None:
            return media.check(source.local_path(key))  # type: ignore[arg-type]
    else:
        def compute(key: str) -> str | None:
            return media.check_bytes(source.read_bytes(key), source.name_of(key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders warn about odd headers of samples reported here anyway
        reasons, missing = per_item_cached(keys, compute, source.signature, num_workers=num_workers,
                                           cache_path=cache_path, progress=progress)
    bad = {key: reason for key, reason in reasons.items() if reason is not None}
    bad.update({key: f"unreadable file ({err.strerror or err})" for key, err in missing.items()})
    return dict(sorted(bad.items()))


def sample_hashes(source: Source, keys: Iterable[str], *, num_workers: int = 4, cache_path: Path | None = None,
                  progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``({key: SHA-256 of its bytes}, {key: why it could not be read})``."""
    if source.local_files:
        def compute(key: str) -> str:
            return file_sha256(source.local_path(key))  # type: ignore[arg-type]
    else:
        def compute(key: str) -> str:
            return hashlib.sha256(source.read_bytes(key)).hexdigest()
    digests, missing = per_item_cached(keys, compute, source.signature, num_workers=num_workers,
                                       cache_path=cache_path, progress=progress)
    return digests, {key: f"unreadable file ({err.strerror or err})" for key, err in missing.items()}
