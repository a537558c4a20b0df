"""DataThroughputMonitor: samples and tokens counted as the DataModule says, validation excluded, resume.

Where a test checks a rate or a time, the costs are slept on a virtual clock that the monitor reads
(the ``virtual_clock`` fixture), so the figures are exact on any machine load.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from stoker.callbacks import DataThroughputMonitor
from tests.scripts.monitor_harness import ListLogger, PacedModel, VirtualClock, paced_loader, run_paced


class TokenBatches(Dataset):
    """Whole token batches: 4 rows of length 10, of which 6 are real tokens (40% padding), each costing ``delay_s``."""

    def __init__(self, num_batches: int, delay_s: float = 0.0, clock: Any = time) -> None:
        self.num_batches = num_batches
        self.delay_s = delay_s
        self.clock = clock

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self.delay_s:
            self.clock.sleep(self.delay_s)
        mask = torch.zeros(4, 10, dtype=torch.long)
        mask[:, :6] = 1
        return {"input_ids": torch.randint(0, 50, (4, 10)), "attention_mask": mask}


class TokenDataModule(L.LightningDataModule):
    """Describes its batches the way stoker DataModules do (``batch_size_of``, ``token_counts``)."""

    def __init__(self, num_batches: int, val_batches: int = 0, val_delay_s: float = 0.0, train_delay_s: float = 0.0,
                 clock: Any = time) -> None:
        super().__init__()
        self.num_batches, self.val_batches, self.val_delay_s = num_batches, val_batches, val_delay_s
        self.train_delay_s, self.clock = train_delay_s, clock

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TokenBatches(self.num_batches, self.train_delay_s, self.clock), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TokenBatches(self.val_batches, self.val_delay_s, self.clock), batch_size=None)

    def batch_size_of(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0])

    def token_counts(self, batch: dict[str, torch.Tensor]) -> tuple[int, int]:
        mask = batch["attention_mask"]
        return int(mask.sum()), mask.numel()


class TokenModel(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.embed(batch["input_ids"]).mean()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.embed(batch["input_ids"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(monitor: DataThroughputMonitor, *, max_epochs: int = 1, limit_val_batches: int = 0,
             **kwargs: Any) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=max_epochs, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, callbacks=[monitor], num_sanity_val_steps=0,
                     limit_val_batches=limit_val_batches, **kwargs)


def test_tokens_are_counted_by_the_datamodule(capsys: pytest.CaptureFixture[str]) -> None:
    logger = ListLogger()
    monitor = DataThroughputMonitor(window_size=3)
    trainer = _trainer(monitor, logger=logger, log_every_n_steps=3)
    trainer.fit(TokenModel(), datamodule=TokenDataModule(num_batches=9))
    assert monitor.totals["samples"] == 36 and monitor.totals["batches"] == 9
    assert (monitor.totals["real_tokens"], monitor.totals["padded_tokens"]) == (9 * 24, 9 * 40)
    logged = [metrics for _, metrics in logger.logged if "throughput/samples_per_sec" in metrics]
    assert len(logged) == 3  # steps 3, 6 and 9
    last = logged[-1]
    assert last["throughput/padding_fraction"] == pytest.approx(0.4)
    assert last["throughput/real_tokens_per_sec"] == pytest.approx(0.6 * last["throughput/padded_tokens_per_sec"])
    assert last["throughput/padded_tokens_per_sec"] == pytest.approx(40 * last["throughput/batches_per_sec"])
    assert last["throughput/samples_per_sec"] == pytest.approx(4 * last["throughput/batches_per_sec"])
    assert trainer.progress_bar_metrics["samples/s"] == pytest.approx(last["throughput/samples_per_sec"])
    out = capsys.readouterr().out
    assert "stoker DataThroughputMonitor summary" in out and "padding 40.0%" in out


def test_samples_per_second_equal_the_injected_costs(virtual_clock: VirtualClock) -> None:
    monitor = DataThroughputMonitor(window_size=4, print_summary=False)
    run_paced(0.02, 0.02, num_batches=9, callbacks=[monitor], log_every_n_steps=4, clock=virtual_clock)
    assert monitor.totals["samples"] == 36  # a plain DataLoader: the first tensor's leading dimension
    # Every iteration costs 20 ms of fetch and 20 ms of step for 4 samples: 100 samples/s, 25 batches/s.
    assert [m["throughput/samples_per_sec"] for m in monitor.history] == [pytest.approx(100.0)] * 2
    assert monitor.history[-1]["throughput/batches_per_sec"] == pytest.approx(25.0)
    assert monitor.totals["time_s"] == pytest.approx(9 * 0.04)


def test_validation_time_is_excluded(virtual_clock: VirtualClock) -> None:
    monitor = DataThroughputMonitor(print_summary=False)
    trainer = _trainer(monitor, logger=False, max_epochs=2, limit_val_batches=2)
    data = TokenDataModule(num_batches=4, val_batches=2, val_delay_s=0.2, train_delay_s=0.01, clock=virtual_clock)
    trainer.fit(TokenModel(), datamodule=data)
    # Two epochs of 4 training batches cost 10 ms each; the 0.8 s of validation must not be on the training clock.
    assert virtual_clock.now == pytest.approx(2 * 4 * 0.01 + 2 * 2 * 0.2)
    assert monitor.totals["time_s"] == pytest.approx(2 * 4 * 0.01)


def test_totals_resume_from_state_dict(virtual_clock: VirtualClock) -> None:
    first = DataThroughputMonitor(print_summary=False)
    data = TokenDataModule(num_batches=3, train_delay_s=0.01, clock=virtual_clock)
    _trainer(first, logger=False).fit(TokenModel(), datamodule=data)
    assert first.totals["time_s"] == pytest.approx(3 * 0.01)
    resumed = DataThroughputMonitor(print_summary=False)
    resumed.load_state_dict(first.state_dict())
    _trainer(resumed, logger=False).fit(TokenModel(), datamodule=data)
    assert resumed.totals["batches"] == 6 and resumed.totals["real_tokens"] == 6 * 24
    assert resumed.totals["time_s"] == pytest.approx(6 * 0.01)  # the clock continues from the checkpointed time


def test_checkpoint_carries_the_totals(tmp_path: Any) -> None:
    monitor = DataThroughputMonitor(print_summary=False)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[monitor], default_root_dir=tmp_path)
    trainer.fit(PacedModel(0.0), paced_loader(3, 0.0))
    checkpoint = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=False)
    states = [state for key, state in checkpoint["callbacks"].items() if "DataThroughputMonitor" in key]
    assert states and states[0]["totals"]["batches"] == 3


def test_bad_arguments_and_state_name_the_fix() -> None:
    with pytest.raises(ValueError, match="window_size must be >= 2"):
        DataThroughputMonitor(window_size=1)
    with pytest.raises(ValueError, match="log_every_n_steps must be >= 1 or None"):
        DataThroughputMonitor(log_every_n_steps=0)
    with pytest.raises(ValueError, match=r"unknown DataThroughputMonitor totals \['tokens'\]"):
        DataThroughputMonitor().load_state_dict({"totals": {"tokens": 3}})


def test_a_short_run_logs_rates_and_they_reach_callback_metrics() -> None:
    # The window holds 20 steps; a 6-step run used to log nothing and callback_metrics never saw a rate.
    monitor = DataThroughputMonitor(window_size=20, print_summary=False)
    trainer = run_paced(0.0, 0.001, num_batches=6, callbacks=[monitor], log_every_n_steps=2)
    assert monitor.history and all(m["throughput/samples_per_sec"] > 0 for m in monitor.history)
    assert float(trainer.callback_metrics["throughput/samples_per_sec"]) > 0
