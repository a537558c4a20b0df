"""A real 2-process CPU DDP run: disjoint, complete shards and equal batch counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stoker.datamodules.base import distributed_padding
from tests.conftest import REPO, run_script


@pytest.mark.ddp
def test_two_ranks_cover_the_split_disjointly_with_equal_batches(image_tree) -> None:
    # 37 images: neither split divides evenly by 2 ranks x 4 per batch.
    root = image_tree({"a": 13, "b": 11, "c": 13}, size=(20, 24))
    result = run_script(REPO / "tests" / "scripts" / "ddp_image_coverage.py", str(root), "--batch-size", "4")
    ranks = result["ranks"]
    assert len(ranks) == 2
    assert all(r["notes"] == ["torch.float32"] for r in ranks), "images must arrive normalized on the device"

    # Validation: every sample seen, duplicates are exactly the sampler's padding.
    val = [[i for batch in r["seen"]["val"] for i in batch] for r in ranks]
    n_val = result["val_size"]
    assert len(val[0]) == len(val[1])
    counts = Counter(val[0] + val[1])
    assert set(counts) == set(range(n_val))
    assert sum(c - 1 for c in counts.values()) == distributed_padding(n_val, 2)

    # Training: same number of batches on both ranks; shards disjoint apart from padding; what
    # no rank saw is only what drop_last trimmed from the end of each shard.
    train_batches = [r["seen"]["train"] for r in ranks]
    assert len(train_batches[0]) == len(train_batches[1]) > 0
    train = [set(i for batch in b for i in batch) for b in train_batches]
    n_train = result["train_size"]
    overlap = train[0] & train[1]
    assert len(overlap) <= distributed_padding(n_train, 2)
    per_rank = -(-n_train // 2)
    trimmed = per_rank % 4
    assert len(train[0] | train[1]) >= n_train - 2 * trimmed - distributed_padding(n_train, 2)
    assert all(len(b) == 4 for batches in train_batches for b in batches), "training batches are full"


def test_runner_reports_failures(tmp_path: Path) -> None:
    script = tmp_path / "fail.py"
    script.write_text("import sys; sys.exit(3)\n")
    with pytest.raises(AssertionError, match="exited 3"):
        run_script(script)
