"""A thin image classifier on a timm backbone."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from stoker.models.classifier import StokerClassifier, soft_target_loss, top1_accuracy

__all__ = ["ImageClassifier", "soft_target_loss", "top1_accuracy"]


class ImageClassifier(StokerClassifier):
    """Image classification with any timm backbone, trained on stoker's dict batches.

    The loss accepts integer labels and soft targets, so MixUp/CutMix needs no change here.
    Keys come from the DataModule when it is attached (``input_key``/``target_key``).

    Args:
        model_name: A timm model name (``timm.list_models()``).
        num_classes: Output classes; linked from the DataModule by the ``stoker`` CLI.
        pretrained: Load timm's pretrained weights (downloads them; off by default).
        in_chans: Input channels.
        drop_rate: Dropout before the classifier.
        label_smoothing: Label smoothing for integer labels (soft targets carry their own).
        class_weighted_loss: Weight the loss by the DataModule's ``class_weights``.
        class_metrics: Log balanced accuracy, macro-F1 and per-class recall (``None``: when the training
            split is imbalanced; see :class:`~stoker.models.StokerClassifier`).
        compile: ``torch.compile`` the backbone (in place: checkpoints keep their keys). Compiling the whole
            LightningModule instead recompiles at every change of step function and hits dynamo's limit.
        channels_last: Put the model in channels_last memory format (faster convolutions on
            tensor cores when the images are channels_last too).
        optimizer: Optimizer factory; LightningCLI sets it with ``--optimizer``.
        scheduler: Learning-rate scheduler factory, stepped every epoch.

    Example::

        model = ImageClassifier("resnet18", num_classes=10)
    """

    default_input_key = "image"

    def __init__(
        self,
        model_name: str = "resnet18",
        num_classes: int = 1000,
        *,
        pretrained: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        label_smoothing: float = 0.0,
        class_weighted_loss: bool = False,
        class_metrics: bool | None = None,
        compile: bool = False,
        channels_last: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing, class_weighted_loss=class_weighted_loss,
                         class_metrics=class_metrics, optimizer=optimizer, scheduler=scheduler)
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
        self.compile_backbone(compile)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def model_inputs(self, batch: dict, stage: str) -> torch.Tensor:
        inputs = super().model_inputs(batch, stage)
        if inputs.dtype == torch.uint8:
            raise TypeError(
                f"{stage} got uint8 images: normalize them first (a stoker DataModule does this on the device in "
                "on_after_batch_transfer; a plain DataLoader must yield float images)"
            )
        return inputs
