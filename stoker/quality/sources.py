"""Reading image folders, audio folders and text tables into per-sample records for ``stoker scan``.

Each sample becomes a :class:`Record`: where it lives, its split and label, a content hash, a
near-duplicate key and the properties that outlier checks look at. Files are read in parallel
threads (decoding and hashing release the GIL). The analysis lives in :mod:`stoker.quality.checks`.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stoker._imports import require
from stoker.data.folder import SPLIT_DIRS, index_folder
from stoker.data.hf import FILE_BUILDERS
from stoker.data.media import AUDIO, IMAGE, Media, is_skipped_file
from stoker.io.audio import AudioDecodeError, audio_problem, read_audio
from stoker.io.image import ImageDecodeError, decode_image_bytes
from stoker.quality.phash import image_phash, image_thumbnail, luma, normalize_text

# Tables with a label column: what the text DataModule reads, but plain .txt (no columns).
TEXT_EXTENSIONS: frozenset[str] = frozenset(FILE_BUILDERS) - {".txt"}
Progress = Callable[[int, int], None]


@dataclass
class Record:
    """One sample as the scan sees it.

    Attributes:
        path: Path relative to the dataset root, or ``file#row`` for a text table.
        split: ``train``, ``val``, ``test`` or ``all`` (no split known).
        label: Class name (``None`` when missing).
        sha: SHA-256 of the content (file bytes, or the text); ``None`` when unreadable.
        near: Near-duplicate key: a 64-bit perceptual hash (images) or normalised text.
        error: Why the sample cannot be used (corrupt, unreadable).
        missing: Fields that are missing or empty (``"text"``, ``"label"``, ``"audio"``).
        props: Outlier inputs: width/height/mode, duration/sample_rate/channels, or length.
        thumbnail: For images, the 16x16 gray thumbnail that confirms a near duplicate the hash proposes
            (:func:`stoker.quality.phash.image_thumbnail`, 256 bytes, made in the same decode as the hash).
        pixel_sums: Per-channel sum and sum of squares of pixel values in ``[0, 1]``, and the pixel count.
    """

    path: str
    split: str
    label: str | None
    sha: str | None = None
    near: int | str | None = None
    error: str | None = None
    missing: list[str] = field(default_factory=list)
    props: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None
    pixel_sums: tuple[np.ndarray, np.ndarray, int] | None = None


def detect_kind(path: str | os.PathLike[str]) -> str:
    """``"text"`` for a table file or a folder of tables, ``"audio"`` or ``"image"`` for a class-folder tree.

    Raises:
        FileNotFoundError: When ``path`` does not exist.
    """
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"scan path {str(target)!r} does not exist")
    if target.is_file():
        return "text"
    suffixes = [Path(name).suffix.lower() for _, _, names in os.walk(target) for name in names
                if not is_skipped_file(name)]
    votes = {
        "image": sum(1 for s in suffixes if s in IMAGE.extensions),
        "audio": sum(1 for s in suffixes if s in AUDIO.extensions),
        "text": sum(1 for s in suffixes if s in TEXT_EXTENSIONS),
    }
    return max(votes, key=lambda kind: votes[kind])


def parallel_map(function: Callable[[Any], Record], items: list[Any], num_workers: int,
                 progress: Progress | None) -> list[Record]:
    """Apply ``function`` in a thread pool, in order, reporting ``(done, total)`` to ``progress``."""
    out: list[Record] = []
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for done, record in enumerate(pool.map(function, items), start=1):
            out.append(record)
            if progress is not None:
                progress(done, len(items))
    return out


# ----------------------------------------------------------------------------- images
def image_record(root: Path, relative: str, split: str, label: str | None) -> Record:
    """Hash, decode (with the DataModules' decoder), measure, perceptually hash and thumbnail one image file."""
    record = Record(relative, split, label)
    try:
        data = (root / relative).read_bytes()
    except OSError as err:
        record.error = f"unreadable file ({err.strerror or err})"
        return record
    record.sha = hashlib.sha256(data).hexdigest()
    try:
        image = decode_image_bytes(data, relative)
    except ImageDecodeError as err:
        record.error = err.reason
        return record
    gray = luma(image)
    record.near = image_phash(gray)
    record.thumbnail = image_thumbnail(gray)
    record.props = {"width": int(image.shape[2]), "height": int(image.shape[1]), "mode": _pil_mode(data)}
    pixels = image.reshape(3, -1).double() / 255.0
    record.pixel_sums = (pixels.sum(1).numpy(), (pixels * pixels).sum(1).numpy(), int(pixels.shape[1]))
    return record


def _pil_mode(data: bytes) -> str:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return str(opened.mode)
    except Exception:  # decodable by torchvision but not by PIL: the mode is unknown, not an error
        return "unknown"


def scan_image_folder(root: str | os.PathLike[str], *, split_of: Callable[[str, str, str], str] | None = None,
                      num_workers: int = 4, progress: Progress | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every image under an image-folder tree, plus what the index noticed.

    Args:
        root: ``root/<class>/…`` or ``root/train|val|test/<class>/…``.
        split_of: ``(relative path, class name, folder split) -> split``; overrides the folder split
            (a manifest, or a seeded split of a single-folder tree).
        num_workers: Reader threads.
        progress: Called with ``(done, total)``.
    """
    return _scan_folder(root, IMAGE, image_record, split_of=split_of, num_workers=num_workers, progress=progress)


def _scan_folder(root: str | os.PathLike[str], media: Media, record_of: Callable[[Path, str, str, str | None], Record],
                 *, split_of: Callable[[str, str, str], str] | None, num_workers: int,
                 progress: Progress | None) -> tuple[list[Record], dict[str, Any]]:
    """Index a class-folder tree with the DataModules' own indexer and read every sample into a record."""
    index = index_folder(root, media=media)
    items: list[tuple[str, str, str]] = []
    for split, pairs in index.files.items():
        for relative, label in pairs:
            name = index.class_names[label]
            items.append((relative, name, split_of(relative, name, split) if split_of else split))
    records = parallel_map(lambda item: record_of(index.root, item[0], item[2], item[1]), items,
                           num_workers, progress)
    notes = {"empty_classes": index.empty_classes, "ignored_files": index.ignored, "class_names": index.class_names,
             "skipped": index.skipped}
    return records, notes


# ----------------------------------------------------------------------------- audio
def audio_record(root: Path, relative: str, split: str, label: str | None) -> Record:
    """Hash, fully decode (with the DataModules' decoder) and measure one audio file."""
    record = Record(relative, split, label)
    path = root / relative
    try:
        data = path.read_bytes()
    except OSError as err:
        record.error = f"unreadable file ({err.strerror or err})"
        return record
    record.sha = hashlib.sha256(data).hexdigest()
    require("audio", "stoker scan of an audio folder")
    try:
        # Reading every frame is what finds a file truncated after a valid header.
        waveform, rate = read_audio(path)
    except AudioDecodeError as err:
        record.error = err.reason
        return record
    frames = int(waveform.shape[-1])
    record.props = {"duration": frames / rate if rate > 0 else 0.0, "sample_rate": rate,
                    "channels": int(waveform.shape[0])}
    problem = audio_problem(waveform, rate)
    if frames == 0:
        record.missing.append("audio")
    elif problem is not None:
        record.error = problem
    return record


def scan_audio_folder(root: str | os.PathLike[str], *, split_of: Callable[[str, str, str], str] | None = None,
                      num_workers: int = 4, progress: Progress | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every audio file under ``root/<class>/…`` or ``root/train|val|test/<class>/…``."""
    return _scan_folder(root, AUDIO, audio_record, split_of=split_of, num_workers=num_workers, progress=progress)


# ----------------------------------------------------------------------------- text
def read_table(path: str | os.PathLike[str]) -> Any:
    """Read a CSV/TSV/JSON/JSON-lines/Parquet file into a pandas DataFrame.

    Raises:
        ValueError: For another extension.
    """
    require("text", "stoker scan of a table")
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=True)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True)
    if suffix == ".json":
        return pd.read_json(path)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"cannot read {str(path)!r} as a table; expected one of {sorted(TEXT_EXTENSIONS)}")


def text_files(path: str | os.PathLike[str]) -> list[tuple[Path, str]]:
    """``(file, split)`` of a table file, or of the tables in a folder named by split (``train.csv``...)."""
    target = Path(path)
    if target.is_file():
        return [(target, _split_of_name(target.stem) or "all")]
    files = sorted(p for p in target.iterdir() if p.suffix.lower() in TEXT_EXTENSIONS)
    if not files:
        raise ValueError(f"no table files ({', '.join(sorted(TEXT_EXTENSIONS))}) in {str(target)!r}")
    return [(p, _split_of_name(p.stem) or "all") for p in files]


def _split_of_name(stem: str) -> str | None:
    lowered = stem.lower()
    for split, names in SPLIT_DIRS.items():
        if lowered in names or any(lowered.endswith(f"_{n}") or lowered.endswith(f"-{n}") for n in names):
            return split
    return None


def scan_text(path: str | os.PathLike[str], *, text_column: str = "text", label_column: str | None = "label",
              split_of: Callable[[str, str, str], str] | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every row of one or more tables with a text column (and a label column).

    Raises:
        ValueError: A named column is missing from a table.
    """
    records: list[Record] = []
    for file, split in text_files(path):
        frame = read_table(file)
        for column in (text_column, label_column):
            if column is not None and column not in frame.columns:
                raise ValueError(
                    f"{str(file)!r} has no column {column!r}; its columns are {list(frame.columns)} "
                    "(choose others with --text-column/--label-column)"
                )
        labels: Iterable[Any] = frame[label_column] if label_column else [None] * len(frame)
        for row, (text, label) in enumerate(zip(frame[text_column], labels)):
            records.append(_text_record(f"{file.name}#{row}", split, text, label, label_column is not None, split_of))
    classes = sorted({r.label for r in records if r.label is not None})
    return records, {"class_names": classes}


def _text_record(key: str, split: str, text: Any, label: Any, labelled: bool,
                 split_of: Callable[[str, str, str], str] | None) -> Record:
    label_name = None if _is_missing(label) else str(label)
    record = Record(key, split, label_name)
    if labelled and label_name is None:
        record.missing.append("label")
    if _is_missing(text) or not str(text).strip():
        record.missing.append("text")
        record.props = {"length": 0}
    else:
        content = str(text)
        record.sha = hashlib.sha256(content.encode("utf-8")).hexdigest()
        record.near = normalize_text(content)
        record.props = {"length": len(content)}
    if split_of is not None:
        record.split = split_of(key, label_name or "", split)
    return record


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN (pandas' missing marker) is the only value unequal to itself
    except (TypeError, ValueError):
        return False
