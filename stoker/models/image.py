"""A thin image classifier on a timm backbone."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable


def soft_target_loss(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for integer labels ``[N]`` or soft targets ``[N, C]`` (after MixUp/CutMix)."""
    if target.dtype.is_floating_point and target.ndim == 2:
        if target.shape != logits.shape:
            raise ValueError(f"soft targets of shape {tuple(target.shape)} do not match logits {tuple(logits.shape)}")
        return F.cross_entropy(logits, target.to(logits.dtype), label_smoothing=label_smoothing)
    return F.cross_entropy(logits, target.long(), label_smoothing=label_smoothing)


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max matches the label (the arg-max of soft targets)."""
    labels = target.argmax(dim=1) if target.ndim == 2 else target
    return (logits.argmax(dim=1) == labels).float().mean()


class ImageClassifier(L.LightningModule):
    """Image classification with any timm backbone, trained on stoker's dict batches.

    The loss accepts integer labels and soft targets, so MixUp/CutMix needs no change here.
    Keys come from the DataModule when it is attached (``input_key``/``target_key``).

    Args:
        model_name: A timm model name (``timm.list_models()``).
        num_classes: Output classes; linked from the DataModule by the ``stoker`` CLI.
        pretrained: Load timm's pretrained weights (downloads them; off by default).
        in_chans: Input channels.
        drop_rate: Dropout before the classifier.
        label_smoothing: Label smoothing for integer labels.
        channels_last: Put the model in channels_last memory format (faster convolutions on
            tensor cores when the images are channels_last too).
        optimizer: Optimizer factory; LightningCLI sets it with ``--optimizer``.
        scheduler: Learning-rate scheduler factory, stepped every epoch.

    Example::

        model = ImageClassifier("resnet18", num_classes=10)
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        num_classes: int = 1000,
        *,
        pretrained: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        import timm

        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not timm.is_model(model_name):
            raise ValueError(f"timm does not know a model named {model_name!r}; see timm.list_models()")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
        )
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def _keys(self) -> tuple[str, str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return getattr(datamodule, "input_key", "image"), getattr(datamodule, "target_key", None) or "label"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        input_key, target_key = self._keys()
        images, target = batch[input_key], batch[target_key]
        if images.dtype == torch.uint8:
            raise TypeError(
                f"{stage} got uint8 images: normalize them first (a stoker DataModule does this on the device in "
                "on_after_batch_transfer; a plain DataLoader must yield float images)"
            )
        logits = self(images)
        loss = soft_target_loss(logits, target, self.label_smoothing)
        size = images.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train", batch_size=size, sync_dist=stage != "train")
        self.log(f"{stage}/acc", top1_accuracy(logits, target), prog_bar=True, batch_size=size,
                 sync_dist=stage != "train")
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
