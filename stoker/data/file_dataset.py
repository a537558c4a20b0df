"""Map-style datasets over ``(relative path, label)`` files: images and audio clips, and what happens to a bad one.

Every file was decode-checked before training (:func:`stoker.data.folder.find_bad_files`), but a
file can still be corrupted, replaced or deleted while a long run reads it. Such a sample never
turns silently into another one: with ``on_bad_sample="raise"`` (the default) the worker raises an
error naming the file; with ``"skip"`` the item becomes a :class:`BadSample`, which
:class:`SkippingCollate` leaves out of the batch and lists under ``batch["skipped"]``, and the
DataModule counts and reports them at the end of the epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset, default_collate

from stoker.data.seeds import reseed_worker
from stoker.io.audio import AudioDecodeError, CropMode, load_clip
from stoker.io.image import ImageDecodeError, read_image
from stoker.profiling.attribution import ITEM_TIMING_KEY

BadSamplePolicy = Literal["raise", "skip"]
BAD_SAMPLE_POLICIES: tuple[str, ...] = ("raise", "skip")
SKIPPED_KEY = "skipped"


class SampleReadError(RuntimeError):
    """A file that passed the up-front check could not be read during training."""


@dataclass(frozen=True)
class BadSample:
    """What a dataset returns for an unreadable file under ``on_bad_sample="skip"``."""

    path: str
    reason: str


class FileDataset(Dataset):
    """Files and labels; items are ``{key: tensor, "label": int, "index": int}``.

    ``index`` is the position in this dataset, so that what a rank saw can be traced back to files.
    A subclass says how to :meth:`load` one file and under which :attr:`key` it goes.

    Args:
        root: The folder the relative paths start from.
        samples: ``(relative path, label)`` pairs.
        on_bad_sample: ``"raise"`` an error naming a file that fails to load, or ``"skip"`` it (see the module).
    """

    key = "input"

    def __init__(self, root: Path, samples: list[tuple[str, int]], *, on_bad_sample: BadSamplePolicy = "raise") -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.root = Path(root)
        self.samples = samples
        self.on_bad_sample = on_bad_sample

    def read(self, path: Path) -> torch.Tensor:
        """Read and decode one file (raises ``ImageDecodeError``/``AudioDecodeError`` when it cannot)."""
        raise NotImplementedError

    def augment(self, value: torch.Tensor) -> torch.Tensor:
        """The CPU transform of a decoded sample (none by default)."""
        return value

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        reseed_worker()  # a persistent worker starts its next epoch's stream here
        relative, label = self.samples[index]
        start = time.perf_counter()
        try:
            decoded = self.read(self.root / relative)
        except (ImageDecodeError, AudioDecodeError) as err:
            if self.on_bad_sample == "skip":
                return BadSample(relative, err.reason)
            raise SampleReadError(
                f"{self.root / relative}: {err.reason}. The file passed the check before training, so it changed "
                "or disappeared since; restore it, or set on_bad_sample='skip' to leave such files out (they are "
                "counted and reported at the end of each epoch)"
            ) from err
        read = time.perf_counter()
        value = self.augment(decoded)
        # Stage times travel with the sample; SkippingCollate moves them into the batch's load profile.
        return {self.key: value, "label": label, "index": index, ITEM_TIMING_KEY: (read - start, time.perf_counter() - read)}

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order (no file is read)."""
        return [label for _, label in self.samples]


class ImageFileDataset(FileDataset):
    """Image files decoded to ``uint8 [3, H, W]`` RGB, then ``transform`` (crops and flips, still uint8)."""

    key = "image"

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform: Callable[[Any], Any] | None, *,
                 on_bad_sample: BadSamplePolicy = "raise") -> None:
        super().__init__(root, samples, on_bad_sample=on_bad_sample)
        self.transform = transform

    def read(self, path: Path) -> torch.Tensor:
        return read_image(path)

    def augment(self, value: torch.Tensor) -> torch.Tensor:
        return self.transform(value) if self.transform is not None else value


class AudioFileDataset(FileDataset):
    """Audio files as mono float32 clips ``[T]`` at ``sample_rate``, exactly ``num_samples`` long.

    A random crop (or a random placement in silence) with ``mode="random"``, the center with
    ``mode="center"``.
    """

    key = "audio"

    def __init__(self, root: Path, samples: list[tuple[str, int]], *, sample_rate: int, num_samples: int,
                 mode: CropMode, on_bad_sample: BadSamplePolicy = "raise") -> None:
        super().__init__(root, samples, on_bad_sample=on_bad_sample)
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.mode = mode

    def read(self, path: Path) -> torch.Tensor:
        return load_clip(path, sample_rate=self.sample_rate, num_samples=self.num_samples, mode=self.mode)


class SkippingCollate:
    """Collate the good items of a batch; list the skipped ones under ``batch["skipped"]`` as ``[path, reason]``.

    Items' stage times (:data:`~stoker.profiling.attribution.ITEM_TIMING_KEY`) are dropped here unless
    :class:`~stoker.profiling.attribution.ProfiledCollate` around it has taken them for the load profile.

    Raises:
        SampleReadError: Every item of the batch was unreadable.
    """

    def __call__(self, items: list[Any]) -> Any:
        good = [item for item in items if not isinstance(item, BadSample)]
        bad = [item for item in items if isinstance(item, BadSample)]
        if not good:
            listed = "; ".join(f"{b.path}: {b.reason}" for b in bad)
            raise SampleReadError(f"every sample of a batch was unreadable ({listed}); the data changed since the "
                                  "check before training: restore the files or re-run with verify='decode'")
        for item in good:
            item.pop(ITEM_TIMING_KEY, None)
        batch = default_collate(good)
        if bad:
            batch[SKIPPED_KEY] = [[b.path, b.reason] for b in bad]
        return batch
