"""PredictionWriter: ``stoker predict`` writes a CSV of predicted classes, one row per sample."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Write each predicted sample as a CSV row: its index, its file (when known), the top classes.

    Built on Lightning's ``BasePredictionWriter``, so ``trainer.predict`` (and ``stoker predict``)
    write as they go instead of keeping every prediction in memory. A stoker model's
    ``predict_step`` returns class probabilities ``[N, C]``; the sample's ``index`` comes from the
    batch, and a media DataModule names its file (relative to its root or table) or its sample key,
    for its ``predict_source`` (new data, e.g. a folder of unlabelled images) or the predicted split.
    Under DDP every rank writes its own file, ``<stem>.rank<r><suffix>``, since each rank predicts a
    disjoint share.

    Columns: ``index``, ``path`` (empty when unknown), then for ``k = 1..top_k``: ``class_k`` (the
    DataModule's class name, else the id) and ``probability_k``.

    Args:
        output_path: The CSV file (its folder is created).
        top_k: Classes written per sample, most probable first.

    Raises:
        ValueError: ``top_k`` below 1, or a ``predict_step`` output that is not probabilities ``[N, C]``.

    Example::

        stoker predict --config recipes/quickstart.yaml --ckpt_path last.ckpt \\
          --trainer.callbacks+=stoker.callbacks.PredictionWriter --trainer.callbacks.output_path=preds.csv
    """

    def __init__(self, output_path: str = "predictions.csv", *, top_k: int = 1) -> None:
        super().__init__(write_interval="batch")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.output_path = output_path
        self.top_k = top_k
        self.written: Path | None = None
        self._names: list[str] = []
        self._paths: list[str] = []

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.output_path)
        if trainer.world_size > 1:
            path = path.with_name(f"{path.stem}.rank{trainer.global_rank}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        datamodule: Any = getattr(trainer, "datamodule", None)
        self._names = list(getattr(datamodule, "class_names", None) or [])
        names_of = getattr(datamodule, "predict_names", None)
        if callable(names_of):  # stoker's media DataModules: the predict_source's files, or the predicted split's
            self._paths = [str(name) for name in names_of()]
        else:
            splits, split = getattr(datamodule, "splits", None), getattr(datamodule, "predict_split", None)
            self._paths = [str(item[0]) for item in splits[split]] if isinstance(splits, dict) and split else []
        header = ["index", "path"] + [f"{kind}_{k}" for k in range(1, self.top_k + 1)
                                      for kind in ("class", "probability")]
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerow(header)
        self.written = path

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if not isinstance(prediction, torch.Tensor) or prediction.ndim != 2:
            raise ValueError(f"PredictionWriter expects predict_step to return probabilities [N, C], got "
                             f"{type(prediction).__name__} of shape {tuple(getattr(prediction, 'shape', ()))}")
        k = min(self.top_k, prediction.shape[1])
        probabilities, classes = prediction.detach().float().topk(k, dim=1)
        indices = batch["index"].tolist() if isinstance(batch, dict) and "index" in batch else list(batch_indices)
        assert self.written is not None  # on_predict_start ran
        with self.written.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for row, index in enumerate(indices):
                path = self._paths[index] if index < len(self._paths) else ""
                cells: list[Any] = [index, path]
                for label, probability in zip(classes[row].tolist(), probabilities[row].tolist()):
                    cells += [self._names[label] if label < len(self._names) else label, f"{probability:.6f}"]
                writer.writerow(cells)
