"""Multi-label end to end: multi-hot targets, BCEWithLogits, mAP and F1, MixUp/CutMix on multi-hot targets."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from stoker.callbacks import MixUpCutMix
from stoker.datamodules import ImageDataModule
from stoker.models import ImageClassifier
from stoker.models.classifier import multi_label_loss, positive_weights
from stoker.transforms import mix_batch
from stoker.transforms.mix_settings import MixSettings
from tests.sources_fixtures import photo_records, write_table


@pytest.fixture(scope="module")
def multi_label_table(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    table = write_table(root, photo_records(counts={"train": 6, "val": 2}))
    lines = table.read_text().splitlines()
    lines = [lines[0]] + [line.replace(",bird,", ",bird;dog,") if i % 3 == 0 else line
                          for i, line in enumerate(lines[1:])]
    table.write_text("\n".join(lines) + "\n")
    return table


def test_bce_takes_multi_hot_and_mixed_targets_and_weighs_positives() -> None:
    logits = torch.zeros(2, 3)
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    assert multi_label_loss(logits, target).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    with pytest.raises(ValueError, match="multi-hot"):
        multi_label_loss(logits, torch.tensor([0, 1]))
    weights = positive_weights([(0,), (0, 2), (1,), (0,)], 4)
    assert weights.tolist() == pytest.approx([1 / 3, 3.0, 3.0, 1.0])  # negatives over positives; a class with none: 1


def test_mixup_mixes_multi_hot_targets_convexly() -> None:
    images = torch.rand(4, 3, 8, 8)
    target = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    settings = MixSettings(mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, label_smoothing=0.0)
    _, mixed, params = mix_batch(images, target, num_classes=3, settings=settings,
                                 generator=torch.Generator().manual_seed(0))
    lam = float(params.lam[0])
    assert torch.allclose(mixed, lam * target + (1 - lam) * target.flip(0))
    assert mixed.min() >= 0 and mixed.max() <= 1


def test_a_multi_label_table_trains_with_bce_and_logs_map_and_f1(multi_label_table, capsys) -> None:
    dm = ImageDataModule(str(multi_label_table), multi_label=True, batch_size=4, num_workers=0, image_size=16)
    model = ImageClassifier("resnet10t", num_classes=dm.num_classes, class_weighted_loss=True)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=0.0)])
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert model.multi_label and {"val/mAP", "val/f1_micro", "val/f1_macro", "val/loss"} <= set(metrics)
    assert "val/acc" not in metrics and 0.0 <= float(metrics["val/mAP"]) <= 1.0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("final val/mAP ")
    probabilities = trainer.predict(model, datamodule=dm)
    assert probabilities is not None and probabilities[0].shape[1] == 3
    assert (probabilities[0] > 0).all() and (probabilities[0] < 1).all()  # sigmoid per class, not a softmax
