"""Image-folder DataModule on the torchvision CPU path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stoker.data.file_dataset import BadSamplePolicy, ImageFileDataset
from stoker.data.media import IMAGE
from stoker.datamodules.folder import ClassFolderDataModule
from stoker.transforms.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AutoAugment,
    eval_transform,
    timm_input_config,
    train_transform,
)


class ImageFolderDataModule(ClassFolderDataModule):
    """Image classification from a folder tree, decoded with torchvision on the CPU.

    Layouts: ``root/train/<class>/…`` with ``root/val/<class>/…`` (and optionally ``test``), or a
    single ``root/<class>/…`` split by a seeded, per-class hash of each file's relative path (see
    :mod:`stoker.data.splits`), so the split does not depend on listing order. Class indices follow the
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
        on_bad_sample: A file that fails to load during training: ``"raise"`` an error naming it, or ``"skip"``
            it (left out of its batch, counted and reported at the end of the epoch).
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
    media = IMAGE

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
        on_bad_sample: BadSamplePolicy = "raise",
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
            root, val_fraction=val_fraction, test_fraction=test_fraction, max_bad_fraction=max_bad_fraction,
            verify=verify, on_bad_sample=on_bad_sample, quarantine=quarantine, manifest=manifest,
            strict_fingerprint=strict_fingerprint, class_names=class_names, cache_dir=cache_dir,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
        )
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

    # ----------------------------------------------------------------- the image specifics
    def _build_dataset(self, root: Path, split: str, pairs: list[tuple[str, int]]) -> ImageFileDataset:
        return ImageFileDataset(root, pairs, self.train_transform if split == "train" else self.eval_transform,
                                on_bad_sample=self.on_bad_sample)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(image_size=self.image_size, mean=list(self.mean or ()), std=list(self.std or ()))
        return info
