"""`stoker split SOURCE` writes a manifest keyed by the DataModules' keys, for any source; an ImageDataModule on
that source with ``manifest=`` trains on exactly that split, with the manifest's fingerprint."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from stoker.commands.pack import main as pack_main
from stoker.commands.split import main as split_main
from stoker.data.manifest import read_manifest
from stoker.datamodules import ImageDataModule
from tests.quality.test_scan_sources import multi_label_parquet
from tests.sources_fixtures import photo_records, write_hub_parquet, write_table


def _follows(manifest: Path, source: Path, **kwargs: object) -> ImageDataModule:
    dm = ImageDataModule(str(source), batch_size=4, num_workers=0, image_size=32, manifest=str(manifest), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fingerprint that differs from the manifest's warns
        dm.setup("fit")
    rows = read_manifest(manifest)
    for split in ("train", "val", "test"):
        assert sorted(key for key, _ in dm.splits[split]) == sorted(r.path for r in rows.rows if r.split == split)
    assert dm.fingerprint == rows.fingerprint
    return dm


def test_a_hugging_face_dataset_keeps_its_splits_in_the_manifest(tmp_path: Path) -> None:
    repo = write_hub_parquet(tmp_path / "repo", photo_records())
    manifest = tmp_path / "splits.csv"
    assert split_main([str(repo), "--val", "0.5", "--out", str(manifest), "--cache-dir", str(tmp_path / "c")]) == 0
    rows = read_manifest(manifest).rows
    assert {r.split for r in rows if r.path.startswith("train#")} == {"train"}, "given splits are not re-split"
    assert sum(r.split == "val" for r in rows) == 6 and {r.label for r in rows} == {"bird", "cat", "dog"}
    assert read_manifest(manifest).meta["source_kind"] == "hf"
    _follows(manifest, repo, cache_dir=str(tmp_path / "c"))


def test_multi_label_rows_are_joined_and_the_datamodule_follows_the_carved_split(tmp_path: Path) -> None:
    table, labels = multi_label_parquet(tmp_path / "ml")
    manifest = tmp_path / "splits.csv"
    assert split_main([str(table), "--multi-label", "--val", "0.2", "--seed", "3", "--out", str(manifest)]) == 0
    rows = {r.path: r for r in read_manifest(manifest).rows}
    two = next(row for row, names in enumerate(labels) if len(names) == 2)
    assert rows[f"train#{two}"].label == ";".join(labels[two])
    assert sum(r.split == "val" for r in rows.values()) == round(0.2 * len(labels)), "one pool for label sets"
    dm = _follows(manifest, table, multi_label=True)
    assert dm.split_notes == [f"splits from the manifest {str(manifest)!r}"]


def test_split_and_pack_refuse_a_single_class_as_the_datamodules_do(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    table = write_table(tmp_path, [r for r in photo_records() if r.label == "dog"])
    assert split_main([str(table), "--out", str(tmp_path / "s.csv")]) == 2
    assert "single class 'dog' to tell apart" in capsys.readouterr().err
    pytest.importorskip("litdata")
    assert pack_main([str(table), "--out", str(tmp_path / "shards"), "--no-progress"]) == 2
    assert "single class 'dog' to tell apart" in capsys.readouterr().err
    assert pack_main([str(table), "--multi-label", "--out", str(tmp_path / "shards"), "--no-progress"]) == 2
    assert "one label per sample" in capsys.readouterr().err
