"""PredictionWriter: a CSV row per predicted sample, with its file and top classes."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch

from stoker.callbacks import PredictionWriter
from stoker.datamodules import ImageFolderDataModule


class Uniform(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 3)

    def predict_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # class 2 for the first sample of every batch, class 0 for the others
        logits = torch.zeros(len(batch["index"]), 3)
        logits[:, 0], logits[0, 2] = 1.0, 5.0
        return logits.softmax(dim=1)


def test_writes_index_path_and_top_classes_for_every_predicted_sample(image_tree, tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(image_tree({"a": 4, "b": 3, "c": 3}, size=(16, 16))), batch_size=2,
                               num_workers=0, image_size=8, val_fraction=0.3)
    writer = PredictionWriter(str(tmp_path / "out" / "preds.csv"), top_k=2)
    trainer = L.Trainer(accelerator="cpu", logger=False, callbacks=[writer], enable_progress_bar=False)
    trainer.predict(Uniform(), datamodule=dm, return_predictions=False)
    rows = list(csv.DictReader((tmp_path / "out" / "preds.csv").open()))
    expected = [rel for rel, _ in dm.splits["val"]]
    assert [row["path"] for row in rows] == expected and [int(r["index"]) for r in rows] == list(range(len(expected)))
    assert rows[0]["class_1"] == "c" and rows[0]["class_2"] == "a" and rows[1]["class_1"] == "a"
    assert float(rows[0]["probability_1"]) > float(rows[0]["probability_2"])
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        PredictionWriter(top_k=0)
