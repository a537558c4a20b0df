"""Reading every sample of a source once before training: the decode check, the content hashes, the bad share.

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
from typing import Any

from stoker.data.cache import stoker_cache
from stoker.data.file_cache import per_item_cached
from stoker.data.loader import available_cores
from stoker.data.manifest import file_sha256
from stoker.data.sources.base import Source, SourceIndex
from stoker.data.sources.folder_tree import printable


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


def unusable_samples(source: Source, index: SourceIndex, excluded: set[str], *, decode_check: bool, media: str,
                     cache_dir: str | None, progress: Callable[[str, str], Any],
                     ) -> tuple[dict[str, str], dict[str, str]]:
    """``(bad samples with their reasons, content hashes of the others)`` of an index, both cached per sample.

    Args:
        source: The reader.
        index: What it lists (its own bad entries count).
        excluded: Keys left out (quarantined); neither checked nor hashed.
        decode_check: Decode every sample once (else hashing is what meets an unreadable one).
        media: ``"image"`` or ``"audio"``: names the decode check's cache.
        cache_dir: The node-local cache folder (default stoker's).
        progress: ``(what, hint) -> Progress`` for each long step.
    """
    keys = [key for pairs in index.files.values() for key, _ in pairs if key not in excluded]
    bad = {key: reason for key, reason in index.bad.items() if key not in excluded}
    workers = min(8, available_cores())
    if decode_check:
        bar = progress("decode-checking", "verify='none' skips the check (a corrupt sample then fails the run when "
                                          "it is read)")
        try:
            bad.update(find_bad_samples(source, keys, num_workers=workers, progress=bar,
                                        cache_path=source_cache_path(source, cache_dir, media)))
        finally:
            bar.close()
    readable = [key for key in keys if key not in bad]
    bar = progress("hashing", "for the data fingerprint; a manifest from `stoker split` carries them")
    try:
        hashes, unreadable = sample_hashes(source, readable, num_workers=workers, progress=bar,
                                           cache_path=source_cache_path(source, cache_dir, "sha256"))
    finally:
        bar.close()
    bad.update(unreadable)  # with verify="none", hashing is what meets an unreadable sample
    return dict(sorted(bad.items())), hashes


def check_bad_fraction(bad: dict[str, str], total: int, *, limit: float, what: str) -> None:
    """Refuse a source whose unusable share exceeds ``limit``, listing the first ones.

    Raises:
        ValueError: More than ``limit`` of the ``total`` samples (``what``, e.g. "image files under '...'") are bad.
    """
    fraction = len(bad) / max(1, total)
    if bad and fraction > limit:
        listed = "\n".join(f"  {printable(key)}: {reason}" for key, reason in list(bad.items())[:10])
        raise ValueError(f"{len(bad)} of {total} {what} ({fraction:.1%}) are unusable, more than "
                         f"max_bad_fraction={limit:.1%}. First ones:\n{listed}\n"
                         "Fix or remove them, or raise max_bad_fraction to train without them.")
