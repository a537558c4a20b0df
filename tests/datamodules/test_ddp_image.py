"""A real 2-process CPU DDP run: disjoint, complete shards and equal batch counts (class folders, WebDataset tars)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, run_script
from tests.scripts.ddp_common import assert_two_rank_coverage


@pytest.mark.ddp
def test_two_ranks_cover_the_split_disjointly_with_equal_batches(image_tree) -> None:
    # 37 images: neither split divides evenly by 2 ranks x 4 per batch.
    root = image_tree({"a": 13, "b": 11, "c": 13}, size=(20, 24))
    result = run_script(REPO / "tests" / "scripts" / "ddp_image_coverage.py", str(root), "--batch-size", "4")
    ranks = result["ranks"]
    assert len(ranks) == 2
    assert all(r["notes"] == ["torch.float32"] for r in ranks), "images must arrive normalized on the device"

    assert_two_rank_coverage(result, batch_size=4)


@pytest.mark.ddp
def test_two_ranks_share_webdataset_tars_disjointly_and_validate_each_sample_once(tmp_path: Path) -> None:
    from tests.sources_fixtures import CLASSES, photo_records, write_webdataset

    # 39 training and 9 validation photos in tars of 7: neither split divides evenly by 2 ranks x 4 per batch,
    # and a rank's share spans several tars.
    root = write_webdataset(tmp_path / "wds", photo_records(counts={"train": 13, "val": 3}), per_tar=7)
    result = run_script(REPO / "tests" / "scripts" / "ddp_sources.py", str(root), "--batch-size", "4",
                        "--workers", "1", "--class-names", ",".join(CLASSES))
    assert result["source_kind"] == "webdataset" and (result["train_size"], result["val_size"]) == (39, 9)
    assert all(r["notes"] == ["torch.float32"] for r in result["ranks"]), "images arrive normalized on the device"
    assert_two_rank_coverage(result, batch_size=4)


def test_runner_reports_failures(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(AssertionError, match="exited 3"):
        run_script(script)
