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


def multi_label_loss(logits: torch.Tensor, target: torch.Tensor,
                     pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy on logits for multi-hot targets ``[N, C]`` (MixUp/CutMix's mixed ones too).

    Each class is its own yes/no question, so the loss is ``BCEWithLogits``; ``pos_weight`` weighs each
    class's positives (negatives over positives in the training split, for ``class_weighted_loss``).

    Raises:
        ValueError: Targets that are not ``[N, C]`` like the logits.
    """
    if target.ndim != 2 or target.shape != logits.shape:
        raise ValueError(f"multi-label targets must be multi-hot [N, C] like the logits {tuple(logits.shape)}, got "
                         f"{tuple(target.shape)}")
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pos_weight)


def multi_label_metric_set(num_classes: int) -> Any:
    """mAP (macro average precision) and micro/macro F1 at 0.5, from torchmetrics."""
    from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

    return torch.nn.ModuleDict({
        "mAP": MultilabelAveragePrecision(num_classes, average="macro"),
        "f1_micro": MultilabelF1Score(num_classes, average="micro"),
        "f1_macro": MultilabelF1Score(num_classes, average="macro"),
    })


def positive_weights(labels: list[Any], num_classes: int) -> torch.Tensor:
    """Per class, negatives over positives among multi-label training ``labels`` (tuples of classes); 1 for none."""
    positives = torch.zeros(num_classes)
    for label in labels:
        positives[list(label)] += 1
    negatives = len(labels) - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones(num_classes))


def top1_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max matches the label (the arg-max of soft targets)."""
    labels = target.argmax(dim=1) if target.ndim == 2 else target
    return (logits.argmax(dim=1) == labels).float().mean()


def final_accuracy_line(accuracy: float, epoch: int, metric: str = "val/acc") -> str:
    """The end-of-fit line, e.g. ``final val/acc 0.967 (epoch 4)``; epochs count from 0 as Lightning's do."""
    return f"final {metric} {accuracy:.3f} (epoch {epoch})"


IMBALANCE_RATIO = 3.0  # largest / smallest training class above which class metrics are on by default


def wants_class_metrics(setting: bool | None, datamodule: Any) -> bool:
    """``setting`` when given; otherwise whether the DataModule's training labels are imbalanced."""
    if setting is not None:
        return setting
    labels_of = getattr(datamodule, "train_labels", None)
    try:
        labels = labels_of() if callable(labels_of) else None
    except (ValueError, KeyError, AttributeError):  # a stream has no labels to count
        return False
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long)) if labels else torch.zeros(0)
    counts = counts[counts > 0]
    return len(counts) >= 2 and float(counts.max()) > IMBALANCE_RATIO * float(counts.min())


def class_metric_set(num_classes: int) -> Any:
    """Balanced accuracy (mean per-class recall), macro-F1 and per-class recall, from torchmetrics."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall

    return torch.nn.ModuleDict({
        "balanced_acc": MulticlassAccuracy(num_classes, average="macro"),
        "macro_f1": MulticlassF1Score(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average=None),
    })


class StokerClassifier(L.LightningModule):
    """Base of stoker's classifiers: one ``forward(inputs)``, the rest is shared.

    Keys come from the attached DataModule (``input_key``/``target_key``); the loss takes integer
    labels and soft targets; ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc`` (and
    ``test/...``) are logged; optimizer and scheduler are factories LightningCLI can set.

    On skewed data accuracy hides the rare classes, so validation and test also log, with
    torchmetrics, ``<stage>/balanced_acc`` (mean per-class recall), ``<stage>/macro_f1`` and
    ``<stage>/recall/<class>`` for every class: always with ``class_metrics=True``, and by default
    (``None``) when the training split's largest class is more than :data:`IMBALANCE_RATIO` times its
    smallest.

    At the end of fit, rank zero prints the last validation's accuracy after the callbacks'
    summaries, e.g. ``final val/acc 0.967 (epoch 4)`` (nothing when fit never validated).

    Multi-label data (a DataModule with ``multi_label=True``: multi-hot float targets ``[N, C]``) trains
    with ``BCEWithLogits`` (``class_weighted_loss`` weighs each class's positives by its negatives over
    positives), logs ``<stage>/mAP``, ``<stage>/f1_micro`` and ``<stage>/f1_macro`` instead of accuracy,
    predicts per-class sigmoid probabilities, and ends fit with ``final val/mAP``.

    Args:
        label_smoothing: Label smoothing for integer labels.
        class_weighted_loss: Weight the loss by the DataModule's ``class_weights`` (an
            ``ImbalancedDataModule`` provides them), instead of or besides resampling.
        class_metrics: Log the per-class metrics above (``None``: when the training split is imbalanced).
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
        class_metrics: bool | None = None,
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
        self.class_metrics = class_metrics
        self.per_class: dict[str, Any] | None = None  # torchmetrics objects, in a ModuleDict
        self.last_val_epoch: int | None = None  # the epoch of the last validation outside the sanity check
        self.multi_label = False  # set from the DataModule in setup
        self.multi_label_metrics: Any = None  # torchmetrics objects, in a ModuleDict

    def _keys(self) -> tuple[str, str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        input_key = getattr(datamodule, "input_key", None) or self.default_input_key
        return input_key, getattr(datamodule, "target_key", None) or self.default_target_key

    def compile_backbone(self, enabled: bool) -> None:
        """``torch.compile`` ``self.model`` in place (its state_dict keys stay as they are)."""
        model = getattr(self, "model", None)
        if enabled and isinstance(model, torch.nn.Module):
            model.compile()

    def setup(self, stage: str) -> None:
        """Create the per-class metrics when asked, or when the DataModule's training split is imbalanced."""
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if getattr(datamodule, "multi_label", False):
            self.multi_label = True
            if self.multi_label_metrics is None:
                num_classes = int(getattr(self.hparams, "num_classes", 0) or len(datamodule.class_names))
                self.multi_label_metrics = multi_label_metric_set(num_classes)
            return
        if self.per_class is not None or not wants_class_metrics(self.class_metrics, datamodule):
            return
        names = list(getattr(datamodule, "class_names", None) or [])
        num_classes = int(getattr(self.hparams, "num_classes", 0) or len(names))
        if num_classes >= 2:
            self.per_class = class_metric_set(num_classes)
            self.metric_class_names = names if len(names) == num_classes else [str(i) for i in range(num_classes)]

    def on_fit_start(self) -> None:
        if not self.class_weighted_loss:
            return
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if self.multi_label:
            labels = list(datamodule.train_labels())
            self.loss_weight = positive_weights(labels, len(datamodule.class_names)).to(self.device)
            return
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
        size = logits.shape[0]
        sync = stage != "train"  # epoch-level eval metrics are reduced across ranks; step metrics are not
        if self.multi_label:
            loss = multi_label_loss(logits, target, self.loss_weight)
            self.log(f"{stage}/loss", loss, prog_bar=sync, batch_size=size, sync_dist=sync)
            if stage != "train" and self.multi_label_metrics is not None:
                for metric in self.multi_label_metrics.values():
                    metric.update(logits, (target > 0.5).long())
            return loss
        loss = soft_target_loss(logits, target, self.label_smoothing, self.loss_weight)
        self.log(f"{stage}/loss", loss, prog_bar=sync, batch_size=size, sync_dist=sync)
        self.log(f"{stage}/acc", top1_accuracy(logits, target), prog_bar=True, batch_size=size, sync_dist=sync)
        if self.per_class is not None and stage != "train":
            labels = target.argmax(dim=1) if target.ndim == 2 else target
            for metric in self.per_class.values():
                metric.update(logits, labels)
        return loss

    def _log_class_metrics(self, stage: str) -> None:
        if self.multi_label_metrics is not None and self.multi_label:
            for name, metric in self.multi_label_metrics.items():
                self.log(f"{stage}/{name}", metric.compute(), prog_bar=name == "mAP")  # reduced over ranks
                metric.reset()
            return
        if self.per_class is None:
            return
        # compute() reduces over ranks itself (torchmetrics); every rank logs the same numbers.
        values = {name: metric.compute() for name, metric in self.per_class.items()}
        self.log(f"{stage}/balanced_acc", values["balanced_acc"])
        self.log(f"{stage}/macro_f1", values["macro_f1"])
        for name, recall in zip(self.metric_class_names, values["recall"].tolist()):
            self.log(f"{stage}/recall/{name}", recall)
        for metric in self.per_class.values():
            metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_class_metrics("val")
        if not self.trainer.sanity_checking:
            self.last_val_epoch = self.current_epoch

    def on_fit_end(self) -> None:
        """Print the last validation's ``val/acc`` on rank zero, the figure a recipe promises."""
        metric = "val/mAP" if self.multi_label else "val/acc"
        accuracy = self.trainer.callback_metrics.get(metric)
        if accuracy is not None and self.last_val_epoch is not None and self.trainer.is_global_zero:
            print(final_accuracy_line(float(accuracy), self.last_val_epoch, metric), flush=True)

    def on_test_epoch_end(self) -> None:
        self._log_class_metrics("test")

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self(self.model_inputs(batch, "predict"))
        return logits.sigmoid() if self.multi_label else logits.softmax(dim=1)

    def configure_optimizers(self) -> Any:
        # Frozen parameters (a linear probe) stay out of the optimizer and its state.
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
