"""A validation split smaller than world x batch completes under 2-rank DDP: every rank steps, every sample once.

Before, litdata's uneven split of a shard set's validation gave a rank nothing (20 samples, batch 16, 2 ranks:
0 and 20), and a streamed text split of fewer rows than ranks did the same: the rank without a step logged no
``sync_dist`` metric and the other waited for it forever. A split with fewer samples than ranks cannot be dealt
without repeating one, so every rank refuses it with the same message at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, run_script, write_image_tree

SCRIPT = REPO / "tests" / "scripts" / "ddp_small_eval.py"
pytestmark = [pytest.mark.ddp, pytest.mark.slow]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("small-eval")
    write_image_tree(root / "images" / "train", {"a": 8, "b": 8}, size=(16, 16))
    write_image_tree(root / "images" / "val", {"a": 3, "b": 3}, size=(16, 16))  # 6 < 2 ranks x batch 8
    from stoker.commands.pack import main as pack

    assert pack([str(root / "images"), "--out", str(root / "shards"), "--workers", "1", "--no-progress",
                 "--chunk-size", "4"]) == 0
    (root / "text").mkdir()
    rows = [f"sample text number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(40)]
    (root / "text" / "train.csv").write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    (root / "text" / "validation.csv").write_text("text,label\n" + "".join(f"{t},{i % 2}\n"
                                                                           for i, t in enumerate(rows[:5])))
    (root / "corpus").mkdir()
    docs = [" ".join(f"word{j}" for j in range(i % 7 + 3)) for i in range(60)]
    (root / "corpus" / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (root / "corpus" / "validation.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:6]))
    return root


@pytest.mark.parametrize("kind", ["folder", "sharded", "text_stream", "lm"])
def test_a_validation_split_smaller_than_world_times_batch_completes_and_sees_each_sample_once(
        data: Path, tmp_path: Path, kind: str) -> None:
    ranks = run_script(SCRIPT, kind, str(data), timeout=300)["ranks"]
    rows = [r["rows"] for r in ranks]
    assert all(n > 0 for n in rows), f"a rank evaluated nothing: {rows}"
    if kind in ("folder", "sharded"):
        seen = sorted(i for r in ranks for i in r["seen"])
        assert seen == list(range(6)) and max(rows) - min(rows) <= 1
    elif kind == "text_stream":
        assert sum(rows) == 5 and max(rows) - min(rows) <= 1
    else:
        assert len(rows) == 2  # packed rows dealt as batches: each rank at least one


def test_a_split_with_fewer_samples_than_ranks_is_refused_on_every_rank(data: Path, tmp_path: Path) -> None:
    (data / "text" / "validation.csv").write_text("text,label\nthe only validation row,1\n")
    with pytest.raises(AssertionError, match="exited") as failed:
        run_script(SCRIPT, "text_stream", str(data), timeout=300)
    for rank in (0, 1):
        assert f"REFUSED rank {rank}: HFTextStreamDataModule: the val split has 1 sample(s), fewer than the 2 " \
               "ranks" in str(failed.value)
