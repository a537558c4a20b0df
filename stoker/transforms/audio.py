"""Batched log-mel features and SpecAugment masking, computed on whatever device the batch is on.

Time and frequency masking follow SpecAugment (Park et al., 2019, "SpecAugment: A Simple Data
Augmentation Method for Automatic Speech Recognition", arXiv:1904.08779): each spectrogram gets
its own random bands of consecutive mel channels and frames set to the mean of the normalized
log-mel spectrogram (zero). Time warping, the paper's third policy, is left out: the paper
reports it as the least helpful and it is by far the most expensive.

Framework-free: :class:`LogMelFeatures` is a plain ``nn.Module`` built on torchaudio's
``MelSpectrogram`` and ``AmplitudeToDB``; the audio DataModule moves one copy to each device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LogMelFeatures(nn.Module):
    """Waveforms ``[N, T]`` to log-mel spectrograms ``[N, 1, n_mels, frames]`` (float32).

    Args:
        sample_rate: Rate of the incoming waveforms in Hz.
        n_fft: FFT size.
        win_length: Window length in samples (``None``: ``n_fft``).
        hop_length: Samples between frames (``None``: ``win_length // 2``).
        n_mels: Mel bands.
        f_min: Lowest frequency of the mel filter bank in Hz.
        f_max: Highest frequency (``None``: ``sample_rate / 2``).
        top_db: Floor of the decibel scale below the loudest bin of each spectrogram.
        normalize: Standardize each spectrogram to zero mean and unit variance, so that loudness
            differences between recordings do not dominate and masks fill with the mean.

    Raises:
        ValueError: Out-of-range parameters, or an input that is not ``[N, T]`` float.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        *,
        n_fft: int = 512,
        win_length: int | None = 400,
        hop_length: int | None = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        import torchaudio

        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if n_mels < 1 or n_fft < 2:
            raise ValueError(f"n_mels must be >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
        if win_length is not None and win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must not exceed n_fft ({n_fft})")
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels,
            f_min=f_min, f_max=f_max, power=2.0,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)
        self.normalize = normalize

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        if waveforms.ndim != 2 or not waveforms.dtype.is_floating_point:
            raise ValueError(
                f"expected float waveforms [N, T], got {waveforms.dtype} of shape {tuple(waveforms.shape)}"
            )
        # The STFT runs in float32 even under autocast: half precision loses the quiet bins.
        with torch.autocast(device_type=waveforms.device.type, enabled=False):
            spec = self.to_db(self.mel(waveforms.float())).unsqueeze(1)
        if self.normalize:
            mean = spec.mean(dim=(2, 3), keepdim=True)
            std = spec.std(dim=(2, 3), keepdim=True)
            spec = (spec - mean) / (std + 1e-5)
        return spec


def spec_augment(
    spec: torch.Tensor,
    *,
    freq_masks: int = 2,
    freq_mask_width: int = 8,
    time_masks: int = 2,
    time_mask_width: int = 20,
    mask_value: float = 0.0,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """Mask random mel bands and frames of ``[N, C, n_mels, frames]``, independently per example.

    Each of the ``freq_masks`` (``time_masks``) masks covers a width drawn uniformly from
    ``[0, freq_mask_width)`` (``[0, time_mask_width)``) at a uniform start; widths are clipped to
    the spectrogram, so short clips stay valid. Without ``seeds`` the draws use the device's
    generator; with one seed per example they come from that example's own CPU generator, so an
    example gets the same masks whichever batch, rank or resumed run it lands in (the stoker audio
    DataModule passes ``(seed, "specaugment", epoch, sample)``).

    Raises:
        ValueError: Negative counts or widths, or a tensor that is not 4-dimensional.
    """
    import torchaudio.functional as AF

    if spec.ndim != 4:
        raise ValueError(f"expected spectrograms [N, C, n_mels, frames], got shape {tuple(spec.shape)}")
    for name, value in (("freq_masks", freq_masks), ("freq_mask_width", freq_mask_width),
                        ("time_masks", time_masks), ("time_mask_width", time_mask_width)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if seeds is not None:
        return _seeded_masks(spec, seeds, [(2, freq_masks, freq_mask_width), (3, time_masks, time_mask_width)],
                             mask_value)
    out = spec
    for axis, count, width in ((2, freq_masks, freq_mask_width), (3, time_masks, time_mask_width)):
        width = min(width, spec.shape[axis])
        for _ in range(count if width > 0 else 0):
            out = AF.mask_along_axis_iid(out, mask_param=width, mask_value=mask_value, axis=axis)
    return out


def _seeded_masks(spec: torch.Tensor, seeds: Sequence[int], masks: list[tuple[int, int, int]],
                  mask_value: float) -> torch.Tensor:
    # The distribution of torchaudio's mask_along_axis_iid (width ~ U[0, W), start ~ U[0, size - width)),
    # drawn on the CPU per example; the masks are then applied to the whole batch on its device at once.
    if len(seeds) != spec.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {spec.shape[0]} spectrograms")
    keep = torch.ones(spec.shape[0], 1, spec.shape[2], spec.shape[3], dtype=torch.bool)
    for row, seed in enumerate(seeds):
        generator = torch.Generator().manual_seed(int(seed))
        for axis, count, width in masks:
            width = min(width, spec.shape[axis])
            for _ in range(count if width > 0 else 0):
                span = float(torch.rand((), generator=generator)) * width
                start = int(float(torch.rand((), generator=generator)) * (spec.shape[axis] - span))
                stop = start + int(span)
                if axis == 2:
                    keep[row, :, start:stop, :] = False
                else:
                    keep[row, :, :, start:stop] = False
    return spec.masked_fill(~keep.to(spec.device), mask_value)
