"""SampleGridLogger and the original/augmented sample grid."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from torch import nn

from stoker.callbacks import SampleGridLogger
from stoker.datamodules import ImageFolderDataModule
from stoker.io.image import read_image
from stoker.report import plots
from stoker.report.grid import draw_samples, pair_grid, sample_pairs


def _datamodule(root: Path) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(root), image_size=16, batch_size=4, num_workers=0, val_fraction=0.0,
                               auto_augment="trivialaugment")
    dm.setup("fit")
    return dm


def test_pairs_are_the_files_and_their_augmented_versions(image_tree) -> None:
    dm = _datamodule(image_tree({"a": 3, "b": 3}, size=(30, 40)))
    dataset = dm.datasets["train"]
    pairs = sample_pairs(dataset, 4, seed=1)
    assert len(pairs) == 4
    first_original, first_augmented = pairs[0]
    assert torch.equal(first_original, read_image(dataset.root / dataset.samples[0][0]))
    assert first_augmented.shape == (3, 16, 16) and first_augmented.dtype == torch.uint8
    again = sample_pairs(dataset, 4, seed=1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(pairs, again))  # seeded: the same grid every time
    assert dataset.transform is dm.train_transform  # the dataset itself is left as it was
    labelled = draw_samples(dataset, 4, seed=1)
    assert [s.label for s in labelled] == [dataset.samples[p][1] for p in (0, 2, 3, 5)]
    assert all(torch.equal(s.augmented, pair[1]) for s, pair in zip(labelled, pairs))


def test_grid_layout() -> None:
    pairs = [(torch.zeros(3, 30, 20, dtype=torch.uint8), torch.full((3, 16, 16), 200, dtype=torch.uint8))] * 3
    grid = pair_grid(pairs, pairs_per_row=2)
    # 6 tiles of 16 px, 4 per row, 2 px padding: 4 * 18 + 2 wide, 2 * 18 + 2 high
    assert grid.shape == (3, 38, 74) and grid.dtype == torch.uint8
    assert int(grid[0, 2, 2]) == 0 and int(grid[0, 2, 20]) == 200  # original left, augmented right
    tile = torch.zeros(3, 8, 8, dtype=torch.uint8)
    only_augmented = pair_grid([(None, tile), (None, tile)])  # no original known: augmented tiles only
    assert only_augmented.shape == (3, 12, 22)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="num_samples must be a positive integer, got 0"):
        SampleGridLogger(num_samples=0)
    with pytest.raises(ValueError, match="has no \\[C, H, W\\] image tensor under 'image'"):
        sample_pairs([{"input_ids": torch.ones(5)}], 1)
    with pytest.raises(ValueError, match="count must be a positive integer"):
        sample_pairs([], 0)


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callback_logs_the_grid_to_tensorboard(image_tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import stoker.callbacks.sample_grid as module

    dm = ImageFolderDataModule(str(image_tree({"a": 4, "b": 4})), image_size=16, batch_size=4, num_workers=0,
                               val_fraction=0.0)
    titles: list[str] = []

    def figure(*args: object, **kwargs: object) -> object:
        drawn = plots.sample_grid_figure(*args, **kwargs)
        titles.extend(axes.get_title() for axes in drawn.axes)
        return drawn

    monkeypatch.setattr(module, "sample_grid_figure", figure)
    callback = SampleGridLogger(num_samples=4, pairs_per_row=2, save_path=str(tmp_path / "grid.png"))
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=logger, callbacks=[callback],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(_Tiny(), datamodule=dm)
    assert callback.logged_to == [str(tmp_path / "grid.png"), "TensorBoardLogger"]
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "data/sample_grid" in events.Tags()["images"]
    assert titles == ["a", "a", "b", "b"], "each tile carries its class name"
    image = events.Images("data/sample_grid")[0]
    with Image.open(tmp_path / "grid.png") as png:
        assert png.size == (image.width, image.height), "the PNG and the logger get the same picture"
    # 16 px images upscaled: two pairs of two 100 px tiles per row, two rows with their titles
    assert image.width >= 2 * 2 * 100 and image.height >= 2 * 100
