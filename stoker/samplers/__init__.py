"""Samplers that subclass ``DistributedSampler``: explicit ``num_replicas``/``rank``, reseeded per
epoch from ``(seed, epoch)``, and resumable mid-epoch (:class:`ResumableSampler`); each rank's
share comes from one piece of arithmetic, :class:`ShardPlan`."""

from stoker.samplers.base import ResumableSampler
from stoker.samplers.distributed import ResumableDistributedSampler
from stoker.samplers.length_grouped import LengthGroupedBatchSampler
from stoker.samplers.shard_plan import ShardPlan
from stoker.samplers.token_budget import TokenBudgetBatchSampler
from stoker.samplers.weighted import DistributedWeightedSampler

__all__: list[str] = [
    "DistributedWeightedSampler",
    "LengthGroupedBatchSampler",
    "ResumableDistributedSampler",
    "ResumableSampler",
    "ShardPlan",
    "TokenBudgetBatchSampler",
]
