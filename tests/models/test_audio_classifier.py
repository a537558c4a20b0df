"""AudioClassifier: shapes, integer and soft targets, input checks, and a short fit on device features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("torchaudio")
pytest.importorskip("soundfile")

from stoker.datamodules import AudioFolderDataModule  # noqa: E402
from stoker.models import AudioClassifier  # noqa: E402
from tests.datamodules.test_audio_datamodule import SMALL, write_audio_tree  # noqa: E402


def test_logits_have_one_column_per_class_for_any_clip_length() -> None:
    model = AudioClassifier(num_classes=5).eval()
    for frames in (26, 101, 157):
        assert model(torch.randn(3, 1, 32, frames)).shape == (3, 5)
    assert model(torch.randn(2, 40, 50)).shape == (2, 5), "a missing channel axis is added"


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_soft_targets_give_the_probability_weighted_cross_entropy() -> None:
    torch.manual_seed(0)
    model = AudioClassifier(num_classes=3).eval()  # fixed BatchNorm and no dropout: the same logits each call
    spec = torch.randn(4, 1, 16, 20)
    labels = torch.tensor([0, 2, 1, 2])
    hard = model.training_step({"audio": spec, "label": labels}, 0)
    one_hot = model.training_step({"audio": spec, "label": F.one_hot(labels, 3).float()}, 0)
    torch.testing.assert_close(hard, one_hot)
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]])
    logits = model(spec)
    expected = -(soft * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(model.training_step({"audio": spec, "label": soft}, 0), expected)


def test_raw_waveforms_and_bad_arguments_are_refused() -> None:
    model = AudioClassifier(num_classes=2)
    with pytest.raises(TypeError, match=r"expects float log-mel spectrograms \[N, 1, n_mels, frames\], got "
                                        r"torch.float32 of shape \(2, 16000\); raw waveforms"):
        model(torch.randn(2, 16000))
    with pytest.raises(ValueError, match="num_classes must be >= 1, got 0"):
        AudioClassifier(num_classes=0)
    with pytest.raises(ValueError, match="backbone must be 'cnn' or a timm model name"):
        AudioClassifier(num_classes=2, backbone="no_such_net")
    with pytest.raises(ValueError, match=r"channels must be a non-empty tuple of positive widths, got \(\)"):
        AudioClassifier(num_classes=2, channels=())


def test_timm_backbone_runs_on_one_channel() -> None:
    model = AudioClassifier(num_classes=4, backbone="resnet10t").eval()
    assert model(torch.randn(2, 1, 32, 40)).shape == (2, 4)


class _SoftTargets(L.Callback):
    """Turns labels into soft targets after the device transform, as MixUp/CutMix does."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.shapes.append(tuple(batch["audio"].shape))
        one_hot = F.one_hot(batch["label"], pl_module.hparams.num_classes).float()
        batch["label"] = 0.8 * one_hot + 0.2 * one_hot.flip(0)


def test_fits_on_device_spectrograms_with_soft_targets(tmp_path: Path) -> None:
    write_audio_tree(tmp_path, {"low": 8, "high": 8})
    dm = AudioFolderDataModule(str(tmp_path), batch_size=4, val_fraction=0.25, **SMALL)
    model = AudioClassifier(num_classes=dm.num_classes, channels=(4, 8))
    soft = _SoftTargets()
    trainer = L.Trainer(accelerator="cpu", max_steps=3, limit_val_batches=1, logger=False, callbacks=[soft],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    assert soft.shapes == [(4, 1, 16, 26)] * 3
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert {"val/loss", "val/acc"} <= set(trainer.callback_metrics)
