"""Map-style datasets over a source's ``(key, label)`` samples: images and audio clips, and what happens to a bad one.

A sample is read through its source (:mod:`stoker.data.sources`): a file of a class folder or a
table, the bytes in a Hugging Face table or a tar. Every sample was decode-checked before training
(:func:`stoker.data.sources.checks.find_bad_samples`), but a file can still be corrupted, replaced
or deleted while a long run reads it. Such a sample never
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

from stoker.data.sources.base import Source
from stoker.data.sources.labels import Label
from stoker.io.audio import AudioDecodeError, CropMode, load_clip, load_clip_bytes
from stoker.io.image import ImageDecodeError, decode_image_bytes, read_image
from stoker.profiling.attribution import ITEM_TIMING_KEY
from stoker.seeds import SampleSeeding, reseed_worker
from stoker.transforms.seeded import apply_seeded

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
    """A source's samples and labels; items are ``{key: tensor, "label": ..., "index": int}``.

    ``index`` is the position in this dataset, so that what a rank saw can be traced back to samples.
    ``label`` is the class index, a multi-hot float vector ``[C]`` for multi-label samples, or -1 for
    unlabelled ones (prediction on new data). A subclass says how to decode one file (:meth:`read_file`)
    or one sample's bytes (:meth:`read_data`) and under which :attr:`key` it goes.

    Args:
        source: The reader the keys belong to, or a folder the keys are relative paths in.
        samples: ``(key, label)`` pairs.
        on_bad_sample: ``"raise"`` an error naming a sample that fails to load, or ``"skip"`` it (see the module).
        num_classes: Classes of multi-label targets (their multi-hot length).
    """

    key = "input"

    def __init__(self, source: Source | str | Path, samples: list[tuple[str, Label]], *,
                 on_bad_sample: BadSamplePolicy = "raise", num_classes: int | None = None) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        if not isinstance(source, Source):
            from stoker.data.media import IMAGE
            from stoker.data.sources.folder import FolderSource

            source = FolderSource(str(source), IMAGE)
        self.source = source
        self.samples = samples
        self.on_bad_sample = on_bad_sample
        self.num_classes = num_classes
        # Per-sample augmentation draws; the loader binds the run's seed and its sampler's epoch (bind_seeding).
        self.seeding = SampleSeeding()

    def bind_seeding(self, seeding: SampleSeeding) -> None:
        """Draw each sample's augmentation from ``seeding`` (the run's seed and the loader's epoch)."""
        self.seeding = seeding

    @property
    def root(self) -> Path | None:
        """The folder of a class-folder source (``None`` for others)."""
        return getattr(self.source, "root", None)

    def read_file(self, path: Path, generator: torch.Generator) -> torch.Tensor:
        """Decode one file (raises ``ImageDecodeError``/``AudioDecodeError`` when it cannot); random choices
        made while reading (a recording's crop) come from ``generator``."""
        raise NotImplementedError

    def read_data(self, data: bytes, name: str, generator: torch.Generator) -> torch.Tensor:
        """Decode one sample's encoded bytes."""
        raise NotImplementedError

    def read(self, key: str, generator: torch.Generator) -> torch.Tensor:
        """Read and decode one sample through its source."""
        path = self.source.local_path(key)
        if path is not None:
            return self.read_file(path, generator)
        name = self.source.name_of(key)
        try:
            data = self.source.read_bytes(key)
        except OSError as err:
            raise ImageDecodeError(name, f"unreadable ({err.strerror or err})") from err
        return self.read_data(data, name, generator)

    def augment(self, value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The CPU transform of a decoded sample (none by default), its random draws from ``generator``."""
        return value

    def target(self, label: Label) -> int | torch.Tensor:
        """The label as a batch carries it: the class index, or a multi-hot float vector for a tuple of classes."""
        if isinstance(label, tuple):
            hot = torch.zeros(self.num_classes or 0, dtype=torch.float32)
            hot[list(label)] = 1.0
            return hot
        return label

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        reseed_worker()  # a persistent worker starts its next epoch's stream here
        key, label = self.samples[index]
        start = time.perf_counter()
        try:
            # Every random choice for this sample comes from its own generators, seeded from (seed, epoch, index):
            # the same wherever (worker, thread, rank) and whenever (a resumed run) the sample is loaded.
            decoded = self.read(key, self.seeding.generator(index, part="read"))
        except (ImageDecodeError, AudioDecodeError) as err:
            if self.on_bad_sample == "skip":
                return BadSample(key, err.reason)
            raise SampleReadError(
                f"{self.source.name_of(key)}: {err.reason}. The sample passed the check before training, so it "
                "changed or disappeared since; restore it, or set on_bad_sample='skip' to leave such samples out "
                "(they are counted and reported at the end of each epoch)"
            ) from err
        read = time.perf_counter()
        value = self.augment(decoded, self.seeding.generator(index))
        # Stage times travel with the sample; SkippingCollate moves them into the batch's load profile.
        return {self.key: value, "label": self.target(label), "index": index,
                ITEM_TIMING_KEY: (read - start, time.perf_counter() - read)}

    @property
    def labels(self) -> list[Label]:
        """The label of every sample, in order (no sample is read)."""
        return [label for _, label in self.samples]


class ImageFileDataset(FileDataset):
    """Images decoded to ``uint8 [3, H, W]`` RGB, then ``transform`` (crops and flips, still uint8)."""

    key = "image"

    def __init__(self, source: Source | str | Path, samples: list[tuple[str, Label]],
                 transform: Callable[[Any], Any] | None, *, on_bad_sample: BadSamplePolicy = "raise",
                 num_classes: int | None = None) -> None:
        super().__init__(source, samples, on_bad_sample=on_bad_sample, num_classes=num_classes)
        self.transform = transform

    def read_file(self, path: Path, generator: torch.Generator) -> torch.Tensor:
        return read_image(path)

    def read_data(self, data: bytes, name: str, generator: torch.Generator) -> torch.Tensor:
        return decode_image_bytes(data, name)

    def augment(self, value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return apply_seeded(self.transform, value, generator)


class AudioFileDataset(FileDataset):
    """Recordings as mono float32 clips ``[T]`` at ``sample_rate``, exactly ``num_samples`` long.

    A random crop (or a random placement in silence) with ``mode="random"``, the center with
    ``mode="center"``. Files are decoded around the crop only; stored bytes are decoded whole.
    """

    key = "audio"

    def __init__(self, source: Source | str | Path, samples: list[tuple[str, Label]], *, sample_rate: int,
                 num_samples: int, mode: CropMode, on_bad_sample: BadSamplePolicy = "raise",
                 num_classes: int | None = None) -> None:
        if not isinstance(source, Source):
            from stoker.data.media import AUDIO
            from stoker.data.sources.folder import FolderSource

            source = FolderSource(str(source), AUDIO)
        super().__init__(source, samples, on_bad_sample=on_bad_sample, num_classes=num_classes)
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.mode = mode

    def read_file(self, path: Path, generator: torch.Generator) -> torch.Tensor:
        return load_clip(path, sample_rate=self.sample_rate, num_samples=self.num_samples, mode=self.mode,
                         generator=generator)

    def read_data(self, data: bytes, name: str, generator: torch.Generator) -> torch.Tensor:
        return load_clip_bytes(data, sample_rate=self.sample_rate, num_samples=self.num_samples, mode=self.mode,
                               name=name, generator=generator)


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
