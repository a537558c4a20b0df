"""StarvationMonitor: accuracy against a known starvation, logging, resume, DDP and the CUDA path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from stoker.callbacks import StarvationMonitor
from stoker.datamodules import ImageFolderDataModule
from tests.conftest import REPO, run_script
from tests.scripts.monitor_harness import ListLogger, VirtualClock, run_paced, true_starvation, virtual_cuda


class ImageProbe(L.LightningModule):
    """A linear layer on the mean colour: enough to train on image batches."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch["image"].mean(dim=(2, 3))).sum()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.layer(batch["image"].mean(dim=(2, 3)))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


# (injected fetch delay, known step time): true starvation 0%, 50% and 80%. The costs are slept on a
# virtual clock that the monitor reads, so the figures are exact (benchmarks/starvation_accuracy.py
# measures the same settings against the wall clock).
SETTINGS = [(0.0, 0.05), (0.06, 0.06), (0.16, 0.04)]


@pytest.mark.parametrize(("delay_s", "step_s"), SETTINGS)
def test_reported_starvation_equals_the_injected_one(delay_s: float, step_s: float,
                                                     virtual_clock: VirtualClock) -> None:
    monitor = StarvationMonitor(print_summary=False)
    run_paced(delay_s, step_s, num_batches=10, callbacks=[monitor], clock=virtual_clock)
    assert monitor.final is not None
    reported = monitor.final.mean["starvation"]
    truth = true_starvation(delay_s, step_s)
    assert reported == pytest.approx(truth, abs=1e-9), f"reported {reported:.3f} for a true {truth:.3f}"
    # The fetch figure is the dataset's sleep and none of the step; the step holds none of the fetch.
    assert monitor.final.mean["fetch_ms"] == pytest.approx(1000 * delay_s, abs=1e-6)
    assert monitor.final.mean["transfer_ms"] == pytest.approx(0.0, abs=1e-6)
    assert monitor.final.mean["step_ms"] == pytest.approx(1000 * step_s)
    assert monitor.clock.first_batch_s == [pytest.approx(delay_s, abs=1e-9)]  # the first step is kept apart
    assert monitor.clock.total.steps == 9


def test_logs_through_loggers_and_prints_a_summary(capsys: pytest.CaptureFixture[str],
                                                   virtual_clock: VirtualClock) -> None:
    logger = ListLogger()
    monitor = StarvationMonitor()
    trainer = run_paced(0.03, 0.01, num_batches=9, callbacks=[monitor], logger=logger, log_every_n_steps=4,
                        clock=virtual_clock)
    logged = [metrics for _, metrics in logger.logged if "starvation/fraction" in metrics]
    assert len(logged) == 2  # steps 4 and 8
    assert logged[-1]["starvation/fetch_ms"] == pytest.approx(30.0)
    assert logged[-1]["starvation/fraction"] == pytest.approx(0.75)
    assert "starvation/gpu_idle_fraction" not in logged[-1]  # CPU run: no device timeline
    assert "starvation/rank0" not in logged[-1]  # per-rank keys only with several ranks
    assert trainer.progress_bar_metrics["starved"] == pytest.approx(logged[-1]["starvation/fraction"])
    out = capsys.readouterr().out
    assert "stoker StarvationMonitor summary" in out
    assert "verdict: input-bound" in out
    assert "epoch start-up (epoch start to first batch" in out and "memory (rank 0): main process" in out
    # The fetch hooks of the loop are restored after fit.
    assert "_on_before_fetch" not in trainer.fit_loop.epoch_loop.__dict__


def test_compute_bound_run_says_so(virtual_clock: VirtualClock) -> None:
    monitor = StarvationMonitor(print_summary=False)
    run_paced(0.0, 0.02, num_batches=8, callbacks=[monitor], clock=virtual_clock)
    assert monitor.summary is not None
    assert "verdict: compute-bound" in monitor.summary
    assert "will not speed this run up" in monitor.summary


def test_totals_survive_a_checkpoint(tmp_path: Path, virtual_clock: VirtualClock) -> None:
    first = StarvationMonitor(print_summary=False)
    run_paced(0.02, 0.01, num_batches=6, callbacks=[first], clock=virtual_clock)
    resumed = StarvationMonitor(print_summary=False)
    resumed.load_state_dict(first.state_dict())
    assert resumed.clock.total == first.clock.total
    run_paced(0.02, 0.01, num_batches=6, callbacks=[resumed], clock=virtual_clock)
    assert resumed.clock.total.steps == first.clock.total.steps + 5
    assert resumed.clock.total.fetch_s == pytest.approx(2 * first.clock.total.fetch_s)
    assert len(resumed.clock.first_batch_s) == 2


def test_gpu_idle_path_reads_the_device_timeline(virtual_clock: VirtualClock) -> None:
    # The CUDA path on virtual events: the device runs each step's work when it is issued, so an idle gap
    # is the host's fetch between two steps. 10 steps: 10 busy spans of 20 ms and 9 gaps of 50 ms (the
    # epoch's first step has no gap before it).
    with virtual_cuda(virtual_clock) as events:
        monitor = StarvationMonitor(print_summary=False, log_every_n_steps=5)
        run_paced(0.05, 0.02, num_batches=10, callbacks=[monitor], clock=virtual_clock)
    assert len(events) == 2 * 10
    assert monitor.final is not None
    total = monitor.clock.total
    assert (total.gpu_idle_s, total.gpu_busy_s) == (pytest.approx(9 * 0.05), pytest.approx(10 * 0.02))
    expected = 9 * 0.05 / (9 * 0.05 + 10 * 0.02)
    assert monitor.final.mean["gpu_idle_fraction"] == pytest.approx(expected)
    assert monitor.final.mean["starvation"] == pytest.approx(expected)  # the device figure wins over the host's
    assert monitor.final.mean["fetch_fraction"] == pytest.approx(true_starvation(0.05, 0.02))
    # Logged per window of 5 steps: the first window has 4 gaps, the second also the gap across its boundary.
    windows = [metrics["starvation/gpu_idle_fraction"] for metrics in monitor.history]
    assert windows == [pytest.approx(4 * 0.05 / (4 * 0.05 + 5 * 0.02)), pytest.approx(true_starvation(0.05, 0.02))]


def test_image_datamodule_with_workers_and_epochs(image_tree: Any, tmp_path: Path) -> None:
    root = image_tree({"a": 12, "b": 12}, size=(20, 24))
    dm = ImageFolderDataModule(root, batch_size=4, num_workers=1, persistent_workers=False, image_size=16,
                               val_fraction=0.25)
    model = ImageProbe()
    monitor = StarvationMonitor(print_summary=False)
    trainer = L.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    assert len(monitor.clock.first_batch_s) == 2  # one start-up latency per epoch
    assert monitor.clock.total.samples == 4 * monitor.clock.total.steps  # counted by batch_size_of
    assert monitor.final is not None and monitor.final.per_rank[0]["num_workers"] == 1


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="log_every_n_steps must be >= 1 or None"):
        StarvationMonitor(log_every_n_steps=0)


@pytest.mark.ddp
def test_two_ranks_report_per_rank_figures_and_name_the_slowest() -> None:
    result = run_script(REPO / "tests" / "scripts" / "ddp_monitors.py", "--delay0", "0.002", "--delay1", "0.04")
    per_rank = result["per_rank"]
    assert len(per_rank) == 2
    # Each rank's costs are slept on its own virtual clock: fetch 2 and 40 ms, step 20 ms, exactly.
    assert [row["fetch_ms"] for row in per_rank] == [pytest.approx(2.0), pytest.approx(40.0)]
    assert result["slowest_rank"] == 1
    assert "(rank 1)" in result["summary"] and "rank 1 waits" in result["summary"]
    # The straggler view names the delayed rank with its node and local rank, and the skew.
    assert "slowest rank 1 (node 0, local rank 1)" in result["summary"]
    assert per_rank[1]["local_rank"] == 1.0 and per_rank[0]["node_rank"] == per_rank[1]["node_rank"] == 0.0
    last = result["history"][-1]
    assert last["starvation/fetch_skew"] == pytest.approx(40 / 21)  # worst / median of two ranks: 40 / 21 ms
    assert last["starvation/slowest_node"] == 0.0
    assert last["starvation/slowest_rank"] == 1.0
    assert (last["starvation/rank0"], last["starvation/rank1"]) == (pytest.approx(2 / 22), pytest.approx(40 / 60))
    assert last["starvation/fraction"] == pytest.approx((last["starvation/rank0"] + last["starvation/rank1"]) / 2)
    throughput = result["throughput_per_rank"]
    assert [row["batches"] for row in throughput] == [8.0, 8.0]  # 16 batches split over two ranks
    assert "throughput/rank1/samples_per_sec" in result["throughput_history"][-1]


@pytest.mark.cuda
def test_cuda_events_measure_gpu_idle() -> None:
    # Real events on a real device: what the wiring must produce, not how long the sleeps took (the
    # figures themselves are pinned on virtual events in test_gpu_idle_path_reads_the_device_timeline).
    monitor = StarvationMonitor(print_summary=False)
    run_paced(0.05, 0.02, num_batches=10, callbacks=[monitor], accelerator="cuda")
    assert monitor.final is not None
    total = monitor.clock.total
    assert total.gpu_idle_s > 0 and total.gpu_busy_s > 0  # the paced fetch leaves the device idle
    assert 0 < monitor.final.mean["gpu_idle_fraction"] < 1
    assert monitor.final.mean["starvation"] == monitor.final.mean["gpu_idle_fraction"]  # the device figure wins
    assert monitor.history and "starvation/gpu_idle_fraction" in monitor.history[-1]
