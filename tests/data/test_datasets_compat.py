"""What stoker reads of datasets' and litdata's internals still exists (fails on a release that removes it)."""

from __future__ import annotations

import inspect

import pytest

datasets = pytest.importorskip("datasets")


def test_datasets_still_has_a_fingerprint_and_an_indices_mapping() -> None:
    from stoker.data.datasets_compat import fingerprint_of, rows_are_table_rows

    table = datasets.Dataset.from_dict({"x": list(range(6))})
    assert len(fingerprint_of(table)) >= 8 and rows_are_table_rows(table)
    assert fingerprint_of(table.map(lambda row: {"x": row["x"] + 1})) != fingerprint_of(table)
    picked = table.select([4, 1])
    assert hasattr(picked, "_indices") and not rows_are_table_rows(picked)  # rows 4, 1: not the table's


def test_litdata_still_reads_samples_through_the_wrapped_loader_method() -> None:
    pytest.importorskip("litdata")
    from litdata.streaming.item_loader import PyTreeLoader

    from stoker.data.litdata_compat import checked_item_loader

    wrapped = list(inspect.signature(PyTreeLoader.load_item_from_chunk).parameters)
    assert wrapped[:6] == ["self", "index", "chunk_index", "chunk_filepath", "begin", "filesize_bytes"]
    loader = checked_item_loader(frozenset({"chunk-0-0.bin"}))
    assert type(loader).__name__ == "PyTreeLoader" and isinstance(loader, PyTreeLoader)  # litdata checks the name
    record = loader.load_item_from_chunk(0, 0, "/x/chunk-0-0.bin", 0, 10)
    assert record["chunk"] == "chunk-0-0.bin" and "damaged" in record["damaged"]


def test_litdata_still_reads_by_position_from_the_flag_stoker_clears() -> None:
    pytest.importorskip("litdata")
    from litdata import StreamingDataset

    source = inspect.getsource(StreamingDataset)
    assert "self._on_demand_bytes = True" in source and "on_demand_bytes=self._on_demand_bytes" in source


@pytest.mark.parametrize(("world", "workers", "epoch"), [(1, 1, 1), (2, 1, 2), (2, 2, 1), (3, 2, 3)])
def test_litdata_worker_orders_are_what_iteration_reads(tmp_path_factory: pytest.TempPathFactory,
                                                       monkeypatch: pytest.MonkeyPatch, world: int, workers: int,
                                                       epoch: int) -> None:
    # A resume on other ranks or workers computes what each old worker had read from litdata's shuffler.
    pytest.importorskip("litdata")
    from litdata import StreamingDataset
    from litdata.utilities.env import _DistributedEnv, _WorkerEnv

    from stoker.data.litdata_compat import worker_orders
    from tests.data import test_shards as shared

    root = tmp_path_factory.getbasetemp() / "shard-images" / "images"
    if not root.exists():
        from tests.conftest import write_image_tree

        write_image_tree(root, shared.COUNTS, size=(16, 16))
    shards = root.parent / "shards"
    if not (shards / "train").is_dir():
        monkeypatch.setenv("STOKER_CACHE", str(root.parent / "stoker-cache"))
        assert shared.pack(root, str(shards)) == 0

    def dataset(rank: int) -> StreamingDataset:
        ds = StreamingDataset(str(shards / "train"), shuffle=True, drop_last=True, seed=11)
        ds.distributed_env = _DistributedEnv(world, rank, 1)
        ds.set_batch_size(4)
        ds.set_num_workers(workers)
        ds.set_epoch(epoch)
        return ds

    read = []
    for rank in range(world):
        for worker in range(workers):
            ds = dataset(rank)
            ds._forced_worker_env = _WorkerEnv(workers, worker)  # what a loader worker's detection gives
            read.append([int(item["index"]) for item in ds])
    orders, total = worker_orders(dataset(0), num_replicas=world, workers=workers, batch_size=4, epoch=epoch)
    assert orders == read and total == 29
