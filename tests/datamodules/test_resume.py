"""Kill and resume, the way users lose jobs: SIGKILL mid-epoch after a checkpoint, resume with ``ckpt_path``.

For every DataModule, at 1 and 2 ranks (gloo): a subprocess trains with
``ModelCheckpoint(every_n_train_steps=k)``, is killed with SIGKILL a step after the checkpoint (in the
middle of the second epoch), and a new process resumes from that checkpoint. What each rank trained on
before the checkpoint plus what it trained on after the resume must equal, step for step, what an
uninterrupted run trained on: nothing repeated, nothing skipped. Lightning's "not resumable" warning
must not appear. Checkpoints written at an epoch's end resume exactly too. ImageDataModule resumes so on
a table of files, a saved Hugging Face dataset and WebDataset tars (tests/scripts/resume_sources.py).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_image_tree

Records = dict[int, list[dict[str, Any]]]


def _command(name: str, data: Path, out: Path, ranks: int, workers: int, *extra: str) -> list[str]:
    return [name, str(data), str(out), "--ranks", str(ranks), "--workers", str(workers), "--strategy", "ddp_fork",
            *extra]


_PRELOAD = ["torch", "lightning", "torchvision", "datasets", "transformers", "stoker.datamodules", "stoker.io.dali",
            "stoker.io.dali_batches", "tests.scripts.resume_run", "tests.scripts.resume_sources"]


def _context() -> Any:
    # Every run is a process of its own (it is killed with SIGKILL), forked from a server that imported
    # torch and Lightning once: a fresh interpreter would spend about ten seconds importing each time.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


def _start(command: list[str], out: Path) -> Any:
    from tests.scripts.resume_run import run_detached

    out.mkdir(parents=True, exist_ok=True)
    process = _context().Process(target=run_detached, args=(command, str(out / "log.txt")))
    process.start()
    return process


def _kill(process: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the run leads a session: its DDP ranks and workers go too
    process.join(timeout=60)


def _finish(process: Any, out: Path, timeout: float = 300) -> str:
    process.join(timeout=timeout)
    if process.exitcode is None:
        _kill(process)
    log = (out / "log.txt").read_text()
    if process.exitcode != 0:
        raise AssertionError(f"{out.name} run exited {process.exitcode}:\n{log[-6000:]}")
    return log


def _records(out: Path, ranks: int) -> Records:
    return {rank: [json.loads(line) for line in (out / f"seen-{rank}.jsonl").read_text().splitlines()]
            for rank in range(ranks)}


def _kill_after_checkpoint(command: list[str], out: Path, timeout: float = 300) -> None:
    process = _start(command, out)
    deadline = time.monotonic() + timeout
    while not (out / "ready").exists():
        if not process.is_alive() or time.monotonic() > deadline:
            _kill(process)
            raise AssertionError(f"the run to be killed ended early ({process.exitcode}):\n"
                                 f"{(out / 'log.txt').read_text()[-6000:]}")
        time.sleep(0.1)
    _kill(process)


def check_kill_and_resume(tmp_path: Path, name: str, data: Path, *, ranks: int, workers: int,
                          at_epoch_end: bool = False) -> None:
    full_out = tmp_path / "full"
    _finish(_start(_command(name, data, full_out, ranks, workers), full_out), full_out)
    full = _records(full_out, ranks)
    per_epoch = sum(1 for r in full[0] if r["epoch"] == 0)
    assert per_epoch >= 3 and len(full[0]) == 2 * per_epoch, "two whole epochs of at least 3 steps"
    # Mid-epoch: checkpoint in the middle of epoch 1, killed two steps later; or at the end of epoch 0.
    every = per_epoch + per_epoch // 2 if not at_epoch_end else 0
    saved = every or per_epoch
    killed_out, resumed_out = tmp_path / "killed", tmp_path / "resumed"
    extra = ["--every", str(every)] if every else ["--epoch-end-checkpoints"]
    _kill_after_checkpoint(_command(name, data, killed_out, ranks, workers, *extra, "--stop-at", str(saved + 1)),
                           killed_out)
    checkpoint = killed_out / "ckpt" / (f"step={every}.ckpt" if every else "end-epoch=0.ckpt")
    assert checkpoint.is_file(), sorted(p.name for p in (killed_out / "ckpt").iterdir())
    log = _finish(_start(_command(name, data, resumed_out, ranks, workers, "--ckpt", str(checkpoint)), resumed_out),
                  resumed_out)
    assert "not resumable" not in log, "Lightning must see a resumable loader"
    killed, resumed = _records(killed_out, ranks), _records(resumed_out, ranks)
    for rank in range(ranks):
        before = [(r["epoch"], r["ids"]) for r in killed[rank] if r["step"] < saved]
        after = [(r["epoch"], r["ids"]) for r in resumed[rank]]
        expected = [(r["epoch"], r["ids"]) for r in full[rank]]
        assert len(before) == saved, f"rank {rank}: the killed run got past the checkpoint"
        assert before + after == expected, f"rank {rank}: repeated or skipped samples after the resume"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("resume-data")
    images = base / "images"
    write_image_tree(images, {"a": 13, "b": 11, "c": 13}, size=(16, 16))
    folders = {"image": images, "image_threads": images, "imbalanced": images, "dali": images}
    try:
        from tests.datamodules.test_audio_datamodule import write_audio_tree

        write_audio_tree(base / "audio", {"a": 12, "b": 12, "c": 12})
        folders["audio"] = base / "audio"
    except pytest.skip.Exception:  # the audio extra is not installed
        pass
    from tests.datamodules.test_text_datamodule import rows, write_csv

    write_csv(base / "text" / "train.csv", rows(48))
    write_csv(base / "text" / "validation.csv", rows(12, offset=1000))
    for part in range(4):  # a stream reads whole files per worker: one per rank and worker
        write_csv(base / "stream" / f"part{part}.csv", rows(16, offset=100 * part, seed=part))
    write_csv(base / "stream" / "validation.csv", rows(12, offset=1000))
    folders.update(text_bucketed=base / "text", text_plain=base / "text", text_stream=base / "stream")
    return folders


VARIANTS = [  # (DataModule variant, loader workers)
    ("image", 2),
    ("image_threads", 2),
    ("audio", 1),
    ("dali", 0),
    ("imbalanced", 1),
    ("text_bucketed", 2),
    ("text_plain", 0),
    ("text_stream", 2),
]


def _need(name: str, data: dict[str, Path]) -> Path:
    if name == "dali":
        pytest.importorskip("nvidia.dali")
    if name not in data:
        pytest.skip(f"the {name} extra is not installed")
    return data[name]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "workers"), VARIANTS)
def test_one_rank_resumes_exactly(tmp_path: Path, data: dict[str, Path], name: str, workers: int) -> None:
    check_kill_and_resume(tmp_path, name, _need(name, data), ranks=1, workers=workers)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(("name", "workers"), VARIANTS)
def test_two_ranks_resume_exactly(tmp_path: Path, data: dict[str, Path], name: str, workers: int) -> None:
    check_kill_and_resume(tmp_path, name, _need(name, data), ranks=2, workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "workers"), [("image", 2), ("text_stream", 2), ("dali", 0)])
def test_an_epoch_end_checkpoint_resumes_on_the_next_epochs_order(tmp_path: Path, data: dict[str, Path], name: str,
                                                                  workers: int) -> None:
    check_kill_and_resume(tmp_path, name, _need(name, data), ranks=1, workers=workers, at_epoch_end=True)


# ----------------------------------------------------------------------------- sources other than class folders
@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same pre-split photos as a table, a saved Hugging Face dataset and WebDataset tars.

    27 training photos: 6 steps of 4 per epoch at 1 rank, 3 per rank at 2 ranks.
    """
    from tests.sources_fixtures import photo_records, write_saved, write_table, write_webdataset

    base = tmp_path_factory.mktemp("resume-sources")
    records = photo_records(counts={"train": 9, "val": 2})
    write_table(base / "table", records)
    write_saved(base / "hf_saved", records)
    write_webdataset(base / "webdataset", records, per_tar=8)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["table", "hf_saved", "webdataset"])
def test_one_rank_with_workers_resumes_exactly_on_other_sources(tmp_path: Path, sources: Path, variant: str) -> None:
    check_kill_and_resume(tmp_path, f"resume_sources:{variant}", sources, ranks=1, workers=2)


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_resume_exactly_on_a_saved_hugging_face_dataset(tmp_path: Path, sources: Path) -> None:
    check_kill_and_resume(tmp_path, "resume_sources:hf_saved", sources, ranks=2, workers=1)
