"""ImageFolderDataModule: the name class-folder trees have always used, now a thin name over ImageDataModule."""

from __future__ import annotations

from stoker.data.file_dataset import BadSamplePolicy
from stoker.data.loader import WorkerType
from stoker.datamodules.image import ImageDataModule
from stoker.datamodules.source import Verify
from stoker.transforms.image import IMAGENET_MEAN, IMAGENET_STD, AutoAugment


class ImageFolderDataModule(ImageDataModule):
    """Image classification from a folder tree on the torchvision CPU path: :class:`ImageDataModule` with ``root``.

    Kept so that code and recipes written for it run unchanged; it takes every source
    :class:`ImageDataModule` takes (``root`` is its ``source``). New code can use ``ImageDataModule``.

    Args:
        root: Dataset root: ``root/<class>/…`` or ``root/train|val|test/<class>/…`` (or any other source).
        batch_size: See :class:`ImageDataModule` (so are the rest).
        worker_type: See :class:`~stoker.datamodules.base.StokerDataModule`.
        num_workers: See :class:`ImageDataModule`.
        image_size: See :class:`ImageDataModule`.
        val_fraction: See :class:`ImageDataModule`.
        test_fraction: See :class:`ImageDataModule`.
        seed: See :class:`ImageDataModule`.
        timm_model: See :class:`ImageDataModule`.
        mean: See :class:`ImageDataModule`.
        std: See :class:`ImageDataModule`.
        crop_pct: See :class:`ImageDataModule`.
        scale: See :class:`ImageDataModule`.
        hflip: See :class:`ImageDataModule`.
        auto_augment: See :class:`ImageDataModule`.
        random_erasing: See :class:`ImageDataModule`.
        channels_last: See :class:`ImageDataModule`.
        max_bad_fraction: See :class:`ImageDataModule`.
        verify: See :class:`ImageDataModule`.
        on_bad_sample: See :class:`ImageDataModule`.
        quarantine: See :class:`ImageDataModule`.
        manifest: See :class:`ImageDataModule`.
        strict_fingerprint: See :class:`ImageDataModule`.
        class_names: See :class:`ImageDataModule`.
        cache_dir: See :class:`ImageDataModule`.
        predict_source: See :class:`ImageDataModule`.
        pin_memory: See :class:`ImageDataModule`.
        persistent_workers: See :class:`ImageDataModule`.
        prefetch_factor: See :class:`ImageDataModule`.

    Example::

        dm = ImageFolderDataModule("data/flowers", batch_size=64, image_size=224)
    """

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
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
        verify: Verify = "decode",
        on_bad_sample: BadSamplePolicy = "raise",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        predict_source: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(
            root, worker_type=worker_type,
            batch_size=batch_size, num_workers=num_workers, image_size=image_size, val_fraction=val_fraction,
            test_fraction=test_fraction, seed=seed, timm_model=timm_model, mean=mean, std=std, crop_pct=crop_pct,
            scale=scale, hflip=hflip, auto_augment=auto_augment, random_erasing=random_erasing,
            channels_last=channels_last, max_bad_fraction=max_bad_fraction, verify=verify,
            on_bad_sample=on_bad_sample, quarantine=quarantine, manifest=manifest,
            strict_fingerprint=strict_fingerprint, class_names=class_names, cache_dir=cache_dir,
            predict_source=predict_source, pin_memory=pin_memory, persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
        )
