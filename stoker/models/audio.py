"""A small audio classifier on log-mel spectrograms (a CNN, or any timm backbone on one channel)."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from stoker.models.classifier import StokerClassifier


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),  # ceil keeps odd frame counts (101 frames per second) valid
    )


class _SpectrogramCNN(nn.Module):
    """Conv blocks (3x3 convolution, batch norm, ReLU, 2x2 max-pool), global pooling and a linear head.

    Global average pooling over mel bands and frames makes the network indifferent to the clip
    length, so one model serves one-second keywords and longer recordings.
    """

    def __init__(self, num_classes: int, channels: tuple[int, ...] = (16, 32, 64, 128), drop_rate: float = 0.1) -> None:
        super().__init__()
        widths = (1, *channels)
        self.features = nn.Sequential(*(_conv_block(a, b) for a, b in zip(widths[:-1], widths[1:])))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(drop_rate), nn.Linear(widths[-1], num_classes))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        pooled = self.features(spec).mean(dim=(2, 3), keepdim=True)
        return self.head(pooled)


class AudioClassifier(StokerClassifier):
    """Clip classification from log-mel spectrograms ``[N, 1, n_mels, frames]`` in stoker's dict batches.

    The spectrogram is made on the device by the audio DataModule; raw waveforms ``[N, T]`` are
    refused with a message saying so. The loss accepts integer labels ``[N]`` and float soft
    targets ``[N, C]``, so MixUp/CutMix applied to the spectrogram batch needs no change here.

    Args:
        num_classes: Output classes; linked from the DataModule by the ``stoker`` CLI.
        backbone: ``"cnn"`` for the built-in small CNN, or a timm model name run with one input
            channel (e.g. ``"resnet18"``; no weights are downloaded unless ``pretrained``).
        channels: Widths of the CNN's conv blocks (each block halves both spectrogram axes).
        pretrained: Load timm's pretrained weights (downloads them; only for a timm backbone).
        drop_rate: Dropout before the classifier.
        label_smoothing: Label smoothing for integer labels (soft targets carry their own).
        class_weighted_loss: Weight the loss by the DataModule's ``class_weights``.
        class_metrics: Log balanced accuracy, macro-F1 and per-class recall (``None``: when the training
            split is imbalanced; see :class:`~stoker.models.StokerClassifier`).
        compile: ``torch.compile`` the backbone (in place: checkpoints keep their keys). Compiling the whole
            LightningModule instead recompiles at every change of step function and hits dynamo's limit.
        optimizer: Optimizer factory; LightningCLI sets it with ``--optimizer``.
        scheduler: Learning-rate scheduler factory, stepped every epoch.

    Raises:
        ValueError: ``num_classes`` < 1, empty ``channels`` or a backbone timm does not know.

    Example::

        model = AudioClassifier(num_classes=dm.num_classes)
    """

    default_input_key = "audio"

    def __init__(
        self,
        num_classes: int = 2,
        *,
        backbone: str = "cnn",
        channels: tuple[int, ...] = (16, 32, 64, 128),
        pretrained: bool = False,
        drop_rate: float = 0.1,
        label_smoothing: float = 0.0,
        class_weighted_loss: bool = False,
        class_metrics: bool | None = None,
        compile: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(label_smoothing=label_smoothing, class_weighted_loss=class_weighted_loss,
                         class_metrics=class_metrics, optimizer=optimizer, scheduler=scheduler)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.model: nn.Module
        if backbone == "cnn":
            if not channels or min(channels) < 1:
                raise ValueError(f"channels must be a non-empty tuple of positive widths, got {channels}")
            self.model = _SpectrogramCNN(num_classes, tuple(channels), drop_rate)
        else:
            import timm

            if not timm.is_model(backbone):
                raise ValueError(f"backbone must be 'cnn' or a timm model name (timm.list_models()), got {backbone!r}")
            self.model = timm.create_model(
                backbone, pretrained=pretrained, num_classes=num_classes, in_chans=1, drop_rate=drop_rate
            )
        self.compile_backbone(compile)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        if spec.ndim == 3:  # [N, n_mels, frames] from a feature pipeline without a channel axis
            spec = spec.unsqueeze(1)
        if spec.ndim != 4 or not spec.dtype.is_floating_point:
            raise TypeError(
                f"AudioClassifier expects float log-mel spectrograms [N, 1, n_mels, frames], got {spec.dtype} of "
                f"shape {tuple(spec.shape)}; raw waveforms [N, T] are turned into spectrograms on the device by "
                "AudioFolderDataModule (a plain DataLoader must apply stoker.transforms.audio.LogMelFeatures)"
            )
        return self.model(spec)
