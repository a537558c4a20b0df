"""The rest of a shard-set epoch, dealt again over another number of ranks, loader workers or batch size.

A :class:`~stoker.data.sources.shards.stream.ShardStream` epoch is read in the order litdata deals it: every
(rank, worker) its chunks and, inside them, its samples. A checkpoint holds how many samples each worker had
handed out (``yielded``). Resumed on the same ranks and workers, each worker simply continues; resumed on
others, the epoch's rest is dealt again here, so each sample the old run had not trained is trained once:

* **What was trained.** litdata's deal is a function of (seed, epoch, ranks, workers, batch size), so the
  samples each old worker read come back from :func:`stoker.data.litdata_compat.worker_orders`, and its first
  ``yielded`` are the trained ones. A run that was itself an elastic rest (a *stage* of the epoch) was dealt
  by :func:`deal`, so its trained samples follow from the same rule.
* **What is left** (:func:`left_after`) keeps the old workers' order: each worker's untrained tail, worker
  after worker, then what no worker was dealt. Neighbouring samples stay in the same chunks.
* **The new deal** (:func:`deal`) cuts what is left into one contiguous block per rank, equal and whole
  batches (the tail that does not fill a batch on every rank is cut, as an epoch's tail is), and each rank's
  block into one contiguous run per loader worker, as many batches as the loader asks that worker for. The
  rest is read by position (whole chunks, downloaded on first use) instead of litdata's read-ahead stream;
  the next epoch streams again.

A stage is ``{"num_replicas", "workers", "batch_size", "yielded": [[count per worker] per rank]}``; the first
stage of an epoch was dealt by litdata, later ones by :func:`deal`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from stoker.samplers.shard_plan import ShardPlan, worker_batches

Stage = dict[str, Any]
# (ranks, workers, batch size) -> the positions each (rank, worker) read, at rank * workers + worker, as litdata
# dealt them, and the split's sample count.
LitdataOrders = Callable[[int, int, int], tuple[list[list[int]], int]]


def deal(left: Sequence[int], num_replicas: int, workers: int, batch_size: int) -> list[list[list[int]]]:
    """``[rank][worker]`` positions of ``left`` (see the module): equal whole-batch blocks, one run per worker."""
    size = len(left) // num_replicas // batch_size * batch_size
    batches = size // batch_size
    out: list[list[list[int]]] = []
    for rank in range(num_replicas):
        block, start, runs = left[rank * size:(rank + 1) * size], 0, []
        for worker in range(workers):
            count = worker_batches(batches, worker, workers) * batch_size
            runs.append(list(block[start:start + count]))
            start += count
        out.append(runs)
    return out


def left_after(stages: Sequence[Stage], litdata_orders: LitdataOrders) -> list[int]:
    """Positions of the epoch no stage trained, in the order :func:`deal` deals them (see the module).

    Raises:
        ValueError: A stage's counts do not fit its ranks and workers, or exceed what a worker was dealt.
    """
    left: list[int] = []
    for number, stage in enumerate(stages):
        ranks, workers, batch = int(stage["num_replicas"]), int(stage["workers"]), int(stage["batch_size"])
        yielded = [[int(count) for count in per_rank] for per_rank in stage["yielded"]]
        if len(yielded) != ranks or any(len(per_rank) != workers for per_rank in yielded):
            raise ValueError(f"a resume stage of {ranks} rank(s) x {workers} worker(s) holds the counts {yielded}")
        if number == 0:
            runs, total = litdata_orders(ranks, workers, batch)
            dealt_set = {position for run in runs for position in run}
            rest = [position for position in range(total) if position not in dealt_set]
        else:
            per_rank = deal(left, ranks, workers, batch)
            runs = [run for rank_runs in per_rank for run in rank_runs]
            rest = list(left[ranks * (len(left) // ranks // batch * batch):])
        tails: list[int] = []
        for slot, run in enumerate(runs):
            count = yielded[slot // workers][slot % workers]
            if count > len(run):
                raise ValueError(f"worker {slot % workers} of rank {slot // workers} counts {count} samples of an "
                                 f"epoch that dealt it {len(run)}; the checkpoint does not belong to this shard set")
            tails.extend(run[count:])
        left = tails + rest
    return left


def worker_positions(loader_state: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Each loader worker's stream state in one rank's torchdata loader state (``None``: not a stream's layout)."""
    if "_snapshot" in loader_state:
        workers = loader_state["_snapshot"].get("_worker_snapshots", {})
        states = [workers[key].get("dataset_state") for key in sorted(workers, key=lambda k: int(k.split("_")[-1]))]
    else:
        states = [loader_state.get("dataset_state")]
    if not states or not all(isinstance(state, dict) and {"epoch", "yielded"} <= set(state) for state in states):
        return None
    return states  # type: ignore[return-value]


def rest_stages(rank_states: Sequence[dict[str, Any]], *, num_replicas: int, workers: int, batch_size: int,
                settings: dict[str, Any], what: str) -> tuple[int, list[Stage]] | None:
    """``(epoch, stages)`` of a mid-epoch checkpoint whose rest must be dealt again, else ``None``.

    ``None`` when the checkpoint resumes as it is: the same ranks, workers and batch size (each worker
    continues), nothing of an epoch handed out yet, or every worker's whole share handed out (the next
    epoch starts with this run's shares).

    Args:
        rank_states: Every saved rank's loader state (torchdata's layout).
        num_replicas: This run's ranks.
        workers: This run's loader workers (1 for the main process).
        batch_size: This run's batch size.
        settings: What fixes the epoch's order and must match (``seed``, ``num_samples``).
        what: The shard set's split, for messages.

    Raises:
        ValueError: A setting differs (named).
    """
    per_rank = [worker_positions(state) for state in rank_states]
    if not per_rank or any(states is None for states in per_rank):
        return None
    saved = [[state or {"epoch": -1, "yielded": 0} for state in states or []] for states in per_rank]
    first = saved[0][0]
    staged = "stages" in first
    batch = int(first.get("batch_size", batch_size))
    world = int(first.get("num_replicas", len(saved)))
    same = world == num_replicas and all(len(states) == workers for states in saved) and batch == batch_size
    started = [int(state["epoch"]) for states in saved for state in states if int(state["yielded"]) > 0]
    if (same and not staged) or not started:
        return None
    if len(saved) != world:
        raise ValueError(f"cannot resume the shard stream of {what!r} on {num_replicas} rank(s) from a checkpoint of "
                         f"{world} ranks that holds the position of {len(saved)}: every rank's position is needed "
                         "(checkpoints written by stoker under DDP gather them)")
    for key, mine in settings.items():
        if key in first and first[key] != mine:
            raise ValueError(f"cannot resume the shard stream of {what!r}: the checkpoint has {key}={first[key]}, "
                             f"this run has {key}={mine}. Resume with the same {key}")
    epoch = max(started)
    yielded = [[int(state["yielded"]) if int(state["epoch"]) == epoch else 0 for state in states] for states in saved]
    if not staged:
        plan = ShardPlan(int(settings.get("num_samples", 0)), len(saved), mode="cut", batch_size=batch,
                         drop_last=True)
        if all(count >= worker_batches(plan.num_batches(rank), worker, len(states)) * batch
               for rank, states in enumerate(yielded) for worker, count in enumerate(states)):
            return None
    stage = {"num_replicas": len(saved), "workers": len(saved[0]), "batch_size": batch, "yielded": yielded}
    return epoch, ([*first["stages"], stage] if staged else [stage])
