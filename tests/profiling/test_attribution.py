"""Per-worker and per-sample attribution: stage times travel with the batch and name the slow worker and file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import get_worker_info

from stoker.callbacks import StarvationMonitor
from stoker.data import file_dataset
from stoker.datamodules import ImageFolderDataModule
from stoker.profiling.attribution import PROFILE_KEY, LoadProfile, attribution_lines
from tests.callbacks.test_starvation_monitor import ImageProbe
from tests.conftest import encode_image, natural_image
from tests.scripts.monitor_harness import VirtualClock


def test_profile_sums_stages_per_worker_and_keeps_the_slowest_samples() -> None:
    profile = LoadProfile()
    names = {i: f"file_{i}.jpg" for i in range(30)}
    for batch in range(3):
        indices = list(range(10 * batch, 10 * batch + 10))
        profile.add({"worker": batch // 2, "read_s": [0.001 * (i + 1) for i in indices],
                     "transform_s": [0.002] * 10, "index": indices, "collate_s": 0.004}, names.get)
    summary = profile.summary()
    assert summary["workers"][0]["samples"] == 20 and summary["workers"][1]["samples"] == 10
    assert summary["workers"][1]["read_ms_per_sample"] == 25.5  # indices 20..29 read 21..30 ms
    assert summary["workers"][0]["collate_ms_per_batch"] == 4.0
    assert [s["path"] for s in summary["slowest"][:3]] == ["file_29.jpg", "file_28.jpg", "file_27.jpg"]
    assert len(summary["slowest"]) == 10
    assert 29.0 < summary["p99_sample_ms"] <= 32.0
    lines = attribution_lines(summary)
    assert "worker 0: read+decode" in lines[0] and "slowest: worker 1" in lines[1]
    assert attribution_lines({}) == []


class VirtualCosts:
    """The train transform, charging a virtual clock: ``worker_s`` per sample on one DataLoader worker (the
    slow worker to find) and ``large_s`` per image of more than 32 x 32 pixels (the slow file to find)."""

    def __init__(self, transform: Any, clock: VirtualClock, worker: int, worker_s: float, large_s: float) -> None:
        self.transform, self.clock, self.worker = transform, clock, worker
        self.worker_s, self.large_s = worker_s, large_s

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        info = get_worker_info()
        if info is not None and info.id == self.worker:
            self.clock.sleep(self.worker_s)
        if image.shape[-2] * image.shape[-1] > 32 * 32:
            self.clock.sleep(self.large_s)
        return self.transform(image)


def test_the_slowest_worker_and_file_are_named(image_tree: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file dataset times each sample on a virtual clock that only the injected costs move. The forked
    # workers inherit the patch, each with its own copy of the clock: exact figures whatever the load.
    clock = VirtualClock()
    monkeypatch.setattr(file_dataset, "time", clock)
    root = image_tree({"a": 12, "b": 12}, size=(20, 24), fmt="PNG")
    big = root / "a" / "a_big.png"
    big.write_bytes(encode_image(natural_image(np.random.default_rng(1), 64, 64), "PNG"))
    dm = ImageFolderDataModule(root, batch_size=5, num_workers=2, persistent_workers=False, image_size=16,
                               val_fraction=0.0)
    dm.train_transform = VirtualCosts(dm.train_transform, clock, worker=1, worker_s=0.01, large_s=0.05)
    monitor = StarvationMonitor(print_summary=False, summary_file=None)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor],
                        limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(ImageProbe(), datamodule=dm)
    profile = monitor.load_profile
    assert set(profile["workers"]) == {0, 1}
    assert sum(w["samples"] for w in profile["workers"].values()) == 25  # every training sample, once
    slowest = profile["slowest"][0]
    assert slowest["path"] == "a/a_big.png"
    big_worker = 1 if slowest["ms"] == pytest.approx(60.0) else 0  # 50 ms large image (+10 ms on worker 1)
    assert slowest["ms"] == pytest.approx(50.0 + 10.0 * big_worker)
    assert [s["ms"] for s in profile["slowest"][1:]] == [pytest.approx(10.0)] * 9  # worker 1's other samples
    for worker, figures in profile["workers"].items():
        large = 50.0 / figures["samples"] if worker == big_worker else 0.0
        assert figures["transform_ms_per_sample"] == pytest.approx(10.0 * worker + large), worker
        assert figures["read_ms_per_sample"] == 0.0  # the decode itself costs no virtual time
    assert monitor.summary is not None
    assert "slowest: worker 1" in monitor.summary and "a/a_big.png" in monitor.summary
    assert "stoker scan" in monitor.summary


def test_the_profile_never_reaches_the_model(image_tree: Any) -> None:
    root = image_tree({"a": 4, "b": 4}, size=(20, 24))
    dm = ImageFolderDataModule(root, batch_size=4, num_workers=0, image_size=16, val_fraction=0.0)
    dm.setup("fit")
    assert set(next(iter(dm.train_dataloader()))) == {"image", "label", "index"}  # on its own: the data keys alone
    seen: list[list[str]] = []

    class Keys(ImageProbe):
        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            seen.append(sorted(batch))
            return super().training_step(batch, batch_idx)

    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0).fit(Keys(), datamodule=dm)
    assert seen and all(PROFILE_KEY not in keys for keys in seen)
    assert dm.load_profile.summary()["workers"][-1]["samples"] == 8  # the main process loaded them


class TokenProbe(L.LightningModule):
    """Embeds token ids and trains a linear head: enough to fit on text batches."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(30522, 4)
        self.head = torch.nn.Linear(4, 2)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        assert PROFILE_KEY not in batch
        return torch.nn.functional.cross_entropy(self.head(self.embed(batch["input_ids"])), batch["labels"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streamed"])
def test_text_splits_tokenization_from_collate(tmp_path: Path, streaming: bool) -> None:
    from tests.datamodules.test_text_datamodule import make, rows, write_csv

    data = write_csv(tmp_path / "s" / "train.csv", rows(64))
    write_csv(tmp_path / "s" / "validation.csv", rows(8, offset=500))
    dm = make(tmp_path, data.parent, streaming=streaming, num_workers=1, persistent_workers=False)
    monitor = StarvationMonitor(print_summary=False, summary_file=None)
    L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[monitor], limit_val_batches=0,
              num_sanity_val_steps=0).fit(TokenProbe(), datamodule=dm)
    worker = monitor.load_profile["workers"][0]
    assert worker["batches"] == 16 and worker["collate_ms_per_batch"] > 0
    assert monitor.summary is not None
    if streaming:  # the worker tokenizes the rows it streams: that time is its own stage
        assert worker["tokenize_ms_per_batch"] > 0
        assert "tokenize" in monitor.summary and "tokenizing on the fly" in monitor.summary
    else:
        assert "tokenize_ms_per_batch" not in worker
        assert "tokenized once before training" in monitor.summary
