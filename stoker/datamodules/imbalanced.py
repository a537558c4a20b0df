"""Rebalance the training split of any labelled DataModule by weighted sampling under DDP.

The class weights follow :mod:`stoker.samplers.class_weights` (inverse frequency, inverse square root, or
the effective number of samples of Cui et al., CVPR 2019); sampling uses
:class:`~stoker.samplers.DistributedWeightedSampler`, one global draw per epoch cut into
disjoint, equal shards per rank.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.data import extract_batch_size
from torch.utils.data import DataLoader, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from stoker.datamodules._arguments import class_spec, instantiate_class_spec, save_init_arguments
from stoker.datamodules.base import StokerDataModule
from stoker.samplers.class_weights import (
    STRATEGIES,
    Strategy,
    class_counts,
    compute_class_weights,
    natural_mix,
    target_mix,
)
from stoker.samplers.weighted import DistributedWeightedSampler


class ImbalancedDataModule(L.LightningDataModule):
    """Wrap a DataModule and replace how its training split is sampled; evaluation is untouched.

    The training labels come from the wrapped module's ``train_labels()`` (every labelled stoker
    DataModule has it; a plain ``LightningDataModule`` can add it). From their class counts a
    strategy gives per-class weights (:attr:`class_weights`, also usable as a loss weight), and each
    sample is drawn with probability proportional to its class weight. A stoker DataModule receives
    the sampler through its ``train_sampler`` hook; any other DataModule gets its training
    DataLoader rebuilt around it. Ranks and world size come from the attached Trainer.

    Each epoch the realised class mix (the class counts of the epoch's global draw, padding
    included, which every rank knows without communication) is logged against the target mix and kept for
    :meth:`class_mix_report`. Logged keys (rank zero, once per epoch): ``class_mix/realised/<class>``,
    ``class_mix/target/<class>`` and ``class_mix/max_abs_gap``.

    Args:
        datamodule: The DataModule to rebalance (in YAML, or from a checkpoint, a ``class_path``/``init_args`` dict).
        strategy: ``"inverse"``, ``"sqrt_inverse"``, ``"effective_number"`` or explicit per-class weights.
        beta: ``beta`` of ``"effective_number"``, in ``[0, 1)``.
        resample: Replace training sampling; ``False`` only computes :attr:`class_weights` for a loss.
        num_samples: Samples drawn per epoch over all ranks (default: the training split's size).
        replacement: Draw with replacement (rare classes can then repeat within an epoch).
        seed: Seed of the draws (default: the wrapped module's ``seed``, else 0).

    Its hyperparameters hold the wrapped module as ``{"class_path", "init_args"}`` (its own saved
    arguments), which ``load_from_checkpoint`` and ``datamodule=`` accept.

    Example::

        dm = ImbalancedDataModule(ImageFolderDataModule("data/skewed"), strategy="sqrt_inverse")
        trainer.fit(model, datamodule=dm)  # model may read trainer.datamodule.class_weights
    """

    def __init__(
        self,
        datamodule: L.LightningDataModule | dict[str, Any],
        *,
        strategy: Strategy | list[float] = "inverse",
        beta: float = 0.999,
        resample: bool = True,
        num_samples: int | None = None,
        replacement: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        save_init_arguments(self)
        if isinstance(datamodule, dict):  # from a checkpoint (or a config): {"class_path", "init_args"}
            datamodule = instantiate_class_spec(datamodule)
        # Checkpoints keep the wrapped module as the plain spec that rebuilds it, not as a pickled object.
        self.hparams["datamodule"] = class_spec(datamodule)
        self._hparams_initial = copy.deepcopy(self.hparams)
        if not isinstance(datamodule, L.LightningDataModule):
            raise TypeError(
                f"datamodule must be a LightningDataModule, got {type(datamodule).__name__}; "
                "wrap e.g. stoker.datamodules.ImageFolderDataModule"
            )
        if not callable(getattr(datamodule, "train_labels", None)):
            raise TypeError(
                f"{type(datamodule).__name__} exposes no training labels: add a method `train_labels(self) -> "
                "list[int]` returning the label of every training sample in dataset order (after setup)"
            )
        if getattr(datamodule, "multi_label", False):
            # A class-weighted draw needs one class per sample: with several, a sample's weight has no single
            # answer (the rarest label's? a product?), and drawing by one skews the others' frequencies.
            raise ValueError(
                f"ImbalancedDataModule weights each sample by its one class, but {type(datamodule).__name__} is "
                "multi-label (several classes per sample). Train multi-label data with the stoker models' "
                "BCEWithLogits loss (class_weighted_loss=True weights its positives by class), or wrap a "
                "single-label DataModule"
            )
        if isinstance(strategy, str) and strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; expected one of {list(STRATEGIES)} or per-class weights")
        if not (0.0 <= beta < 1.0):
            raise ValueError(f"beta must be in [0, 1), got {beta}; Cui et al. use 0.9 to 0.9999")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer or None (the training split's size), "
                             f"got {num_samples}")
        self.datamodule = datamodule
        self.strategy = strategy if isinstance(strategy, str) else [float(w) for w in strategy]
        self.beta = beta
        self.resample = resample
        self.num_samples = num_samples
        self.replacement = replacement
        self.seed = int(getattr(datamodule, "seed", 0)) if seed is None else seed
        self.sampler: DistributedWeightedSampler | None = None
        self._labels: torch.Tensor | None = None
        self._counts: list[int] = []
        self._weights: torch.Tensor | None = None
        self._epochs: list[dict[str, Any]] = []

    # ----------------------------------------------------------------- self-description
    @property
    def num_classes(self) -> int | None:
        """The wrapped module's class count (known after ``__init__``)."""
        return getattr(self.datamodule, "num_classes", None)

    @property
    def class_names(self) -> list[str] | None:
        names = getattr(self.datamodule, "class_names", None)
        return None if names is None else list(names)

    @property
    def input_key(self) -> str:
        return str(getattr(self.datamodule, "input_key", "input"))

    @property
    def target_key(self) -> str | None:
        return getattr(self.datamodule, "target_key", "label")

    @property
    def batch_size(self) -> int | None:
        return getattr(self.datamodule, "batch_size", None)

    def batch_size_of(self, batch: Any) -> int:
        """Samples in a batch, as the wrapped module counts them."""
        if isinstance(self.datamodule, StokerDataModule):
            return self.datamodule.batch_size_of(batch)
        return extract_batch_size(batch)

    def token_counts(self, batch: Any) -> tuple[int, int] | None:
        counter = getattr(self.datamodule, "token_counts", None)
        return counter(batch) if callable(counter) else None

    def train_labels(self) -> list[int]:
        return [int(x) for x in self._train_labels()]

    @property
    def class_weights(self) -> torch.Tensor:
        """float32 ``[C]`` per-class weights (mean 1 over classes with samples), after ``setup("fit")``.

        Raises:
            RuntimeError: before ``setup``.
        """
        if self._weights is None:
            raise RuntimeError("class_weights are computed from the training labels in setup('fit'); read them from "
                               "a LightningModule hook such as setup() or on_fit_start(), or call dm.setup('fit')")
        return self._weights.float()

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        self._attach()
        self.datamodule.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """Set up the wrapped module, then count the training classes and compute the weights."""
        self._attach()
        self.datamodule.setup(stage)  # type: ignore[arg-type]
        if stage in (None, "fit") and self._weights is None:
            labels = self._train_labels()
            num_classes = self.num_classes or (int(max(labels)) + 1 if labels else 0)
            self._counts = class_counts(labels, num_classes)
            self._weights = compute_class_weights(self._counts, self.strategy, beta=self.beta,
                                                  class_names=self.class_names)
            self._labels = torch.as_tensor(labels, dtype=torch.long)

    def teardown(self, stage: str | None = None) -> None:
        self.datamodule.teardown(stage)  # type: ignore[arg-type]

    def train_dataloader(self) -> Any:
        """The wrapped module's training loader, drawing through a :class:`DistributedWeightedSampler`.

        Raises:
            TypeError: the wrapped loader cannot take a sampler (iterable dataset, batch sampler), or
                a stoker module did not use its ``train_sampler``.
            ValueError: the training labels and the training dataset differ in length.
        """
        self._attach()
        if not self.resample:
            return self.datamodule.train_dataloader()
        if self._weights is None:
            self.setup("fit")
        if isinstance(self.datamodule, StokerDataModule):
            sampler = self._build_sampler(self.datamodule.batch_size)
            self.datamodule.train_sampler = sampler
            loader = self.datamodule.train_dataloader()
            if getattr(loader, "sampler", None) is not sampler:
                raise TypeError(
                    f"{type(self.datamodule).__name__}.train_dataloader() ignored train_sampler (it passes its own "
                    "sampler or batch_sampler); it cannot be rebalanced by ImbalancedDataModule"
                )
        else:
            original = self.datamodule.train_dataloader()
            whole = getattr(original, "drop_last", False) and getattr(original, "batch_size", None)
            sampler = self._build_sampler(whole or None)
            loader = _with_sampler(original, sampler)
        if len(loader.dataset) != len(sampler.weights):  # type: ignore[arg-type]
            raise ValueError(
                f"train_labels() returned {len(sampler.weights)} labels but the training dataset has "
                f"{len(loader.dataset)} samples; train_labels() must list every training sample in order"  # type: ignore[arg-type]
            )
        return loader

    def val_dataloader(self) -> Any:
        self._attach()
        return self.datamodule.val_dataloader()

    def test_dataloader(self) -> Any:
        self._attach()
        return self.datamodule.test_dataloader()

    def predict_dataloader(self) -> Any:
        self._attach()
        return self.datamodule.predict_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.datamodule.on_before_batch_transfer(batch, dataloader_idx)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return self.datamodule.transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Record the class mix once per training epoch (first batch), then the wrapped module's device work."""
        trainer = self.trainer
        sampler = self.sampler
        new_epoch = sampler is not None and (not self._epochs or self._epochs[-1]["epoch"] != sampler.epoch)
        if trainer is not None and trainer.training and sampler is not None and new_epoch:
            self._record_epoch(sampler.epoch)
        return self.datamodule.on_after_batch_transfer(batch, dataloader_idx)

    # ----------------------------------------------------------------- checkpoints
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["trainer"] = None  # the Trainer holds open loader iterators; Lightning attaches it again when it runs
        return state

    def state_dict(self) -> dict[str, Any]:
        """The wrapped module's state and the realised class mix so far.

        The sampler's position is not here: it is part of the training loader's state (a
        ``StatefulDataLoader``), which Lightning checkpoints and restores.
        """
        return {"datamodule": self.datamodule.state_dict(), "class_mix": list(self._epochs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the wrapped module and the class-mix history."""
        self.datamodule.load_state_dict(state_dict.get("datamodule", {}))
        self._epochs = list(state_dict.get("class_mix", []))

    # ----------------------------------------------------------------- reporting
    def class_mix_report(self) -> dict[str, Any]:
        """Class counts, weights, natural and target mixes, and the realised mix of every epoch so far."""
        if self._weights is None:
            return {"strategy": self.strategy, "ready": False}
        weights = self._weights.tolist()
        return {
            "strategy": self.strategy,
            "beta": self.beta if self.strategy == "effective_number" else None,
            "resample": self.resample,
            "class_names": self.class_names or [str(i) for i in range(len(self._counts))],
            "class_counts": list(self._counts),
            "class_weights": weights,
            "natural_mix": natural_mix(self._counts),
            "target_mix": target_mix(self._counts, weights) if self.resample else natural_mix(self._counts),
            "epochs": list(self._epochs),
        }

    def describe(self) -> dict[str, Any]:
        """The wrapped module's description plus the class-mix report under ``"imbalanced"``."""
        describe = getattr(self.datamodule, "describe", None)
        info: dict[str, Any] = {"datamodule": type(self.datamodule).__name__}
        if callable(describe):
            info = dict(describe())
        info["imbalanced"] = self.class_mix_report()
        return info

    # ----------------------------------------------------------------- internals
    def _attach(self) -> None:
        # Lightning attaches only the outer module; the wrapped one needs the Trainer for its loader
        # policy (workers, pinning) and to know whether a batch is a training batch.
        trainer = self.trainer
        if trainer is not None:
            self.datamodule.trainer = trainer

    def _train_labels(self) -> Sequence[int]:
        labels = self.datamodule.train_labels()  # type: ignore[attr-defined]  # checked in __init__
        if labels is None:
            raise ValueError(
                f"{type(self.datamodule).__name__}.train_labels() returned None (unlabelled data): "
                "ImbalancedDataModule needs class labels; wrap a labelled DataModule or implement train_labels()"
            )
        return labels

    def _build_sampler(self, batch_size: int | None) -> DistributedWeightedSampler:
        assert self._labels is not None and self._weights is not None  # set together in setup("fit")
        trainer = self.trainer
        num_replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (None, None)
        epoch = self.sampler.epoch if self.sampler is not None else 0
        # Whole batches only, as every stoker training loader: the draw is random, so cutting its tail
        # to a multiple of the ranks loses nothing a padded draw would have kept.
        self.sampler = DistributedWeightedSampler(
            self._labels.tolist(), self._weights[self._labels], num_samples=self.num_samples,
            replacement=self.replacement, num_replicas=num_replicas, rank=rank, seed=self.seed,
            drop_last=batch_size is not None, batch_size=batch_size,
        )
        self.sampler.set_epoch(epoch)
        return self.sampler

    def _record_epoch(self, epoch: int) -> None:
        assert self.sampler is not None and self._labels is not None and self._weights is not None
        drawn = self._labels[self.sampler.global_draw(epoch)]
        counts = torch.bincount(drawn, minlength=len(self._counts)).tolist()
        realised = [c / max(1, len(drawn)) for c in counts]
        target = target_mix(self._counts, self._weights)
        gap = max(abs(r - t) for r, t in zip(realised, target, strict=True))
        self._epochs.append({"epoch": epoch, "counts": counts, "realised_mix": realised, "max_abs_gap": gap})
        names = self.class_names or [str(i) for i in range(len(counts))]
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero:
            metrics = {f"class_mix/realised/{n}": r for n, r in zip(names, realised, strict=True)}
            metrics.update({f"class_mix/target/{n}": t for n, t in zip(names, target, strict=True)})
            metrics["class_mix/max_abs_gap"] = gap
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        mix = ", ".join(f"{n}: {r:.3f}/{t:.3f}" for n, r, t in zip(names, realised, target, strict=True))
        rank_zero_info(f"ImbalancedDataModule epoch {epoch} class mix realised/target: {mix} (max gap {gap:.3f})")


def _with_sampler(loader: DataLoader, sampler: DistributedWeightedSampler) -> StatefulDataLoader:
    """Rebuild a plain DataLoader around ``sampler``, keeping its batching and worker settings.

    The rebuilt loader is a ``StatefulDataLoader``, so the weighted draw resumes mid-epoch like every
    stoker loader; the sampler already yields whole batches only.
    """
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        raise TypeError(
            f"the wrapped train_dataloader() returned {type(loader).__name__} over "
            f"{type(getattr(loader, 'dataset', None)).__name__}; weighted sampling needs a DataLoader over a "
            "map-style dataset"
        )
    if loader.batch_size is None:
        raise TypeError(
            "the wrapped train_dataloader() uses its own batch_sampler, which ImbalancedDataModule cannot replace; "
            "build the training DataLoader with batch_size (and no batch_sampler)"
        )
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "sampler": sampler,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
    }
    if loader.num_workers > 0:
        kwargs["persistent_workers"] = loader.persistent_workers
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return StatefulDataLoader(loader.dataset, **kwargs)
