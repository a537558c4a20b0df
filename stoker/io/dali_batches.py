"""DALIBatches: a Lightning-friendly iterable that runs a DALI file pipeline one epoch at a time.

A stoker sampler decides which files this rank reads in each epoch (see :mod:`stoker.io.dali` for the
pipeline); the iterable yields stoker's dict batches, counts what the model received for checkpoints
(every rank's position, so a run on another number of ranks resumes the rest of the epoch) and leaves
Lightning nothing to wrap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from stoker.data.loader import own_state, per_rank_state
from stoker.io.dali import PipelineSpec, _to_torch, build_image_pipeline, crop_draws
from stoker.samplers.distributed import ResumableDistributedSampler
from stoker.seeds import derive_seed


class DALIBatches:
    """One split on one rank, as an iterable of dict batches with a length Lightning can read.

    Which samples a rank reads, in which order, comes from :attr:`sampler`, a
    :class:`~stoker.samplers.ResumableDistributedSampler` (a new permutation per epoch and an equal
    share per rank in training; the natural order, unrepeated, in evaluation). Lightning calls its
    ``set_epoch`` at every epoch, as for any DataLoader's sampler; outside Lightning, call
    ``batches.sampler.set_epoch(e)`` yourself. Every iteration builds a pipeline that reads exactly
    that share, seeded from ``(seed, "dali", rank, epoch)``.

    This is not a ``torch.utils.data.DataLoader``, so Lightning neither injects a sampler nor
    re-wraps it. It has ``state_dict``/``load_state_dict`` (the sampler's, counted in batches the
    model received, not in what DALI prefetched), so Lightning checkpoints it and a resumed epoch
    reads only its remaining samples.

    Args:
        spec: The pipeline definition.
        labels: Target of every sample of the split (by position): class indices, or a ``[N, C]`` tensor of
            multi-hot targets.
        sampler: The rank's sampler over the split; ``batch_size`` and ``drop_last`` as the spec's.
        seed: Base seed.
        device: Where the images are put when DALI decodes on the GPU.
        input_key: Key of the images in a batch.
        target_key: Key of the labels in a batch.
    """

    # Lightning inspects a loader's ``sampler`` (it calls ``set_epoch`` on it) and ``batch_sampler``.
    batch_sampler = None

    def __init__(
        self,
        spec: PipelineSpec,
        labels: list[int] | torch.Tensor,
        sampler: ResumableDistributedSampler,
        *,
        seed: int,
        device: torch.device | None = None,
        input_key: str = "image",
        target_key: str = "label",
    ) -> None:
        if len(labels) != len(spec.files) or sampler.length != len(spec.files):
            raise ValueError(f"got {len(labels)} labels and a sampler over {sampler.length} samples for "
                             f"{len(spec.files)} files")
        self.spec = spec
        self.sampler = sampler
        self.labels = labels if isinstance(labels, torch.Tensor) else torch.tensor(labels, dtype=torch.int64)
        self.seed = seed
        self.device = device
        self.input_key = input_key
        self.target_key = target_key
        self._start = 0  # samples of the epoch skipped by a resume
        self._done = 0  # batches handed out in the current iteration
        self._pipe: Any = None
        # Told (self, batches left) when a checkpoint of another number of ranks resumes mid-epoch.
        self.on_elastic_resume: Callable[[Any, int], None] | None = None

    def __len__(self) -> int:
        return self.sampler.plan.num_batches(self.sampler.rank)

    def state_dict(self) -> dict[str, Any]:
        """The sampler's state, with the position counted in samples the model has received (every rank's)."""
        state = self.sampler.state_dict()
        state["yielded"] = min(len(self.sampler), self._start + self._done * self.spec.batch_size)
        return per_rank_state(state, self.sampler.num_replicas)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the state's position on the next iteration (the rest of the epoch, on other ranks too)."""
        self.sampler.load_state_dict(own_state(state, self.sampler.rank, self.sampler.num_replicas))
        rest = self.sampler.elastic_rest
        if rest is not None and self.on_elastic_resume is not None:
            self.on_elastic_resume(self, -(-rest // self.spec.batch_size))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # A generator: the epoch's files are chosen at the first next(), after Lightning's set_epoch
        # (Lightning may call iter() before it, when it resumes at an epoch boundary).
        positions = list(self.sampler)  # the rest of this epoch's share (all of it unless resumed)
        self._start, self._done = len(self.sampler) - len(positions), 0
        self._pipe = None  # free the previous pipeline's buffers before allocating new ones
        if not positions:
            return
        seed = derive_seed(self.seed, "dali", self.sampler.rank, self.sampler.epoch, bits=31)
        draws = crop_draws(self.seed, self.sampler.epoch, positions, self.spec.hflip) if self.spec.train else None
        self._pipe = build_image_pipeline(self.spec, positions, seed=seed, draws=draws)
        count, batch_size = len(positions), self.spec.batch_size
        for step in range(-(-count // batch_size)):
            images, index = self._pipe.run()
            read = torch.from_numpy(np.array(index.as_tensor())).reshape(-1).to(torch.int64)
            batch_images = _to_torch(images, self.device)
            real = min(batch_size, count - step * batch_size)
            if real < batch_size:  # the reader padded the last batch by repeating its last sample
                read, batch_images = read[:real], batch_images[:real]
            self._done = step + 1
            yield {self.input_key: batch_images, self.target_key: self.labels[read], "index": read}

    def close(self) -> None:
        """Release the pipeline (its threads and buffers)."""
        self._pipe = None
