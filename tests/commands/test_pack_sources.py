"""`stoker pack SOURCE`: a Hub-layout parquet dataset (``hf://<path>`` and the plain path) packed into loopback S3
holds the source's bytes, labels, keys, splits and fingerprint, and trains from the shards."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("litdata")

from stoker.commands.pack import main as pack_main  # noqa: E402
from stoker.data.sources.shards.meta import read_meta  # noqa: E402
from stoker.datamodules import ImageDataModule  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402
from tests.sources_fixtures import SPLIT_COUNTS, photo_records, write_hub_parquet  # noqa: E402

s3_server = shared.s3_server  # the loopback S3 server, by name for pytest


@pytest.fixture(scope="module")
def hub_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hub_parquet(tmp_path_factory.mktemp("hub") / "repo", photo_records())


def _dm(source: str, cache: Path) -> ImageDataModule:
    return ImageDataModule(source, batch_size=4, num_workers=0, image_size=32, cache_dir=str(cache))


def _packed(url: str, split: str, cache: Path) -> dict[str, tuple[bytes, int]]:
    from litdata import StreamingDataset

    # Iterated, not indexed: a remote chunk is fetched ahead of the items an iteration reads from it.
    return {item["key"]: (item["data"], int(item["label"])) for item in StreamingDataset(f"{url}/{split}",
                                                                                         cache_dir=str(cache))}


@pytest.mark.parametrize("form", ["hf://", "path"])
def test_a_hub_parquet_dataset_packs_into_s3_with_the_source_fingerprint(
        s3_server: str, hub_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the local repository stands in for the hub
    source = f"hf://{hub_repo}" if form == "hf://" else str(hub_repo)
    url = f"s3://stoker/packed-{'hub' if form == 'hf://' else 'path'}"
    assert pack_main([source, "--out", url, "--workers", "1", "--chunk-size", "8", "--no-progress",
                      "--cache-dir", str(tmp_path / "cache")]) == 0
    original = _dm(source, tmp_path / "cache")
    original.prepare_data()
    original.setup("fit")
    meta = read_meta(url)
    assert meta.fingerprint == original.fingerprint, "the same samples, labels, keys, splits and bytes"
    assert meta.splits == {split: n * 3 for split, n in SPLIT_COUNTS.items()}, "the given splits are kept"
    assert meta.extra["source_kind"] == "hf" and meta.extra["root"] == source
    assert original.reader is not None
    packed = _packed(url, "val", tmp_path / "stream")
    assert packed == {key: (original.reader.read_bytes(key), label) for key, label in original.splits["val"]}
    if form == "path":
        return
    import lightning as L

    from stoker.models import ImageClassifier

    shards = _dm(url, tmp_path / "shard-cache")
    assert shards.source_kind == "shards"
    trainer = L.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(ImageClassifier("resnet10t", num_classes=shards.num_classes), datamodule=shards)
    assert trainer.global_step == 1 and shards.fingerprint == original.fingerprint
