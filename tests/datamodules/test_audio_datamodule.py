"""AudioFolderDataModule: host batches, device features, SpecAugment, splits, bad files and real DDP."""

from __future__ import annotations

import inspect
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchaudio")
sf = pytest.importorskip("soundfile")

from stoker.datamodules import AudioFolderDataModule  # noqa: E402
from stoker.demos import TONE_CLASSES, ToneDataModule, build_audio_tones  # noqa: E402
from stoker.transforms.audio import LogMelFeatures, spec_augment  # noqa: E402
from tests.conftest import REPO, run_script  # noqa: E402
from tests.scripts.ddp_common import assert_two_rank_coverage  # noqa: E402

SMALL = dict(num_workers=0, sample_rate=8000, clip_seconds=0.25, n_fft=256, win_length=200, hop_length=80, n_mels=16,
             freq_mask_width=4, time_mask_width=5)


def write_audio_tree(root: Path, counts: dict[str, int], *, split: str | None = None, seed: int = 0) -> list[Path]:
    """Short tones per class under ``root[/split]/<class>/``, at mixed rates, lengths, formats and channels."""
    rng = np.random.default_rng(seed)
    paths = []
    for label, (name, count) in enumerate(counts.items()):
        folder = (root / split if split else root) / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rate = [8000, 16000, 22050][i % 3]
            t = np.arange(int(rate * rng.uniform(0.15, 0.4))) / rate
            clip = (0.5 * np.sin(2 * np.pi * (300 + 400 * label) * t)).astype(np.float32)
            if i % 4 == 1:
                clip = np.stack([clip, clip], axis=1)
            path = folder / f"{name}_{i:03d}{'.flac' if i % 2 else '.wav'}"
            sf.write(path, clip, rate)
            paths.append(path)
    return paths


@pytest.fixture
def audio_root(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    write_audio_tree(root, {"low": 9, "mid": 8, "high": 10})
    return root


def test_classes_are_known_after_init_without_reading_audio(tmp_path: Path) -> None:
    for rel in ("dog/1.wav", "cat/1.wav", "_background_noise_/x.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"not decoded in __init__")
    dm = AudioFolderDataModule(str(tmp_path), **SMALL)
    assert dm.class_names == ["cat", "dog"] and dm.num_classes == 2
    demo = ToneDataModule(str(tmp_path / "not_yet_written"))
    assert demo.class_names == TONE_CLASSES and not (tmp_path / "not_yet_written").exists()
    assert "demo" not in inspect.signature(AudioFolderDataModule).parameters, "demos live in stoker.demos"


def test_host_batches_are_fixed_length_mono_float(audio_root: Path) -> None:
    dm = AudioFolderDataModule(str(audio_root), batch_size=4, val_fraction=0.25, **SMALL)
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 27 and not dm.bad_files
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batch = next(iter(loader))
        assert batch["audio"].dtype == torch.float32 and batch["audio"].shape == (4, 2000)
        assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4,)
    assert dm.train_labels() == [y for _, y in dm.splits["train"]]
    assert Counter(dm.train_labels() + dm.datasets["val"].labels) == Counter({0: 10, 1: 9, 2: 8})


def test_device_features_equal_the_cpu_transform(audio_root: Path) -> None:
    dm = AudioFolderDataModule(str(audio_root), batch_size=4, **SMALL)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    expected = LogMelFeatures(8000, n_fft=256, win_length=200, hop_length=80, n_mels=16)(batch["audio"])
    out = dm.device_transform(dict(batch), training=False)
    assert out["audio"].shape == (4, 1, 16, 26) and out["audio"].dtype == torch.float32
    torch.testing.assert_close(out["audio"], expected)
    assert dm.device_transform(out, training=False)["audio"] is out["audio"], "a featurized batch is left alone"


@pytest.mark.cuda
def test_features_on_cuda_match_the_cpu(audio_root: Path) -> None:
    dm = AudioFolderDataModule(str(audio_root), batch_size=8, **SMALL)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    on_cpu = dm.device_transform({"audio": batch["audio"].clone()}, training=False)["audio"]
    on_gpu = dm.device_transform({"audio": batch["audio"].cuda()}, training=False)["audio"]
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, atol=1e-3, rtol=1e-3)


def test_spec_augment_masks_only_in_training(audio_root: Path) -> None:
    dm = AudioFolderDataModule(str(audio_root), batch_size=8, **{**SMALL, "time_mask_width": 20, "freq_masks": 0})
    dm.setup("fit")
    audio = next(iter(dm.val_dataloader()))["audio"]
    clean = dm.device_transform({"audio": audio.clone()}, training=False)["audio"]
    torch.manual_seed(0)
    masked = dm.device_transform({"audio": audio.clone()}, training=True)["audio"]
    changed = masked != clean
    assert changed.any(), "training must mask something"
    assert torch.all(masked[changed] == 0), "masks fill with the (zero) mean of the normalized spectrogram"
    # Time masks cover whole frames (every mel band of a frame), independently per clip.
    frames_masked = changed.any(dim=2).squeeze(1)
    assert torch.equal(frames_masked, changed.all(dim=2).squeeze(1))
    assert len({tuple(row.nonzero().flatten().tolist()) for row in frames_masked}) > 1
    assert torch.equal(dm.device_transform({"audio": audio.clone()}, training=False)["audio"], clean)


def test_spec_augment_clips_widths_and_validates() -> None:
    spec = torch.randn(2, 1, 4, 5)
    assert spec_augment(spec, freq_mask_width=50, time_mask_width=50).shape == spec.shape
    with pytest.raises(ValueError, match="time_masks must be >= 0, got -1"):
        spec_augment(spec, time_masks=-1)
    with pytest.raises(ValueError, match=r"expected spectrograms \[N, C, n_mels, frames\], got shape \(2, 5\)"):
        spec_augment(torch.zeros(2, 5))


def test_bad_files_are_excluded_and_reported(audio_root: Path) -> None:
    (audio_root / "low" / "empty.wav").write_bytes(b"")
    (audio_root / "mid" / "broken.flac").write_bytes(b"junk" * 50)
    sf.write(audio_root / "mid" / "silent.wav", np.zeros((0,), np.float32), 8000)
    nan = np.full(800, np.nan, np.float32)
    sf.write(audio_root / "high" / "nan.wav", nan, 8000, subtype="FLOAT")
    dm = AudioFolderDataModule(str(audio_root), max_bad_fraction=0.2, **SMALL)
    with pytest.warns(UserWarning, match="excluded 4 unusable audio file"):
        dm.setup("fit")
    assert dm.bad_files == {
        "high/nan.wav": "800 NaN or infinite sample(s)",
        "low/empty.wav": "empty file (0 bytes)",
        "mid/broken.flac": dm.bad_files["mid/broken.flac"],
        "mid/silent.wav": "zero-length audio (no samples)",
    }
    assert dm.bad_files["mid/broken.flac"].startswith("cannot decode")
    used = {rel for pairs in dm.splits.values() for rel, _ in pairs}
    assert not used & set(dm.bad_files) and len(used) == 27
    assert {"path": "low/empty.wav", "reason": "empty file (0 bytes)"} in dm.describe()["bad_files"]
    strict = AudioFolderDataModule(str(audio_root), max_bad_fraction=0.05, **SMALL)
    with pytest.raises(ValueError, match=r"4 of 31 audio files under .* \(12.9%\) are unusable, more than "
                                         r"max_bad_fraction=5.0%(.|\n)*low/empty.wav: empty file"):
        strict.setup("fit")


def test_presplit_folders_and_split_lists(tmp_path: Path) -> None:
    presplit = tmp_path / "presplit"
    write_audio_tree(presplit, {"a": 4, "b": 3}, split="train")
    write_audio_tree(presplit, {"a": 2, "b": 2}, split="val", seed=1)
    dm = AudioFolderDataModule(str(presplit), **SMALL)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [7, 4, 0]
    assert all(rel.startswith("val/") for rel, _ in dm.splits["val"])

    flat = tmp_path / "flat"
    write_audio_tree(flat, {"a": 5, "b": 5})
    (flat / "validation_list.txt").write_text("a/a_000.wav\nb/b_001.flac\n")
    (flat / "testing_list.txt").write_text("a/a_002.wav\n")
    listed = AudioFolderDataModule(str(flat), val_list="validation_list.txt", test_list="testing_list.txt", **SMALL)
    listed.setup("fit")
    assert [rel for rel, _ in listed.splits["val"]] == ["a/a_000.wav", "b/b_001.flac"]
    assert [rel for rel, _ in listed.splits["test"]] == ["a/a_002.wav"]
    assert len(listed.splits["train"]) == 7
    missing = AudioFolderDataModule(str(flat), val_list="nope.txt", **SMALL)
    with pytest.raises(FileNotFoundError, match="split list 'nope.txt' not found"):
        missing.setup("fit")


def test_arguments_are_validated(audio_root: Path) -> None:
    with pytest.raises(ValueError, match="clip_seconds must be positive, got 0"):
        AudioFolderDataModule(str(audio_root), clip_seconds=0)
    with pytest.raises(ValueError, match="sample_rate must be a positive number of Hz, got -1"):
        AudioFolderDataModule(str(audio_root), sample_rate=-1)
    with pytest.raises(ValueError, match="freq_mask_width must be >= 0, got -2"):
        AudioFolderDataModule(str(audio_root), freq_mask_width=-2)
    with pytest.raises(ValueError, match="win_length \\(600\\) must not exceed n_fft \\(512\\)"):
        LogMelFeatures(16000, win_length=600)


def test_pickles_without_device_modules(audio_root: Path) -> None:
    dm = AudioFolderDataModule(str(audio_root), **SMALL)
    dm.setup("fit")
    dm.features_on(torch.device("cpu"))
    copy = pickle.loads(pickle.dumps(dm))
    assert copy._features == {} and copy.splits == dm.splits


def test_demo_dataset_is_built_once_with_varied_files(tmp_path: Path) -> None:
    root = build_audio_tones(tmp_path / "tones", clips_per_class=5)
    files = sorted(root.rglob("*.*"))
    files = [f for f in files if f.suffix in (".wav", ".flac")]
    assert len(files) == 5 * len(TONE_CLASSES)
    infos = [sf.info(str(f)) for f in files]
    assert len({i.samplerate for i in infos}) > 1 and {i.channels for i in infos} == {1, 2}
    mtime = files[0].stat().st_mtime_ns
    build_audio_tones(tmp_path / "tones", clips_per_class=5)
    assert files[0].stat().st_mtime_ns == mtime, "a second build with the same settings writes nothing"
    class FiveTones(ToneDataModule):
        clips_per_class = 5

    dm = FiveTones(str(tmp_path / "tones"), num_workers=0)
    dm.setup("fit")  # without a Trainer: setup builds what prepare_data would have
    assert sum(len(p) for p in dm.splits.values()) == 5 * len(TONE_CLASSES) and not dm.bad_files


@pytest.mark.ddp
def test_two_ranks_cover_the_splits_with_equal_batch_counts(tmp_path: Path) -> None:
    root = tmp_path / "audio"
    write_audio_tree(root, {"a": 13, "b": 11, "c": 13})  # 37 clips: no split divides evenly by 2 ranks x 4
    result = run_script(REPO / "tests" / "scripts" / "ddp_audio.py", str(root), "--batch-size", "4")
    ranks = result["ranks"]
    assert len(ranks) == 2 and result["bad_files"] == {}
    assert all(r["notes"] == ["torch.float32 [1, 16, 26]"] for r in ranks), "spectrograms are made on the device"
    assert_two_rank_coverage(result, batch_size=4)


def test_stoker_split_on_a_speech_commands_tree_writes_a_manifest_the_datamodule_accepts(tmp_path: Path) -> None:
    # stoker split used its own audio indexer that took _background_noise_ for a class, so the audio
    # DataModule refused its manifest; both now index with the one audio media description.
    from stoker.commands.split import main as split

    root = tmp_path / "speech"
    write_audio_tree(root, {"no": 6, "yes": 6, "_background_noise_": 2})
    assert split([str(root), "--val", "0.3", "--out", str(tmp_path / "splits.csv")]) == 0
    rows = (tmp_path / "splits.csv").read_text()
    assert "_background_noise_" not in rows
    dm = AudioFolderDataModule(str(root), manifest=str(tmp_path / "splits.csv"), **SMALL)
    dm.setup("fit")
    assert dm.class_names == ["no", "yes"] and sum(len(p) for p in dm.splits.values()) == 12
