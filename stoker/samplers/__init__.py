"""Samplers that subclass ``DistributedSampler``: explicit ``num_replicas``/``rank``, reseeded per
epoch from ``(seed, epoch)``, and stateful for mid-epoch resume."""

from stoker.samplers.length_grouped import LengthGroupedBatchSampler
from stoker.samplers.weighted import DistributedWeightedSampler

__all__: list[str] = ["DistributedWeightedSampler", "LengthGroupedBatchSampler"]
