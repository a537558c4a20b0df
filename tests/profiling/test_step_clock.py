"""Timing maths with a fake clock (exact expected values), cross-rank aggregation, verdicts, memory."""

from __future__ import annotations

import math
import os

import pytest
import torch

from stoker.profiling.counting import first_tensor, samples_in, tokens_in
from stoker.profiling.gpu_idle import CudaGapTimer
from stoker.profiling.memory import measure_memory
from stoker.profiling.ranks import RANK_FIELDS, aggregate_ranks, rank_row
from stoker.profiling.step_clock import PhaseTotals, StepClock
from stoker.profiling.verdicts import LoaderInfo, format_summary, suggestions, verdict
from tests.scripts.monitor_harness import VirtualClock, VirtualEvent


def fake_clock(times: list[float]):
    values = iter(times)
    return lambda: next(values)


def test_step_clock_splits_each_step_and_keeps_first_batch_apart() -> None:
    # epoch 0 | step 1 (first) | step 2 | step 3; each tuple: fetch start, fetch end, batch start, batch end
    clock = StepClock(clock=fake_clock([
        0.0,
        0.5, 2.0, 2.1, 2.6,      # first batch: 2.0 s after the epoch start
        2.6, 2.9, 3.0, 3.5,      # fetch 0.3, transfer 0.1, compute 0.5
        3.5, 3.6, 3.7, 4.7,      # fetch 0.1, transfer 0.1, compute 1.0
    ]))
    clock.epoch_start()
    latencies = []
    for samples in (8, 8, 4):
        clock.fetch_start()
        clock.fetch_end()
        clock.batch_start()
        latencies.append(clock.batch_end(samples))
    assert latencies[0] == pytest.approx(2.0) and latencies[1:] == [None, None]
    total = clock.total
    assert (total.steps, total.samples) == (2, 12)
    assert total.fetch_s == pytest.approx(0.4)
    assert total.transfer_s == pytest.approx(0.2)
    assert total.compute_s == pytest.approx(1.5)
    assert total.fetch_max_s == pytest.approx(0.3)
    assert total.fetch_fraction == pytest.approx(0.4 / 2.1)
    assert total.samples_per_s == pytest.approx(12 / 2.1)
    assert total.gpu_idle_fraction is None


def test_step_clock_falls_back_to_the_hook_gap_and_skips_validation() -> None:
    clock = StepClock(clock=fake_clock([0.0, 0.2, 1.0, 1.25, 2.0, 2.5, 3.5, 9.0, 9.5]))
    clock.epoch_start()              # 0.0
    clock.batch_start()              # 0.2 (no fetch marks: fallback)
    clock.batch_end(2)               # 1.0, first batch latency 0.2
    clock.batch_start()              # 1.25: gap 0.25 counts as fetch
    clock.batch_end(2)               # 2.0
    clock.batch_start()              # 2.5: gap 0.5
    clock.batch_end(2)               # 3.5
    clock.interrupt()                # validation runs here
    clock.batch_start()              # 9.0: not a fetch wait
    clock.batch_end(2)               # 9.5
    assert clock.first_batch_s == [pytest.approx(0.2)]
    assert clock.total.fetch_s == pytest.approx(0.75)
    assert clock.total.transfer_s == 0.0
    assert clock.total.compute_s == pytest.approx(0.75 + 1.0 + 0.5)


def test_window_is_emptied_and_state_round_trips() -> None:
    clock = StepClock(clock=fake_clock([0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0]))
    clock.epoch_start()
    for _ in range(2):
        clock.fetch_start()
        clock.fetch_end()
        clock.batch_start()
        clock.batch_end(1)
    window = clock.take_window()
    assert window.steps == 1 and window.fetch_s == pytest.approx(1.0)
    assert clock.window.steps == 0 and clock.total.steps == 1
    clock.add_gpu(idle_s=1.0, busy_s=3.0)
    restored = StepClock()
    restored.load_state_dict(clock.state_dict())
    assert restored.total == clock.total and restored.first_batch_s == clock.first_batch_s
    assert restored.total.gpu_idle_fraction == pytest.approx(0.25)


def test_bad_state_is_rejected_with_the_key() -> None:
    with pytest.raises(ValueError, match=r"unknown PhaseTotals keys \['bogus'\]"):
        PhaseTotals.from_dict({"bogus": 1.0})
    with pytest.raises(ValueError, match="needs a 'total' entry"):
        StepClock().load_state_dict({})


def _row(starvation: float, fetch_ms: float = 10.0) -> list[float]:
    window = PhaseTotals()
    window.add_step(fetch_s=starvation, transfer_s=0.0, compute_s=1.0 - starvation, samples=4)
    row = rank_row(window, first_batch_s=0.5, main_rss_mb=100.0, workers_rss_mb=50.0, num_workers=2)
    row[RANK_FIELDS.index("fetch_ms")] = fetch_ms
    return row


def test_aggregate_names_the_most_starved_rank() -> None:
    result = aggregate_ranks([_row(0.1), _row(0.6), _row(0.3)])
    assert result.slowest_rank == 1
    assert result.slowest_starvation == pytest.approx(0.6)
    assert result.mean["starvation"] == pytest.approx(1.0 / 3)
    assert result.per_rank[2]["samples_per_s"] == pytest.approx(4.0)
    nan_row = _row(0.2)
    nan_row[0] = math.nan
    assert aggregate_ranks([nan_row, _row(0.05)]).slowest_rank == 1
    with pytest.raises(ValueError, match="at least one rank"):
        aggregate_ranks([])
    with pytest.raises(ValueError, match="rank 0 row has 2 values"):
        aggregate_ranks([[0.0, 1.0]])


def test_gpu_fraction_wins_over_host_fraction_in_a_row() -> None:
    window = PhaseTotals()
    window.add_step(fetch_s=0.5, transfer_s=0.0, compute_s=0.5, samples=1)
    window.add_gpu(idle_s=0.1, busy_s=0.9)
    row = dict(zip(RANK_FIELDS, rank_row(window, first_batch_s=0.0, main_rss_mb=0.0, workers_rss_mb=0.0,
                                         num_workers=0)))
    assert row["starvation"] == pytest.approx(0.1)
    assert row["fetch_fraction"] == pytest.approx(0.5)


@pytest.mark.parametrize(("fraction", "label"), [(0.0, "compute-bound"), (0.049, "compute-bound"),
                                                  (0.05, "balanced"), (0.2, "input-bound"), (math.nan, "unknown")])
def test_verdict_thresholds(fraction: float, label: str) -> None:
    assert verdict(fraction) == label


def test_suggestions_carry_the_measured_numbers() -> None:
    run = aggregate_ranks([_row(0.6, fetch_ms=30.0)])
    loader = LoaderInfo(num_workers=1, batch_size=8, cores_per_rank=8, on_cuda=True, pin_memory=False)
    text = "\n".join(suggestions(run, loader, [2.0, 1.5]))
    assert "waiting 30.0 ms per step for data with 1 workers while 8 cores are available" in text
    assert "num_workers=7" in text
    assert "persistent_workers=True" in text and "1.50 s" in text
    fed = aggregate_ranks([_row(0.01)])
    assert "will not speed" in suggestions(fed, LoaderInfo(num_workers=4), [])[0]
    saturated = suggestions(run, LoaderInfo(num_workers=7, cores_per_rank=8, on_cuda=True, batch_size=8), [])
    assert any("DALI" in line for line in saturated)
    summary = format_summary(run, loader, [2.0, 1.5], steps=1)
    assert "verdict: input-bound" in summary and "slowest rank (rank 0)" in summary
    assert "verdict: unknown (no steady-state step" in format_summary(run, loader, [2.0], steps=0)


def test_memory_counts_the_main_process_and_forked_workers() -> None:
    loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True)
    iterator = iter(loader)
    next(iterator)
    usage = measure_memory()
    assert usage.main_mb > 10
    assert usage.num_workers >= 2 and usage.workers_mb > 1
    del iterator
    assert measure_memory(os.getpid()).main_mb > 10


def test_batch_counting_for_plain_and_described_batches() -> None:
    batch = {"meta": ["a", "b"], "x": torch.zeros(3, 2)}
    assert first_tensor(batch) is batch["x"] and samples_in(batch) == 3
    assert samples_in((torch.zeros(5), torch.zeros(5))) == 5
    assert samples_in({"name": "none"}) == 0 and tokens_in(batch) is None

    class Tokens:
        def batch_size_of(self, batch: dict) -> int:
            return 7

        def token_counts(self, batch: dict) -> tuple[int, int]:
            return int(batch["mask"].sum()), batch["mask"].numel()

    mask = {"mask": torch.tensor([[1, 1, 0], [1, 0, 0]])}
    assert samples_in(mask, Tokens()) == 7
    assert tokens_in(mask, Tokens()) == (3, 6)

    class Broken(Tokens):
        def token_counts(self, batch: dict) -> tuple[int, int]:
            return 9, 6

    with pytest.raises(ValueError, match="Broken.token_counts returned real=9, padded=6"):
        tokens_in(mask, Broken())


def test_gap_timer_is_inert_without_cuda_and_validates() -> None:
    timer = CudaGapTimer(enabled=False)
    timer.step_start()
    timer.step_end()
    timer.drain()
    assert timer.take() == (0.0, 0.0)
    with pytest.raises(ValueError, match="max_pending must be >= 1, got 0"):
        CudaGapTimer(max_pending=0)


def test_gap_timer_pairs_events_into_busy_spans_and_idle_gaps(monkeypatch: pytest.MonkeyPatch) -> None:
    # Events stamped by a virtual clock; the "device" reaches an event only when the test says so.
    clock = VirtualClock()
    recorded: list[VirtualEvent] = []

    def record() -> VirtualEvent:
        recorded.append(VirtualEvent(clock.now, done=False))
        return recorded[-1]

    monkeypatch.setattr(CudaGapTimer, "_record", staticmethod(record))
    timer = CudaGapTimer(max_pending=3)
    timer.step_start()               # 0.0
    clock.sleep(1.0)
    timer.step_end()                 # 1.0: busy 1.0
    clock.sleep(0.5)
    timer.step_start()               # 1.5: idle 0.5
    clock.sleep(0.5)
    timer.step_end()                 # 2.0: busy 0.5
    assert timer.take() == (0.0, 0.0) and not any(e.waited for e in recorded)  # nothing done yet: no wait
    for event in recorded:
        event.done = True
    timer.break_chain()              # validation runs here
    clock.sleep(3.0)
    timer.step_start()               # 5.0: not idle time; polls the three finished pairs
    assert timer.take() == (pytest.approx(0.5), pytest.approx(1.5))
    clock.sleep(1.0)
    timer.step_end()                 # 6.0: busy 1.0
    timer.drain()
    assert [e.waited for e in recorded] == [False] * 5 + [True]  # only the end of training waits
    assert timer.take() == (0.0, pytest.approx(1.0))


def test_gap_timer_waits_on_the_oldest_pair_only_when_too_many_are_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock()
    recorded: list[VirtualEvent] = []

    def record() -> VirtualEvent:
        recorded.append(VirtualEvent(clock.now, done=False))
        return recorded[-1]

    monkeypatch.setattr(CudaGapTimer, "_record", staticmethod(record))
    timer = CudaGapTimer(max_pending=2)
    for _ in range(2):
        timer.step_start()
        clock.sleep(0.25)
        timer.step_end()
        clock.sleep(0.5)
    # Pending: busy 1, gap, busy 2 (three pairs): the oldest pair's end is waited on, nothing more.
    assert [e.waited for e in recorded] == [False, True, False, False]
    assert timer.take() == (0.0, pytest.approx(0.25))


@pytest.mark.cuda
def test_gap_timer_reads_idle_gaps_from_cuda_events() -> None:
    import time

    # Real events: which spans count, not how long anything took (the arithmetic is pinned on virtual
    # events above). The bound below is causal, not a tolerance: the device is synchronized before each
    # 20 ms sleep, so the next step's start event cannot run less than 20 ms after the last end event.
    timer = CudaGapTimer(max_pending=4)
    x = torch.randn(2048, 2048, device="cuda")
    for _ in range(6):
        timer.step_start()
        for _ in range(5):
            x = x @ x / x.norm()
        timer.step_end()
        torch.cuda.synchronize()  # the test, not the timer, lets the device go idle ...
        time.sleep(0.02)          # ... for 20 ms between steps
    timer.drain()
    idle, busy = timer.take()
    assert busy > 0
    assert idle >= 5 * 0.02  # five gaps, each holding a whole sleep; a busy span taken for a gap would fail
    assert timer.take() == (0.0, 0.0)  # each pair is read once


def test_threads_are_suggested_when_worker_processes_cost_memory_or_restarts() -> None:
    heavy = _row(0.01)
    heavy[RANK_FIELDS.index("workers_rss_mb")] = 900.0  # 2 workers, 450 MiB each
    run = aggregate_ranks([heavy])
    map_style = LoaderInfo(num_workers=2, threads_possible=True, persistent_workers=True)
    text = "\n".join(suggestions(run, map_style, []))
    assert "each of the 2 worker processes holds 450 MiB" in text and "worker_type='thread'" in text
    # A stream cannot be loaded by threads, and a loader already on threads is not told to switch.
    stream = LoaderInfo(num_workers=2, persistent_workers=True)
    assert not any("thread" in line for line in suggestions(run, stream, []))
    on_threads = LoaderInfo(num_workers=2, threads_possible=True, worker_type="thread")
    assert not any("worker_type" in line for line in suggestions(run, on_threads, [2.0, 1.5]))
    assert "2 threads" in format_summary(run, on_threads, [2.0], steps=1)
    # Light workers: nothing to say unless every epoch restarts them.
    light = aggregate_ranks([_row(0.6, fetch_ms=1.0)])
    restarting = LoaderInfo(num_workers=2, threads_possible=True, cores_per_rank=2)
    lines = suggestions(light, restarting, [2.0, 1.5])
    assert any("persistent_workers=True" in line for line in lines)
    assert any("no process to spawn per epoch" in line for line in lines)
    assert not any("thread" in line for line in suggestions(light, LoaderInfo(num_workers=2, threads_possible=True,
                                                                              persistent_workers=True), []))
