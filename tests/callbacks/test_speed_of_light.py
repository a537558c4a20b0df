"""Speed of light: the replay measures the injected step time and leaves training bit for bit unchanged."""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
import torchmetrics
from torch.utils.data import DataLoader, Dataset

from stoker.callbacks import MixUpCutMix, StarvationMonitor
from stoker.callbacks.speed_of_light import SpeedOfLight
from tests.scripts.monitor_harness import PacedBatches, VirtualClock


class SleepyModel(L.LightningModule):
    """A linear model whose training step sleeps ``step_s`` on ``clock`` (automatic optimization)."""

    def __init__(self, step_s: float, clock: VirtualClock) -> None:
        super().__init__()
        self.step_s, self.clock = step_s, clock
        self.layer = torch.nn.Linear(8, 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.clock.sleep(self.step_s)
        return torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["y"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class DeviceWorkData(L.LightningDataModule):
    """Paced batches (``delay_s`` each, no workers) whose ``on_after_batch_transfer`` costs ``device_s``."""

    def __init__(self, num_batches: int, delay_s: float, device_s: float, clock: VirtualClock) -> None:
        super().__init__()
        self.dataset = PacedBatches(num_batches, delay_s, clock=clock)
        self.device_s, self.clock = device_s, clock
        self.fetched = 0
        self.device_calls = 0

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=None, num_workers=0,
                          collate_fn=lambda batch: self._count(batch))

    def _count(self, batch: Any) -> Any:
        self.fetched += 1
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        self.device_calls += 1
        self.clock.sleep(self.device_s)
        return batch


def _trainer(callbacks: list[Any], max_epochs: int = 1) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                     log_every_n_steps=4, num_sanity_val_steps=0)


def test_replayed_step_equals_the_injected_step_time_with_device_work_inside(virtual_clock: VirtualClock) -> None:
    # Costs are slept on a virtual clock that the monitor and the replay read: the figures are exact.
    step_s, device_s, delay_s = 0.06, 0.02, 0.04
    data = DeviceWorkData(12, delay_s=delay_s, device_s=device_s, clock=virtual_clock)
    monitor = StarvationMonitor(speed_of_light_steps=4, speed_of_light_after=3, print_summary=False,
                                summary_file=None)
    _trainer([monitor]).fit(SleepyModel(step_s, virtual_clock), datamodule=data)
    result = monitor.speed_of_light.result
    assert result is not None and result.steps == 4 and result.samples == 4 * 4
    truth = step_s + device_s  # normalization-like device work is part of the replayed step
    assert result.step_s == pytest.approx(truth), f"replayed {result.step_s * 1e3:.1f} ms, injected {truth * 1e3}"
    assert data.fetched == 12  # the replay never touched the loader
    assert data.device_calls == 12 + 4  # the device work ran again on each kept batch
    # Measured: fetch 40 + device 20 + step 60 ms per batch; loading free: 80 ms, so 1.5x the samples/s.
    assert monitor.final is not None
    assert monitor.final.mean["samples_per_s"] == pytest.approx(4 / (delay_s + truth))
    assert monitor.final.mean["speed_of_light_samples_per_s"] == pytest.approx(4 / truth)
    ratio = monitor.final.mean["speed_of_light_samples_per_s"] / monitor.final.mean["samples_per_s"]
    assert ratio == pytest.approx((delay_s + truth) / truth)
    assert monitor.summary is not None and "speed of light (4 steps replayed" in monitor.summary
    assert "headroom" in monitor.summary


class Images(Dataset):
    """Batches of random images and labels, the same for an index on every run."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return {"image": torch.randn(4, 3, 8, 8, generator=generator),
                "label": torch.randint(0, 3, (4,), generator=generator)}


class DropoutModel(L.LightningModule):
    """Dropout (draws from the torch generator), AdamW with a per-step schedule, soft-target loss."""

    def __init__(self, manual: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = not manual
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(192, 3))
        self.accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes=3)
        self.losses: list[float] = []
        self.outputs: list[torch.Tensor] = []  # grown by each step, as Lightning's docs collect step outputs
        self._last: torch.Tensor | None = None

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.net(batch["image"])
        loss = torch.nn.functional.cross_entropy(logits, batch["label"])
        self.accuracy.update(logits.argmax(1), batch["label"].argmax(1))  # MixUp made the labels soft
        self.outputs.append(loss.detach())
        self.log("loss", loss, on_step=False, on_epoch=True)
        if not self.automatic_optimization:
            optimizer = self.optimizers()
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            self.lr_schedulers().step()
        self._last = loss.detach()
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        assert self._last is not None
        self.losses.append(float(self._last))  # real steps only: the replay never calls this hook

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.01)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _fit_images(replay_steps: int, manual: bool) -> tuple[DropoutModel, L.Trainer, MixUpCutMix, StarvationMonitor]:
    L.seed_everything(7, verbose=False)
    model = DropoutModel(manual)
    mixup = MixUpCutMix(num_classes=3, input_key="image", target_key="label", seed=3)
    monitor = StarvationMonitor(speed_of_light_steps=replay_steps, speed_of_light_after=3, print_summary=False,
                                summary_file=None)
    loader = DataLoader(Images(), batch_size=None, shuffle=True, num_workers=0)
    trainer = _trainer([mixup, monitor], max_epochs=2)
    trainer.fit(model, loader)
    return model, trainer, mixup, monitor


@pytest.mark.parametrize("manual", [False, True], ids=["automatic", "manual"])
def test_training_after_the_replay_is_bit_identical(manual: bool) -> None:
    plain, plain_trainer, plain_mixup, _ = _fit_images(0, manual)
    replayed, replayed_trainer, replayed_mixup, monitor = _fit_images(4, manual)
    assert monitor.speed_of_light.result is not None and monitor.speed_of_light.result.steps == 4
    assert replayed.losses == plain.losses  # every real step saw the same weights, dropout and mix
    assert len(replayed.outputs) == len(plain.outputs) == 20
    assert replayed.accuracy._update_count == plain.accuracy._update_count == 20
    assert torch.equal(replayed.accuracy.compute(), plain.accuracy.compute())
    for (name, left), (_, right) in zip(plain.state_dict().items(), replayed.state_dict().items()):
        assert torch.equal(left, right), name
    left_opt, right_opt = plain_trainer.optimizers[0].state_dict(), replayed_trainer.optimizers[0].state_dict()
    for key, state in left_opt["state"].items():
        for field, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(right_opt["state"][key][field])), field
    left_lr = plain_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert left_lr == replayed_trainer.lr_scheduler_configs[0].scheduler.state_dict()
    assert replayed_mixup.state_dict() == plain_mixup.state_dict()
    # The replayed steps reached neither the loggers nor the epoch means of self.log.
    assert torch.equal(replayed_trainer.callback_metrics["loss"], plain_trainer.callback_metrics["loss"])


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="speed_of_light_steps and speed_of_light_after must be >= 0"):
        SpeedOfLight(-1, 0)
    off = SpeedOfLight(0, 10)
    off.attach(_trainer([]))  # off: nothing is wrapped
    assert off._wrap is None
