"""Streamed shard samples decoded by NVIDIA DALI: the loader decides what each batch holds, DALI decodes it.

The same :class:`~stoker.data.sources.shards.stream.ShardStream`/``ShardPass`` and the same stoker loader
as the torchvision path read the encoded bytes (workers only read, they do not decode), so
order, sharding, equal batches and resume come from one engine for both back ends. Each batch
is fed to a DALI pipeline through an external source and decoded there (on the GPU with
``device="mixed"``, or in DALI's CPU-only mode), with the crops of
:func:`stoker.io.dali.build_encoded_pipeline`.

The pipeline runs one batch per step with no prefetch, so the loader's state is exactly the
position of the batches the model received; Lightning checkpoints it through
:meth:`ShardDALIBatches.state_dict`.

A sample DALI cannot decode stops a DALI pipeline for good. The batch's samples are then checked
with the CPU decoder to name the bad one(s) (key and shard): ``on_bad_sample="raise"`` raises,
``"skip"`` rebuilds the pipeline and decodes the batch without them (listed under ``"skipped"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stoker.data.file_dataset import SKIPPED_KEY, BadSamplePolicy, SampleReadError
from stoker.data.sources.shards.items import SampleLocator
from stoker.io.dali import DRAWS_INPUT, ENCODED_INPUT, PipelineSpec, build_encoded_pipeline, crop_draws, to_torch
from stoker.io.image import ImageDecodeError, decode_image_bytes
from stoker.seeds import derive_seed


class ShardDALIBatches:
    """A loader of encoded shard samples, decoded by DALI; iterable, with ``len`` (training) and a resumable state.

    Args:
        loader: The stoker loader of the split (items from :class:`~stoker.data.sources.shards.items.EncodedItems`,
            batches from :func:`~stoker.data.sources.shards.items.collate_encoded`).
        spec: The DALI pipeline definition (``file_root``/``files`` unused).
        locator: Names a sample by key and shard in errors.
        seed: The run's seed; epoch ``e`` of rank ``r`` seeds DALI with ``derive_seed(seed, "dali-shards", r, e)``.
        rank: This rank.
        device: Where the images go when DALI decodes on the GPU.
        on_bad_sample: ``"raise"`` or ``"skip"`` a sample DALI cannot decode.
        input_key: Key of the images in a batch.
        target_key: Key of the labels in a batch.
        epoch_of: The epoch an iteration starts (the Trainer's ``current_epoch``, restored on resume);
            ``None``: iterations are counted from 0.
    """

    # Lightning inspects a loader's ``sampler`` (it calls ``set_epoch`` on it) and ``batch_sampler``.
    sampler = None
    batch_sampler = None

    def __init__(self, loader: Any, spec: PipelineSpec, locator: SampleLocator, *, seed: int, rank: int,
                 device: torch.device | None = None, on_bad_sample: BadSamplePolicy = "raise",
                 input_key: str = "image", target_key: str = "label",
                 epoch_of: Callable[[], int] | None = None) -> None:
        self.loader, self.spec, self.locator = loader, spec, locator
        self.seed, self.rank, self.device, self.on_bad_sample = seed, rank, device, on_bad_sample
        self.input_key, self.target_key, self.epoch_of = input_key, target_key, epoch_of
        self.epoch = 0  # iterations started (seeds the augmentation draws without an epoch_of)
        self._epoch = 0  # the epoch of the running iteration
        self._pipe: Any = None

    def __len__(self) -> int:
        return len(self.loader)  # a TypeError for evaluation streams, which have no length

    def state_dict(self) -> dict[str, Any]:
        """The loader's state: batches handed out are batches the model received (nothing is prefetched)."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the loader at ``state`` on the next iteration."""
        self.loader.load_state_dict(state)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.epoch_of is not None:
            epoch = self.epoch_of()  # a resumed run counts on from the checkpoint's epoch, not from 0
        seed = derive_seed(self.seed, "dali-shards", self.rank, epoch, bits=31)
        self._epoch = epoch  # each sample's crop and flip are drawn from (seed, epoch, index): see crop_draws
        self._pipe = build_encoded_pipeline(self.spec, seed=seed)
        try:
            for batch in self.loader:
                yield self._decode(batch, seed)
        finally:
            self._pipe = None  # free the pipeline's threads and buffers between epochs

    def _decode(self, batch: dict[str, Any], seed: int) -> dict[str, Any]:
        try:
            images = self._run(batch["data"], batch["index"].tolist())
        except RuntimeError as err:
            return self._without_bad_samples(batch, err, seed)
        out = {self.input_key: images, self.target_key: batch["label"], "index": batch["index"]}
        if SKIPPED_KEY in batch:  # samples of damaged chunks, left out by the loader's collate
            out[SKIPPED_KEY] = batch[SKIPPED_KEY]
        return out

    def _run(self, data: list[Any], samples: list[int]) -> torch.Tensor:
        self._pipe.feed_input(ENCODED_INPUT, data)
        if self.spec.train:
            self._pipe.feed_input(DRAWS_INPUT, crop_draws(self.seed, self._epoch, samples, self.spec.hflip))
        (images,) = self._pipe.run()
        return to_torch(images, self.device)

    def _without_bad_samples(self, batch: dict[str, Any], err: RuntimeError, seed: int) -> dict[str, Any]:
        bad: dict[int, str] = {}
        for position, (data, key) in enumerate(zip(batch["data"], batch["key"])):
            try:
                decode_image_bytes(data.tobytes(), key)
            except ImageDecodeError as decode_err:
                bad[position] = decode_err.reason
        if not bad:
            listed = ", ".join(batch["key"])
            raise RuntimeError(f"DALI failed to decode a batch of {listed} that the CPU decoder reads: {err}") from err
        named = {self.locator.describe({"key": batch["key"][i], "index": int(batch["index"][i])}): reason
                 for i, reason in bad.items()}
        if self.on_bad_sample == "raise" or len(bad) == len(batch["data"]):
            listed = "; ".join(f"{where}: {reason}" for where, reason in named.items())
            raise SampleReadError(f"{listed}. The sample is damaged inside the shard set; re-pack it with `stoker "
                                  "pack`, or set on_bad_sample='skip' to leave such samples out") from err
        keep = [i for i in range(len(batch["data"])) if i not in bad]
        self._pipe = build_encoded_pipeline(self.spec, seed=seed)  # a failed DALI pipeline cannot run again
        images = self._run([batch["data"][i] for i in keep], [int(batch["index"][i]) for i in keep])
        picked = torch.tensor(keep, dtype=torch.int64)
        return {self.input_key: images, self.target_key: batch["label"][picked], "index": batch["index"][picked],
                SKIPPED_KEY: [[where, reason] for where, reason in named.items()]}

    def close(self) -> None:
        """Release the pipeline (its threads and buffers)."""
        self._pipe = None
