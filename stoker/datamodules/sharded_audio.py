"""Audio classification from a shard set: decode in the workers, log-mel and SpecAugment batched on the device."""

from __future__ import annotations

from typing import Any

import torch

from stoker._imports import require
from stoker.data.file_dataset import BadSamplePolicy
from stoker.data.media import AUDIO
from stoker.data.shard_items import AudioItems, SampleLocator
from stoker.datamodules.audio import AudioFolderDataModule, _check_audio_args
from stoker.datamodules.sharded import ShardedDataModule


class ShardedAudioDataModule(ShardedDataModule):
    """Audio classification from a shard set written by ``stoker pack`` (an audio class folder).

    The batch contract and features of :class:`~stoker.datamodules.AudioFolderDataModule`: host
    batches ``{"audio": float32 [N, T], "label": int64 [N], "index": int64 [N]}`` (a random window
    in training, the center in evaluation), replaced on the device by a normalized log-mel
    spectrogram ``[N, 1, n_mels, frames]`` with SpecAugment masks in training. Streaming, equal
    batches, resume and bad samples as in :class:`~stoker.datamodules.sharded.ShardedDataModule`.

    Args:
        source: The shard set (a folder or an ``s3://``/``gs://``/``r2://`` URL) from ``stoker pack``.
        batch_size: Clips per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores per rank).
        sample_rate: Rate every clip is resampled to, in Hz.
        clip_seconds: Length of every clip; longer recordings are cropped, shorter ones zero-padded.
        cache_dir: Node-local cache of a remote source's chunks.
        max_cache_size: litdata's cache budget (e.g. ``"200GB"``).
        storage_options: Options for litdata's object-store client.
        seed: Seeds the shuffle and the crops.
        n_fft: FFT size of the spectrogram.
        win_length: STFT window in samples.
        hop_length: Samples between frames.
        n_mels: Mel bands.
        f_min: Lowest mel frequency in Hz.
        f_max: Highest mel frequency in Hz (``None``: half the sample rate).
        top_db: Dynamic range kept below each spectrogram's peak, in dB.
        normalize: Standardize each spectrogram.
        freq_masks: SpecAugment frequency masks per clip in training.
        freq_mask_width: Largest frequency mask, in mel bands.
        time_masks: SpecAugment time masks per clip in training.
        time_mask_width: Largest time mask, in frames.
        on_bad_sample: ``"raise"`` or ``"skip"`` a sample that does not decode.
        strict_fingerprint: Resuming from a checkpoint of other data is an error, not a warning.
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Example::

        dm = ShardedAudioDataModule("s3://bucket/speech-shards", sample_rate=16000, cache_dir="/nvme/cache")
        trainer.fit(AudioClassifier(num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "audio"
    target_key = "label"
    media = AUDIO

    def __init__(
        self,
        source: str,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 1.0,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        storage_options: dict[str, Any] | None = None,
        seed: int = 0,
        n_fft: int = 512,
        win_length: int | None = 400,
        hop_length: int | None = 160,
        n_mels: int = 64,
        f_min: float = 0.0,
        f_max: float | None = None,
        top_db: float | None = 80.0,
        normalize: bool = True,
        freq_masks: int = 2,
        freq_mask_width: int = 8,
        time_masks: int = 2,
        time_mask_width: int = 20,
        on_bad_sample: BadSamplePolicy = "raise",
        strict_fingerprint: bool = False,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        require("audio", type(self).__name__)
        super().__init__(source, cache_dir=cache_dir, max_cache_size=max_cache_size, storage_options=storage_options,
                         on_bad_sample=on_bad_sample, strict_fingerprint=strict_fingerprint, batch_size=batch_size,
                         num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers,
                         prefetch_factor=prefetch_factor, seed=seed)
        self.augment_kwargs: dict[str, int] = dict(freq_masks=freq_masks, freq_mask_width=freq_mask_width,
                                                   time_masks=time_masks, time_mask_width=time_mask_width)
        _check_audio_args(sample_rate, clip_seconds, self.augment_kwargs)
        self.sample_rate, self.clip_seconds = sample_rate, clip_seconds
        self.num_samples = max(1, round(sample_rate * clip_seconds))
        self.feature_kwargs: dict[str, Any] = dict(n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                                                   n_mels=n_mels, f_min=f_min, f_max=f_max, top_db=top_db,
                                                   normalize=normalize)
        self._features: dict[str, torch.nn.Module] = {}

    # The device side is the audio-folder DataModule's, to the letter: one feature pipeline for both sources.
    features_on = AudioFolderDataModule.features_on
    device_transform = AudioFolderDataModule.device_transform
    __getstate__ = AudioFolderDataModule.__getstate__

    def _items(self, split: str, locator: SampleLocator) -> AudioItems:
        return AudioItems(locator, sample_rate=self.sample_rate, num_samples=self.num_samples,
                          mode="random" if split == "train" else "center", on_bad_sample=self.on_bad_sample)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(sample_rate=self.sample_rate, clip_seconds=self.clip_seconds, features=dict(self.feature_kwargs),
                    spec_augment=dict(self.augment_kwargs))
        return info
