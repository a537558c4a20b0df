"""Image-folder DataModule on the torchvision CPU path."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from stoker.datamodules.base import StokerDataModule
from stoker.image_folder import (
    FolderIndex,
    class_names_of,
    find_bad_images,
    index_folder,
    read_path_list,
    scan_cache_path,
)
from stoker.image_ops import read_image
from stoker.image_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    eval_transform,
    timm_input_config,
    train_transform,
)
from stoker.loader import available_cores
from stoker.manifest import check_manifest_fingerprint, manifest_splits, splits_fingerprint
from stoker.splits import split_folder_files, validate_fractions


class ImageFileDataset(Dataset):
    """Image files and labels; items are ``{"image": uint8 [3, H, W], "label": int, "index": int}``.

    ``index`` is the position in this dataset, so that what a rank saw can be traced back to files.
    """

    def __init__(self, root: Path, samples: list[tuple[str, int]], transform: Callable[[Any], Any] | None) -> None:
        self.root = root
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        relative, label = self.samples[index]
        image = read_image(self.root / relative)
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": label, "index": index}

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order (no file is read)."""
        return [label for _, label in self.samples]


class ImageFolderDataModule(StokerDataModule):
    """Image classification from a folder tree, decoded with torchvision on the CPU.

    Layouts: ``root/train/<class>/…`` with ``root/val/<class>/…`` (and optionally ``test``), or a
    single ``root/<class>/…`` split by a seeded, per-class hash of each file's relative path (see
    :mod:`stoker.splits`), so the split does not depend on listing order. Class indices follow the
    sorted class folder names.

    Every image file is decoded once by a parallel scan (in ``prepare_data`` on each node, then
    read back from a cache in ``setup``); files that fail are excluded and reported with path and
    reason in :attr:`bad_files`. More than ``max_bad_fraction`` of them is an error before training.

    Batches are ``{"image": uint8 [N, 3, S, S], "label": int64 [N], "index": int64 [N]}`` on the
    host; the image becomes normalized float32 on the device.

    Args:
        root: Dataset root.
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        image_size: Side of the square training crop and evaluation crop.
        val_fraction: Per-class fraction held out for validation when the tree has no ``val`` folder.
        test_fraction: Per-class fraction held out for testing when the tree has no ``test`` folder.
        seed: Seeds the split, shuffling and augmentation.
        timm_model: Take ``image_size``, ``mean``, ``std``, ``crop_pct`` and interpolation from this
            timm model's pretrained config instead (nothing is downloaded).
        mean: Per-channel mean in ``[0, 1]``.
        std: Per-channel standard deviation in ``[0, 1]``.
        crop_pct: Evaluation center-crop fraction: resize the shorter side to ``image_size / crop_pct``.
        scale: RandomResizedCrop area range.
        hflip: Probability of a horizontal flip in training.
        auto_augment: ``"none"``, ``"randaugment"``, ``"trivialaugment"`` or ``"autoaugment"``.
        random_erasing: Probability of RandomErasing in training.
        channels_last: Hand the model channels_last float images.
        max_bad_fraction: Largest tolerated fraction of undecodable files.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts the files.
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        manifest: A split manifest from ``stoker split``; it replaces the folder's own split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error, not a warning.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Where scan results are cached (default ``~/.cache/stoker``).
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Example::

        dm = ImageFolderDataModule("data/flowers", batch_size=64, image_size=224)
        trainer.fit(ImageClassifier("resnet18", num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "image"
    target_key = "label"

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 224,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        seed: int = 0,
        timm_model: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        channels_last: bool = False,
        max_bad_fraction: float = 0.01,
        verify: str = "decode",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
            seed=seed,
        )
        validate_fractions(val_fraction, test_fraction)
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if verify not in ("decode", "none"):
            raise ValueError(f"verify must be 'decode' or 'none', got {verify!r}")
        self.root = root
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        interpolation = "bilinear"
        if timm_model is not None:
            config = timm_input_config(timm_model)
            image_size, mean, std, crop_pct = config.image_size, config.mean, config.std, config.crop_pct  # type: ignore[assignment]
            interpolation = config.interpolation
        self.image_size = image_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.channels_last = channels_last
        self.train_transform = train_transform(
            image_size, scale=scale, hflip=hflip, auto_augment=auto_augment, random_erasing=random_erasing,
            interpolation=interpolation,
        )
        self.eval_transform = eval_transform(image_size, crop_pct=crop_pct, interpolation=interpolation)
        self.max_bad_fraction = max_bad_fraction
        self.verify = verify
        self.quarantine = quarantine
        self.manifest = manifest
        self.strict_fingerprint = strict_fingerprint
        self.cache_dir = cache_dir
        self._class_names = list(class_names) if class_names is not None else None
        self.bad_files: dict[str, str] = {}
        self.quarantined: list[str] = []
        self.splits: dict[str, list[tuple[str, int]]] = {}
        self.datasets: dict[str, ImageFileDataset] = {}

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = class_names_of(self.root)
        return self._class_names

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Build the data when a subclass needs to, then decode-check every file once per node."""
        if self.verify == "decode":
            index = index_folder(self.root, self.class_names)
            self._scan(index)

    def setup(self, stage: str | None = None) -> None:
        """Index the tree, exclude bad and quarantined files, split, and build the datasets."""
        if self.datasets:
            return
        index = index_folder(self.root, self.class_names)
        all_files = [rel for pairs in index.files.values() for rel, _ in pairs]
        excluded = read_path_list(self.quarantine) if self.quarantine else set()
        self.quarantined = sorted(rel for rel in all_files if rel in excluded)
        self.bad_files = self._scan(index) if self.verify == "decode" else {}
        self._check_bad_fraction(len(all_files))
        drop = excluded | set(self.bad_files)
        kept = {split: [(rel, y) for rel, y in pairs if rel not in drop] for split, pairs in index.files.items()}
        self.splits = manifest_splits(self.manifest, kept, self.class_names) if self.manifest else self._split(kept)
        root = index.root
        self.datasets = {
            split: ImageFileDataset(root, pairs, self.train_transform if split == "train" else self.eval_transform)
            for split, pairs in self.splits.items()
        }
        if not self.splits["train"]:
            raise ValueError(f"no training images left under {self.root!r} after the split and exclusions")
        hashes_cache = scan_cache_path(root, self.cache_dir).with_suffix(".sha256.json")
        self.record_fingerprint(splits_fingerprint(root, self.splits, self.class_names, cache_path=hashes_cache))
        check_manifest_fingerprint(self.manifest, self.fingerprint or "")
        self._report()

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["test"], train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["test"] or self.datasets["val"], train=False)

    def train_labels(self) -> list[int]:
        """Labels of the training split in dataset order (available after ``setup``)."""
        return self.datasets["train"].labels

    # ----------------------------------------------------------------- internals
    def _scan(self, index: FolderIndex) -> dict[str, str]:
        relpaths = [rel for pairs in index.files.values() for rel, _ in pairs]
        return find_bad_images(
            index.root, relpaths, num_workers=min(8, available_cores()),
            cache_path=scan_cache_path(index.root, self.cache_dir),
        )

    def _check_bad_fraction(self, total: int) -> None:
        if not self.bad_files:
            return
        fraction = len(self.bad_files) / max(1, total)
        if fraction > self.max_bad_fraction:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in list(self.bad_files.items())[:10])
            raise ValueError(
                f"{len(self.bad_files)} of {total} image files under {self.root!r} ({fraction:.1%}) cannot be "
                f"decoded, more than max_bad_fraction={self.max_bad_fraction:.1%}. First ones:\n{listed}\n"
                "Fix or remove them, or raise max_bad_fraction to train without them."
            )

    def _split(self, kept: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
        return split_folder_files(kept, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed)

    def _report(self) -> None:
        sizes = ", ".join(f"{split} {len(pairs)}" for split, pairs in self.splits.items())
        rank_zero_info(f"{type(self).__name__}: {len(self.class_names)} classes; {sizes}")
        if self.bad_files:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in self.bad_files.items())
            rank_zero_warn(f"excluded {len(self.bad_files)} undecodable file(s) under {self.root!r}:\n{listed}")
        if self.quarantined:
            rank_zero_info(f"left out {len(self.quarantined)} quarantined file(s) listed in {self.quarantine!r}")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            root=os.fspath(self.root),
            image_size=self.image_size,
            mean=list(self.mean or ()),
            std=list(self.std or ()),
            split_sizes={split: len(pairs) for split, pairs in self.splits.items()},
            bad_files=[{"path": rel, "reason": reason} for rel, reason in self.bad_files.items()],
            quarantined=self.quarantined,
            manifest=self.manifest,
            fingerprint=self.fingerprint,
        )
        return info
