"""DALIImageNetDataModule: trees decoded by NVIDIA DALI; a thin name over ``ImageDataModule(decode="dali")``."""

from __future__ import annotations

from stoker.datamodules.image import ImageDataModule
from stoker.datamodules.image_dali import DALI_DEVICES
from stoker.datamodules.source import Verify
from stoker.transforms.image import IMAGENET_MEAN, IMAGENET_STD


class DALIImageNetDataModule(ImageDataModule):
    """Image classification decoded by NVIDIA DALI (GPU, or CPU-only mode): ``ImageDataModule(decode="dali")``.

    Same sources, splits, exclusions and batch contract as :class:`ImageDataModule`. On files, DALI's own
    reader reads exactly the files the sampler hands each rank (a permutation per epoch, an equal share
    of whole batches per rank in training, every sample once in evaluation) and decodes a random crop
    (``decoders.image_random_crop``: on the GPU with ``decode_device="mixed"`` when the Trainer runs on
    CUDA, otherwise on the CPU); resumed mid-epoch it reads only the samples not trained yet. DALI cannot
    skip a corrupt file mid-epoch, so every file is decode-checked up front (cached), and bad, quarantined
    and GIF files are left out and listed in :attr:`bad_files`.

    Args:
        root: Dataset root (or any other source :class:`ImageDataModule` takes).
        batch_size: Samples per batch per rank.
        image_size: Side of the square training and evaluation crops.
        num_threads: DALI CPU threads per rank (``None``: the cores per local rank); ``dali_threads`` elsewhere.
        hw_decoder_load: Share of JPEGs sent to the hardware decoder of A100/H100-class GPUs (0-1).
        seed: Seeds the split, the shuffle (same on every rank) and augmentation (per rank).
        decode_device: ``"auto"`` (GPU when the Trainer runs on CUDA), ``"mixed"`` or ``"cpu"``.
        val_fraction: Per-class fraction held out for validation when the tree has no ``val`` folder.
        test_fraction: Per-class fraction held out for testing when the tree has no ``test`` folder.
        mean: Per-channel mean in ``[0, 1]``.
        std: Per-channel standard deviation in ``[0, 1]``.
        crop_pct: Evaluation center-crop fraction.
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: Probability of a horizontal flip in training.
        channels_last: Hand the model channels_last float images.
        max_bad_fraction: Largest tolerated fraction of unusable files.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts them (GIFs still stay out).
        quarantine: A file listing paths to leave out.
        manifest: A split manifest from ``stoker split``.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Node-local cache folder (see :class:`ImageDataModule`).
        prefetch_queue_depth: Batches DALI prepares ahead.

    Example::

        dm = DALIImageNetDataModule("/data/imagenet", batch_size=256, image_size=224)
    """

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 64,
        image_size: int = 224,
        num_threads: int | None = None,
        hw_decoder_load: float = 0.65,
        seed: int = 0,
        decode_device: str = "auto",
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        crop_pct: float = 0.875,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        channels_last: bool = False,
        max_bad_fraction: float = 0.01,
        verify: Verify = "decode",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        prefetch_queue_depth: int = 2,
    ) -> None:
        if decode_device not in DALI_DEVICES:
            raise ValueError(f"decode_device must be one of {DALI_DEVICES}, got {decode_device!r}")
        if prefetch_queue_depth < 1:
            raise ValueError(f"prefetch_queue_depth must be >= 1, got {prefetch_queue_depth}")
        # DataLoader workers do not exist here: DALI runs its own threads (num_threads).
        super().__init__(
            root, decode="dali", batch_size=batch_size, num_workers=0, image_size=image_size,
            dali_threads=num_threads, hw_decoder_load=hw_decoder_load, seed=seed, val_fraction=val_fraction,
            test_fraction=test_fraction, mean=mean, std=std, crop_pct=crop_pct, scale=scale, ratio=ratio,
            hflip=hflip, channels_last=channels_last, max_bad_fraction=max_bad_fraction, verify=verify,
            quarantine=quarantine, manifest=manifest, strict_fingerprint=strict_fingerprint,
            class_names=class_names, cache_dir=cache_dir, persistent_workers=False,
        )
        self.dali_device = decode_device
        self.decode_device = decode_device
        self.num_threads = num_threads
        self.prefetch_queue_depth = prefetch_queue_depth

    def batches(self, split: str, *, rank: int | None = None, world_size: int | None = None,
                decode_device: str | None = None) -> object:
        """The DALI iterable of one split on one rank (``rank``/``world_size`` default to the Trainer's).

        Raises:
            ValueError: ``setup`` has not run, the split is unknown or empty, or ``rank`` is out of range.
        """
        from stoker.datamodules.image_dali import file_batches

        if not self.splits:
            raise ValueError("call setup() before asking for batches: the file lists are built there")
        if split not in self.splits or not self.splits[split]:
            raise ValueError(f"split {split!r} is empty or unknown; sizes: {self.split_sizes()}")
        trainer = self.trainer
        rank = (trainer.global_rank if trainer is not None else 0) if rank is None else rank
        world_size = (trainer.world_size if trainer is not None else 1) if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        key = (split, rank, world_size)
        if key not in self._dali or decode_device is not None:
            loader = file_batches(self, split, rank=rank, world_size=world_size,
                                  dali_device=decode_device or self.dali_device)
            if decode_device is not None:
                return loader
            self._dali[key] = loader
        return self._dali[key]
