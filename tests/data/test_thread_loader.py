"""Threads instead of worker processes: the same tensors, the same resume, per-thread attribution, bad samples."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stoker.datamodules import AudioDataModule, ImageDataModule
from tests.conftest import encode_image, natural_image, write_image_tree

ODD_FORMATS = [("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("WEBP", None),
               ("GIF", "P"), ("BMP", None), ("TIFF", None)]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos in odd formats and modes beside plain JPEGs, under two classes."""
    root = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        folder = root / label
        folder.mkdir()
        for number, (fmt, mode) in enumerate(ODD_FORMATS + [("JPEG", None)] * 6):
            data = encode_image(natural_image(rng, int(rng.integers(20, 40)), int(rng.integers(20, 40))), fmt, mode)
            (folder / f"{number:02d}.{fmt.lower()}").write_bytes(data)
        buffer = io.BytesIO()  # a 16-bit PNG
        Image.fromarray(natural_image(rng, 24, 24)[..., 0].astype(np.uint16) * 257).save(buffer, "PNG")
        (folder / "sixteen.png").write_bytes(buffer.getvalue())
    return root


def _dm(root: Path, worker_type: str, workers: int, **kwargs: object) -> ImageDataModule:
    return ImageDataModule(str(root), batch_size=4, num_workers=workers, worker_type=worker_type,  # type: ignore[arg-type]
                           image_size=16, val_fraction=0.25, **kwargs)  # type: ignore[arg-type]


def _epoch(dm: ImageDataModule) -> list[tuple[list[int], torch.Tensor, list[list[str]]]]:
    dm.setup("fit")
    return [(b["index"].tolist(), b["image"], b.get("skipped", [])) for b in dm.train_dataloader()]


def test_four_threads_give_the_tensors_of_worker_processes_and_of_the_main_process(zoo: Path) -> None:
    modules = {}
    for worker_type, workers in (("thread", 4), ("process", 2), ("process", 0)):
        modules[(worker_type, workers)] = dm = _dm(zoo, worker_type, workers, on_bad_sample="skip")
        dm.setup("fit")
    broken = ("a/08.tiff", "b/12.jpeg")
    for rel in broken:  # broken after the check: found while training, and skipped
        path = zoo / rel
        path.with_suffix(".bak").write_bytes(path.read_bytes())
        path.write_bytes(path.read_bytes()[:40])
    try:
        runs = {key: [(b["index"].tolist(), b["image"], b.get("skipped", [])) for b in dm.train_dataloader()]
                for key, dm in modules.items()}
    finally:
        for rel in broken:
            backup = (zoo / rel).with_suffix(".bak")
            (zoo / rel).write_bytes(backup.read_bytes())
            backup.unlink()
    reference = runs.pop(("process", 0))
    for key, batches in runs.items():
        assert len(batches) == len(reference), key
        for (index, images, skipped), (ref_index, ref_images, ref_skipped) in zip(batches, reference):
            assert index == ref_index and torch.equal(images, ref_images) and skipped == ref_skipped, key
    skipped = {path for _, _, batch_skips in reference for path, _ in batch_skips}
    assert skipped and skipped <= set(broken), "the broken files were read, named and skipped"


@pytest.mark.parametrize(("saved", "resumed"), [(("thread", 2), ("thread", 2)), (("thread", 2), ("process", 2)),
                                                (("process", 2), ("thread", 3)), (("process", 2), ("process", 0)),
                                                (("thread", 2), ("process", 0))])
def test_a_checkpoint_resumes_exactly_under_any_backend_and_number_of_workers(tmp_path: Path, saved: tuple,
                                                                             resumed: tuple) -> None:
    root = write_image_tree(tmp_path / "images", {"a": 12, "b": 12}, size=(16, 16))[0].parents[1]
    reference = _epoch(_dm(root, "process", 0))
    dm = _dm(root, *saved)
    dm.setup("fit")
    loader = dm.train_dataloader()
    iterator = iter(loader)
    head = [next(iterator)["index"].tolist() for _ in range(2)]
    state = loader.state_dict()
    del iterator
    again = _dm(root, *resumed)
    again.setup("fit")
    other = again.train_dataloader()
    other.load_state_dict(state)
    tail = [b["index"].tolist() for b in other]
    assert head + tail == [index for index, _, _ in reference]


def test_threads_are_named_in_the_load_profile_and_nothing_leaves_the_process(zoo: Path) -> None:
    import psutil

    from stoker.profiling.attribution import PROFILE_KEY, ProfiledCollate

    dm = _dm(zoo, "thread", 2)
    dm.setup("fit")
    collate = ProfiledCollate(dm.train_dataloader().collate_fn)
    loader = dm.make_loader(dm.datasets["train"], train=True, collate_fn=collate)
    children = len(psutil.Process().children())
    workers = {batch[PROFILE_KEY]["worker"] for batch in loader}
    assert workers == {0, 1}  # the two threads, by id; no "main process" (-1)
    assert len(psutil.Process().children()) == children, "threads start no process"


def test_audio_crops_are_the_same_under_threads(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    from stoker.demos.tones import build_audio_tones

    root = build_audio_tones(tmp_path / "tones", clips_per_class=4)
    batches = {}
    for worker_type, workers in (("thread", 3), ("process", 0)):
        dm = AudioDataModule(str(root), batch_size=4, num_workers=workers, worker_type=worker_type,  # type: ignore[arg-type]
                             sample_rate=8000, clip_seconds=0.25, val_fraction=0.25)
        dm.setup("fit")
        batches[worker_type] = [b["audio"] for b in dm.train_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(batches["thread"], batches["process"]))


def test_streams_keep_their_worker_processes_and_say_so(tmp_path: Path) -> None:
    from stoker.data.loader import build_loader

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(range(4))

    with pytest.warns(UserWarning, match="keeps worker processes"):
        loader = build_loader(Stream(), batch_size=2, train=False, num_workers=1, pin_memory=False,
                              persistent_workers=False, prefetch_factor=2, seed=0, worker_type="thread")
    assert loader.num_workers == 1 and loader.worker_type == "process"


def test_a_bad_worker_type_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="worker_type must be 'process' .* or 'thread'"):
        ImageDataModule(str(tmp_path), worker_type="fiber")  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(sys, "_is_gil_enabled") or sys._is_gil_enabled(),
                    reason="needs a free-threaded (3.13t/3.14t) interpreter")
def test_threads_run_on_a_free_threaded_interpreter(zoo: Path) -> None:  # pragma: no cover - not on this machine
    assert len(_epoch(_dm(zoo, "thread", 4))) > 0
