"""One small labelled, pre-split photo dataset written in every source form stoker reads.

The photos are crops of scikit-learn's two sample photographs (real JPEGs, 40-64 px), the same
records in every form, so a test can check that each reader gives the same samples, labels and
splits. Recordings are the demo's tones (``stoker.demos.tones``), written as WAV bytes.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("bird", "cat", "dog")
SPLIT_COUNTS = {"train": 6, "val": 2, "test": 2}  # per class
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class Record:
    """One sample: a stable name, its encoded bytes, class and split."""

    name: str
    data: bytes
    label: str
    split: str
    suffix: str = ".jpg"


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image) for image in load_sample_images().images]


def photo_records(*, seed: int = 0, counts: dict[str, int] | None = None) -> list[Record]:
    """JPEG crops of real photos, ``counts`` per class and split (default :data:`SPLIT_COUNTS`)."""
    photos = _photos()
    rng = np.random.default_rng(seed)
    records = []
    for split, per_class in (counts or SPLIT_COUNTS).items():
        for label in CLASSES:
            for i in range(per_class):
                photo = photos[int(rng.integers(len(photos)))]
                side = int(rng.integers(60, 200))
                y, x = int(rng.integers(0, photo.shape[0] - side)), int(rng.integers(0, photo.shape[1] - side))
                image = Image.fromarray(photo[y:y + side, x:x + side]).resize(
                    (int(rng.integers(40, 65)), int(rng.integers(40, 65))))
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=int(rng.integers(70, 95)))
                records.append(Record(f"{split}_{label}_{i:03d}", buffer.getvalue(), label, split))
    return records


def tone_records(*, per_class: int = 4) -> list[Record]:
    """WAV bytes of the demo's tones, chirps and noise: two classes, given train and val splits."""
    import soundfile as sf

    from stoker.demos.tones import synthesize_clip

    rng = np.random.default_rng(0)
    records = []
    for split, count in (("train", per_class), ("val", 2)):
        for label in ("tone_low", "noise_burst"):
            for i in range(count):
                clip = synthesize_clip(label, rng, 8000, 0.5)
                buffer = io.BytesIO()
                sf.write(buffer, clip, 8000, format="WAV", subtype="PCM_16")
                records.append(Record(f"{split}_{label}_{i:03d}", buffer.getvalue(), label, split, ".wav"))
    return records


# ----------------------------------------------------------------------------- writers, one per form
def write_folder(root: Path, records: list[Record], *, presplit: bool = True) -> Path:
    """``root/<split>/<class>/<name>.jpg`` (``val`` as the folder name), or ``root/<class>/`` without splits."""
    for r in records:
        folder = root / r.split / r.label if presplit else root / r.label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{r.name}{r.suffix}").write_bytes(r.data)
    return root


def write_table(root: Path, records: list[Record], *, fmt: str = "csv", split_column: bool = True,
                label_as_index: bool = False, absolute: bool = False) -> Path:
    """Files under ``root/files/`` and a table of ``path,label[,split]`` beside them (paths relative to the table)."""
    (root / "files").mkdir(parents=True, exist_ok=True)
    rows = []
    for r in records:
        path = root / "files" / f"{r.name}{r.suffix}"
        path.write_bytes(r.data)
        label: object = CLASSES.index(r.label) if label_as_index else r.label
        row = {"path": str(path) if absolute else f"files/{path.name}", "label": label}
        if split_column:
            row["split"] = {"val": "validation"}.get(r.split, r.split)
        rows.append(row)
    table = root / f"labels.{fmt}"
    if fmt in ("csv", "tsv"):
        with open(table, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t" if fmt == "tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    elif fmt == "jsonl":
        table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), table)
    return table


def hf_dataset_dict(records: list[Record], *, field: str = "image", class_label: bool = True) -> object:
    """A ``DatasetDict`` with an ``Image()`` (or ``Audio()``) column of embedded bytes and a ``ClassLabel``."""
    import datasets

    names = sorted({r.label for r in records})
    media = datasets.Image() if field == "image" else datasets.Audio()
    label = datasets.ClassLabel(names=names) if class_label else datasets.Value("string")
    out = {}
    for ours, theirs in HF_SPLITS.items():
        chosen = [r for r in records if r.split == ours]
        if chosen:
            dataset = datasets.Dataset.from_dict(
                {field: [{"bytes": r.data, "path": None} for r in chosen],
                 "label": [names.index(r.label) if class_label else r.label for r in chosen]})
            # Cast rather than encode: datasets encodes Audio() values through torchcodec, cast keeps the bytes.
            out[theirs] = dataset.cast_column(field, media).cast_column("label", label)
    return datasets.DatasetDict(out)


def write_saved(root: Path, records: list[Record], *, field: str = "image") -> Path:
    """``DatasetDict.save_to_disk`` of :func:`hf_dataset_dict`."""
    hf_dataset_dict(records, field=field).save_to_disk(str(root))  # type: ignore[attr-defined]
    return root


def write_hub_parquet(root: Path, records: list[Record], *, field: str = "image") -> Path:
    """A hub repository's layout: ``root/data/<split>-00000-of-00001.parquet`` with the features in the schema."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, dataset in hf_dataset_dict(records, field=field).items():  # type: ignore[attr-defined]
        dataset.to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    return root


def write_webdataset(root: Path, records: list[Record], *, per_tar: int = 10, label: str = "cls") -> Path:
    """``root/<split>-NNNNNN.tar`` shards of ``<key>.jpg`` + ``<key>.cls`` (class index) or ``.json``."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        chosen = [r for r in records if r.split == split]
        for number, start in enumerate(range(0, len(chosen), per_tar)):
            with tarfile.open(root / f"{split}-{number:06d}.tar", "w") as tar:
                for r in chosen[start:start + per_tar]:
                    members = {f"{r.name}{r.suffix}": r.data}
                    if label == "cls":
                        members[f"{r.name}.cls"] = str(CLASSES.index(r.label)).encode()
                    else:
                        members[f"{r.name}.json"] = json.dumps({"label": r.label}).encode()
                    for name, data in members.items():
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
    return root


def write_shards(root: Path, records: list[Record], tmp: Path) -> Path:
    """A stoker shard set packed (``stoker pack``) from the class-folder form."""
    from stoker.commands.pack import main as pack_main

    folder = write_folder(tmp / "for-shards", records)
    assert pack_main([str(folder), "--out", str(root), "--workers", "1", "--no-progress"]) == 0
    return root


WRITERS: dict[str, Callable[[Path, list[Record]], Path]] = {
    "folder": write_folder,
    "table": write_table,
    "hf_saved": write_saved,
    "hf_parquet": write_hub_parquet,
    "webdataset": write_webdataset,
}
