"""A real 2-process CPU DDP run: disjoint, complete shards and equal batch counts."""

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


def test_runner_reports_failures(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(AssertionError, match="exited 3"):
        run_script(script)
