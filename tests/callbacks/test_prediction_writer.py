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


def test_stoker_predict_writes_a_row_per_new_unlabelled_file(image_tree, tmp_path: Path) -> None:
    """``stoker predict ... --data.init_args.predict_source=new/`` predicts a flat folder of new images."""
    from stoker.cli import run_cli

    root = image_tree({"a": 4, "b": 4}, size=(16, 16))
    new = tmp_path / "new"
    new.mkdir()
    for path in sorted(root.rglob("*.jpg"))[:5]:
        (new / f"new_{path.name}").write_bytes(path.read_bytes())
    out = tmp_path / "preds.csv"
    run_cli(["predict", "--model=stoker.models.ImageClassifier", "--model.model_name=resnet10t",
             "--data=stoker.datamodules.ImageDataModule", f"--data.source={root}", f"--data.predict_source={new}",
             "--data.batch_size=2", "--data.num_workers=0", "--data.image_size=16", "--trainer.logger=false",
             "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
             "--trainer.callbacks+=stoker.callbacks.PredictionWriter", f"--trainer.callbacks.output_path={out}"])
    rows = list(csv.DictReader(out.open()))
    assert sorted(row["path"] for row in rows) == sorted(p.name for p in new.iterdir())
    assert all(row["class_1"] in ("a", "b") for row in rows)
