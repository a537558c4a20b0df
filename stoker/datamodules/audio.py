"""AudioDataModule: audio classification from any source; decode on the CPU, log-mel and SpecAugment on the device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from stoker._imports import require
from stoker.data.file_dataset import AudioFileDataset, BadSamplePolicy
from stoker.data.loader import WorkerType
from stoker.data.media import AUDIO
from stoker.data.sources import Pairs, Source
from stoker.data.sources.folder_tree import read_path_list
from stoker.data.sources.shards.items import AudioItems
from stoker.datamodules.source import SourceDataModule, Verify
from stoker.seeds import derive_seed


class AudioDataModule(SourceDataModule):
    """Audio classification (single- or multi-label) from the recordings you have, in the shape you have them.

    ``source`` takes what :class:`~stoker.datamodules.ImageDataModule` takes, with recordings: class folders
    (``root/<class>/<file>`` or ``root/train|val|test/<class>/…``), a table of files, a Hugging Face
    dataset (an ``Audio()`` column with embedded bytes or paths, or raw bytes), WebDataset tars
    (``<key>.wav``/``.flac`` + ``<key>.cls``), or a stoker shard set. Given splits are kept.

    CPU workers decode (``soundfile`` for WAV/FLAC, TorchCodec for other formats when installed), mix
    down to mono, resample to ``sample_rate`` and crop or pad to ``clip_seconds``: a random window in
    training, the center in evaluation (files are decoded around the window only). Host batches are
    ``{"audio": float32 [N, T], "label": int64 [N], "index": int64 [N]}``; on the device
    :meth:`device_transform` replaces ``"audio"`` with a normalized log-mel spectrogram
    ``[N, 1, n_mels, frames]`` and, in training only, applies SpecAugment masks, so the model and
    MixUp/CutMix see image-like spectrograms. Class folders whose names start with ``_`` are not classes
    (Speech Commands' ``_background_noise_``). Every recording is decoded once at setup (cached);
    unreadable, empty, zero-length and NaN-bearing ones are left out and named in :attr:`bad_files`.

    Args:
        source: See above.
        audio_field: The column (Hugging Face) holding the recordings.
        label_field: The column holding labels.
        path_field: A table's column of file paths.
        split_field: A table's column of splits (used when present).
        multi_label: Labels are sets of classes; targets become multi-hot float ``[N, C]``.
        class_names: Fix the classes and their order (default: what the source says).
        batch_size: Clips per batch per rank.
        num_workers: Loader workers per rank (``None``: the cores per rank).
        worker_type: ``"process"`` workers or ``"thread"`` (threads of this process: the same batches,
            less memory and start-up; streams keep processes). See :class:`~stoker.datamodules.base.StokerDataModule`.
        sample_rate: Rate every clip is resampled to, in Hz.
        clip_seconds: Length of every clip; longer recordings are cropped, shorter ones zero-padded.
        val_fraction: Per-class share held out for validation when the source brings no validation split or list.
        test_fraction: Per-class share held out for testing when the source brings no test split or list.
        seed: Seeds the split, shuffling and crops.
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
        max_bad_fraction: Largest tolerated fraction of unusable recordings before setup raises.
        verify: ``"decode"`` checks every recording by decoding it; ``"none"`` trusts them.
        on_bad_sample: A recording that fails while training: ``"raise"`` an error naming it, or ``"skip"`` it.
        quarantine: A file listing keys to leave out, e.g. from ``stoker scan``.
        manifest: A split manifest from ``stoker split``; it replaces the source's split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error.
        val_list: A file (relative to the source folder or absolute) listing the validation files, one per line.
        test_list: Same for the test files.
        subset: A hub dataset's configuration (``hf://``).
        revision: A hub dataset's revision (``hf://``).
        storage_options: Object-store client options for ``s3://`` sources.
        cache_dir: Node-local folder for everything this DataModule caches.
        max_cache_size: Budget of the chunk cache of a remote shard set (e.g. ``"200GB"``).
        predict_source: New recordings for ``predict`` (any source; labels optional).
        pin_memory: See :class:`~stoker.datamodules.base.StokerDataModule`.
        persistent_workers: See :class:`~stoker.datamodules.base.StokerDataModule`.
        prefetch_factor: See :class:`~stoker.datamodules.base.StokerDataModule`.

    Example::

        dm = AudioDataModule("data/speech_commands", sample_rate=16000, clip_seconds=1.0,
                             val_list="validation_list.txt", test_list="testing_list.txt")
        trainer.fit(AudioClassifier(num_classes=dm.num_classes), datamodule=dm)
    """

    input_key = "audio"
    target_key = "label"
    media = AUDIO

    def __init__(
        self,
        source: str | list[str],
        *,
        audio_field: str = "audio",
        label_field: str = "label",
        path_field: str = "path",
        split_field: str = "split",
        multi_label: bool = False,
        class_names: list[str] | None = None,
        batch_size: int = 32,
        num_workers: int | None = None,
        worker_type: WorkerType = "process",
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
        verify: Verify = "decode",
        on_bad_sample: BadSamplePolicy = "raise",
        quarantine: str | None = None,
        manifest: str | None = None,
        strict_fingerprint: bool = False,
        val_list: str | None = None,
        test_list: str | None = None,
        subset: str | None = None,
        revision: str | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: str | None = None,
        predict_source: str | list[str] | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        require("audio", type(self).__name__)
        augment = dict(freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
                       time_mask_width=time_mask_width)
        _check_audio_args(sample_rate, clip_seconds, augment)
        super().__init__(
            source, media_field=audio_field, label_field=label_field, path_field=path_field, split_field=split_field,
            multi_label=multi_label, class_names=class_names, subset=subset, revision=revision,
            storage_options=storage_options, val_fraction=val_fraction, test_fraction=test_fraction,
            max_bad_fraction=max_bad_fraction, verify=verify, on_bad_sample=on_bad_sample, quarantine=quarantine,
            manifest=manifest, strict_fingerprint=strict_fingerprint, cache_dir=cache_dir,
            predict_source=predict_source, batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed, worker_type=worker_type,
        )
        self.augment_kwargs: dict[str, int] = augment
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.num_samples = max(1, round(sample_rate * clip_seconds))
        self.feature_kwargs: dict[str, Any] = dict(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
            top_db=top_db, normalize=normalize,
        )
        self.val_list, self.test_list = val_list, test_list
        self.max_cache_size = max_cache_size
        self._features: dict[str, torch.nn.Module] = {}

    # ----------------------------------------------------------------- the audio specifics
    def _build_dataset(self, source: Source, split: str, pairs: Pairs) -> AudioFileDataset:
        return AudioFileDataset(source, pairs, sample_rate=self.sample_rate, num_samples=self.num_samples,
                                mode="random" if split == "train" else "center", on_bad_sample=self.on_bad_sample,
                                num_classes=self.num_classes)

    def shard_items(self, split: str, locator: Any) -> AudioItems:
        return AudioItems(locator, sample_rate=self.sample_rate, num_samples=self.num_samples,
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
                # Each clip's masks from (seed, epoch, sample): the same whichever batch or resumed run it is in.
                epoch = self.trainer.current_epoch if self.trainer is not None else 0
                indices = batch.get("index")
                seeds = ([derive_seed(self.seed, "specaugment", epoch, int(i)) for i in indices.tolist()]
                         if isinstance(indices, torch.Tensor) else None)
                spec = spec_augment(spec, **self.augment_kwargs, seeds=seeds)
        batch[self.input_key] = spec
        return batch

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_features"] = {}  # device modules are rebuilt where the copy runs
        return state

    # ----------------------------------------------------------------- split lists
    def _listed(self, listing: str) -> set[str]:
        path = Path(listing).expanduser()
        if not path.is_absolute() and not path.is_file() and isinstance(self.source, str):
            path = Path(self.source).expanduser() / listing
        if not path.is_file():
            raise FileNotFoundError(f"split list {listing!r} not found (looked in the working directory and the "
                                    "source folder)")
        return {os.path.normpath(rel) for rel in read_path_list(path)}

    def _split(self, kept: dict[str, Pairs]) -> dict[str, Pairs]:
        # Split lists (Speech Commands' validation_list.txt) take their files first; the rest is
        # split like any other source.
        pool_key = "all" if "all" in kept else "train"
        listed: dict[str, Pairs] = {}
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
        info.update(sample_rate=self.sample_rate, clip_seconds=self.clip_seconds, features=dict(self.feature_kwargs),
                    spec_augment=dict(self.augment_kwargs))
        return info


def _check_audio_args(sample_rate: int, clip_seconds: float, masks: dict[str, int]) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    if clip_seconds <= 0:
        raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
    for name, value in masks.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
