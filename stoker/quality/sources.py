"""Reading a source's samples (images, audio) and text tables into per-sample records for ``stoker scan``.

Each sample becomes a :class:`Record`: its key, split and label, a content hash, a near-duplicate
key and the properties that outlier checks look at. Images and audio are read through the
DataModules' own source readers (:mod:`stoker.data.sources`): one function per media reads one
sample's bytes with :meth:`~stoker.data.sources.Source.read_bytes`, whatever stores it (a class
folder, a table of files, a Hugging Face dataset, WebDataset tars), so a record's ``path`` is the
key the DataModules use, and a quarantine list written from it leaves out what it names. Samples
are read in parallel threads (decoding and hashing release the GIL). The analysis lives in
:mod:`stoker.quality.checks`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stoker._imports import require
from stoker.data.media import AUDIO, IMAGE
from stoker.data.sources import FolderSource, LabelMap, Source, SourceIndex
from stoker.data.sources.folder_tree import SPLIT_DIRS
from stoker.data.text.hf import FILE_BUILDERS
from stoker.io.audio import AudioDecodeError, audio_problem, read_audio
from stoker.io.image import ImageDecodeError, decode_image_bytes
from stoker.quality.phash import image_phash, image_thumbnail, luma, normalize_text

# Tables with a label column: what the text DataModule reads, but plain .txt (no columns).
TEXT_EXTENSIONS: frozenset[str] = frozenset(FILE_BUILDERS) - {".txt"}
Progress = Callable[[int, int], None]
# A record's label: a class name, the sorted class names of a multi-label sample, or None (missing).
RecordLabel = str | tuple[str, ...] | None
SplitOf = Callable[[str, str, str], str]


@dataclass
class Record:
    """One sample as the scan sees it.

    Attributes:
        path: The sample's key (a path relative to the dataset root or table, ``<split>#<row>`` of a
            Hugging Face dataset, ``<tar>#<sample>`` of a WebDataset tar), or ``file#row`` for a text table.
        split: ``train``, ``val``, ``test`` or ``all`` (no split known).
        label: Class name; for a multi-label sample the sorted tuple of its class names; ``None`` when missing.
        sha: SHA-256 of the content (the sample's bytes, or the text); ``None`` when unreadable.
        near: Near-duplicate key: a 64-bit perceptual hash (images) or normalised text.
        error: Why the sample cannot be used (corrupt, unreadable, a label outside the classes).
        missing: Fields that are missing or empty (``"text"``, ``"label"``, ``"audio"``).
        props: Outlier inputs: width/height/mode, duration/sample_rate/channels, or length.
        thumbnail: For images, the 16x16 gray thumbnail that confirms a near duplicate the hash proposes
            (:func:`stoker.quality.phash.image_thumbnail`, 256 bytes, made in the same decode as the hash).
        pixel_sums: Per-channel sum and sum of squares of pixel values in ``[0, 1]``, and the pixel count.
    """

    path: str
    split: str
    label: RecordLabel
    sha: str | None = None
    near: int | str | None = None
    error: str | None = None
    missing: list[str] = field(default_factory=list)
    props: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None
    pixel_sums: tuple[np.ndarray, np.ndarray, int] | None = None


def label_names(label: RecordLabel) -> tuple[str, ...]:
    """The class names a record's label holds (none when missing, one for a single label)."""
    if label is None:
        return ()
    return label if isinstance(label, tuple) else (label,)


def label_text(label: Any) -> str:
    """A label for messages and manifests: multi-label names joined by ``;`` (as the tables write them)."""
    if isinstance(label, list | tuple):
        return ";".join(str(name) for name in label)
    return "" if label is None else str(label)


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


def _read(source: Source, record: Record) -> bytes | None:
    """The sample's bytes, with its hash recorded; ``None`` (and the reason in ``record.error``) when unreadable."""
    try:
        data = source.read_bytes(record.path)
    except OSError as err:
        record.error = f"unreadable file ({err.strerror or err})"
        return None
    record.sha = hashlib.sha256(data).hexdigest()
    return data


# ----------------------------------------------------------------------------- images
def image_record(source: Source, key: str, split: str, label: RecordLabel) -> Record:
    """Hash, decode (with the DataModules' decoder), measure, perceptually hash and thumbnail one image sample."""
    record = Record(key, split, label)
    data = _read(source, record)
    if data is None:
        return record
    try:
        image = decode_image_bytes(data, source.name_of(key))
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


# ----------------------------------------------------------------------------- audio
def audio_record(source: Source, key: str, split: str, label: RecordLabel) -> Record:
    """Hash, fully decode (with the DataModules' decoder) and measure one audio sample."""
    record = Record(key, split, label)
    data = _read(source, record)
    if data is None:
        return record
    require("audio", "stoker scan of audio")
    try:
        # Reading every frame is what finds a file truncated after a valid header.
        waveform, rate = _decode_audio(source, key, data)
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


def _decode_audio(source: Source, key: str, data: bytes) -> Any:
    path = source.local_path(key)
    if path is not None:
        return read_audio(path)
    # Stored inside a table or a tar: the bytes go through the file decoder (soundfile, then TorchCodec
    # for what libsndfile cannot read), so a stored recording is judged exactly as the same file would be.
    with tempfile.TemporaryDirectory(prefix="stoker-scan-") as folder:
        suffix = Path(key).suffix.lower()
        target = Path(folder) / ("sample" + (suffix if suffix in AUDIO.extensions else ""))
        target.write_bytes(data)
        try:
            return read_audio(target)
        except AudioDecodeError as err:  # the reason names the sample, not the temporary file
            raise AudioDecodeError(source.name_of(key), err.reason.replace(str(target), source.name_of(key))) from err


RECORD_READERS: dict[str, Callable[[Source, str, str, RecordLabel], Record]] = {
    "image": image_record,
    "audio": audio_record,
}


# ----------------------------------------------------------------------------- any source
def read_source(source: Source, *, index: SourceIndex | None = None, split_of: SplitOf | None = None,
                num_workers: int = 4, progress: Progress | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every sample of a source, read through its reader, plus what its index noticed.

    Samples the index refused (a missing or unknown label, a tar sample without media) become records
    too, in the split ``excluded``, so the scan names them: a missing label or path under ``missing``,
    any other reason as unusable.

    Args:
        source: A reader (:func:`stoker.data.sources.open_source`, or a DataModule's ``reader``).
        index: Its index (default: ``source.index()``).
        split_of: ``(key, class name(s), source split) -> split``; overrides the source's split (a manifest,
            a seeded split of a source without splits, or a DataModule's actual split).
        num_workers: Reader threads.
        progress: Called with ``(done, total)``.
    """
    index = index if index is not None else source.index()
    labels = LabelMap(index.class_names)  # name_of joins a multi-label tuple's names whatever the flag
    items: list[tuple[str, str, RecordLabel]] = []
    for split, pairs in index.files.items():
        for key, label in pairs:
            name: RecordLabel = (tuple(index.class_names[i] for i in label) if isinstance(label, tuple)
                                 else index.class_names[label])
            items.append((key, split_of(key, labels.name_of(label), split) if split_of else split, name))
    record_of = RECORD_READERS[source.media.name]
    records = parallel_map(lambda item: record_of(source, *item), items, num_workers, progress)
    for key, reason in index.bad.items():
        record = Record(key, "excluded", None)  # the DataModules leave these out of every split
        if reason.startswith("missing "):
            record.missing.append(reason.removeprefix("missing "))
        else:
            record.error = reason
        records.append(record)
    notes = {"empty_classes": index.empty_classes, "ignored_files": index.ignored, "class_names": index.class_names,
             "skipped": index.skipped, "source_notes": index.notes}
    return records, notes


def scan_image_folder(root: str | os.PathLike[str], *, split_of: SplitOf | None = None, num_workers: int = 4,
                      progress: Progress | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every image under ``root/<class>/…`` or ``root/train|val|test/<class>/…`` (:func:`read_source`)."""
    return read_source(FolderSource(os.fspath(root), IMAGE), split_of=split_of, num_workers=num_workers,
                       progress=progress)


def scan_audio_folder(root: str | os.PathLike[str], *, split_of: SplitOf | None = None, num_workers: int = 4,
                      progress: Progress | None = None) -> tuple[list[Record], dict[str, Any]]:
    """Records of every audio file under ``root/<class>/…`` or ``root/train|val|test/<class>/…``."""
    return read_source(FolderSource(os.fspath(root), AUDIO), split_of=split_of, num_workers=num_workers,
                       progress=progress)


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
              split_of: SplitOf | None = None) -> tuple[list[Record], dict[str, Any]]:
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
                 split_of: SplitOf | None) -> Record:
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
