"""Computing something for every file of a dataset once: in parallel, cached by size and mtime.

The decode check (is this file usable?) and the content hash (which bytes is it?) both read every
file of a dataset. Both run here: in threads (decoders and hashlib release the GIL, so threads
use several cores without the start-up and pickling cost of processes), with results kept in a
JSON file keyed by each file's size and modification time, so a second ``setup`` (another rank,
another run) costs one ``stat`` per unchanged file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def per_file_cached(
    root: str | os.PathLike[str],
    relpaths: Iterable[str],
    compute: Callable[[Path], Any],
    *,
    num_workers: int = 4,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, OSError]]:
    """``compute(root / rel)`` for every file, reusing cached results of unchanged files (same size and mtime).

    Args:
        root: The folder the relative paths start from.
        relpaths: Files to process.
        compute: A JSON-serialisable result per file; it must be safe to call from threads.
        num_workers: Threads.
        cache_path: Where results are kept between calls (``None``: no cache).
        progress: Called with ``(done, to_do)`` after each computed file.

    Returns:
        ``({relative path: result}, {relative path: OSError})``: the second holds the files that cannot be
        ``stat``-ed (dangling symlinks, loops) or whose ``compute`` raised ``OSError`` (permission denied,
        removed meanwhile); those are not cached, so a fixed file is computed again next time.
    """
    root_path = Path(root)

    def signature(rel: str) -> list[Any]:
        st = os.stat(root_path / rel)
        return [st.st_size, st.st_mtime_ns]

    return per_item_cached(relpaths, lambda rel: compute(root_path / rel), signature, num_workers=num_workers,
                           cache_path=cache_path, progress=progress)


def per_item_cached(
    keys: Iterable[str],
    compute: Callable[[str], Any],
    signature: Callable[[str], list[Any]],
    *,
    num_workers: int = 4,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, OSError]]:
    """``compute(key)`` for every sample, reusing cached results of samples whose ``signature(key)`` is unchanged.

    The general form of :func:`per_file_cached`, for samples that are not files of their own (rows of
    a Hugging Face table, members of a tar): the signature is whatever changes with the sample's bytes
    (a file's size and mtime, a table's fingerprint, a tar's size, mtime and the member's offset).

    Returns:
        ``({key: result}, {key: OSError})``; ``signature`` or ``compute`` raising ``OSError`` puts a key in the
        second (not cached).
    """
    cache: dict[str, list] = {}
    if cache_path is not None and cache_path.is_file():
        try:
            cache = json.loads(cache_path.read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}  # a damaged cache costs a recomputation, nothing else
    results: dict[str, Any] = {}
    missing: dict[str, OSError] = {}
    todo: list[tuple[str, list[Any]]] = []
    for key in keys:
        try:
            sign = signature(key)
        except OSError as err:
            missing[key] = err
            continue
        cached = cache.get(key)
        if cached is not None and cached[:-1] == sign:
            results[key] = cached[-1]
        else:
            todo.append((key, sign))
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        outputs = pool.map(_guarded(compute), (key for key, _ in todo), chunksize=16)
        for done, ((key, sign), (value, error)) in enumerate(zip(todo, outputs), start=1):
            if error is not None:
                missing[key] = error
            else:
                results[key] = value
                cache[key] = [*sign, value]
            if progress is not None:
                progress(done, len(todo))
    if cache_path is not None and todo:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, cache_path)  # atomic, so ranks reading it never see half a file
    return results, missing


def _guarded(compute: Callable[[str], Any]) -> Callable[[str], tuple[Any, OSError | None]]:
    def run(key: str) -> tuple[Any, OSError | None]:
        try:
            return compute(key), None
        except OSError as err:
            return None, err

    return run
