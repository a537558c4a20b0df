"""A callback that shows what the model is trained on: samples before and after augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn

from stoker.report.grid import draw_samples
from stoker.report.plots import figure_tensor, sample_grid_figure


class SampleGridLogger(L.Callback):
    """Log a grid of training samples, each original beside its augmented version and titled with its class
    name, when training starts.

    The grid holds what the CPU pipeline hands the model (decode, crop, flip, policy augmentation);
    device-side steps such as normalization and MixUp/CutMix come later and are not drawn. Originals
    are read with the dataset's ``transform`` turned off. Each tile carries the class name of its
    label (the DataModule's ``class_names`` and ``target_key``), the first thing to check for label
    errors; small images are upscaled for display. It is the picture the Data Pipeline Summary saves
    (:func:`stoker.report.plots.sample_grid_figure`). The draw is seeded, so reruns show the same
    grid. Runs on rank zero only and costs ``num_samples`` extra reads once.

    Logged (as an image, not a metric):
        ``data/sample_grid``: ``uint8 [3, H, W]``, the rendered figure; to TensorBoard via ``add_image``,
        to loggers with ``log_image`` (W&B, Neptune...) via that method.

    Args:
        num_samples: Samples in the grid.
        pairs_per_row: Original/augmented pairs per grid row.
        tag: Name of the image in the logger.
        save_path: Also write the grid as a PNG here (useful without a logger).
        seed: Seeds the augmentation draws of the grid.

    Example::

        trainer = L.Trainer(callbacks=[SampleGridLogger(num_samples=16)], logger=TensorBoardLogger("logs"))
    """

    def __init__(self, num_samples: int = 16, pairs_per_row: int = 4, tag: str = "data/sample_grid",
                 save_path: str | None = None, seed: int = 0) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
        if pairs_per_row < 1:
            raise ValueError(f"pairs_per_row must be a positive integer, got {pairs_per_row}")
        self.num_samples = num_samples
        self.pairs_per_row = pairs_per_row
        self.tag = tag
        self.save_path = save_path
        self.seed = seed
        self.logged_to: list[str] = []

    @rank_zero_only
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset, key = self._training_dataset(trainer)
        if dataset is None:
            rank_zero_warn("SampleGridLogger: no map-style training dataset to draw samples from; nothing logged")
            return
        datamodule = getattr(trainer, "datamodule", None)
        samples = draw_samples(dataset, self.num_samples, key=key, seed=self.seed,
                               target_key=getattr(datamodule, "target_key", "label"))
        grid = figure_tensor(sample_grid_figure(samples, getattr(datamodule, "class_names", None),
                                                per_row=self.pairs_per_row))
        if self.save_path:
            from torchvision.io import write_png

            Path(self.save_path).parent.mkdir(parents=True, exist_ok=True)
            write_png(grid, self.save_path)
            self.logged_to.append(self.save_path)
        for logger in trainer.loggers:
            experiment: Any = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(self.tag, grid, global_step=trainer.global_step, dataformats="CHW")
            elif hasattr(logger, "log_image"):
                logger.log_image(key=self.tag, images=[grid.permute(1, 2, 0).numpy()], step=trainer.global_step)
            else:
                continue
            self.logged_to.append(type(logger).__name__)

    @staticmethod
    def _training_dataset(trainer: L.Trainer) -> tuple[Any, str]:
        datamodule = getattr(trainer, "datamodule", None)  # typed loosely: mypy misreads Trainer's properties
        key = getattr(datamodule, "input_key", "image")
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None and datamodule is not None:
            dataset = getattr(datamodule.train_dataloader(), "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            return None, key
        return dataset, key
