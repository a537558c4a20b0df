"""The embedded default: the image-folder DataModule on scikit-learn's handwritten digits."""

from __future__ import annotations

from stoker.datamodules.image import ImageFolderDataModule
from stoker.demo_data import DIGIT_CLASSES, build_digits_folder
from stoker.image_transforms import AutoAugment


class DigitsDataModule(ImageFolderDataModule):
    """:class:`ImageFolderDataModule` on a tree built offline from scikit-learn's digits.

    ``prepare_data`` writes the images under ``root`` the first time (a second of work), then
    everything runs through the ordinary image-folder path: the decode scan, the seeded split,
    uint8 batches and normalization on the device.

    Args:
        root: Where the images are cached.
        imbalanced: Keep ``1/(k+1)`` of digit ``k`` (for the class-imbalance recipe).
        image_size: Crop side; the images are stored at this size.
        batch_size: Samples per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        val_fraction: Per-class fraction held out for validation.
        test_fraction: Per-class fraction held out for testing.
        seed: Seeds the split, shuffling and augmentation.
        scale: RandomResizedCrop area range (digits tolerate only mild cropping).
        auto_augment: Augmentation policy after the crop.
        random_erasing: Probability of RandomErasing in training.
        max_bad_fraction: Largest tolerated fraction of undecodable files.
        persistent_workers: Keep workers alive between epochs.
    """

    def __init__(
        self,
        root: str = "data/digits",
        *,
        imbalanced: bool = False,
        image_size: int = 32,
        batch_size: int = 64,
        num_workers: int | None = None,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        scale: tuple[float, float] = (0.7, 1.0),
        auto_augment: AutoAugment = "none",
        random_erasing: float = 0.0,
        max_bad_fraction: float = 0.01,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__(
            root,
            batch_size=batch_size,
            num_workers=num_workers,
            image_size=image_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            # the digits' own statistics, as `stoker scan data/digits` measures them
            mean=(0.3085, 0.3085, 0.3085),
            std=(0.3488, 0.3488, 0.3488),
            crop_pct=1.0,
            scale=scale,
            hflip=0.0,  # a mirrored digit is another glyph (or no digit at all)
            auto_augment=auto_augment,
            random_erasing=random_erasing,
            max_bad_fraction=max_bad_fraction,
            class_names=DIGIT_CLASSES,
            persistent_workers=persistent_workers,
        )
        self.imbalanced = imbalanced

    def prepare_data(self) -> None:
        build_digits_folder(self.root, size=self.image_size, imbalanced=self.imbalanced)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        # prepare_data runs on one process per node; a DataModule used without a Trainer (or a
        # node whose local rank 0 is elsewhere) still finds the images.
        build_digits_folder(self.root, size=self.image_size, imbalanced=self.imbalanced)
        super().setup(stage)
