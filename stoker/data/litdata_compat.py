"""The one place stoker reaches into litdata internals, kept small so that a litdata upgrade breaks here.

A shard set's chunk can be damaged after packing (a truncated copy, overwritten bytes). litdata
then fails deep inside its reader: ``struct.error`` from a garbled offset table, or, for a chunk
shorter than its index says, a wait for bytes that never come that ends in ``ChunkWaitTimeoutError``
(two seconds for local files, minutes for downloads). Neither names the chunk, and neither lets a
run skip the samples as ``on_bad_sample="skip"`` promises.

:func:`checked_item_loader` returns litdata's ``PyTreeLoader`` with ``load_item_from_chunk``
guarded: samples of chunks known to be damaged (found by
:func:`stoker.data.sources.shards.meta.check_split` before training) come back at once as a
:data:`DAMAGED_KEY` record naming the chunk, and any error reading a sample comes back the same
way, so the stoker decoders raise or skip it like an undecodable sample. litdata checks that the
loader's class name equals the ``item_loader`` its index names, so the guard is a subclass with the
same name. :func:`read_whole_chunks` makes reads by position take whole chunks through that loader too.
:func:`worker_orders` asks litdata's shuffler which samples each (rank, worker) reads in an epoch, for a
resume on other ranks or workers (:mod:`stoker.data.sources.shards.elastic`).
``tests/data/test_datasets_compat.py`` fails when a litdata release changes what is wrapped.
"""

from __future__ import annotations

import os
from typing import Any

DAMAGED_KEY = "damaged"  # a record read from a damaged chunk: {"damaged": reason, "chunk": file name}


def checked_item_loader(damaged: frozenset[str] = frozenset()) -> Any:
    """litdata's ``PyTreeLoader`` whose reads of damaged chunks (and failed reads) return a named record.

    Args:
        damaged: File names of chunks known to be damaged, with nothing read from them.
    """
    loader = _loader_class()()
    loader.damaged_chunks = frozenset(damaged)
    return loader


def read_whole_chunks(dataset: Any) -> None:
    """Make a ``StreamingDataset``'s reads by position download whole chunks, as iteration does.

    Read by position (``dataset[i]``), litdata fetches a remote sample's bytes on their own by default:
    that bypasses :func:`checked_item_loader` (a damaged chunk would not be named) and reads nothing
    from some S3-compatible servers. Call before the first read.
    """
    dataset._on_demand_bytes = False


def worker_orders(dataset: Any, *, num_replicas: int, workers: int, batch_size: int,
                  epoch: int) -> tuple[list[list[int]], int]:
    """The positions each (rank, worker) reads in litdata epoch ``epoch`` (from 1), and the split's sample count.

    What iterating ``dataset`` (shuffled, one node of ``num_replicas`` ranks, ``workers`` loader workers,
    ``batch_size``) deals worker ``w`` of rank ``r``, in its reading order, at ``r * workers + w``: litdata's
    chunk assignment and its permutation inside each chunk, computed without reading a sample.
    """
    import numpy as np
    from litdata.utilities.env import _DistributedEnv, _WorkerEnv

    if dataset.cache is None:
        dataset.cache = dataset._create_cache(worker_env=_WorkerEnv(1, 0))
    shuffler = dataset._create_shuffler(dataset.cache)
    chunks, intervals = shuffler.get_chunks_and_intervals_per_workers(
        _DistributedEnv(num_replicas, 0, 1), workers, batch_size, epoch)
    spans = dataset.cache.get_chunk_intervals()
    orders: list[list[int]] = []
    for worker_chunks, worker_intervals in zip(chunks, intervals):
        order: list[int] = []
        for chunk, interval in zip(worker_chunks, worker_intervals):
            order.extend(int(position) for position in shuffler(np.arange(interval[1], interval[2]), len(spans),
                                                                 epoch, int(chunk)))
        orders.append(order)
    return orders, int(sum(span[2] - span[1] for span in spans))


def _loader_class() -> type:
    # Built on first use (litdata is an optional extra) and kept as this module's attribute ``PyTreeLoader``,
    # so that a pickled loader finds its class by name in another process (see __getattr__).
    if "PyTreeLoader" in globals():
        return globals()["PyTreeLoader"]
    from litdata.streaming.item_loader import PyTreeLoader as _LitdataPyTreeLoader

    class PyTreeLoader(_LitdataPyTreeLoader):  # the name litdata's index asks for
        damaged_chunks: frozenset[str] = frozenset()

        def load_item_from_chunk(self, index: int, chunk_index: int, chunk_filepath: str, begin: int,
                                 filesize_bytes: int, *args: Any, **kwargs: Any) -> Any:
            name = os.path.basename(chunk_filepath)
            if name in self.damaged_chunks:
                return {DAMAGED_KEY: "the chunk is damaged (its size or offset table differs from the index)",
                        "chunk": name}
            try:
                return super().load_item_from_chunk(index, chunk_index, chunk_filepath, begin, filesize_bytes,
                                                    *args, **kwargs)
            except Exception as err:  # struct.error, ChunkWaitTimeoutError, ValueError...: the chunk is damaged
                return {DAMAGED_KEY: f"the chunk cannot be read ({type(err).__name__}: {err})", "chunk": name}

    PyTreeLoader.__module__ = __name__
    PyTreeLoader.__qualname__ = "PyTreeLoader"
    globals()["PyTreeLoader"] = PyTreeLoader
    return PyTreeLoader


def __getattr__(name: str) -> Any:
    if name == "PyTreeLoader":
        return _loader_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
