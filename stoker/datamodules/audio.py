"""Audio-folder DataModule: decode on the CPU, log-mel and SpecAugment batched on the device."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from stoker._imports import require
from stoker.audio_io import CropMode, audio_class_names, find_bad_audio, index_audio_folder, load_clip
from stoker.datamodules.base import StokerDataModule
from stoker.image_folder import FolderIndex, read_path_list, scan_cache_path
from stoker.loader import available_cores
from stoker.splits import stratified_split, validate_fractions


class AudioFileDataset(Dataset):
    """Audio files and labels; items are ``{"audio": float32 [T], "label": int, "index": int}``.

    Every item is mono, ``sample_rate`` Hz and exactly ``num_samples`` long: a random crop (or a
    random placement in silence) with ``mode="random"``, the center with ``mode="center"``.
    """

    def __init__(
        self, root: Path, samples: list[tuple[str, int]], *, sample_rate: int, num_samples: int, mode: CropMode
    ) -> None:
        self.root = root
        self.samples = samples
        self.sample_rate = sample_rate
        self.num_samples = num_samples
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        relative, label = self.samples[index]
        clip = load_clip(self.root / relative, sample_rate=self.sample_rate, num_samples=self.num_samples,
                         mode=self.mode)
        return {"audio": clip, "label": label, "index": index}

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order (no file is read)."""
        return [label for _, label in self.samples]


class AudioFolderDataModule(StokerDataModule):
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
    folders, the split is a seeded per-class hash of each relative path (:mod:`stoker.splits`),
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
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        val_list: A file (relative to ``root`` or absolute) listing the validation files, one per line.
        test_list: Same for the test files.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        demo: Write the offline demo dataset (:mod:`stoker.demo_audio`) under ``root`` at first use.
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
        quarantine: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        class_names: list[str] | None = None,
        demo: bool = False,
        cache_dir: str | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
                         persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed)
        require("audio", "AudioFolderDataModule")
        validate_fractions(val_fraction, test_fraction)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        if clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if verify not in ("decode", "none"):
            raise ValueError(f"verify must be 'decode' or 'none', got {verify!r}")
        for name, value in (("freq_masks", freq_masks), ("freq_mask_width", freq_mask_width),
                            ("time_masks", time_masks), ("time_mask_width", time_mask_width)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.root = root
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.num_samples = max(1, round(sample_rate * clip_seconds))
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.feature_kwargs: dict[str, Any] = dict(
            n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=n_mels, f_min=f_min, f_max=f_max,
            top_db=top_db, normalize=normalize,
        )
        self.augment_kwargs: dict[str, int] = dict(
            freq_masks=freq_masks, freq_mask_width=freq_mask_width, time_masks=time_masks,
            time_mask_width=time_mask_width,
        )
        self.max_bad_fraction = max_bad_fraction
        self.verify = verify
        self.quarantine = quarantine
        self.val_list = val_list
        self.test_list = test_list
        self.demo = demo
        self.cache_dir = cache_dir
        if demo and class_names is None:
            from stoker.demo_audio import TONE_CLASSES

            class_names = TONE_CLASSES  # the folders may not exist before prepare_data writes them
        self._class_names = list(class_names) if class_names is not None else None
        self.bad_files: dict[str, str] = {}
        self.quarantined: list[str] = []
        self.splits: dict[str, list[tuple[str, int]]] = {}
        self.datasets: dict[str, AudioFileDataset] = {}
        self._features: dict[str, torch.nn.Module] = {}

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = audio_class_names(self.root)
        return self._class_names

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Write the demo data when asked, then decode-check every file once per node."""
        self._build_demo()
        if self.verify == "decode":
            self._scan(index_audio_folder(self.root, self.class_names))

    def setup(self, stage: str | None = None) -> None:
        """Index the tree, exclude bad and quarantined files, split, and build the datasets."""
        if self.datasets:
            return
        self._build_demo()  # without a Trainer, prepare_data may never have run
        index = index_audio_folder(self.root, self.class_names)
        all_files = [rel for pairs in index.files.values() for rel, _ in pairs]
        excluded = read_path_list(self.quarantine) if self.quarantine else set()
        self.quarantined = sorted(rel for rel in all_files if rel in excluded)
        self.bad_files = self._scan(index) if self.verify == "decode" else {}
        self._check_bad_fraction(len(all_files))
        drop = excluded | set(self.bad_files)
        kept = {split: [(rel, y) for rel, y in pairs if rel not in drop] for split, pairs in index.files.items()}
        self.splits = self._split(kept)
        if not self.splits["train"]:
            raise ValueError(f"no training audio left under {self.root!r} after the split and exclusions")
        self.datasets = {
            split: AudioFileDataset(index.root, pairs, sample_rate=self.sample_rate, num_samples=self.num_samples,
                                    mode="random" if split == "train" else "center")
            for split, pairs in self.splits.items()
        }
        self._report()

    def train_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["test"], train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.make_loader(self.datasets["test"] or self.datasets["val"], train=False)

    def train_labels(self) -> list[int]:
        """Labels of the training split in dataset order (available after ``setup``)."""
        return self.datasets["train"].labels

    # ----------------------------------------------------------------- device-side work
    def features_on(self, device: torch.device) -> torch.nn.Module:
        """The log-mel module on ``device`` (built once per device; the filter bank stays there)."""
        key = str(device)
        if key not in self._features:
            from stoker.audio_features import LogMelFeatures

            self._features[key] = LogMelFeatures(self.sample_rate, **self.feature_kwargs).to(device)
        return self._features[key]

    def device_transform(self, batch: Any, *, training: bool) -> Any:
        """Waveforms ``[N, T]`` to log-mel ``[N, 1, n_mels, frames]``; SpecAugment masks only when ``training``."""
        if not isinstance(batch, dict):
            return batch
        audio = batch.get(self.input_key)
        if not isinstance(audio, torch.Tensor) or audio.ndim != 2:
            return batch  # already featurized (a second call) or not audio: leave it alone
        from stoker.audio_features import spec_augment

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
    def _build_demo(self) -> None:
        if self.demo:
            from stoker.demo_audio import build_audio_tones

            build_audio_tones(self.root)  # fixed data seed: changing the split seed must not rewrite the files

    def _scan(self, index: FolderIndex) -> dict[str, str]:
        relpaths = [rel for pairs in index.files.values() for rel, _ in pairs]
        cache = scan_cache_path(index.root, self.cache_dir)
        return find_bad_audio(index.root, relpaths, num_workers=min(8, available_cores()),
                              cache_path=cache.with_name(cache.stem + ".audio.json"))

    def _check_bad_fraction(self, total: int) -> None:
        if not self.bad_files:
            return
        fraction = len(self.bad_files) / max(1, total)
        if fraction > self.max_bad_fraction:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in list(self.bad_files.items())[:10])
            raise ValueError(
                f"{len(self.bad_files)} of {total} audio files under {self.root!r} ({fraction:.1%}) are unusable, "
                f"more than max_bad_fraction={self.max_bad_fraction:.1%}. First ones:\n{listed}\n"
                "Fix or remove them, or raise max_bad_fraction to train without them."
            )

    def _listed(self, listing: str) -> set[str]:
        path = Path(listing).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = Path(self.root).expanduser() / listing
        if not path.is_file():
            raise FileNotFoundError(f"split list {listing!r} not found (looked in the working directory and root)")
        return {os.path.normpath(rel) for rel in read_path_list(path)}

    def _split(self, kept: dict[str, list[tuple[str, int]]]) -> dict[str, list[tuple[str, int]]]:
        pool = kept["all"] if "all" in kept else kept["train"]
        out: dict[str, list[tuple[str, int]]] = {split: kept[split] for split in ("val", "test") if split in kept}
        for split, listing in (("val", self.val_list), ("test", self.test_list)):
            if listing:
                names = self._listed(listing)
                out[split] = out.get(split, []) + [pair for pair in pool if pair[0] in names]
                pool = [pair for pair in pool if pair[0] not in names]
        need_val = "val" not in out and self.val_fraction > 0
        need_test = "test" not in out and self.test_fraction > 0
        if need_val or need_test:
            parts = stratified_split(
                [rel for rel, _ in pool], [y for _, y in pool], seed=self.seed,
                val_fraction=self.val_fraction if need_val else 0.0,
                test_fraction=self.test_fraction if need_test else 0.0,
            )
            for split in ("val", "test"):
                out.setdefault(split, [pool[i] for i in parts[split]])
            pool = [pool[i] for i in parts["train"]]
        return {"train": pool, "val": out.get("val", []), "test": out.get("test", [])}

    def _report(self) -> None:
        sizes = ", ".join(f"{split} {len(pairs)}" for split, pairs in self.splits.items())
        rank_zero_info(f"{type(self).__name__}: {len(self.class_names)} classes; {sizes}")
        if self.bad_files:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in self.bad_files.items())
            rank_zero_warn(f"excluded {len(self.bad_files)} unusable audio file(s) under {self.root!r}:\n{listed}")
        if self.quarantined:
            rank_zero_info(f"left out {len(self.quarantined)} quarantined file(s) listed in {self.quarantine!r}")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            root=os.fspath(self.root),
            sample_rate=self.sample_rate,
            clip_seconds=self.clip_seconds,
            features=dict(self.feature_kwargs),
            spec_augment=dict(self.augment_kwargs),
            split_sizes={split: len(pairs) for split, pairs in self.splits.items()},
            bad_files=[{"path": rel, "reason": reason} for rel, reason in self.bad_files.items()],
            quarantined=self.quarantined,
        )
        return info
