"""Samplers that subclass ``DistributedSampler``: explicit ``num_replicas``/``rank``, reseeded per
epoch from ``(seed, epoch)``, and stateful for mid-epoch resume."""

__all__: list[str] = []
