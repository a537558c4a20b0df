"""``stoker pack``: the folder modules' split, a progress bar, refusing or resuming a half-written pack, S3."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("litdata")

import stoker.data.sources.shards.pack as shard_pack  # noqa: E402
from stoker.commands.split import main as split_main  # noqa: E402
from stoker.data.manifest import read_manifest  # noqa: E402
from stoker.data.sources.shards.meta import META_NAME, PROGRESS_NAME, read_meta  # noqa: E402
from tests.conftest import write_image_tree  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402
from tests.data.test_shards import pack  # noqa: E402

# The shared shard fixtures (a packed tree, the loopback S3 server), by name for pytest.
image_tree_root = shared.image_tree_root
s3_server = shared.s3_server
shard_set = shared.shard_set


def _keys(shards: Path, split: str) -> list[str]:
    from litdata import StreamingDataset

    ds = StreamingDataset(str(shards / split))
    return [ds[i]["key"] for i in range(len(ds))]


def test_bad_and_quarantined_files_are_left_out_and_listed(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stoker.data.progress.QUIET_FOR_S", 0.0)  # report even this quick pack
    root = tmp_path / "tree"
    paths = write_image_tree(root, {"a": 8, "b": 8}, size=(16, 16))
    paths[3].write_bytes(paths[3].read_bytes()[:60])  # truncated JPEG
    (tmp_path / "q.json").write_text(json.dumps({"quarantine": [str(paths[9].relative_to(root))]}))
    from stoker.commands.pack import main

    assert main([str(root), "--out", str(tmp_path / "out"), "--quarantine", str(tmp_path / "q.json"),
                 "--max-bad-fraction", "0.2", "--chunk-size", "4", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    bad, quarantined = str(paths[3].relative_to(root)), str(paths[9].relative_to(root))
    assert f"left out 1 unusable file(s):\n  {bad}: truncated JPEG" in err
    assert "left out 1 quarantined file(s)" in err
    assert "packing the train split into shards" in err and "(100%)" in err, "progress lines in a log"
    meta = read_meta(str(tmp_path / "out"))
    assert meta.extra["excluded"] == {bad: "truncated JPEG (no end-of-image marker)"}
    assert meta.extra["quarantined"] == [quarantined]
    packed = _keys(tmp_path / "out", "train") + _keys(tmp_path / "out", "val")
    assert len(packed) == 14 and bad not in packed and quarantined not in packed


def test_a_manifest_fixes_the_split_and_the_fingerprint(image_tree_root: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "splits.csv"
    assert split_main([str(image_tree_root), "--val", "0.3", "--seed", "5", "--out", str(manifest)]) == 0
    assert pack(image_tree_root, str(tmp_path / "out"), "--manifest", str(manifest)) == 0
    meta = read_meta(str(tmp_path / "out"))
    rows = read_manifest(manifest)
    assert meta.fingerprint == rows.fingerprint
    assert sorted(_keys(tmp_path / "out", "val")) == sorted(r.path for r in rows.rows if r.split == "val")


def test_a_complete_output_is_refused_and_overwrite_replaces_it(shard_set: Path, image_tree_root: Path,
                                                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    start_method = multiprocessing.get_start_method()
    assert pack(image_tree_root, str(shard_set)) == 2
    assert "already holds a complete shard set (37 samples" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert pack(image_tree_root, str(tmp_path / "other")) == 2
    assert "is not empty and holds no stoker shard set" in capsys.readouterr().err
    assert pack(image_tree_root, str(tmp_path / "other"), "--overwrite", "--seed", "1") == 0
    assert read_meta(str(tmp_path / "other")).seed == 1
    assert multiprocessing.get_start_method() == start_method, "litdata's forced start method is undone"


def test_an_interrupted_pack_is_refused_then_resumed_to_the_same_shards(shard_set: Path, image_tree_root: Path,
                                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    out, calls = tmp_path / "out", []
    original = shard_pack._optimize_part

    def interrupted(items: list, *args: Any, **kwargs: Any) -> None:
        calls.append((len(items), kwargs["num_workers"]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the job is lost while packing the third part
        original(items, *args, **kwargs)

    monkeypatch.setattr(shard_pack, "_optimize_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pack(image_tree_root, str(out), "--part-size", "10")
    assert (out / PROGRESS_NAME).is_file() and not (out / META_NAME).exists()
    assert pack(image_tree_root, str(out), "--part-size", "10") == 2
    assert "half-written shard set from an interrupted `stoker pack` (train: 2 of 3 part(s), val: 0 of 1 part(s)). " \
           "Run the same command with --resume" in capsys.readouterr().err
    assert pack(image_tree_root, str(out), "--part-size", "10", "--seed", "2", "--resume") == 2
    err = capsys.readouterr().err
    assert "cannot resume the pack" in err and "seed: 0 then, 2 now" in err
    calls.clear()
    assert pack(image_tree_root, str(out), "--part-size", "10", "--resume") == 0
    assert calls == [(9, 2), (8, 2)], "only the missing train part and the val split are packed, with --workers"
    assert not (out / PROGRESS_NAME).exists()
    assert read_meta(str(out)).fingerprint == read_meta(str(shard_set)).fingerprint
    for split in ("train", "val"):
        assert _keys(out, split) == _keys(shard_set, split), "resumed parts append in the packing order"


def test_pack_to_s3_and_stream_it_like_the_local_copy(s3_server: str, shard_set: Path, image_tree_root: Path,
                                                      tmp_path: Path) -> None:
    from stoker.datamodules.sharded import ShardedImageDataModule

    assert pack(image_tree_root, "s3://stoker/imagenet-shards") == 0
    remote_meta, local_meta = read_meta("s3://stoker/imagenet-shards"), read_meta(str(shard_set))
    assert (remote_meta.fingerprint, remote_meta.splits) == (local_meta.fingerprint, local_meta.splits)

    def batches(source: str) -> list[tuple[list[int], torch.Tensor]]:
        dm = ShardedImageDataModule(source, batch_size=4, num_workers=2, image_size=8, cache_dir=str(tmp_path / "c"))
        dm.prepare_data()
        dm.setup()
        return [(b["index"].tolist(), b["image"]) for loader in (dm.train_dataloader(), dm.val_dataloader())
                for b in loader]

    remote, local = batches("s3://stoker/imagenet-shards"), batches(str(shard_set))
    assert [i for i, _ in remote] == [i for i, _ in local]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(remote, local)), "sample by sample the same"
    assert list((tmp_path / "c").rglob("chunk-*.bin")), "remote chunks are cached on the node"
