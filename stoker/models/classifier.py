"""The training logic every stoker classifier shares: dict batches, soft targets, metrics, optimizers."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable


def soft_target_loss(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy for integer labels ``[N]`` or soft targets ``[N, C]`` (after MixUp/CutMix).

    ``label_smoothing`` applies to integer labels only: soft targets already carry whatever
    smoothing their producer chose (MixUpCutMix has its own ``label_smoothing``), and smoothing
    them again would count it twice. ``weight`` holds per-class loss weights.
    """
    if target.dtype.is_floating_point and target.ndim == 2:
        if target.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(target.shape)} do not match logits {tuple(logits.shape)}")
        return F.cross_entropy(logits, target.to(logits.dtype), weight=weight)
    return F.cross_entropy(logits, target.long(), label_smoothing=label_smoothing, weight=weight)


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max matches the label (the arg-max of soft targets)."""
    labels = target.argmax(dim=1) if target.ndim == 2 else target
    return (logits.argmax(dim=1) == labels).float().mean()


class StokerClassifier(L.LightningModule):
    """Base of stoker's classifiers: one ``forward(inputs)``, the rest is shared.

    Keys come from the attached DataModule (``input_key``/``target_key``); the loss takes integer
    labels and soft targets; ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc`` (and
    ``test/...``) are logged; optimizer and scheduler are factories LightningCLI can set.

    Args:
        label_smoothing: Label smoothing for integer labels.
        class_weighted_loss: Weight the loss by the DataModule's ``class_weights`` (an
            ``ImbalancedDataModule`` provides them), instead of or besides resampling.
        optimizer: Optimizer factory.
        scheduler: Learning-rate scheduler factory, stepped every epoch.
    """

    default_input_key = "input"

    def __init__(
        self,
        *,
        label_smoothing: float = 0.0,
        class_weighted_loss: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = label_smoothing
        self.class_weighted_loss = class_weighted_loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.loss_weight: torch.Tensor | None = None

    def _keys(self) -> tuple[str, str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        input_key = getattr(datamodule, "input_key", None) or self.default_input_key
        return input_key, getattr(datamodule, "target_key", None) or "label"

    def on_fit_start(self) -> None:
        if not self.class_weighted_loss:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        weights = getattr(datamodule, "class_weights", None)
        if weights is None:
            raise ValueError(
                "class_weighted_loss=True needs a DataModule with class_weights, such as ImbalancedDataModule "
                f"(got {type(datamodule).__name__})"
            )
        self.loss_weight = torch.as_tensor(weights, dtype=torch.float32, device=self.device)

    def check_inputs(self, inputs: torch.Tensor, stage: str) -> None:
        """Raise a helpful error when a batch's inputs are not what ``forward`` expects."""

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        input_key, target_key = self._keys()
        inputs, target = batch[input_key], batch[target_key]
        self.check_inputs(inputs, stage)
        logits = self(inputs)
        loss = soft_target_loss(logits, target, self.label_smoothing, self.loss_weight)
        size = inputs.shape[0]
        sync = stage != "train"  # epoch-level eval metrics are reduced across ranks; step metrics are not
        self.log(f"{stage}/loss", loss, prog_bar=sync, batch_size=size, sync_dist=sync)
        self.log(f"{stage}/acc", top1_accuracy(logits, target), prog_bar=True, batch_size=size, sync_dist=sync)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self(batch[self._keys()[0]]).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
