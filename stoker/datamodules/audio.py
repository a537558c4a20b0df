"""Audio-folder DataModule: decode on the CPU, log-mel and SpecAugment batched on the device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stoker._imports import require
from stoker.data.file_dataset import AudioFileDataset, BadSamplePolicy
from stoker.data.folder import read_path_list
from stoker.data.media import AUDIO
from stoker.datamodules.folder import ClassFolderDataModule


class AudioFolderDataModule(ClassFolderDataModule):
    """Audio classification from a folder tree: ``root/<class>/<file>`` or ``root/train|val|test/<class>/…``.

    CPU workers decode (``soundfile`` for WAV/FLAC, TorchCodec for other formats when installed),
    mix down to mono, resample to ``sample_rate`` and crop or pad to ``clip_seconds``: a random
    window in training, the center in evaluation. Host batches are
    ``{"audio": float32 [N, T], "label": int64 [N], "index": int64 [N]}``. On the device,
    :meth:`device_transform` replaces ``"audio"`` with a normalized log-mel spectrogram
    ``[N, 1, n_mels, frames]`` and, in training only, applies SpecAugment time and frequency
    masks, so the model and MixUp/CutMix see image-like spectrograms.

    Class folders are listed in ``__init__`` (no audio is read) so ``num_classes`` is known at
    once; folders whose names start with ``_`` or ``.`` are not classes. Without ``val``/``test``
    folders, the split is a seeded per-class hash of each relative path (:mod:`stoker.data.splits`),
    or the file lists ``val_list``/``test_list`` (Speech Commands ships them). Every file is
    decoded once at setup (cached by size and mtime); unreadable, empty, zero-length and
    NaN-bearing files are excluded and reported in :attr:`bad_files` with path and reason.

    Args:
        root: Dataset root.
        batch_size: Clips per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores available per rank).
        sample_rate: Rate every clip is resampled to, in Hz.
        clip_seconds: Length of every clip; longer files are cropped, shorter ones zero-padded.
        val_fraction: Per-class fraction held out for validation when there is no ``val`` folder or list.
        test_fraction: Per-class fraction held out for testing when there is no ``test`` folder or list.
        seed: Seeds the split and shuffling.
        n_fft: FFT size of the spectrogram.
        win_length: STFT window in samples (25 ms at 16 kHz by default).
        hop_length: Samples between frames (10 ms at 16 kHz by default).
        n_mels: Mel bands (the spectrogram's height).
        f_min: Lowest mel frequency in Hz.
        f_max: Highest mel frequency in Hz (``None``: half the sample rate).
        top_db: Dynamic range kept below each spectrogram's peak, in dB.
        normalize: Standardize each spectrogram (zero mean, unit variance).
        freq_masks: SpecAugment frequency masks per clip in training (0 turns them off).
        freq_mask_width: Largest frequency mask, in mel bands.
        time_masks: SpecAugment time masks per clip in training (0 turns them off).
        time_mask_width: Largest time mask, in frames.
        max_bad_fraction: Largest tolerated fraction of unusable files before setup raises.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts the files.
        on_bad_sample: A file that fails to load during training: ``"raise"`` an error naming it, or ``"skip"``
            it (left out of its batch, counted and reported at the end of the epoch).
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        val_list: A file (relative to ``root`` or absolute) listing the validation files, one per line.
        test_list: Same for the test files.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Where scan results are cached (default ``~/.cache/stoker``).
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Example::

        dm = AudioFolderDataModule("data/speech_commands", sample_rate=16000, clip_seconds=1.0,
                                   val_list="validation_list.txt", test_list="testing_list.txt")
        trainer.fit(AudioClassifier(num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "audio"
    target_key = "label"
    media = AUDIO

    def __init__(
        self,
        root: str,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        sample_rate: int = 16000,
        clip_seconds: float = 1.0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
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
        max_bad_fraction: float = 0.01,
        verify: str = "decode",
        on_bad_sample: BadSamplePolicy = "raise",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        val_list: str | None = None,
        test_list: str | None = None,
        class_names: list[str] | None = None,
        cache_dir: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        require("audio", "AudioFolderDataModule")
        super().__init__(
            root, val_fraction=val_fraction, test_fraction=test_fraction, max_bad_fraction=max_bad_fraction,
            verify=verify, on_bad_sample=on_bad_sample, quarantine=quarantine, manifest=manifest,
            strict_fingerprint=strict_fingerprint, class_names=class_names, cache_dir=cache_dir,
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
        )
        self.augment_kwargs: dict[str, int] = dict(
            freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
            time_mask_width=time_mask_width,
        )
        _check_audio_args(sample_rate, clip_seconds, self.augment_kwargs)
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.num_samples = max(1, round(sample_rate * clip_seconds))
        self.feature_kwargs: dict[str, Any] = dict(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
            top_db=top_db, normalize=normalize,
        )
        self.val_list = val_list
        self.test_list = test_list
        self._features: dict[str, torch.nn.Module] = {}

    # ----------------------------------------------------------------- the audio specifics
    def _build_dataset(self, root: Path, split: str, pairs: list[tuple[str, int]]) -> AudioFileDataset:
        return AudioFileDataset(root, pairs, sample_rate=self.sample_rate, num_samples=self.num_samples,
                                mode="random" if split == "train" else "center", on_bad_sample=self.on_bad_sample)

    # ----------------------------------------------------------------- device-side work
    def features_on(self, device: torch.device) -> torch.nn.Module:
        """The log-mel module on ``device`` (built once per device; the filter bank stays there)."""
        key = str(device)
        if key not in self._features:
            from stoker.transforms.audio import LogMelFeatures

            self._features[key] = LogMelFeatures(self.sample_rate, **self.feature_kwargs).to(device)
        return self._features[key]

    def device_transform(self, batch: Any, *, training: bool) -> Any:
        """Waveforms ``[N, T]`` to log-mel ``[N, 1, n_mels, frames]``; SpecAugment masks only when ``training``."""
        if not isinstance(batch, dict):
            return batch
        audio = batch.get(self.input_key)
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
            return batch  # already featurized (a second call) or not audio: leave it alone
        from stoker.transforms.audio import spec_augment

        with torch.no_grad():
            spec = self.features_on(audio.device)(audio)
            if training:
                spec = spec_augment(spec, **self.augment_kwargs)
        batch[self.input_key] = spec
        return batch

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_features"] = {}  # device modules are rebuilt where the copy runs
        return state

    # ----------------------------------------------------------------- internals
    def _listed(self, listing: str) -> set[str]:
        path = Path(listing).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = Path(self.root).expanduser() / listing
        if not path.is_file():
            raise FileNotFoundError(f"split list {listing!r} not found (looked in the working directory and root)")
        return {os.path.normpath(rel) for rel in read_path_list(path)}

    def _split(self, kept: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
        # Split lists (Speech Commands' validation_list.txt) take their files first; the rest is
        # split like any other folder tree.
        pool_key = "all" if "all" in kept else "train"
        listed: dict[str, list[tuple[str, int]]] = {}
        for split, listing in (("val", self.val_list), ("test", self.test_list)):
            if listing:
                names = self._listed(listing)
                listed[split] = kept.get(split, []) + [pair for pair in kept[pool_key] if pair[0] in names]
                kept = {**kept, pool_key: [pair for pair in kept[pool_key] if pair[0] not in names]}
        if listed and pool_key == "all":
            kept = {"train": kept["all"]}
        return super()._split({**kept, **listed})

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            sample_rate=self.sample_rate,
            clip_seconds=self.clip_seconds,
            features=dict(self.feature_kwargs),
            spec_augment=dict(self.augment_kwargs),
        )
        return info


def _check_audio_args(sample_rate: int, clip_seconds: float, masks: dict[str, int]) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    for name, value in masks.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
