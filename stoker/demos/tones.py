"""An offline audio dataset generated at first use (tones, chirps and noise bursts), and its DataModule.

Six classes a small CNN can learn from log-mel spectrograms in a minute on a CPU, written as
``root/<class>/<n>.wav|flac`` with ``soundfile`` (no network, no system packages). The clips
deliberately vary in what the audio DataModule must normalize away: sample rate (8, 16, 22.05
and 44.1 kHz), channel count (some stereo), length (0.6 to 1.6 s), level, start offset and
background noise, and the format alternates between WAV and FLAC.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stoker.datamodules.audio_folder import AudioFolderDataModule
from stoker.demos.base import BuiltOnFirstUse

TONE_CLASSES: list[str] = ["chirp_down", "chirp_up", "noise_burst", "tone_high", "tone_low", "two_tones"]
_RATES: tuple[int, ...] = (8000, 16000, 22050, 44100)
_MARKER = ".stoker-audio-tones.json"


def _tone(t: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return np.sin(2 * np.pi * rng.uniform(low, high) * t + rng.uniform(0, 2 * np.pi))


def _chirp(t: np.ndarray, rng: np.random.Generator, up: bool) -> np.ndarray:
    f0, f1 = rng.uniform(200, 500), rng.uniform(1800, 3200)
    if not up:
        f0, f1 = f1, f0
    duration = max(float(t[-1]), 1e-3)
    # Instantaneous frequency sweeps linearly from f0 to f1; the phase is its integral.
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * duration))
    return np.sin(phase)


def _noise_burst(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    signal = np.zeros_like(t)
    n = len(t)
    for _ in range(int(rng.integers(2, 5))):
        width = int(n * rng.uniform(0.05, 0.15))
        start = int(rng.integers(0, max(1, n - width)))
        signal[start : start + width] = rng.normal(0, 1, width) * np.hanning(width)
    return signal


_GENERATORS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "chirp_down": lambda t, rng: _chirp(t, rng, up=False),
    "chirp_up": lambda t, rng: _chirp(t, rng, up=True),
    "noise_burst": _noise_burst,
    "tone_high": lambda t, rng: _tone(t, rng, 1500, 2500),
    "tone_low": lambda t, rng: _tone(t, rng, 150, 400),
    "two_tones": lambda t, rng: 0.5 * (_tone(t, rng, 400, 700) + _tone(t, rng, 900, 1300)),
}


def synthesize_clip(name: str, rng: np.random.Generator, rate: int, seconds: float) -> np.ndarray:
    """One float32 clip ``[time]`` of class ``name`` at ``rate`` Hz, with level and noise varied."""
    if name not in _GENERATORS:
        raise ValueError(f"unknown demo class {name!r}; expected one of {TONE_CLASSES}")
    t = np.arange(int(rate * seconds)) / rate
    signal = _GENERATORS[name](t, rng)
    fade = min(len(t) // 10, int(0.01 * rate))  # 10 ms fades avoid clicks that smear every class
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    signal = signal * rng.uniform(0.2, 0.8) + rng.normal(0, rng.uniform(0.002, 0.02), len(t))
    return np.clip(signal, -1.0, 1.0).astype(np.float32)


def build_audio_tones(root: str | os.PathLike[str], *, clips_per_class: int = 60, seed: int = 0) -> Path:
    """Write the demo dataset under ``root`` once; later calls with the same settings return at once.

    Args:
        root: Target directory (created).
        clips_per_class: Clips written per class.
        seed: Seeds every random draw, so two builds are identical.

    Raises:
        ValueError: ``clips_per_class`` is not positive.
    """
    import soundfile as sf

    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be >= 1, got {clips_per_class}")
    root_path = Path(root).expanduser()
    settings = {"clips_per_class": clips_per_class, "seed": seed, "version": 1}
    marker = root_path / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return root_path
    rng = np.random.default_rng(seed)
    for name in TONE_CLASSES:
        folder = root_path / name
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.*"):  # written by an earlier call with other settings
            stale.unlink()
        for number in range(clips_per_class):
            rate = int(rng.choice(_RATES))
            clip = synthesize_clip(name, rng, rate, float(rng.uniform(0.6, 1.6)))
            if number % 5 == 0:  # some stereo files, with the channels at different levels
                clip = np.stack([clip, clip * rng.uniform(0.3, 1.0)], axis=1)
            suffix = ".flac" if number % 2 else ".wav"
            sf.write(folder / f"{name}_{number:04d}{suffix}", clip, rate, subtype="PCM_16")
    marker.write_text(json.dumps(settings))
    return root_path


class ToneDataModule(BuiltOnFirstUse, AudioFolderDataModule):
    """:class:`~stoker.datamodules.AudioFolderDataModule` on the tones, chirps and noise written on first use.

    Everything but the data is the production audio path, with the same arguments: the decode
    scan, the seeded split, CPU decoding with resampling and cropping, log-mel and SpecAugment on
    the device. ``root`` is where the clips are written (:attr:`clips_per_class` per class, from a
    fixed data seed: the run's ``seed`` re-splits the clips, it does not rewrite them). Without
    ``class_names`` the class list is :data:`TONE_CLASSES`, so ``num_classes`` is known before the
    files exist.

    Example::

        dm = ToneDataModule("data/audio_tones", batch_size=32, n_mels=64)
    """

    clips_per_class = 60

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = list(TONE_CLASSES)
        return self._class_names

    def build(self) -> None:
        build_audio_tones(str(self.root), clips_per_class=self.clips_per_class)
