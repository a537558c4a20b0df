"""Audio decoding on the CPU: read, mix down to mono, resample, crop or pad to a fixed length.

Framework-free (plain PyTorch, NumPy and ``soundfile``): the audio DataModule's workers call
:func:`load_clip` per file, and :func:`check_audio` is the audio media's per-file check
(:data:`stoker.data.media.AUDIO`) that runs over a whole tree before training.

WAV and FLAC (and OGG/MP3 with libsndfile >= 1.1) decode through ``soundfile``, which bundles
libsndfile in its wheel and needs no system package. Other containers (M4A, AAC, Opus, WebM)
decode through TorchCodec when it and FFmpeg are installed; without it such files are reported
as bad with a message naming what to install, never silently skipped.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from stoker._imports import _TORCHCODEC_AVAILABLE

SOUNDFILE_EXTENSIONS: frozenset[str] = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif"})
TORCHCODEC_EXTENSIONS: frozenset[str] = frozenset({".m4a", ".aac", ".opus", ".webm", ".mp4", ".wma"})
AUDIO_EXTENSIONS: frozenset[str] = SOUNDFILE_EXTENSIONS | TORCHCODEC_EXTENSIONS

CropMode = Literal["random", "center"]


class AudioDecodeError(ValueError):
    """A file that cannot be used as audio; ``reason`` says why in a few words."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def is_audio_file(path: str | os.PathLike[str]) -> bool:
    """Whether a path has one of :data:`AUDIO_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in AUDIO_EXTENSIONS


# ----------------------------------------------------------------------------- decoding
def _read_soundfile(path: Path, start: int, frames: int) -> tuple[torch.Tensor, int]:
    import soundfile as sf

    with sf.SoundFile(path) as handle:
        rate = int(handle.samplerate)
        if start > 0:
            handle.seek(start)
        data = handle.read(frames=frames, dtype="float32", always_2d=True)
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def _read_torchcodec(path: Path) -> tuple[torch.Tensor, int]:
    from torchcodec.decoders import AudioDecoder

    samples = AudioDecoder(str(path)).get_all_samples()
    return samples.data.float(), int(samples.sample_rate)


def _frames_of(path: Path) -> tuple[int, int] | None:
    """``(frames, sample_rate)`` from the header, or ``None`` when soundfile cannot read it."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError):
        return None
    return int(info.frames), int(info.samplerate)


def read_audio(path: str | os.PathLike[str], *, start: int = 0, frames: int = -1) -> tuple[torch.Tensor, int]:
    """Decode ``frames`` samples (all with ``-1``) from ``start``: float32 ``[channels, time]`` and the rate.

    Raises:
        AudioDecodeError: The file is empty, unreadable or not audio, or needs TorchCodec.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise AudioDecodeError(path, "empty file (0 bytes)")
    except OSError as err:
        raise AudioDecodeError(path, f"unreadable file ({err.strerror})") from err
    if path.suffix.lower() not in TORCHCODEC_EXTENSIONS:
        try:
            return _read_soundfile(path, start, frames)
        except Exception as err:  # libsndfile raises several types (LibsndfileError, RuntimeError, TypeError)
            if not _TORCHCODEC_AVAILABLE:
                raise AudioDecodeError(path, _soundfile_reason(path, err)) from err
    if not _TORCHCODEC_AVAILABLE:
        raise AudioDecodeError(path, "this format needs TorchCodec and FFmpeg (pip install torchcodec)")
    try:
        waveform, rate = _read_torchcodec(path)
    except Exception as err:  # FFmpeg failures surface as RuntimeError or ValueError
        raise AudioDecodeError(path, f"cannot decode ({type(err).__name__}: {err})") from err
    stop = None if frames < 0 else start + frames
    return waveform[:, start:stop], rate


def _soundfile_reason(path: Path, err: Exception) -> str:
    """Why libsndfile refused a file, in words that fit: for a regular file whose content is not the audio its
    name says, libsndfile claims it "does not exist or is not a regular file (possibly a pipe?)"."""
    text = str(err)
    if "possibly a pipe" in text and path.is_file():
        kind = path.suffix.lstrip(".").upper() or "audio"
        return f"not a readable {kind} file (its content is not {kind} audio that libsndfile can decode)"
    return f"cannot decode ({type(err).__name__}: {text})"


# ----------------------------------------------------------------------------- signal ops
def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of ``[channels, time]`` (or pass ``[time]`` through) into ``[time]``."""
    if waveform.ndim == 1:
        return waveform
    if waveform.ndim != 2:
        raise ValueError(f"expected a waveform [channels, time] or [time], got shape {tuple(waveform.shape)}")
    return waveform.mean(dim=0)


@functools.lru_cache(maxsize=16)
def _resampler(orig_freq: int, new_freq: int) -> torch.nn.Module:
    import torchaudio

    # The Resample module computes its windowed-sinc kernel once; the functional form recomputes
    # it on every call, which costs more than the convolution for one-second clips.
    return torchaudio.transforms.Resample(orig_freq, new_freq)


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Resample ``[..., time]`` from ``orig_freq`` to ``new_freq`` Hz (band-limited sinc interpolation)."""
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    with torch.no_grad():
        return _resampler(int(orig_freq), int(new_freq))(waveform)


def _offset(slack: int, mode: CropMode, generator: torch.Generator | None) -> int:
    if mode == "center" or slack == 0:
        return slack // 2
    return int(torch.randint(0, slack + 1, (1,), generator=generator))


def crop_or_pad(
    waveform: torch.Tensor, length: int, *, mode: CropMode = "center", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut or zero-pad ``[..., time]`` to exactly ``length`` samples.

    ``"center"`` keeps the middle (evaluation: the same clip every epoch) and centers a short
    signal in silence; ``"random"`` takes a uniformly drawn window and places a short signal at
    a random offset, which is a free time-shift augmentation in training.
    """
    if length < 1:
        raise ValueError(f"length must be a positive number of samples, got {length}")
    if mode not in ("center", "random"):
        raise ValueError(f"mode must be 'center' or 'random', got {mode!r}")
    total = waveform.shape[-1]
    offset = _offset(abs(total - length), mode, generator)
    if total >= length:
        return waveform[..., offset : offset + length]
    pad = (offset, length - total - offset)
    return torch.nn.functional.pad(waveform, pad)


def load_clip(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    num_samples: int,
    mode: CropMode = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Decode one file into a mono float32 clip of exactly ``num_samples`` at ``sample_rate``.

    For a file much longer than the clip, only a window around the chosen crop is decoded (seek
    in the source rate, then resample), so long recordings cost what the clip costs.

    Raises:
        AudioDecodeError: The file cannot be decoded.
    """
    path = Path(path)
    header = _frames_of(path) if path.suffix.lower() in SOUNDFILE_EXTENSIONS else None
    start, frames = 0, -1
    if header is not None:
        total, rate = header
        # A margin of source samples on each side keeps the resampling filter's edges out of the clip.
        needed = -(-num_samples * rate // sample_rate) + 64
        if total > needed + 128:
            start, frames = _offset(total - needed, mode, generator), needed
    waveform, rate = read_audio(path, start=start, frames=frames)
    mono = resample(to_mono(waveform), rate, sample_rate)
    return crop_or_pad(mono, num_samples, mode="center" if frames > 0 else mode, generator=generator).contiguous()


def load_clip_bytes(
    data: bytes,
    *,
    sample_rate: int,
    num_samples: int,
    mode: CropMode = "center",
    generator: torch.Generator | None = None,
    name: str = "<bytes>",
) -> torch.Tensor:
    """Decode an audio file's encoded bytes (e.g. read from a shard) into a clip, as :func:`load_clip` does a file.

    The whole recording is decoded (its bytes are in memory already), mixed down to mono,
    resampled to ``sample_rate`` and cropped or padded to ``num_samples``.

    Raises:
        AudioDecodeError: The bytes are empty or not decodable audio (``name`` says whose).
    """
    if len(data) == 0:
        raise AudioDecodeError(name, "empty file (0 bytes)")
    try:
        waveform, rate = _read_soundfile(io.BytesIO(data), 0, -1)  # type: ignore[arg-type]
    except Exception as err:  # libsndfile raises several types (LibsndfileError, RuntimeError, TypeError)
        if not _TORCHCODEC_AVAILABLE:
            raise AudioDecodeError(name, f"cannot decode ({type(err).__name__}: {err})") from err
        try:
            from torchcodec.decoders import AudioDecoder

            samples = AudioDecoder(data).get_all_samples()
        except Exception as codec_err:  # FFmpeg failures surface as RuntimeError or ValueError
            raise AudioDecodeError(name, f"cannot decode ({type(codec_err).__name__}: {codec_err})") from codec_err
        waveform, rate = samples.data.float(), int(samples.sample_rate)
    problem = audio_problem(waveform, rate)
    if problem is not None:
        raise AudioDecodeError(name, problem)
    mono = resample(to_mono(waveform), rate, sample_rate)
    return crop_or_pad(mono, num_samples, mode=mode, generator=generator).contiguous()


# ----------------------------------------------------------------------------- checking
def audio_problem(waveform: torch.Tensor, rate: int) -> str | None:
    """Why decoded audio is unusable (``None`` for finite, non-empty samples at a positive rate)."""
    if rate <= 0:
        return f"invalid sample rate {rate}"
    if waveform.numel() == 0:
        return "zero-length audio (no samples)"
    if not bool(torch.isfinite(waveform).all()):
        count = int((~torch.isfinite(waveform)).sum())
        return f"{count} NaN or infinite sample(s)"
    return None


def check_audio(path: str | os.PathLike[str]) -> str | None:
    """Why a file is unusable as audio (``None`` when it decodes to finite, non-empty samples)."""
    try:
        waveform, rate = read_audio(path)
    except AudioDecodeError as err:
        return err.reason
    return audio_problem(waveform, rate)


def check_audio_bytes(data: bytes, name: str = "<bytes>") -> str | None:
    """Why encoded bytes are unusable as audio (``None`` when they decode to finite, non-empty samples)."""
    try:
        load_clip_bytes(data, sample_rate=16000, num_samples=1, name=name)
    except AudioDecodeError as err:
        return err.reason
    return None
