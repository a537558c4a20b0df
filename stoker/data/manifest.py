"""Split manifests and dataset fingerprints: which file is in which split, at which content.

A manifest is a CSV file (``path,label,split,sha256``) preceded by ``#`` metadata lines, one of
them the dataset fingerprint. It diffs well in version control, and pandas reads it with
``comment="#"``. Splits come from :mod:`stoker.data.splits` (a seeded per-sample hash), so they do
not depend on listing order and adding a file moves only that file.

The fingerprint is a hash of every ``(split, label, path, content hash)``: it changes when one
byte of one file changes, when a file is added, removed or relabelled, or when the split moves.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stoker.data.file_cache import per_file_cached
from stoker.data.splits import SPLITS, SplitMethod, stratified_split, validate_fractions

MANIFEST_COLUMNS: tuple[str, ...] = ("path", "label", "split", "sha256")
_MAGIC = "# stoker-manifest v1"


@dataclass(frozen=True, order=True)
class ManifestRow:
    """One sample of a manifest: path relative to the root, class name, split and SHA-256 of its bytes."""

    path: str
    label: str
    split: str
    sha256: str


@dataclass
class Manifest:
    """A versioned split of a dataset.

    Attributes:
        rows: The samples, sorted by path.
        meta: How it was made (seed, fractions, root); written as ``# key: value`` lines.
    """

    rows: list[ManifestRow]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """The dataset fingerprint of these rows (see :func:`dataset_fingerprint`)."""
        return dataset_fingerprint((r.split, r.label, r.path, r.sha256) for r in self.rows)

    def split_of(self) -> dict[str, str]:
        """``{path: split}``."""
        return {row.path: row.split for row in self.rows}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(root: str | os.PathLike[str], relpaths: Iterable[str], *, num_workers: int = 4,
                   cache_path: Path | None = None,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``({relative path: SHA-256}, {relative path: why it could not be read})`` for many files, in parallel.

    Cached by size and modification time: a second ``setup`` (another rank, another run) costs one
    ``stat`` per file; a file whose bytes change gets a new size or modification time and is
    hashed again. Unreadable files (missing, dangling symlinks, permission denied) are returned
    with the reason, never raised: the caller decides whether they are bad data or an error.
    """
    digests, missing = per_file_cached(root, relpaths, file_sha256, num_workers=num_workers, cache_path=cache_path,
                                       progress=progress)
    return digests, {rel: f"unreadable file ({err.strerror or err})" for rel, err in missing.items()}


def dataset_fingerprint(items: Iterable[tuple[str, str, str, str]]) -> str:
    """A 32-hex-digit hash of ``(split, label, path, content hash)`` items, independent of their order."""
    digest = hashlib.sha256()
    for item in sorted(items):
        # surrogateescape: a file name that is not valid UTF-8 hashes as its original bytes.
        digest.update(("\t".join(item) + "\n").encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


def assign_splits(samples: Iterable[tuple[str, str, str]], *, val_fraction: float, test_fraction: float,
                  seed: int, method: SplitMethod = "quota") -> dict[str, str]:
    """``{path: split}`` for ``(path, class name, folder split)`` samples.

    Samples already in a ``val``/``test`` folder stay there; a pre-split tree only gets the splits it
    lacks carved out of ``train``; a single-folder tree (folder split ``all``) is split entirely, by
    :func:`stoker.data.splits.stratified_split` per class, exactly as the DataModules split it.
    """
    validate_fractions(val_fraction, test_fraction)
    samples = list(samples)
    present = {split for _, _, split in samples}
    out = {path: split for path, _, split in samples if split in ("val", "test")}
    pool = [(path, name) for path, name, split in samples if split not in ("val", "test")]
    parts = stratified_split([path for path, _ in pool], [name for _, name in pool],
                             val_fraction=0.0 if "val" in present else val_fraction,
                             test_fraction=0.0 if "test" in present else test_fraction, seed=seed, method=method)
    out.update({pool[i][0]: split for split, positions in parts.items() for i in positions})
    return out


def build_manifest(samples: list[tuple[str, str, str]], hashes: dict[str, str], *, val_fraction: float,
                   test_fraction: float, seed: int, meta: dict[str, str] | None = None,
                   method: SplitMethod = "quota") -> Manifest:
    """A manifest of ``(path, class name, folder split)`` samples with their content hashes."""
    split_of = assign_splits(samples, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                             method=method)
    rows = sorted(ManifestRow(path, label, split_of[path], hashes[path]) for path, label, _ in samples)
    info = {"seed": str(seed), "val_fraction": str(val_fraction), "test_fraction": str(test_fraction),
            "split_method": method, **(meta or {})}
    return Manifest(rows, info)


def write_manifest(manifest: Manifest, path: str | os.PathLike[str]) -> None:
    """Write ``manifest`` as CSV with ``# key: value`` metadata lines (the fingerprint first)."""
    buffer = io.StringIO()
    buffer.write(f"{_MAGIC}\n# fingerprint: {manifest.fingerprint}\n")
    for key, value in manifest.meta.items():
        buffer.write(f"# {key}: {value}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    writer.writerows((r.path, r.label, r.split, r.sha256) for r in manifest.rows)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # surrogateescape: a file name that is not valid UTF-8 is written as its original bytes, and read back.
    target.write_text(buffer.getvalue(), encoding="utf-8", errors="surrogateescape")


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest written by :func:`write_manifest` (or by hand with the same columns).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Wrong columns, an unknown split, a repeated path, or a stored fingerprint that
            does not match the rows (the file was edited without updating it).
    """
    target = Path(path)
    if not target.is_file():
        raise FileNotFoundError(f"manifest {str(target)!r} does not exist; write one with `stoker split`")
    lines = target.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    meta = {}
    for line in lines:
        if line.startswith("#") and ":" in line and not line.startswith(_MAGIC):
            key, value = line[1:].split(":", 1)
            meta[key.strip()] = value.strip()
    body = [line for line in lines if not line.startswith("#")]
    reader = csv.reader(body)
    header = next(reader, None)
    if header is None or tuple(header) != MANIFEST_COLUMNS:
        raise ValueError(f"manifest {str(target)!r} must have the columns {','.join(MANIFEST_COLUMNS)}, got {header}")
    rows: list[ManifestRow] = []
    seen: set[str] = set()
    for number, values in enumerate(reader, start=2):
        if len(values) != len(MANIFEST_COLUMNS) or values[2] not in SPLITS:
            raise ValueError(f"manifest {str(target)!r} data line {number}: expected path,label,split,sha256 with "
                             f"split in {SPLITS}, got {values}")
        if values[0] in seen:
            raise ValueError(f"manifest {str(target)!r} lists {values[0]!r} twice")
        seen.add(values[0])
        rows.append(ManifestRow(*values))
    stored = meta.pop("fingerprint", None)
    manifest = Manifest(sorted(rows), meta)
    if stored is not None and stored != manifest.fingerprint:
        raise ValueError(f"manifest {str(target)!r} says fingerprint {stored} but its rows hash to "
                         f"{manifest.fingerprint}; it was edited by hand: rewrite it with `stoker split`")
    return manifest


def manifest_splits(manifest_path: str | os.PathLike[str], available: dict[str, list[tuple[str, int]]],
                    class_names: list[str]) -> dict[str, list[tuple[str, int]]]:
    """The DataModule's splits as a manifest says, among the files still ``available`` (after exclusions).

    Files on disk that the manifest does not list are left out: the manifest is the dataset version.

    Raises:
        ValueError: A manifest label is not a class name, or a manifest file is not on disk.
    """
    manifest = read_manifest(manifest_path)
    label_of = {name: i for i, name in enumerate(class_names)}
    on_disk = {rel for pairs in available.values() for rel, _ in pairs}
    out: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    unknown = sorted({r.label for r in manifest.rows} - set(label_of))
    if unknown:
        raise ValueError(f"manifest {str(manifest_path)!r} uses labels {unknown} that are not class names "
                         f"{class_names}; the manifest was made for another dataset root")
    for row in manifest.rows:
        if row.path in on_disk:
            out[row.split].append((row.path, label_of[row.label]))
    return out


def missing_from_disk(manifest_path: str | os.PathLike[str], root: str | os.PathLike[str]) -> list[str]:
    """Manifest paths that do not exist under ``root``."""
    return [r.path for r in read_manifest(manifest_path).rows if not (Path(root) / r.path).is_file()]


def splits_fingerprint(splits: dict[str, list[tuple[str, int]]], class_names: list[str],
                       hashes: dict[str, str]) -> str:
    """Fingerprint of a DataModule's final splits (the same value a manifest of them would carry).

    Args:
        splits: ``{split: [(relative path, label)]}``.
        class_names: Label names, by label.
        hashes: SHA-256 of every listed file (:func:`content_hashes`).
    """
    return dataset_fingerprint(
        (split, class_names[y], rel, hashes[rel]) for split, pairs in splits.items() for rel, y in pairs
    )


def check_manifest_fingerprint(manifest_path: str | os.PathLike[str] | None, fingerprint: str) -> str | None:
    """Warn (and return the message) when the data a DataModule built differs from its manifest's version.

    A difference means files changed, disappeared or were excluded (corrupt, quarantined) since
    the manifest was written.
    """
    if manifest_path is None:
        return None
    expected = read_manifest(manifest_path).fingerprint
    if expected == fingerprint:
        return None
    message = (f"the data under the manifest {str(manifest_path)!r} has fingerprint {fingerprint}, but the manifest "
               f"was written for {expected}: files changed, went missing or were excluded since. Compare with "
               "`stoker scan --manifest` and rewrite the manifest with `stoker split` if the change is intended.")
    warnings.warn(message, stacklevel=2)
    return message
