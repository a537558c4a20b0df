"""Killed on one number of ranks or loader workers, resumed on another: the rest of the epoch is trained once.

A run on ``before`` ranks is SIGKILLed in the middle of its second epoch (after a checkpoint) and resumed with
``ckpt_path`` on ``after`` ranks (or on as many ranks with another number of loader workers). Samples are
identified by their index and the hash of the exact tensor the model got (augmentation is drawn per sample, so
it does not depend on the number of ranks). Then:

* the second epoch, the killed run's part plus the resumed run's, trains every sample of that epoch, with no
  more repeats than the padding that evens out the ranks' shares;
* the resumed run validates at the end of that epoch (Lightning counts its batches right), and its next epoch
  is, rank for rank and step for step, the one an uninterrupted run on ``after`` ranks trains.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import write_image_tree
from tests.datamodules.test_resume import Records, _command, _finish, _kill_after_checkpoint, _records, _start


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("elastic-data")
    write_image_tree(base / "images", {"a": 13, "b": 11, "c": 13}, size=(16, 16))
    from tests.datamodules.test_text_datamodule import rows, write_csv

    write_csv(base / "text" / "train.csv", rows(48))
    write_csv(base / "text" / "validation.csv", rows(12, offset=1000))
    write_csv(base / "lm" / "corpus" / "train.csv", rows(40))
    for part in range(4):  # a stream reads whole files per worker: one per rank and worker
        write_csv(base / "stream" / f"part{part}.csv", rows(16, offset=100 * part, seed=part))
    write_csv(base / "stream" / "validation.csv", rows(12, offset=1000))
    shards: dict[str, Path] = {}
    if importlib.util.find_spec("litdata") is not None:  # the shards extra
        from stoker.commands.pack import main as pack

        args = ["--chunk-size", "4", "--workers", "1", "--val", "0.2", "--no-progress"]
        assert pack([str(base / "images"), "--out", str(base / "shards"), *args]) == 0
        shards = {"resume_shards:cpu": base / "shards", "resume_shards:dali": base / "shards"}
    return {**shards, "image": base / "images", "image_threads": base / "images", "dali": base / "images",
            "text_bucketed": base / "text",
            "resume_lm:packed": base / "lm", "resume_lm:budget": base / "lm", "text_stream": base / "stream"}


def _validated(out: Path, rank: int = 0) -> list[int]:
    path = out / f"validated-{rank}.jsonl"
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()] if path.exists() else []


def check_elastic_resume(tmp_path: Path, name: str, data: Path, *, before: int, after: int, workers: int,
                         workers_after: int | None = None) -> None:
    """Killed on ``before`` ranks of ``workers`` loader workers, resumed on ``after`` ranks of ``workers_after``."""
    runs = {key: tmp_path / key for key in ("before", "after", "killed", "resumed")}
    workers_after = workers if workers_after is None else workers_after
    # Uninterrupted runs on both numbers of ranks: what each epoch holds, and the next epoch to match.
    _finish(_start(_command(name, data, runs["before"], before, workers), runs["before"]), runs["before"])
    _finish(_start(_command(name, data, runs["after"], after, workers_after, "--epochs", "3"), runs["after"]),
            runs["after"])
    full_before, full_after = _records(runs["before"], before), _records(runs["after"], after)
    per_epoch = sum(1 for r in full_before[0] if r["epoch"] == 0)
    assert per_epoch >= 3, "the killed run needs epochs of at least 3 steps"
    every = per_epoch + per_epoch // 2  # a checkpoint in the middle of the second epoch, killed a step later
    _kill_after_checkpoint(_command(name, data, runs["killed"], before, workers, "--every", str(every), "--stop-at",
                                    str(every + 1)), runs["killed"])
    checkpoint = runs["killed"] / "ckpt" / f"step={every}.ckpt"
    assert checkpoint.is_file(), sorted(p.name for p in (runs["killed"] / "ckpt").iterdir())
    log = _finish(_start(_command(name, data, runs["resumed"], after, workers_after, "--ckpt", str(checkpoint),
                                  "--epochs", "3"), runs["resumed"]), runs["resumed"])
    assert "not resumable" not in log
    killed, resumed = _records(runs["killed"], before), _records(runs["resumed"], after)

    def ids(records: Records, epoch: int | None, below: int | None = None) -> list[str]:
        return [i for rank in records for r in records[rank] if epoch in (None, r["epoch"])
                and (below is None or r["step"] < below) for i in r["ids"]]

    # What epoch 1 may hold: its samples as either uninterrupted run augmented them (each cuts a few).
    known = set(ids(full_before, 1)) | set(ids(full_after, 1))
    samples = {i.split(":")[0] for i in ids(full_after, None)}
    trained = Counter(ids(killed, 1, below=every) + ids(resumed, 1))
    indices = {i.split(":")[0] for i in trained}
    assert all(i in known or i.split(":")[0] in samples - {k.split(":")[0] for k in known} for i in trained), \
        "a sample was trained with another epoch's augmentation"
    repeats = sum(trained.values()) - len(trained)
    padding = max(len(ids(full_before, 1)) - len(set(ids(full_before, 1))),
                  len(ids(full_after, 1)) - len(set(ids(full_after, 1))))
    assert repeats <= padding + after - 1, f"{repeats} samples trained twice in the resumed epoch"
    batch = len(full_before[0][0]["ids"])
    skipped = len(samples - indices)
    # The figures, for a run with -s: what the resumed epoch repeated and left out, against the cuts.
    uncut = len(samples - {i.split(":")[0] for i in ids(full_after, 1)})
    print(f"{name} {before}x{workers} -> {after}x{workers_after}: epoch of {len(samples)} samples, {repeats} repeated "
          f"(padding {padding}), {skipped} not trained (an uninterrupted run on the new ranks: {uncut})")
    assert skipped < before * batch + after * batch, "more samples skipped than the cuts allow"
    for rank in range(after):
        # Validation where the uninterrupted run validates (at every epoch's end; nowhere without a split).
        assert _validated(runs["resumed"], rank) == _validated(runs["after"], rank)[1:], \
            f"rank {rank} did not validate at the resumed epoch's end"
        expected = [r["ids"] for r in full_after[rank] if r["epoch"] == 2]
        got = [r["ids"] for r in resumed[rank] if r["epoch"] == 2]
        assert expected and got == expected, f"rank {rank}: the next epoch differs from an uninterrupted run's"


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(("name", "before", "after", "workers"), [
    ("image", 2, 1, 2),
    ("image", 1, 2, 1),
    ("image_threads", 2, 1, 2),
    ("text_bucketed", 2, 1, 0),
    ("text_bucketed", 1, 2, 1),
    ("resume_lm:packed", 2, 1, 2),
    ("resume_lm:packed", 1, 2, 0),
    ("dali", 2, 1, 0),
    ("resume_shards:cpu", 2, 1, 1),
    ("resume_shards:cpu", 1, 2, 2),
    ("resume_shards:dali", 2, 1, 1),
])
def test_a_killed_run_resumes_on_another_number_of_ranks(tmp_path: Path, data: dict[str, Path], name: str,
                                                         before: int, after: int, workers: int) -> None:
    if "dali" in name:
        pytest.importorskip("nvidia.dali")
    if name not in data:
        pytest.skip("the shards extra is not installed")
    check_elastic_resume(tmp_path, name, data[name], before=before, after=after, workers=workers)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "workers", "workers_after"), [
    ("image", 2, 0),
    ("text_bucketed", 2, 0),
    ("resume_lm:packed", 2, 0),
    ("resume_shards:cpu", 2, 0),
    ("resume_shards:cpu", 0, 2),
])
def test_a_killed_run_resumes_with_another_number_of_loader_workers(tmp_path: Path, data: dict[str, Path], name: str,
                                                                    workers: int, workers_after: int) -> None:
    if name not in data:
        pytest.skip("the shards extra is not installed")
    check_elastic_resume(tmp_path, name, data[name], before=1, after=1, workers=workers, workers_after=workers_after)


@pytest.mark.slow
@pytest.mark.ddp
@pytest.mark.parametrize(("name", "message"), [
    ("text_stream", "in the middle of an epoch with other loader workers or ranks"),
    ("resume_lm:budget", "cannot resume TokenBudgetBatchSampler mid-epoch: the checkpoint has num_replicas=2"),
])
def test_what_cannot_be_dealt_again_is_refused_by_name(tmp_path: Path, data: dict[str, Path], name: str,
                                                       message: str) -> None:
    # A stream's position belongs to its rank's files; a token budget sizes its epoch by the number of ranks.
    probe, killed, resumed = tmp_path / "probe", tmp_path / "killed", tmp_path / "resumed"
    _finish(_start(_command(name, data[name], probe, 2, 0, "--epochs", "1"), probe), probe)
    per_epoch = len(_records(probe, 2)[0])
    every = per_epoch + per_epoch // 2
    _kill_after_checkpoint(_command(name, data[name], killed, 2, 0, "--every", str(every), "--stop-at",
                                    str(every + 1)), killed)
    process = _start(_command(name, data[name], resumed, 1, 0, "--ckpt", str(killed / "ckpt" / f"step={every}.ckpt")),
                     resumed)
    process.join(timeout=300)
    log = (resumed / "log.txt").read_text()
    assert process.exitcode not in (0, None) and message in log, log[-3000:]
    assert not (resumed / "seen-0.jsonl").exists(), "nothing may train before the refusal"
