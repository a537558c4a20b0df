"""What the real multi-process DDP scripts share: a quiet 2-rank CPU Trainer and a recording module."""

from __future__ import annotations

import atexit
import tempfile
from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from stoker.cli import release_process_group


def ddp_trainer(**overrides: Any) -> L.Trainer:
    """Two CPU processes over gloo, one epoch, nothing printed or saved in the repository (override any argument).

    The process group is destroyed at exit, while the interpreter is still whole, as ``stoker fit`` does
    (left to finalization, gloo aborts an exiting rank now and then).
    """
    atexit.register(release_process_group)
    settings: dict[str, Any] = dict(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tempfile.mkdtemp(prefix="stoker-ddp-"),  # run summaries of the monitors
    )
    return L.Trainer(**{**settings, **overrides})


def gather(record: Any) -> list[Any]:
    """Every rank's ``record``, in rank order (just ``[record]`` outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [record]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, record)
    return gathered


class RecordingModule(L.LightningModule):
    """Records what every training and validation batch held; rank 0 reads ``gathered`` after fit.

    A layer trained at learning rate 0 keeps DDP's gradient all-reduce real without changing
    anything. Subclasses say what to record and how to turn a batch into the layer's input.
    """

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.seen: dict[str, list[Any]] = {"train": [], "val": []}
        self.notes: set[str] = set()
        self.gathered: list[Any] = []

    def record(self, stage: str, batch: dict[str, Any]) -> Any:
        return batch["index"].tolist()

    def features(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["image"].mean(dim=(2, 3))

    def extra(self) -> dict[str, Any]:
        return {}

    def _step(self, stage: str, batch: dict[str, Any]) -> torch.Tensor:
        if not self.trainer.sanity_checking:
            self.seen[stage].append(self.record(stage, batch))
        return self.layer(self.features(batch)).sum()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step("val", batch)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def on_fit_end(self) -> None:
        self.gathered = gather({"seen": self.seen, "notes": sorted(self.notes), **self.extra()})


def assert_two_rank_coverage(result: dict[str, Any], *, batch_size: int) -> None:
    """What every folder DataModule guarantees over 2 ranks, from a script's gathered ``ranks``/sizes.

    Validation sees every sample exactly once (unrepeated, ranks uneven by at most one). Training
    gives both ranks the same number of full batches over disjoint shards; what no rank saw is only
    the tail of the epoch's permutation that does not fill a whole batch on every rank.
    """
    from stoker.samplers import ShardPlan

    ranks = result["ranks"]
    val = [[i for batch in r["seen"]["val"] for i in batch] for r in ranks]
    assert abs(len(val[0]) - len(val[1])) <= 1
    assert sorted(val[0] + val[1]) == list(range(result["val_size"]))
    train_batches = [r["seen"]["train"] for r in ranks]
    assert len(train_batches[0]) == len(train_batches[1]) > 0
    train = [{i for batch in b for i in batch} for b in train_batches]
    plan = ShardPlan(result["train_size"], 2, mode="cut", batch_size=batch_size, drop_last=True)
    assert not train[0] & train[1] and len(train[0]) == len(train[1]) == plan.share()
    assert all(len(b) == batch_size for batches in train_batches for b in batches), "training batches are full"


class ImageIndexRecorder(RecordingModule):
    """Records the split positions (``index``) of every image batch and the dtype the model receives."""

    def __init__(self) -> None:
        super().__init__(torch.nn.Linear(3, 2))

    def record(self, stage: str, batch: dict[str, Any]) -> list[int]:
        self.notes.add(str(batch["image"].dtype))
        return batch["index"].tolist()
