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
    default_target_key = "label"

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
        return input_key, getattr(datamodule, "target_key", None) or self.default_target_key

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

    def model_inputs(self, batch: dict[str, Any], stage: str) -> Any:
        """What ``forward`` takes from a batch (the input key's tensor); raise a helpful error if it is wrong."""
        input_key = self._keys()[0]
        if input_key not in batch:
            raise KeyError(f"{stage} batch has no {input_key!r} (keys: {sorted(batch)})")
        return batch[input_key]

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        target_key = self._keys()[1]
        if target_key not in batch:
            raise ValueError(f"{stage} batch has no {target_key!r} (keys: {sorted(batch)}); use a labelled split")
        target = batch[target_key]
        logits = self(self.model_inputs(batch, stage))
        loss = soft_target_loss(logits, target, self.label_smoothing, self.loss_weight)
        size = logits.shape[0]
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
        return self(self.model_inputs(batch, "predict")).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        # Frozen parameters (a linear probe) stay out of the optimizer and its state.
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
