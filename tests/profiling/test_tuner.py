"""The num_workers / prefetch tuner on injected loaders whose costs are known, timed by a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stoker.profiling.tuner import Setting, tune_loader, worker_counts

BATCH = 4


class FakeClock:
    """Seconds that pass only when a fake loader says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostedLoader:
    """Yields ``batches`` batches; each costs ``batch_s / workers`` (at least ``floor_s``, the main process).

    The first batch also costs ``startup_s`` per worker process (spawning them). Threads start at once and
    run ``gil`` of the per-batch work one at a time (the share that holds the GIL). Nothing sleeps: the clock moves.
    """

    def __init__(self, clock: FakeClock, workers: int, *, batch_s: float, floor_s: float, startup_s: float = 0.05,
                 batches: int = 50, worker_type: str = "process", gil: float = 0.0) -> None:
        self.clock, self.workers, self.batches = clock, workers, batches
        threads = worker_type == "thread"
        parallel = batch_s * (1 - gil) if threads else batch_s
        self.each = max(parallel / max(1, workers) + (batch_s * gil if threads else 0.0), floor_s)
        self.startup = 0.0 if threads else startup_s * workers

    def __iter__(self) -> Iterator[list[int]]:
        for index in range(self.batches):
            self.clock.now += self.each + (self.startup if index == 0 else 0.0)
            yield [0] * BATCH


def tuner(batch_s: float, floor_s: float, gil: float = 0.0, **kwargs: Any) -> tuple[Any, list[tuple[int, int]]]:
    """Tune a :class:`CostedLoader`; returns the result and the (workers, prefetch) measured, in order."""
    result, built = typed_tuner(batch_s, floor_s, gil, **kwargs)
    return result, [(workers, prefetch) for workers, prefetch, _ in built]


def typed_tuner(batch_s: float, floor_s: float, gil: float = 0.0,
                **kwargs: Any) -> tuple[Any, list[tuple[int, int, str]]]:
    """:func:`tuner` with the worker type of each setting measured."""
    clock, built = FakeClock(), []

    def make_loader(workers: int, prefetch: int, worker_type: str) -> CostedLoader:
        built.append((workers, prefetch, worker_type))
        return CostedLoader(clock, workers, batch_s=batch_s, floor_s=floor_s, worker_type=worker_type, gil=gil)

    return tune_loader(make_loader, len, clock=clock, **kwargs), built


def test_worker_counts_double_up_to_the_cores() -> None:
    assert worker_counts(0) == [0]
    assert worker_counts(1) == [0, 1]
    assert worker_counts(6) == [0, 1, 2, 4, 6]
    assert worker_counts(8) == [0, 1, 2, 4, 8]


def test_loader_bound_stops_at_the_knee_the_costs_imply() -> None:
    # 80 ms of CPU per batch, split over the workers, down to 20 ms the main process needs: the rate
    # stops growing at 4 workers (50, 50, 100, 200, 200 samples/s). The model could take 1000.
    result, built = tuner(0.08, 0.02, max_workers=15, target=1000.0)
    measured_workers = [w for w, _ in built]
    assert measured_workers[:5] == [0, 1, 2, 4, 8]  # stopped at the knee: 16 workers never tried
    assert 15 not in measured_workers
    assert result.best.num_workers == 4
    assert result.best.samples_per_s == pytest.approx(BATCH / 0.02)
    assert result.overrides() == ["--data.init_args.num_workers=4", "--data.init_args.prefetch_factor=2"]
    assert any("input-bound" in note for note in result.notes)  # 200 samples/s never reach the model's 1000


def test_compute_bound_stops_once_a_setting_feeds_the_model() -> None:
    # One worker already supplies 50 samples/s and the model consumes 40: more workers buy nothing.
    result, built = tuner(0.08, 0.02, max_workers=8, target=40.0)
    assert [w for w, _ in built] == [0, 1, 1]  # 0, 1, then prefetch 4 on 1 worker
    assert result.best.num_workers == 1
    assert result.best.predicted(40.0) == pytest.approx(40.0)
    # Loading in the training process adds its time to every step: 1 / (1/50 + 1/40).
    assert result.settings[0].predicted(40.0) == pytest.approx(1 / (1 / 50 + 1 / 40))
    assert not result.notes


def test_flat_from_zero_to_one_worker_keeps_searching() -> None:
    # 0 and 1 worker load equally fast on their own; the search must not call that the knee.
    result, built = tuner(0.08, 0.01, max_workers=8)
    assert [w for w, _ in built][:5] == [0, 1, 2, 4, 8]
    assert result.best.num_workers == 8  # 10 ms per batch at 8 workers: 400 samples/s, still rising
    assert result.target is None and "knee" in result.reason


def test_table_yaml_and_json_carry_the_recommendation() -> None:
    result, _ = tuner(0.08, 0.02, max_workers=4, target=150.0)
    table = result.table()
    assert "<- recommended" in table and "MiB/worker" in table and "150.0 samples/s" in table
    assert "num_workers: " in result.yaml() and "datamodule:" in result.yaml(nested=True)
    assert result.as_dict()["best"]["num_workers"] == result.best.num_workers


def test_only_settable_arguments_are_written() -> None:
    result, _ = tuner(0.08, 0.02, max_workers=4, target=150.0)
    result.settable = ("num_workers",)  # a DataModule without a prefetch_factor argument
    assert result.overrides() == [f"--data.init_args.num_workers={result.best.num_workers}"]
    assert "prefetch_factor" not in result.yaml()


def test_memory_per_worker() -> None:
    assert Setting(4, 2, 1.0, 0.0, 100.0, 800.0, ).mb_per_worker == 200.0
    assert Setting(0, 2, 1.0, 0.0, 100.0, 0.0).mb_per_worker == 0.0


def test_threads_that_keep_up_are_recommended_with_their_memory() -> None:
    # Decoding that releases the GIL: threads load as fast as processes, so the cheaper backend wins.
    result, built = typed_tuner(0.08, 0.02, max_workers=4, target=1000.0, worker_types=("process", "thread"))
    assert [(w, t) for w, _, t in built if t == "thread"] == [(1, "thread"), (2, "thread"), (4, "thread")]
    assert result.best.worker_type == "thread" and result.best.num_workers == 4
    assert "threads load within 5% of worker processes" in result.reason and "MiB per thread" in result.reason
    assert result.values() == {"num_workers": 4, "prefetch_factor": 2, "worker_type": "thread"}
    assert "--data.init_args.worker_type=thread" in result.overrides()
    assert "worker_type: thread" in result.yaml()
    table = result.table()
    assert "  thread  " in table and "  process  " in table and "  main  " in table


def test_work_that_holds_the_gil_keeps_processes() -> None:
    # 90% of each batch's work holds the GIL: more threads barely help, processes scale.
    result, _ = typed_tuner(0.08, 0.02, gil=0.9, max_workers=4, target=1000.0, worker_types=("process", "thread"))
    assert result.best.worker_type == "process" and result.best.num_workers == 4
    assert any("holds the GIL" in note for note in result.notes)
    assert result.values()["worker_type"] == "process"
    # Threads are only ever measured when asked for (a stream keeps processes).
    _, built = typed_tuner(0.08, 0.02, max_workers=4, target=1000.0)
    assert {t for _, _, t in built} == {"process"}


def test_thread_memory_is_what_the_process_grows_by() -> None:
    setting = Setting(2, 2, 1.0, 0.0, 300.0, 40.0, "thread")
    assert setting.mb_per_worker == 20.0 and setting.label == "thread"
    assert Setting(0, 2, 1.0, 0.0, 300.0, 0.0, "thread").label == "main"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_workers >= 0"):
        tune_loader(lambda w, p, t: [], len, max_workers=-1)
    with pytest.raises(ValueError, match="batches >= 2"):
        tune_loader(lambda w, p, t: [], len, max_workers=2, batches=1)
    with pytest.raises(ValueError, match="worker_types must hold 'process'"):
        tune_loader(lambda w, p, t: [], len, max_workers=2, worker_types=("fiber",))
