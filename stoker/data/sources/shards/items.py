"""Turning a stored shard sample (encoded bytes, label, index, key) into a loader item, in the loader workers.

A sample that does not decode is named by its key (the relative path it was packed from) and
its shard (the chunk file), and then either raises (``on_bad_sample="raise"``) or becomes a
:class:`~stoker.data.file_dataset.BadSample` that :class:`~stoker.data.file_dataset.SkippingCollate`
leaves out of its batch (``"skip"``), as for the folder DataModules' files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stoker.data.file_dataset import BAD_SAMPLE_POLICIES, SKIPPED_KEY, BadSample, BadSamplePolicy, SampleReadError
from stoker.data.litdata_compat import DAMAGED_KEY
from stoker.data.sources.shards.meta import SplitChunks
from stoker.data.sources.shards.storage import join
from stoker.io.audio import AudioDecodeError, CropMode, load_clip_bytes
from stoker.io.image import ImageDecodeError, decode_image_bytes
from stoker.seeds import SampleSeeding, reseed_worker
from stoker.transforms.seeded import apply_seeded


@dataclass(frozen=True)
class SampleLocator:
    """Names a stored sample: ``"<key> (shard <location>/<chunk file>)"``."""

    location: str
    chunks: SplitChunks

    def describe(self, item: dict[str, Any]) -> str:
        shard = join(self.location, self.chunks.chunk_of(int(item["index"])))
        return f"{item['key']} (shard {shard})"


class _Items:
    """Decode one stored sample; bad ones raise or become :class:`BadSample` (see the module)."""

    key = "input"
    errors: tuple[type[Exception], ...] = (ImageDecodeError, AudioDecodeError)

    def __init__(self, locator: SampleLocator, *, on_bad_sample: BadSamplePolicy = "raise") -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.locator = locator
        self.on_bad_sample = on_bad_sample
        self.seeding = SampleSeeding()  # bound to the run's seed and the stream's epoch by the loader

    def bind_seeding(self, seeding: SampleSeeding) -> None:
        """Draw each sample's crops and flips from ``(seed, epoch, packed position)`` (see :class:`SampleSeeding`)."""
        self.seeding = seeding

    def load(self, data: bytes, key: str, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, item: dict[str, Any]) -> dict[str, Any] | BadSample:
        reseed_worker()  # a persistent worker starts its next epoch's augmentation stream here
        if DAMAGED_KEY in item:
            return damaged_sample(item, self.locator, self.on_bad_sample)
        try:
            value = self.load(item["data"], str(item["key"]), self.seeding.generator(int(item["index"])))
        except self.errors as err:
            reason = getattr(err, "reason", str(err))
            where = self.locator.describe(item)
            if self.on_bad_sample == "skip":
                return BadSample(where, reason)
            raise SampleReadError(
                f"{where}: {reason}. The sample is damaged inside the shard set (its file decoded when it was packed); "
                "re-pack it with `stoker pack`, or set on_bad_sample='skip' to leave such samples out (they are "
                "counted and reported at the end of each epoch)"
            ) from err
        return {self.key: value, "label": int(item["label"]), "index": int(item["index"])}


class ImageItems(_Items):
    """Image bytes decoded to ``uint8 [3, H, W]`` RGB, then ``transform`` (crops and flips, still uint8)."""

    key = "image"

    def __init__(self, locator: SampleLocator, transform: Callable[[Any], Any] | None, *,
                 on_bad_sample: BadSamplePolicy = "raise") -> None:
        super().__init__(locator, on_bad_sample=on_bad_sample)
        self.transform = transform

    def load(self, data: bytes, key: str, generator: torch.Generator) -> torch.Tensor:
        return apply_seeded(self.transform, decode_image_bytes(data, key), generator)


class AudioItems(_Items):
    """Audio bytes as mono float32 clips ``[T]`` at ``sample_rate``, ``num_samples`` long (random or center crop)."""

    key = "audio"

    def __init__(self, locator: SampleLocator, *, sample_rate: int, num_samples: int, mode: CropMode,
                 on_bad_sample: BadSamplePolicy = "raise") -> None:
        super().__init__(locator, on_bad_sample=on_bad_sample)
        self.sample_rate, self.num_samples, self.mode = sample_rate, num_samples, mode

    def load(self, data: bytes, key: str, generator: torch.Generator) -> torch.Tensor:
        return load_clip_bytes(data, sample_rate=self.sample_rate, num_samples=self.num_samples, mode=self.mode,
                               name=key, generator=generator)


def damaged_sample(item: dict[str, Any], locator: SampleLocator, on_bad_sample: BadSamplePolicy) -> BadSample:
    """A sample of a damaged chunk: skipped (a :class:`BadSample` naming the chunk), or an error naming it."""
    where = f"a sample of shard {join(locator.location, str(item.get('chunk', '?')))}"
    if on_bad_sample == "skip":
        return BadSample(where, str(item[DAMAGED_KEY]))
    raise SampleReadError(f"{where}: {item[DAMAGED_KEY]}. Copy the shard set again or re-pack it with `stoker pack`, "
                          "or set on_bad_sample='skip' to train without the damaged chunk's samples")


class EncodedItems:
    """The stored sample as it is (for DALI, which decodes the bytes itself): data as a uint8 array.

    Args:
        locator: Names a damaged chunk's samples.
        on_bad_sample: Skip (a :class:`BadSample`) or raise on a sample of a damaged chunk.
    """

    def __init__(self, locator: SampleLocator | None = None, on_bad_sample: BadSamplePolicy = "raise") -> None:
        self.locator, self.on_bad_sample = locator, on_bad_sample

    def __call__(self, item: dict[str, Any]) -> dict[str, Any] | BadSample:
        if DAMAGED_KEY in item and self.locator is not None:
            return damaged_sample(item, self.locator, self.on_bad_sample)
        return {"data": np.frombuffer(item["data"], dtype=np.uint8), "label": int(item["label"]),
                "index": int(item["index"]), "key": str(item["key"])}


def collate_encoded(items: list[Any]) -> dict[str, Any]:
    """A batch of encoded samples: ``data`` and ``key`` stay lists (their lengths differ), labels become tensors.

    Samples of damaged chunks (:class:`BadSample`) are left out and listed under ``skipped``.
    """
    bad = [item for item in items if isinstance(item, BadSample)]
    items = [item for item in items if not isinstance(item, BadSample)]
    if not items:
        raise SampleReadError("every sample of a batch was unreadable: " + "; ".join(f"{b.path}: {b.reason}"
                                                                                      for b in bad))
    batch = _collate_encoded(items)
    if bad:
        batch[SKIPPED_KEY] = [[b.path, b.reason] for b in bad]
    return batch


def _collate_encoded(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "data": [item["data"] for item in items],
        "key": [item["key"] for item in items],
        "label": (torch.stack([item["label"] for item in items]) if isinstance(items[0]["label"], torch.Tensor)
                  else torch.tensor([item["label"] for item in items], dtype=torch.int64)),
        "index": torch.tensor([item["index"] for item in items], dtype=torch.int64),
    }
