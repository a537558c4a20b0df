"""Decoding, mono mix-down, resampling, crop/pad and bad-file checks of stoker.io.audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchaudio")
sf = pytest.importorskip("soundfile")

from stoker.io import audio as audio_io  # noqa: E402
from stoker.io.audio import (  # noqa: E402
    check_audio,
    crop_or_pad,
    load_clip,
    read_audio,
    resample,
    to_mono,
)


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(clip: torch.Tensor, rate: int) -> float:
    spectrum = torch.fft.rfft(clip).abs()
    return float(spectrum.argmax()) * rate / clip.numel()


# ----------------------------------------------------------------------------- crop / pad
def test_center_crop_keeps_the_middle_and_pads_symmetrically() -> None:
    ramp = torch.arange(10.0)
    assert crop_or_pad(ramp, 4).tolist() == [3.0, 4.0, 5.0, 6.0]
    padded = crop_or_pad(torch.ones(3), 8)
    assert padded.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("total", [1, 7, 16, 17, 100])
def test_random_crop_or_pad_always_has_the_requested_length(total: int) -> None:
    generator = torch.Generator().manual_seed(0)
    ramp = torch.arange(float(total)) + 1
    offsets = set()
    for _ in range(20):
        out = crop_or_pad(ramp, 16, mode="random", generator=generator)
        assert out.shape == (16,)
        kept = out[out > 0]
        assert torch.equal(kept, torch.arange(kept[0].item(), kept[0].item() + len(kept)))  # one contiguous piece
        offsets.add(int(kept[0].item()) if total >= 16 else int((out > 0).nonzero()[0]))
    if total != 16:
        assert len(offsets) > 1, "random mode must draw different windows"


def test_crop_or_pad_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="length must be a positive number of samples, got 0"):
        crop_or_pad(torch.ones(4), 0)
    with pytest.raises(ValueError, match="mode must be 'center' or 'random', got 'left'"):
        crop_or_pad(torch.ones(4), 2, mode="left")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- mono / resample
def test_stereo_file_is_mixed_down_to_the_channel_mean(tmp_path: Path) -> None:
    left, right = sine(300, 16000, 0.5), sine(300, 16000, 0.5, amplitude=0.1)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    waveform, rate = read_audio(path)
    assert waveform.shape == (2, 8000) and rate == 16000
    clip = load_clip(path, sample_rate=16000, num_samples=8000)
    torch.testing.assert_close(clip, torch.from_numpy((left + right) / 2))
    with pytest.raises(ValueError, match=r"expected a waveform \[channels, time\] or \[time\], got shape \(1, 2, 3\)"):
        to_mono(torch.zeros(1, 2, 3))


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_files_at_other_rates_are_resampled_to_the_target(tmp_path: Path, rate: int, suffix: str) -> None:
    path = tmp_path / f"tone{suffix}"
    sf.write(path, sine(440, rate, 1.0), rate, subtype="PCM_16")
    clip = load_clip(path, sample_rate=16000, num_samples=16000)
    assert clip.dtype == torch.float32 and clip.shape == (16000,)
    assert abs(peak_hz(clip, 16000) - 440) <= 2, "the tone must keep its pitch"
    assert 0.4 < float(clip.abs().max()) < 0.6, "resampling must keep the level"


def test_resample_length_and_identity() -> None:
    wave = torch.randn(2, 22050)
    assert resample(wave, 22050, 16000).shape == (2, 16000)
    assert resample(wave, 16000, 16000) is wave
    with pytest.raises(ValueError, match="sample rates must be positive, got 0 -> 16000"):
        resample(wave, 0, 16000)


def test_long_files_decode_only_a_window_at_the_right_place(tmp_path: Path) -> None:
    rate = 8000
    ramp = (np.arange(rate * 10) / (rate * 10)).astype(np.float32)  # 10 s, strictly increasing
    path = tmp_path / "long.wav"
    sf.write(path, ramp, rate, subtype="FLOAT")
    center = load_clip(path, sample_rate=rate, num_samples=rate)
    torch.testing.assert_close(center, torch.from_numpy(ramp[rate * 9 // 2 : rate * 11 // 2]))
    generator = torch.Generator().manual_seed(1)
    starts = set()
    for _ in range(5):
        clip = load_clip(path, sample_rate=rate, num_samples=rate, mode="random", generator=generator)
        start = int(round(float(clip[0]) * rate * 10))
        torch.testing.assert_close(clip, torch.from_numpy(ramp[start : start + rate]))
        starts.add(start)
    assert len(starts) > 1


# ----------------------------------------------------------------------------- bad files
def write_bad_files(folder: Path) -> dict[str, str]:
    """Unusable files of every kind, with the words their reasons must contain."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.flac").write_bytes(b"this is not audio at all" * 10)
    sf.write(folder / "zero.wav", np.zeros((0,), np.float32), 16000)
    nan = sine(200, 16000, 0.2)
    nan[100:103] = np.nan
    sf.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    return {"empty.wav": "empty file", "garbage.flac": "cannot decode", "zero.wav": "zero-length",
            "nan.wav": "3 NaN or infinite"}


def test_check_audio_names_every_kind_of_bad_file(tmp_path: Path) -> None:
    expected = write_bad_files(tmp_path)
    for name, words in expected.items():
        reason = check_audio(tmp_path / name)
        assert reason is not None and words in reason, (name, reason)
    sf.write(tmp_path / "good.wav", sine(200, 16000, 0.2), 16000)
    assert check_audio(tmp_path / "good.wav") is None
    assert "unreadable file" in (check_audio(tmp_path / "missing.wav") or "")


@pytest.mark.skipif(bool(audio_io._TORCHCODEC_AVAILABLE), reason="TorchCodec is installed here")
def test_formats_needing_torchcodec_are_reported_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "clip.m4a").write_bytes(b"\x00" * 64)
    assert check_audio(tmp_path / "clip.m4a") == "this format needs TorchCodec and FFmpeg (pip install torchcodec)"


def test_a_text_file_named_like_audio_is_called_what_it_is_not_a_pipe(tmp_path: Path) -> None:
    (tmp_path / "notes.mp3").write_text("this is not a recording\n")
    reason = check_audio(tmp_path / "notes.mp3") or ""
    assert reason.startswith("not a readable MP3 file") and "pipe" not in reason
