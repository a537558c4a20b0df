"""The shared DataModule base: loader policy, the dict-batch contract and device-side work."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, Sampler

from stoker.image_ops import normalize_uint8
from stoker.loader import build_loader, default_num_workers


class StokerDataModule(L.LightningDataModule):
    """Base class of every stoker DataModule.

    It owns *how* data is loaded (the policy in :mod:`stoker.loader`) and what happens to a batch
    once it is on the device; subclasses say *what* to load by building datasets in ``setup`` and
    calling :meth:`make_loader`.

    Batches are dicts. A subclass sets :attr:`input_key` and :attr:`target_key`, and exposes
    :attr:`num_classes` and :attr:`class_names` from ``__init__`` on (LightningCLI links
    ``num_classes`` into the model). Image subclasses set :attr:`mean` and :attr:`std`; uint8
    images are then normalized on the device in :meth:`on_after_batch_transfer`.

    Args:
        batch_size: Samples per batch on each rank.
        num_workers: DataLoader workers per rank; ``None`` divides the cores available on this
            node among its ranks (see :func:`stoker.loader.default_num_workers`).
        pin_memory: Page-locked host memory; ``None`` turns it on when the Trainer runs on CUDA.
        persistent_workers: Keep workers alive between epochs.
        prefetch_factor: Batches loaded ahead per worker.
        seed: Seeds splits, shuffling and augmentation draws.
    """

    input_key: str = "input"
    target_key: str | None = "label"

    def __init__(
        self,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 or None (one per available core), got {num_workers}")
        if prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {prefetch_factor}")
        self.batch_size = batch_size
        self._num_workers = num_workers
        self._pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.prefetch_factor = prefetch_factor
        self.seed = seed
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.channels_last = False
        self._device_stats: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        # Set by a wrapper (ImbalancedDataModule) to replace how the training split is sampled.
        self.train_sampler: Sampler | None = None
        # Data version (stoker.manifest): set in setup by subclasses that compute one, saved in checkpoints
        # so that resuming on changed data is noticed; strict_fingerprint makes that an error.
        self.fingerprint: str | None = None
        self.strict_fingerprint = False
        self._checkpoint_fingerprint: str | None = None

    # ----------------------------------------------------------------- self-description
    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` for unlabelled data)."""
        names = self.class_names
        return None if names is None else len(names)

    @property
    def class_names(self) -> list[str] | None:
        """Class names in index order (``None`` for unlabelled data)."""
        return None

    def batch_size_of(self, batch: Any) -> int:
        """Samples in a batch (the leading dimension of the input)."""
        return int(batch[self.input_key].shape[0])

    def token_counts(self, batch: Any) -> tuple[int, int] | None:
        """``(real_tokens, padded_tokens)`` of a token batch, ``None`` for other data."""
        return None

    def train_labels(self) -> list[int] | None:
        """Labels of the training split in dataset order, after ``setup`` (``None``: unlabelled)."""
        return None

    # ----------------------------------------------------------------- loader policy
    @property
    def num_workers(self) -> int:
        """Workers per DataLoader on this rank (resolved from the cores when not set)."""
        if self._num_workers is not None:
            return self._num_workers
        trainer = self.trainer
        per_node = None
        if trainer is not None:
            per_node = max(1, trainer.num_devices)
        return default_num_workers(per_node)

    @property
    def pin_memory(self) -> bool:
        """Pin host memory when the Trainer's accelerator is CUDA (unless set explicitly)."""
        if self._pin_memory is not None:
            return self._pin_memory
        trainer = self.trainer
        if trainer is None:
            return False
        return trainer.strategy.root_device.type == "cuda"

    def make_loader(
        self,
        dataset: Dataset | Iterable[Any],
        *,
        train: bool,
        sampler: Sampler | Iterable[Any] | None = None,
        batch_sampler: Sampler | Iterable[Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        shuffle: bool | None = None,
        drop_last: bool | None = None,
    ) -> DataLoader:
        """A DataLoader for ``dataset`` under this DataModule's loader policy.

        A training loader uses :attr:`train_sampler` when one is set and no sampler is passed.
        """
        if train and sampler is None and batch_sampler is None and self.train_sampler is not None:
            sampler = self.train_sampler
        return build_loader(
            dataset,
            batch_size=self.batch_size,
            train=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            seed=self.seed,
            shuffle=shuffle,
            sampler=sampler,
            batch_sampler=batch_sampler,
            collate_fn=collate_fn,
            drop_last=drop_last,
        )

    # ----------------------------------------------------------------- device-side work
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run :meth:`device_transform` on the batch once it is on the device."""
        trainer = self.trainer
        training = bool(trainer is not None and trainer.training)
        return self.device_transform(batch, training=training)

    def device_transform(self, batch: Any, *, training: bool) -> Any:
        """Turn uint8 images into normalized float on the device (optionally channels_last)."""
        if self.mean is None or self.std is None or not isinstance(batch, dict):
            return batch
        images = batch.get(self.input_key)
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
            mean, std = self._stats_on(images.device)
            batch[self.input_key] = normalize_uint8(images, mean, std, channels_last=self.channels_last)
        return batch

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Cached per device so that no host-to-device copy of mean/std happens per batch.
        key = (str(device), torch.float32)
        if key not in self._device_stats:
            assert self.mean is not None and self.std is not None
            self._device_stats[key] = (
                torch.tensor(self.mean, dtype=torch.float32, device=device),
                torch.tensor(self.std, dtype=torch.float32, device=device),
            )
        return self._device_stats[key]

    def __getstate__(self) -> dict[str, Any]:
        # Device tensors and the Trainer reference do not belong in a pickle (ddp_spawn, workers).
        state = self.__dict__.copy()
        state["_device_stats"] = {}
        return state

    # ----------------------------------------------------------------- data versioning
    def record_fingerprint(self, fingerprint: str) -> None:
        """Set the data fingerprint, log it as hyperparameter ``data_fingerprint``, check it against a checkpoint."""
        self.fingerprint = fingerprint
        self.hparams["data_fingerprint"] = fingerprint
        initial = self.hparams_initial  # a copy; Lightning logs the initial hyperparameters
        initial["data_fingerprint"] = fingerprint
        self._hparams_initial = initial
        self._log_hyperparams = True  # Lightning logs DataModule hyperparameters only when this is set
        self._check_fingerprint()

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the DataModule: the data fingerprint (when known)."""
        return {"data_fingerprint": self.fingerprint} if self.fingerprint is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Compare the checkpoint's data fingerprint with this data's (now, or in ``setup`` if not known yet)."""
        self._checkpoint_fingerprint = state_dict.get("data_fingerprint")
        self._check_fingerprint()

    def _check_fingerprint(self) -> None:
        saved, current = self._checkpoint_fingerprint, self.fingerprint
        if saved is None or current is None or saved == current:
            return
        message = (
            f"{type(self).__name__}: the checkpoint was trained on data with fingerprint {saved}, but the data now "
            f"has fingerprint {current}: files, labels or the split changed since. Train on the original data (a "
            "manifest from `stoker split` pins it)"
        )
        if self.strict_fingerprint:
            raise ValueError(f"{message}, or accept the change with strict_fingerprint=False.")
        rank_zero_warn(f"{message}; strict_fingerprint=True makes this an error.")

    # ----------------------------------------------------------------- reporting
    def describe(self) -> dict[str, Any]:
        """A plain-dict description of the pipeline for reports and logs."""
        return {
            "datamodule": type(self).__name__,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


def distributed_padding(num_samples: int, num_replicas: int) -> int:
    """Samples a padded ``DistributedSampler`` repeats so that every rank gets the same count."""
    if num_replicas <= 1 or num_samples == 0:
        return 0
    per_rank = -(-num_samples // num_replicas)
    return per_rank * num_replicas - num_samples


def as_sequence(value: str | Sequence[str] | None) -> list[str]:
    """Normalise ``None``, one string or a sequence of strings into a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
