"""Write one class-folder tree of images in every source form ``ImageDataModule`` reads, the same files in each.

The folder is the reference; the others hold its bytes unchanged (no re-encoding), so a benchmark
over them measures the readers, not the data:

* ``table``: ``labels.csv`` of absolute paths to the folder's files and their class names;
* ``hf_saved``: ``DatasetDict.save_to_disk`` with a ``train`` split, an ``Image()`` column of embedded
  bytes and a ``ClassLabel``;
* ``hf_parquet``: the same dataset in a Hub repository's layout, ``data/train-00000-of-00001.parquet``;
* ``webdataset``: ``shard-NNNNNN.tar`` files of ``<class>/<stem>.jpg`` + ``.cls`` members, samples in a
  seeded random order (as WebDataset shards are written), ``per_tar`` samples per tar;
* ``shards``: a stoker shard set from ``stoker pack`` (no validation split: every sample trains).
"""

from __future__ import annotations

import csv
import io
import random
import tarfile
from pathlib import Path

from stoker.data.media import IMAGE


def folder_records(root: Path) -> list[tuple[Path, str]]:
    """``(file, class name)`` of every image under ``root/<class>/``, sorted."""
    return [(path, folder.name) for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for path in sorted(folder.iterdir()) if path.is_file() and IMAGE.is_sample(path.name)]


def write_table(out: Path, records: list[tuple[Path, str]]) -> Path:
    """``out/labels.csv`` with ``path,label`` rows (absolute paths: the folder's own files are read)."""
    out.mkdir(parents=True, exist_ok=True)
    table = out / "labels.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([str(path.resolve()), label] for path, label in records)
    return table


def _dataset_dict(records: list[tuple[Path, str]]) -> object:
    import datasets

    names = sorted({label for _, label in records})
    train = datasets.Dataset.from_dict({
        "image": [{"bytes": path.read_bytes(), "path": None} for path, _ in records],
        "label": [names.index(label) for _, label in records],
    })
    # Cast rather than encode: the stored bytes stay the folder's JPEGs byte for byte.
    train = train.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=names))
    return datasets.DatasetDict({"train": train})


def write_saved(out: Path, records: list[tuple[Path, str]]) -> Path:
    """``DatasetDict.save_to_disk`` of the records (one ``train`` split)."""
    _dataset_dict(records).save_to_disk(str(out))  # type: ignore[attr-defined]
    return out


def write_hub_parquet(out: Path, records: list[tuple[Path, str]]) -> Path:
    """A Hub repository's layout: ``out/data/train-00000-of-00001.parquet`` with the features in its schema."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    for split, dataset in _dataset_dict(records).items():  # type: ignore[attr-defined]
        dataset.to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    return out


def write_webdataset(out: Path, records: list[tuple[Path, str]], *, per_tar: int = 100, seed: int = 0) -> Path:
    """``out/shard-NNNNNN.tar``: ``<class>/<stem>.jpg`` and ``<class>/<stem>.cls`` (the class index) per sample."""
    out.mkdir(parents=True, exist_ok=True)
    names = sorted({label for _, label in records})
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    for number, start in enumerate(range(0, len(shuffled), per_tar)):
        with tarfile.open(out / f"shard-{number:06d}.tar", "w") as tar:
            for path, label in shuffled[start:start + per_tar]:
                members = {f"{label}/{path.name}": path.read_bytes(),
                           f"{label}/{path.stem}.cls": str(names.index(label)).encode()}
                for name, data in members.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return out


def write_shards(out: Path, root: Path, *, workers: int = 1) -> Path:
    """``stoker pack root --out out`` with no validation split."""
    from stoker.commands.pack import main

    if main([str(root), "--out", str(out), "--val", "0", "--workers", str(max(1, workers)), "--no-progress"]) != 0:
        raise SystemExit(f"packing {root} to {out} failed")
    return out


def write_all(root: Path, base: Path, *, workers: int = 1) -> dict[str, str]:
    """Every form of the tree ``root`` under ``base``: ``{form: the source string ImageDataModule takes}``."""
    records = folder_records(root)
    return {
        "folder": str(root),
        "table": str(write_table(base / "table", records)),
        "hf_saved": str(write_saved(base / "hf_saved", records)),
        "hf_parquet": str(write_hub_parquet(base / "hf_parquet", records)),
        "webdataset": str(write_webdataset(base / "webdataset", records)),
        "shards": str(write_shards(base / "shards", root, workers=workers)),
    }
