"""A simulated 2-node run of ShardedImageDataModule streaming from the loopback S3 server (two launches, gloo).

``num_nodes=2, devices=1``, ``NODE_RANK`` 0 and 1, ``MASTER_ADDR=127.0.0.1``: every epoch the two
ranks train the same number of whole batches over disjoint samples that cover the split but for
the cut tail, validation sees every sample exactly once, and each node checks and caches the shard
set once, in its own cache (packing happened once, before the launch).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

pytest.importorskip("litdata")

from stoker.samplers import ShardPlan  # noqa: E402
from tests.data import test_shards as shared  # noqa: E402
from tests.data.test_shards import pack  # noqa: E402
from tests.datamodules.test_resume import _context  # noqa: E402

# The shared shard fixtures (a packed tree, the loopback S3 server), by name for pytest.
image_tree_root = shared.image_tree_root
s3_server = shared.s3_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
@pytest.mark.ddp
def test_two_nodes_stream_disjoint_equal_complete_shares_and_cache_once_per_node(
        s3_server: str, image_tree_root: Path, tmp_path: Path) -> None:
    from tests.scripts.ddp_shards import run_node

    source = "s3://stoker/two-nodes"
    assert pack(image_tree_root, source) == 0
    port, context = _free_port(), _context()
    env = {key: value for key, value in os.environ.items() if key.startswith("AWS_")}
    nodes = []
    for node in (0, 1):
        argv = [source, str(tmp_path), "--node-rank", str(node), "--port", str(port)]
        process = context.Process(target=run_node, args=(argv, str(tmp_path / f"log-{node}.txt"), env))
        process.start()
        nodes.append(process)
    for node, process in enumerate(nodes):
        process.join(timeout=240)
        if process.exitcode is None:
            process.kill()
        assert process.exitcode == 0, (tmp_path / f"log-{node}.txt").read_text()[-6000:]
    ranks = sorted((json.loads((tmp_path / f"node-{n}.json").read_text()) for n in (0, 1)), key=lambda r: r["rank"])
    assert [r["world"] for r in ranks] == [2, 2] and [r["rank"] for r in ranks] == [0, 1]
    plan = ShardPlan(ranks[0]["train_size"], 2, mode="cut", batch_size=4, drop_last=True)
    for epoch in (0, 1):
        batches = [[b["index"] for b in r["seen"]["train"] if b["epoch"] == epoch] for r in ranks]
        assert len(batches[0]) == len(batches[1]) == plan.num_batches(0), "equal steps on both nodes"
        shares = [{i for b in rank for i in b} for rank in batches]
        assert not shares[0] & shares[1], f"epoch {epoch}: the nodes' shares overlap"
        assert len(shares[0] | shares[1]) == plan.share(0) * 2, "complete but for the cut tail"
        val = [i for r in ranks for b in r["seen"]["val"] if b["epoch"] == epoch for i in b["index"]]
        assert sorted(val) == list(range(ranks[0]["val_size"])), "validation sees every sample once"
    assert [r["prepared"] for r in ranks] == [1, 1], "prepare_data checked the shard set once per node"
    assert all(r["cached_chunks"] > 0 for r in ranks), "each node caches the chunks it streams in its own cache"
