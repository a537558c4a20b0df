"""Shard-set metadata and checks: clear errors for a missing, foreign, half-written, other-version or damaged set.

Also the shared fixtures of the shard tests: a packed image tree (packed once per session) and a
real S3-compatible server (moto's standalone server on 127.0.0.1, a random port) for object storage.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_image_tree

pytest.importorskip("litdata")

from stoker.data.sources.shards.meta import (  # noqa: E402
    META_NAME,
    PROGRESS_NAME,
    ShardFormatError,
    ShardSetMeta,
    SplitChunks,
    check_split,
    read_meta,
)
from stoker.data.sources.shards.pack import pack_order  # noqa: E402
from stoker.data.sources.shards.storage import check_location  # noqa: E402

COUNTS = {"a": 13, "b": 11, "c": 13}
_SERVER: dict[str, str] = {}  # the running S3 server of this session
PACK_ARGS = ["--chunk-size", "4", "--workers", "2", "--val", "0.2", "--no-progress"]


def pack(root: Path, out: str, *extra: str) -> int:
    """Run ``stoker pack ROOT --out OUT`` in this process with the small-test settings."""
    from stoker.commands.pack import main

    return main([str(root), "--out", out, *PACK_ARGS, *extra])


# Other test modules bind these fixtures by name (pytest then defines them once per module): the
# tree, the shards and the server are made once per session all the same.
@pytest.fixture(scope="session")
def image_tree_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.getbasetemp() / "shard-images" / "images"
    if not root.exists():
        write_image_tree(root, COUNTS, size=(16, 16))
    return root


@pytest.fixture(scope="session")
def shard_set(image_tree_root: Path) -> Path:
    """The image tree packed once per session (train 29, val 8, chunks of 4 samples); do not modify it."""
    out = image_tree_root.parent / "shards"
    if not (out / META_NAME).is_file():
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STOKER_CACHE", str(image_tree_root.parent / "stoker-cache"))
            assert pack(image_tree_root, str(out)) == 0
    return out


@pytest.fixture
def shard_copy(shard_set: Path, tmp_path: Path) -> Path:
    """A copy of the packed set that a test may damage."""
    return Path(shutil.copytree(shard_set, tmp_path / "shards"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1 at a random port; the environment points boto3 (and litdata) at it.

    Fake credentials only: nothing leaves the machine. Yields the endpoint URL; the bucket ``stoker`` exists.
    """
    pytest.importorskip("moto")
    if _SERVER:
        yield _SERVER["endpoint"]
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "stoker-test", "AWS_SECRET_ACCESS_KEY": "stoker-test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": ""}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            if value:
                mp.setenv(key, value)
            else:
                mp.delenv(key, raising=False)
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3").create_bucket(Bucket="stoker")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    raise
                time.sleep(0.1)
        _SERVER["endpoint"] = endpoint
        try:
            yield endpoint
        finally:
            _SERVER.clear()
            server.terminate()
            server.wait(timeout=30)


# ----------------------------------------------------------------------------- metadata
def test_metadata_round_trips_and_says_what_the_set_holds(shard_set: Path) -> None:
    meta = read_meta(str(shard_set))
    assert meta.media == "image" and meta.class_names == ["a", "b", "c"]
    assert meta.splits == {"train": 29, "val": 8} and sum(meta.splits.values()) == sum(COUNTS.values())
    assert len(meta.fingerprint) == 32 and meta.format_version == 1 and meta.stoker_version
    assert ShardSetMeta.from_json(meta.to_json(), "x") == meta


def test_missing_set_names_the_file_and_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no stoker shard set at .*stoker_shards\.json, written by `stoker"):
        read_meta(str(tmp_path))


def test_a_litdata_dataset_stoker_did_not_write_is_named(shard_copy: Path) -> None:
    with pytest.raises(FileNotFoundError, match="litdata dataset without stoker_shards.json: it was not written by"):
        read_meta(str(shard_copy / "train"))


def test_a_half_written_set_points_at_resume(shard_copy: Path) -> None:
    (shard_copy / META_NAME).rename(shard_copy / PROGRESS_NAME)
    with pytest.raises(FileNotFoundError, match=r"half-written shard set .* `stoker pack \.\.\. --resume`"):
        read_meta(str(shard_copy))


def test_truncated_metadata_is_a_clear_error(shard_copy: Path) -> None:
    path = shard_copy / META_NAME
    path.write_text(path.read_text()[:40])
    with pytest.raises(ShardFormatError, match=r"stoker_shards\.json is not valid JSON .* truncated or damaged"):
        read_meta(str(shard_copy))


@pytest.mark.parametrize("version", [0, 2])
def test_another_format_version_is_refused_with_the_fix(shard_copy: Path, version: int) -> None:
    path = shard_copy / META_NAME
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "format_version": version, "stoker_version": "9.9"}))
    with pytest.raises(ShardFormatError, match=rf"written by stoker 9\.9 in shard format version {version}; this "
                                               r"stoker reads format version 1\. Re-pack"):
        read_meta(str(shard_copy))


def test_foreign_json_is_not_taken_for_metadata(shard_copy: Path) -> None:
    (shard_copy / META_NAME).write_text(json.dumps({"classes": 3}))
    with pytest.raises(ShardFormatError, match='not stoker shard metadata'):
        read_meta(str(shard_copy))


def test_a_missing_chunk_is_named_before_training(shard_copy: Path) -> None:
    victim = sorted((shard_copy / "train").glob("chunk-*.bin"))[2]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 shard file\(s\) of the train split are missing: .*{victim.name}"):
        check_split(str(shard_copy), "train", 29)


def test_an_index_that_disagrees_with_the_metadata_is_inconsistent(shard_copy: Path) -> None:
    with pytest.raises(ShardFormatError, match="holds 29 samples in its index.json but stoker_shards.json says 30"):
        check_split(str(shard_copy), "train", 30)
    (shard_copy / "val" / "index.json").write_text("{\"chunks\": [")
    with pytest.raises(ShardFormatError, match=r"val/index\.json is not a readable litdata index"):
        check_split(str(shard_copy), "val", 8)


def test_unsupported_url_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"local paths or s3://, gs://, r2:// URLs, not http://"):
        check_location("http://example.com/shards")
    check_location("s3://bucket/shards")
    check_location(os.path.join("relative", "shards"))


def test_chunk_of_maps_a_packed_position_to_its_file() -> None:
    chunks = SplitChunks(("c0", "c1", "c2"), (4, 4, 2))
    assert [chunks.chunk_of(i) for i in (0, 3, 4, 7, 8, 9)] == ["c0", "c0", "c1", "c1", "c2", "c2"]
    assert chunks.total == 10


def test_the_packing_order_is_a_seeded_permutation_per_split() -> None:
    pairs = [(f"{c}/{i}.jpg", label) for label, c in enumerate("abc") for i in range(20)]
    order = pack_order(pairs, 0, "train")
    assert [p for p, _, _ in order] == list(range(60))
    assert sorted((r, y) for _, r, y in order) == sorted(pairs)
    assert order == pack_order(pairs, 0, "train")
    assert order != pack_order(pairs, 1, "train") and order != pack_order(pairs, 0, "val")
    first_half = {y for _, _, y in order[:30]}
    assert first_half == {0, 1, 2}, "classes are mixed, not packed one after the other"
