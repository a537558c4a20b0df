"""Shard sets are data: reading one never runs code, a damaged chunk is named (and skipped on request),
an unreachable object store fails fast with a clear message, and credentials are never written down."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
import yaml

from stoker.data.sources.shards.meta import META_NAME, ShardFormatError, check_index_config
from stoker.datamodules import ShardedImageDataModule
from tests.data import test_shards as shared

# The shared shard fixtures (a packed tree, the loopback S3 server), by name for pytest.
image_tree_root = shared.image_tree_root
shard_set = shared.shard_set
s3_server = shared.s3_server

litdata = pytest.importorskip("litdata")


class _Payload:
    """Unpickling it creates the file ``marker``: the proof that reading a shard set ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


def _pickle_shard_set(root: Path, marker: Path, real: Path) -> Path:
    """A shard set whose samples litdata stores with its pickle serializer, beside a real stoker metadata file."""
    from litdata.streaming.writer import BinaryWriter

    for split in ("train", "val"):
        writer = BinaryWriter(str(root / split), chunk_size=4)
        for index in range(8):
            writer[index] = {"data": _Payload(str(marker)), "label": 0, "index": index, "key": f"x{index}"}
        writer.done()
        writer.merge()
    meta = json.loads((real / META_NAME).read_text())
    meta["splits"] = {"train": 8, "val": 8}
    (root / META_NAME).write_text(json.dumps(meta))
    return root


def test_a_shard_set_that_declares_pickled_samples_is_refused_before_any_sample_is_read(tmp_path, shard_set) -> None:
    marker = tmp_path / "code-ran"
    crafted = _pickle_shard_set(tmp_path / "crafted", marker, shard_set)
    index = json.loads((crafted / "train" / "index.json").read_text())
    assert "pickle" in index["config"]["data_format"]  # the file really asks litdata to unpickle
    dm = ShardedImageDataModule(str(crafted), batch_size=2, num_workers=0, image_size=8)
    with pytest.raises(ShardFormatError, match=r"data_format=.*pickle.*would run code"):
        dm.prepare_data()
    with pytest.raises(ShardFormatError, match="pickle"):
        dm.setup("fit")
    assert not marker.exists()


def test_the_index_check_accepts_only_what_stoker_pack_writes(shard_set) -> None:
    config = json.loads((shard_set / "train" / "index.json").read_text())["config"]
    check_index_config(config, "ok")
    for field, value in (("item_loader", "TokensLoader"), ("encryption", {"algorithm": "fernet"}),
                         ("data_format", ["bytes", "int", "int", "str", "tensor"])):
        with pytest.raises(ShardFormatError, match=field):
            check_index_config({**config, field: value}, "crafted/index.json")


def _damage(copy: Path, how: str) -> str:
    chunk = sorted((copy / "train").glob("chunk-*.bin"))[0]
    data = chunk.read_bytes()
    if how == "truncated":
        chunk.write_bytes(data[: len(data) // 2])
    else:  # overwritten: same size, garbage in the middle of a sample's encoded image
        middle = len(data) // 2
        chunk.write_bytes(data[:middle] + b"\x00" * 400 + data[middle + 400:])
    return chunk.name


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_chunk_is_named_and_skipped_on_request(tmp_path, shard_set, how) -> None:
    copy = Path(shutil.copytree(shard_set, tmp_path / "shards"))
    name = _damage(copy, how)
    if how == "truncated":  # found before training
        with pytest.raises(ShardFormatError, match=rf"damaged: .*{name} \(\d+ bytes, the index says"):
            ShardedImageDataModule(str(copy), batch_size=2, num_workers=0, image_size=8).setup("fit")
    dm = ShardedImageDataModule(str(copy), batch_size=2, num_workers=0, image_size=8, on_bad_sample="skip")
    if how == "truncated":
        with pytest.warns(UserWarning, match=rf"damaged chunk file\(s\).*{name}.*left out"):
            dm.setup("fit")
        assert dm.split_sizes()["train"] == 29 - 4  # the chunk's 4 samples are left out, never read
    else:
        dm.setup("fit")
    seen, skipped = 0, []
    for batch in dm.train_dataloader():
        skipped += [where for where, _ in batch.pop("skipped", [])]
        seen += len(batch["index"])
        assert batch["image"].dtype == torch.uint8
    share = dm.plan("train").num_batches(0) * 2
    if how == "overwritten":  # found while reading: the sample is named by its key and chunk, and skipped
        assert len(skipped) == 1 and name in skipped[0]
    assert seen + len(skipped) == share  # nothing lost silently: trained or skipped
    if how == "overwritten":
        strict = ShardedImageDataModule(str(copy), batch_size=2, num_workers=0, image_size=8)
        strict.setup("fit")
        with pytest.raises(Exception, match=rf"{name}"):
            for _ in strict.train_dataloader():
                pass


def test_an_unreachable_object_store_fails_fast_with_a_clear_message(monkeypatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    from stoker.data.sources.shards import storage as shards

    assert shards.METADATA_ATTEMPTS <= 3 and shards.CONNECT_TIMEOUT_S <= 5  # bounded, unlike litdata's 1,000
    with pytest.raises(ConnectionError, match=rf"cannot read 's3://stoker/nowhere/{META_NAME}' from http://127"):
        ShardedImageDataModule("s3://stoker/nowhere", batch_size=2)


def test_storage_secrets_stay_out_of_hyperparameters_checkpoints_configs_and_summaries(tmp_path, shard_set,
                                                                                      s3_server) -> None:
    """Credentials given in storage_options are used, but never written down."""
    import boto3
    import lightning as L

    from stoker.cli import run_cli

    client = boto3.client("s3")
    for path in sorted(shard_set.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), "stoker", f"secret-test/{path.relative_to(shard_set)}")
    secret = "SUPERSECRET-do-not-write"
    options = {"endpoint_url": s3_server, "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
               "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"], "aws_session_token": secret}
    dm = ShardedImageDataModule("s3://stoker/secret-test", batch_size=4, num_workers=0, image_size=8,
                                storage_options=options, cache_dir=str(tmp_path / "cache"))
    assert "aws_session_token" not in dm.hparams["storage_options"]
    assert dm.hparams["storage_options"]["endpoint_url"] == s3_server
    logs = tmp_path / "logs"
    run_cli(["fit", "--model=stoker.models.ImageClassifier", "--model.model_name=resnet10t",
             "--data=stoker.datamodules.ShardedImageDataModule", "--data.source=s3://stoker/secret-test",
             f"--data.storage_options={json.dumps(options)}", "--data.batch_size=4", "--data.num_workers=0",
             "--data.image_size=16", f"--data.cache_dir={tmp_path / 'cache'}", "--trainer.max_steps=1",
             "--trainer.limit_val_batches=1", "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
             f"--trainer.default_root_dir={logs}", "--trainer.callbacks+=stoker.callbacks.StarvationMonitor"])
    written = [p for p in logs.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.name == "config.yaml" for p in written)
    for path in written:
        data = path.read_bytes()
        assert secret.encode() not in data, f"{path} holds the secret"
    config = yaml.safe_load(next(p for p in written if p.name == "config.yaml").read_text())
    assert config["data"]["init_args"]["storage_options"]["endpoint_url"] == s3_server
    ckpt = torch.load(next(p for p in written if p.suffix == ".ckpt"), weights_only=False)
    restored = ShardedImageDataModule(**{**ckpt["datamodule_hyper_parameters"]})
    assert restored.num_classes == dm.num_classes  # credentials come from the environment again
    assert isinstance(L.LightningDataModule, type)
