"""Kill-and-resume variants of ImageDataModule on sources other than class folders (tests/datamodules/test_resume.py).

``build(variant, data, workers)``: ``data`` holds the same photo records in three forms, written by the
test with tests/sources_fixtures.py: ``table`` (``table/labels.csv`` and its files), ``hf_saved`` (a
``DatasetDict.save_to_disk`` folder) and ``webdataset`` (``webdataset/<split>-NNNNNN.tar``). Samples
are identified by their position in the training split (``index``), the default of resume_run.py.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

SOURCES = {"table": "table/labels.csv", "hf_saved": "hf_saved", "webdataset": "webdataset"}


def build(variant: str, data: Path, workers: int) -> L.LightningDataModule:
    from stoker.datamodules import ImageDataModule
    from tests.sources_fixtures import CLASSES

    if variant not in SOURCES:
        raise ValueError(f"unknown source variant {variant!r}; expected one of {sorted(SOURCES)}")
    # WebDataset .cls members hold class indices; the names come from class_names.
    names = {"class_names": list(CLASSES)} if variant == "webdataset" else {}
    return ImageDataModule(str(data / SOURCES[variant]), batch_size=4, num_workers=workers, image_size=8,
                           cache_dir=str(data / f"cache-{variant}"), **names)
