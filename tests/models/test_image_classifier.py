"""ImageClassifier: timm backbone, integer and soft targets."""

from __future__ import annotations

import pytest
import torch

from stoker.models import ImageClassifier
from stoker.models.image import soft_target_loss, top1_accuracy


def test_loss_accepts_integer_labels_and_soft_targets() -> None:
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    torch.testing.assert_close(soft_target_loss(logits, labels), soft_target_loss(logits, one_hot))
    assert top1_accuracy(logits, labels) == top1_accuracy(logits, one_hot)
    with pytest.raises(ValueError, match=r"soft targets of shape \(4, 2\) do not match logits \(4, 3\)"):
        soft_target_loss(logits, torch.rand(4, 2))


def test_training_step_runs_on_a_dict_batch_with_soft_targets() -> None:
    model = ImageClassifier("resnet10t", num_classes=5, channels_last=True)
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.softmax(torch.randn(2, 5), dim=1)}
    loss = model.training_step(batch, 0)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    optimizer = model.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW)


def test_uint8_images_and_unknown_models_are_explained() -> None:
    model = ImageClassifier("resnet10t", num_classes=2)
    with pytest.raises(TypeError, match="train got uint8 images: normalize them first"):
        model.training_step({"image": torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "label": torch.tensor([0])}, 0)
    with pytest.raises(ValueError, match="timm does not know a model named 'resnet_nope'"):
        ImageClassifier("resnet_nope", num_classes=2)


def test_soft_targets_are_not_smoothed_twice_and_class_weights_apply() -> None:
    logits = torch.randn(4, 3)
    soft = torch.softmax(torch.randn(4, 3), dim=1)
    torch.testing.assert_close(soft_target_loss(logits, soft, label_smoothing=0.3), soft_target_loss(logits, soft))
    labels = torch.tensor([0, 1, 2, 2])
    weight = torch.tensor([1.0, 1.0, 0.0])
    expected = torch.nn.functional.cross_entropy(logits[:2], labels[:2])
    torch.testing.assert_close(soft_target_loss(logits, labels, weight=weight), expected)


def test_class_weighted_loss_needs_class_weights_from_the_datamodule() -> None:
    import lightning as L

    from stoker.datamodules.base import StokerDataModule

    class NoWeights(StokerDataModule):
        input_key = "image"

        def train_dataloader(self):
            return [{"image": torch.randn(2, 3, 16, 16), "label": torch.tensor([0, 1])}]

    model = ImageClassifier("resnet10t", num_classes=2, class_weighted_loss=True)
    trainer = L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="class_weighted_loss=True needs a DataModule with class_weights"):
        trainer.fit(model, datamodule=NoWeights(num_workers=0))


def _fit_and_validate(root, class_metrics: bool | None) -> dict[str, float]:
    import lightning as L

    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(root), batch_size=4, num_workers=0, image_size=16, val_fraction=0.3)
    model = ImageClassifier("resnet10t", num_classes=2, class_metrics=class_metrics)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return {key: float(value) for key, value in trainer.callback_metrics.items()}


def test_imbalanced_training_reports_balanced_accuracy_macro_f1_and_per_class_recall(image_tree, tmp_path) -> None:
    skewed = _fit_and_validate(image_tree({"common": 20, "rare": 4}, size=(16, 16)), None)
    assert {"val/balanced_acc", "val/macro_f1", "val/recall/common", "val/recall/rare"} <= set(skewed)
    recalls = (skewed["val/recall/common"], skewed["val/recall/rare"])
    assert skewed["val/balanced_acc"] == pytest.approx(sum(recalls) / 2, abs=1e-6), "balanced = mean recall"
    even = _fit_and_validate(image_tree({"a": 8, "b": 8}, size=(16, 16), root=tmp_path / "even"), None)
    assert "val/balanced_acc" not in even and "val/acc" in even, "balanced data: off unless asked"
    asked = _fit_and_validate(tmp_path / "even", True)
    assert "val/macro_f1" in asked


def test_compile_compiles_the_backbone_in_place_and_keeps_checkpoint_keys() -> None:
    plain, compiled = ImageClassifier("resnet10t", num_classes=3), ImageClassifier("resnet10t", num_classes=3,
                                                                                   compile=True)
    assert compiled.model._compiled_call_impl is not None and plain.model._compiled_call_impl is None
    assert compiled.state_dict().keys() == plain.state_dict().keys()


def test_fit_ends_with_the_last_validation_accuracy(image_tree, capsys: pytest.CaptureFixture[str]) -> None:
    import lightning as L

    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(image_tree({"a": 6, "b": 6}, size=(16, 16))), batch_size=4, num_workers=0,
                               image_size=16, val_fraction=0.3)
    model = ImageClassifier("resnet10t", num_classes=2)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    accuracy = float(trainer.callback_metrics["val/acc"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"final val/acc {accuracy:.3f} (epoch 1)", "the last line of fit, after any summary"

    unvalidated = ImageClassifier("resnet10t", num_classes=2)
    L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
              enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(unvalidated, datamodule=dm)
    assert "final val/acc" not in capsys.readouterr().out, "no validation, no claim"
