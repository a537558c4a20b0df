"""The shared DataModule base: loader policy, the dict-batch contract and device-side work."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset, IterableDataset, Sampler
from torchdata.stateful_dataloader import Stateful, StatefulDataLoader

from stoker.data.loader import WORKER_TYPES, WorkerType, build_loader, default_num_workers, own_state, per_rank_state
from stoker.datamodules._arguments import save_init_arguments
from stoker.datamodules._elastic import align_epoch_progress
from stoker.profiling.attribution import PROFILE_KEY, LoadProfile, ProfiledCollate
from stoker.samplers.base import ResumableSampler
from stoker.seeds import SampleSeeding
from stoker.transforms.image import normalize_uint8


class StokerDataModule(L.LightningDataModule):
    """Base class of every stoker DataModule.

    It owns *how* data is loaded (the policy in :mod:`stoker.data.loader`) and what happens to a batch
    once it is on the device; subclasses say *what* to load by building datasets in ``setup`` and
    calling :meth:`make_loader`.

    Batches are dicts. A subclass sets :attr:`input_key` and :attr:`target_key`, and exposes
    :attr:`num_classes` and :attr:`class_names` from ``__init__`` on (LightningCLI links
    ``num_classes`` into the model). Image subclasses set :attr:`mean` and :attr:`std`; uint8
    images are then normalized on the device in :meth:`on_after_batch_transfer`.

    Args:
        batch_size: Samples per batch on each rank.
        num_workers: DataLoader workers per rank; ``None`` divides the cores available on this
            node among its ranks (see :func:`stoker.data.loader.default_num_workers`).
        pin_memory: Page-locked host memory; ``None`` turns it on when the Trainer runs on CUDA.
        persistent_workers: Keep workers alive between epochs.
        prefetch_factor: Batches loaded ahead per worker.
        seed: Seeds splits, shuffling and augmentation draws.
        worker_type: ``"process"`` (DataLoader worker processes) or ``"thread"`` (``num_workers`` threads of this
            process: the same batches and resume, a fraction of the memory and start-up; map-style sources).
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
        worker_type: WorkerType = "process",
    ) -> None:
        super().__init__()
        save_init_arguments(self)
        if worker_type not in WORKER_TYPES:
            raise ValueError(f"worker_type must be 'process' (worker processes) or 'thread' (threads of this "
                             f"process), got {worker_type!r}")
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
        self.worker_type: WorkerType = worker_type
        self.mean: tuple[float, ...] | None = None
        self.std: tuple[float, ...] | None = None
        self.channels_last = False
        self._device_stats: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        # Set by a wrapper (ImbalancedDataModule) to replace how the training split is sampled.
        self.train_sampler: Sampler | None = None
        # Data version (stoker.data.manifest): set in setup by subclasses that compute one, saved in checkpoints
        # so that resuming on changed data is noticed; strict_fingerprint makes that an error.
        self.fingerprint: str | None = None
        self.strict_fingerprint = False
        self._checkpoint_fingerprint: str | None = None
        self.load_profile = LoadProfile()  # per-worker stage times of the training batches (attribution)
        # The training loader's sampler, and a sampler state from a checkpoint to start the next one at.
        self.active_train_sampler: Stateful | None = None
        self._saved_train_sampler: dict[str, Any] | None = None

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

    def train_labels(self) -> list[Any] | None:
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

    def world(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` of the attached Trainer (``(1, 0)`` without one)."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        return max(1, trainer.world_size), trainer.global_rank

    def check_evaluation_size(self, split: str, size: int) -> None:
        """Refuse an evaluation split with fewer samples than ranks, before any rank starts it.

        Every rank must run at least one evaluation step: a rank with none logs no metric, and the
        others then wait for it in the epoch-end reduction (a hang, or gloo's "collective mismatch").
        Evaluation never repeats a sample, so a split smaller than the world cannot be dealt. The
        size is known on every rank alike, so every rank raises the same error at once.

        Raises:
            ValueError: ``0 < size < world size``, with the sizes and what to do.
        """
        world = self.world()[0]
        if 0 < size < world:
            raise ValueError(
                f"{type(self).__name__}: the {split} split has {size} sample(s), fewer than the {world} ranks, so "
                f"some rank would evaluate nothing and the others would wait for it forever in the metric "
                f"reduction. Add {split} samples (at least one per rank), evaluate on fewer devices "
                f"(a separate `stoker validate --trainer.devices=1`), or turn {split} off "
                f"(--trainer.limit_{'val' if split == 'val' else split}_batches=0)")

    def make_loader(
        self,
        dataset: Dataset | Iterable[Any],
        *,
        train: bool,
        sampler: Sampler | Iterable[Any] | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        batch_size: int | None | Literal["default"] = "default",
    ) -> StatefulDataLoader:
        """A ``StatefulDataLoader`` for ``dataset`` under this DataModule's loader policy.

        A training loader uses :attr:`train_sampler` when one is set and no sampler is passed.
        ``batch_size=None`` is for samplers that yield whole batches.

        Raises:
            ValueError: A training loader would yield no batch (``batch_size`` larger than each rank's share).
        """
        if train and sampler is None and self.train_sampler is not None:
            sampler = self.train_sampler
        num_replicas, rank = self.world()
        loader = build_loader(
            dataset,
            batch_size=self.batch_size if batch_size == "default" else batch_size,
            train=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            prefetch_factor=self.prefetch_factor,
            seed=self.seed,
            rank=rank,
            num_replicas=num_replicas,
            sampler=sampler,
            collate_fn=collate_fn,
            worker_type=self.worker_type,
        )
        if train:
            self.track_train_sampler(loader.sampler)
            if hasattr(loader, "on_elastic_resume"):
                loader.on_elastic_resume = self._follow_elastic_resume
        bind = getattr(dataset, "bind_seeding", None)
        if callable(bind):  # each sample's augmentation from (seed, epoch, sample), wherever it is loaded
            epochs = getattr(loader.sampler, "epoch_counter", None)  # (a shared counter at 0 is falsy: no `or`)
            if epochs is None:
                epochs = getattr(dataset, "epoch_counter", None)  # a stream that counts its own epochs
            bind(SampleSeeding(self.seed, epochs))
        if train and not isinstance(dataset, IterableDataset) and len(loader) == 0:
            raise ValueError(
                f"{type(self).__name__}: the training split has {len(dataset)} samples, which gives each of "  # type: ignore[arg-type]
                f"{num_replicas} rank(s) no whole batch of batch_size={self.batch_size}; lower batch_size (at most "
                f"{len(dataset) // num_replicas}) or add data"  # type: ignore[arg-type]
            )
        return loader

    # ----------------------------------------------------------------- device-side work
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run :meth:`device_transform` on the batch once it is on the device."""
        trainer = self.trainer
        training = bool(trainer is not None and trainer.training)
        return self.device_transform(batch, training=training)

    def normalize(self, batch: Any, *, training: bool = False, device: torch.device | str | None = None) -> Any:
        """What happens to a batch between the loader and the model under a Trainer, for use without one.

        A loader yields host batches as they travel (uint8 images 0-255, raw waveforms); a Trainer
        then moves them to the device and calls :meth:`device_transform` (normalization, log-mel).
        Iterating a loader by hand, call this to get what the model would get.

        Args:
            batch: A batch from one of this DataModule's loaders.
            training: Apply the training-only device work too (SpecAugment masks).
            device: Move the batch there first (``None``: leave it where it is).

        Example::

            batch = dm.normalize(next(iter(dm.train_dataloader())), device="cuda")
        """
        if device is not None:
            batch = move_data_to_device(batch, torch.device(device))
        return self.device_transform(batch, training=training)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the load profile (stage times from the workers) out of a batch and account it."""
        if isinstance(batch, dict) and PROFILE_KEY in batch:
            profile = batch.pop(PROFILE_KEY)
            trainer = self.trainer
            if trainer is not None and trainer.training:
                self.load_profile.add(profile, self.sample_name)
        return batch

    def profiled(self, collate: Any) -> Any:
        """``collate`` wrapped to ship its time (and streamed tokenization's) with each batch, for the load profile.

        Only while a Trainer runs this DataModule: a loader used on its own yields the data keys alone.
        """
        return ProfiledCollate(collate) if self.trainer is not None else collate

    def sample_name(self, index: int) -> str:
        """How the load profile names a training sample (a file path in folder DataModules)."""
        return f"index {index}"

    def on_exception(self, exception: BaseException) -> None:
        """Explain the dict batches when a model unpacks a batch as a tuple (``x, y = batch``)."""
        text = str(exception)
        if isinstance(exception, ValueError) and "values to unpack" in text:
            rank_zero_warn(
                f"{type(self).__name__} yields dict batches, not (input, target) tuples: read "
                f"batch[{self.input_key!r}] and batch[{self.target_key!r}] (keys of this DataModule: input_key, "
                "target_key). Unpacking a dict gives its keys, hence: " + text
            )

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
        # Device tensors and the Trainer reference do not belong in a pickle (ddp_spawn, workers): the Trainer
        # holds open loader iterators and memory maps; Lightning attaches the DataModule again when it runs.
        state = self.__dict__.copy()
        state["_device_stats"] = {}
        state["trainer"] = None
        return state

    # ----------------------------------------------------------------- data versioning
    def record_fingerprint(self, fingerprint: str) -> None:
        """Set the data fingerprint, log it as hyperparameter ``data_fingerprint``, check it against a checkpoint."""
        self.fingerprint = fingerprint
        # Logged (Lightning logs the initial hyperparameters) but not among the checkpoint's
        # hyperparameters, which `load_from_checkpoint` passes back to __init__.
        initial = self.hparams_initial  # a copy
        initial["data_fingerprint"] = fingerprint
        self._hparams_initial = initial
        self._log_hyperparams = True  # Lightning logs DataModule hyperparameters only when this is set
        self._check_fingerprint()

    def track_train_sampler(self, sampler: Any) -> None:
        """Remember the training loader's sampler, and start it where a restored checkpoint left off.

        Lightning restores a loader's own state (its sampler's exact position) only when it resumes
        mid-epoch. From a checkpoint written at an epoch's end it builds a fresh loader, and may
        create its iterator (workers start loading) before it calls ``set_epoch``: without help, that
        epoch would replay the previous epoch's order. So the DataModule's checkpoint state carries
        the training sampler's state too, and a new training sampler starts from it (a finished epoch
        resumes at the next one); a mid-epoch loader state, restored later, still has the last word.
        A stream that keeps its own position (``state_dict``/``load_state_dict``) is tracked the same way.
        """
        if not isinstance(sampler, (ResumableSampler, Stateful)):
            return
        self.active_train_sampler = sampler
        if self._saved_train_sampler is not None:
            num_replicas, rank = self.world()
            sampler.load_state_dict(own_state(self._saved_train_sampler, rank, num_replicas))
            self._saved_train_sampler = None

    def _follow_elastic_resume(self, loader: Any, rest_batches: int) -> None:
        """Resumed mid-epoch on another number of ranks, this rank has ``rest_batches`` left of the epoch: the
        Trainer's count of the epoch's batches follows, so the epoch ends (and validates) where it should."""
        if self.trainer is not None:
            align_epoch_progress(self.trainer, len(loader) - rest_batches)
            rank_zero_info(f"{type(self).__name__}: resumed an epoch written by other ranks or loader workers; this "
                           f"rank trains the {rest_batches} batches it has left of the epoch")

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the DataModule: the data fingerprint and the training sampler's state."""
        state: dict[str, Any] = {"data_fingerprint": self.fingerprint} if self.fingerprint is not None else {}
        if self.active_train_sampler is not None:
            state["train_sampler"] = per_rank_state(self.active_train_sampler.state_dict(), self.world()[0])
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Compare the checkpoint's data fingerprint with this data's, and keep its training sampler state."""
        self._checkpoint_fingerprint = state_dict.get("data_fingerprint")
        self._saved_train_sampler = state_dict.get("train_sampler")
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
    def created_files(self) -> list[str]:
        """Files this DataModule wrote (caches), for the report: here the datasets caches of its tables."""
        found: set[str] = set()
        for dataset in (getattr(self, "datasets", None) or {}).values():
            for entry in getattr(dataset, "cache_files", None) or []:
                if isinstance(entry, dict) and entry.get("filename"):
                    found.add(str(entry["filename"]))
        return sorted(found)

    def describe(self) -> dict[str, Any]:
        """A plain-dict description of the pipeline for reports and logs."""
        return {
            "datamodule": type(self).__name__,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "worker_type": self.worker_type,
            "prefetch_factor": self.prefetch_factor,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }
