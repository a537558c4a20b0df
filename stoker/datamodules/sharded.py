"""ShardedImageDataModule: images from a shard set (``stoker pack``); a thin name over ImageDataModule."""

from __future__ import annotations

from typing import Any

from stoker.data.file_dataset import BadSamplePolicy
from stoker.datamodules.image import Decode, ImageDataModule
from stoker.transforms.image import IMAGENET_MEAN, IMAGENET_STD, AutoAugment


class ShardedImageDataModule(ImageDataModule):
    """Image classification from a shard set, decoded by torchvision in the workers or by NVIDIA DALI.

    :class:`ImageDataModule` on a stoker shard set (local or ``s3://``), under the name it has always had:
    batches, transforms, equal disjoint shares per rank, one global permutation per epoch, exactly-once
    evaluation and exact resume as documented there and in :mod:`stoker.data.sources.shards.stream`.

    Args:
        source: The shard set (a folder or an ``s3://``/``gs://``/``r2://`` URL) from ``stoker pack``.
        batch_size: See :class:`ImageDataModule` (so are the rest).
        num_workers: See :class:`ImageDataModule`.
        image_size: See :class:`ImageDataModule`.
        decode: See :class:`ImageDataModule`.
        cache_dir: Node-local cache root; the chunks of a remote set go under ``<cache_dir>/chunks``.
        max_cache_size: litdata's chunk-cache budget (e.g. ``"200GB"``).
        storage_options: Options for the object-store client.
        seed: See :class:`ImageDataModule`.
        timm_model: See :class:`ImageDataModule`.
        mean: See :class:`ImageDataModule`.
        std: See :class:`ImageDataModule`.
        crop_pct: See :class:`ImageDataModule`.
        scale: See :class:`ImageDataModule`.
        ratio: See :class:`ImageDataModule`.
        hflip: See :class:`ImageDataModule`.
        auto_augment: See :class:`ImageDataModule`.
        random_erasing: See :class:`ImageDataModule`.
        channels_last: See :class:`ImageDataModule`.
        on_bad_sample: See :class:`ImageDataModule`.
        strict_fingerprint: See :class:`ImageDataModule`.
        num_threads: DALI CPU threads per rank (``dali_threads`` in :class:`ImageDataModule`).
        hw_decoder_load: See :class:`ImageDataModule`.
        pin_memory: See :class:`ImageDataModule`.
        persistent_workers: See :class:`ImageDataModule`.
        prefetch_factor: See :class:`ImageDataModule`.

    Example::

        dm = ShardedImageDataModule("s3://bucket/imagenet-shards", batch_size=256, cache_dir="/nvme/cache")
    """

    def __init__(
        self,
        source: str,
        *,
        batch_size: int = 64,
        num_workers: int | None = None,
        image_size: int = 224,
        decode: Decode = "cpu",
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        seed: int = 0,
        timm_model: str | None = None,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        channels_last: bool = False,
        on_bad_sample: BadSamplePolicy = "raise",
        strict_fingerprint: bool = False,
        num_threads: int | None = None,
        hw_decoder_load: float = 0.65,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(
            source, batch_size=batch_size, num_workers=num_workers, image_size=image_size, decode=decode,
            cache_dir=cache_dir, max_cache_size=max_cache_size, storage_options=storage_options, seed=seed,
            timm_model=timm_model, mean=mean, std=std, crop_pct=crop_pct, scale=scale, ratio=ratio, hflip=hflip,
            auto_augment=auto_augment, random_erasing=random_erasing, channels_last=channels_last,
            on_bad_sample=on_bad_sample, strict_fingerprint=strict_fingerprint, dali_threads=num_threads,
            hw_decoder_load=hw_decoder_load, pin_memory=pin_memory, persistent_workers=persistent_workers,
            prefetch_factor=prefetch_factor,
        )
        self.num_threads = num_threads
