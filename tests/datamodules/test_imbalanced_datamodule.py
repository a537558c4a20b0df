"""ImbalancedDataModule: wrapping, class-mix logging, checkpoint state, CLI nesting and a real DDP run."""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import Logger
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from stoker.datamodules import ImageFolderDataModule, ImbalancedDataModule, StokerDataModule
from stoker.samplers import DistributedWeightedSampler
from tests.conftest import REPO, run_script

COUNTS = {"a": 24, "b": 8, "c": 4}


def _folder(root: Path, batch_size: int = 4) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(root), batch_size=batch_size, num_workers=0, image_size=8, val_fraction=0.25)


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 3)
        self.seen: list[int] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.extend(batch["index"].tolist())
        return torch.nn.functional.cross_entropy(self.layer(batch["image"].mean(dim=(2, 3))), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class MemoryLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))


class SaveStateAt(L.Callback):
    """Takes the DataModule's state as a checkpoint would, after a given training batch."""

    def __init__(self, batch_idx: int) -> None:
        self.batch_idx = batch_idx
        self.state: dict | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == 0 and args[-1] == self.batch_idx:
            self.state = copy.deepcopy(trainer.datamodule.state_dict())


class PlainLabelled(L.LightningDataModule):
    """A user's DataModule that is not a stoker one but exposes its training labels."""

    def __init__(self, labels: list[int], batch_sampler: bool = False) -> None:
        super().__init__()
        self.labels = labels
        self.use_batch_sampler = batch_sampler

    def train_labels(self) -> list[int]:
        return self.labels

    def train_dataloader(self) -> DataLoader:
        data = [{"x": torch.tensor([float(i)]), "label": y} for i, y in enumerate(self.labels)]
        if self.use_batch_sampler:
            return DataLoader(data, batch_sampler=BatchSampler(SequentialSampler(data), 3, False))
        return DataLoader(data, batch_size=3, drop_last=True, collate_fn=lambda items: items)


def test_wraps_an_image_datamodule(image_tree) -> None:
    dm = ImbalancedDataModule(_folder(image_tree(COUNTS, size=(16, 16))), strategy="inverse")
    assert dm.num_classes == 3 and dm.class_names == ["a", "b", "c"], "known right after __init__"
    assert (dm.input_key, dm.target_key, dm.batch_size) == ("image", "label", 4)
    with pytest.raises(RuntimeError, match=r"class_weights are computed from the training labels in setup\('fit'\)"):
        _ = dm.class_weights
    dm.prepare_data()
    dm.setup("fit")
    counts = Counter(dm.train_labels())
    expected = torch.tensor([1 / counts[c] for c in range(3)])
    assert torch.allclose(dm.class_weights, expected * 3 / expected.sum())
    train = dm.train_dataloader()
    assert isinstance(train.sampler, DistributedWeightedSampler) and dm.datamodule.train_sampler is train.sampler
    assert not isinstance(dm.val_dataloader().sampler, DistributedWeightedSampler), "evaluation stays untouched"
    report = dm.class_mix_report()
    assert report["target_mix"] == pytest.approx([1 / 3] * 3)
    assert report["class_counts"] == [counts[c] for c in range(3)]
    assert dm.describe()["imbalanced"]["strategy"] == "inverse"
    batch = next(iter(train))
    assert dm.batch_size_of(batch) == 4 and dm.token_counts(batch) is None


def test_fit_logs_class_mix_each_epoch_and_trains_on_the_draws(image_tree) -> None:
    inner = _folder(image_tree(COUNTS, size=(16, 16)))
    dm = ImbalancedDataModule(inner, strategy="sqrt_inverse")
    logger, saver, model = MemoryLogger(), SaveStateAt(batch_idx=2), Tiny()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=logger, callbacks=[saver],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0)
    trainer.fit(model, datamodule=dm)

    report = dm.class_mix_report()
    assert [e["epoch"] for e in report["epochs"]] == [0, 1]
    sampler = dm.sampler
    assert sampler is not None
    labels = inner.train_labels()
    for record in report["epochs"]:
        drawn = Counter(labels[i] for i in sampler.global_draw(record["epoch"]).tolist())
        assert record["counts"] == [drawn[c] for c in range(3)]
    logged = [m for _, m in logger.metrics if "class_mix/max_abs_gap" in m]
    assert len(logged) == 2
    assert logged[0]["class_mix/target/a"] == pytest.approx(report["target_mix"][0])
    assert logged[1]["class_mix/realised/c"] == pytest.approx(report["epochs"][1]["realised_mix"][2])
    assert len(sampler) % 4 == 0, "the sampler hands out whole batches only"
    assert model.seen == sampler.shard(0) + sampler.shard(1), "training drew from the sampler"

    # The DataModule's own state holds the class mix; the sampler's position is in the loader's state.
    assert saver.state is not None and "sampler" not in saver.state
    assert [e["epoch"] for e in saver.state["class_mix"]] == [0]


def test_lightning_resumes_from_a_mid_epoch_checkpoint_on_the_remaining_indices(image_tree, tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    root = image_tree(COUNTS, size=(16, 16))
    options = {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "logger": False, "limit_val_batches": 0,
               "enable_progress_bar": False, "enable_model_summary": False}
    first, dm = Tiny(), ImbalancedDataModule(_folder(root), seed=5)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    L.Trainer(callbacks=[checkpoint], **options).fit(first, datamodule=dm)
    assert dm.sampler is not None
    full = dm.sampler.shard(0)
    assert first.seen == full and len(full) == 24

    second = Tiny()
    resumed = ImbalancedDataModule(_folder(root), seed=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        L.Trainer(enable_checkpointing=False, **options).fit(second, datamodule=resumed,
                                                            ckpt_path=str(tmp_path / "step=3.ckpt"))
    assert not [w for w in caught if "not resumable" in str(w.message)], "the loader is stateful"
    assert second.seen == full[12:], "the resumed epoch trains on exactly the batches not yet seen"


def test_rebuilds_a_plain_datamodules_train_loader() -> None:
    labels = [0] * 20 + [1] * 4
    dm = ImbalancedDataModule(PlainLabelled(labels), strategy=[1.0, 5.0], num_samples=12, seed=1)
    assert dm.num_classes is None and dm.seed == 1
    dm.setup("fit")
    assert dm.class_weights.tolist() == pytest.approx([1 / 3, 5 / 3])
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, DistributedWeightedSampler)
    assert (loader.batch_size, len(loader.sampler), len(loader)) == (3, 12, 4), "whole batches, as the loader had"
    batches = list(loader)
    assert isinstance(batches[0], list), "the wrapped loader's collate_fn is kept"
    assert [item["label"] for batch in batches for item in batch] == [labels[i] for i in loader.sampler.shard()]
    assert dm.batch_size_of({"x": torch.zeros(5, 1)}) == 5


def test_resample_false_only_computes_weights(image_tree) -> None:
    dm = ImbalancedDataModule(_folder(image_tree(COUNTS, size=(16, 16))), resample=False)
    dm.setup("fit")
    assert float(dm.class_weights.sum()) == pytest.approx(3.0)
    assert not isinstance(dm.train_dataloader().sampler, DistributedWeightedSampler)
    assert dm.class_mix_report()["target_mix"] == dm.class_mix_report()["natural_mix"]


def test_cli_configures_the_wrapped_datamodule_as_nested_class_path(image_tree, tmp_path: Path) -> None:
    from stoker.cli import run_cli

    root = image_tree(COUNTS, size=(16, 16))
    config = {
        "trainer": {"accelerator": "cpu", "logger": False, "enable_checkpointing": False},
        "model": {"class_path": "stoker.models.ImageClassifier", "init_args": {"model_name": "resnet10t"}},
        "data": {
            "class_path": "stoker.datamodules.ImbalancedDataModule",
            "init_args": {
                "strategy": "effective_number", "beta": 0.9,
                "datamodule": {"class_path": "stoker.datamodules.ImageFolderDataModule",
                               "init_args": {"root": str(root), "image_size": 8, "num_workers": 0}},
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = run_cli(["--config", str(path)], run=False)
    assert isinstance(cli.datamodule, ImbalancedDataModule)
    assert isinstance(cli.datamodule.datamodule, ImageFolderDataModule)
    assert (cli.datamodule.strategy, cli.datamodule.beta) == ("effective_number", 0.9)
    assert cli.model.hparams.num_classes == 3, "data.num_classes is linked into the model"


class Unlabelled(StokerDataModule):
    pass


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ImbalancedDataModule(object()), TypeError,  # type: ignore[arg-type]
         "datamodule must be a LightningDataModule, got object"),
        (lambda: ImbalancedDataModule(L.LightningDataModule()), TypeError,
         r"LightningDataModule exposes no training labels: add a method `train_labels\(self\) -> list\[int\]`"),
        (lambda: ImbalancedDataModule(PlainLabelled([0, 1]), strategy="balanced"), ValueError,  # type: ignore[arg-type]
         r"unknown strategy 'balanced'; expected one of \['inverse', 'sqrt_inverse', 'effective_number'\]"),
        (lambda: ImbalancedDataModule(PlainLabelled([0, 1]), beta=1.0), ValueError,
         r"beta must be in \[0, 1\), got 1.0"),
        (lambda: ImbalancedDataModule(PlainLabelled([0, 1]), num_samples=0), ValueError,
         "num_samples must be a positive integer or None"),
    ],
)
def test_bad_construction_is_an_error(make, error, message) -> None:
    with pytest.raises(error, match=message):
        make()


def test_bad_wrapped_modules_are_errors() -> None:
    with pytest.raises(ValueError, match=r"Unlabelled.train_labels\(\) returned None \(unlabelled data\)"):
        ImbalancedDataModule(Unlabelled()).setup("fit")
    with pytest.raises(ValueError, match="at least two classes with samples, but only class '0' has any"):
        ImbalancedDataModule(PlainLabelled([0, 0, 0])).setup("fit")
    with pytest.raises(ValueError, match="class weight for class '1' is negative"):
        ImbalancedDataModule(PlainLabelled([0, 1, 1]), strategy=[1.0, -1.0]).setup("fit")
    dm = ImbalancedDataModule(PlainLabelled([0, 1, 1, 0, 1], batch_sampler=True))
    dm.setup("fit")
    with pytest.raises(TypeError, match="uses its own batch_sampler, which ImbalancedDataModule cannot replace"):
        dm.train_dataloader()
    short = ImbalancedDataModule(PlainLabelled([0, 1, 1, 0]))
    short.setup("fit")
    short.datamodule.labels = [0, 1, 1, 0, 1]  # the loader now has a sample the labels did not list
    with pytest.raises(ValueError, match="train_labels\\(\\) returned 4 labels but the training dataset has 5"):
        short.train_dataloader()


@pytest.mark.ddp
def test_two_ranks_draw_disjoint_equal_shards_of_one_global_draw(image_tree) -> None:
    root = image_tree({"a": 30, "b": 8, "c": 3}, size=(16, 16))
    result = run_script(REPO / "tests" / "scripts" / "ddp_imbalanced.py", str(root), "--batch-size", "4",
                        "--num-samples", "32", "--epochs", "2")
    ranks = result["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["num_replicas"] == 2 for r in ranks)
    assert all(r["sampler_type"] == "DistributedWeightedSampler" for r in ranks), "Lightning did not re-wrap it"
    assert ranks[0]["class_weights"] == ranks[1]["class_weights"]
    draws = {}
    for epoch in ("0", "1"):
        draw = ranks[0]["global_draws"][epoch]
        assert ranks[1]["global_draws"][epoch] == draw, "every rank makes the same global draw"
        seen = [r["train_seen"][epoch] for r in ranks]
        assert len(seen[0]) == len(seen[1]) == 16, "equal shards: 32 draws over 2 ranks, 4 full batches each"
        assert seen[0] == draw[0::2] and seen[1] == draw[1::2], "disjoint positions whose union is the draw"
        draws[epoch] = draw
    assert draws["0"] != draws["1"], "each epoch draws anew"
    labels = result["train_labels"]
    rare = sum(labels[i] == 2 for epoch in draws.values() for i in epoch)
    assert rare > 64 * labels.count(2) / len(labels), "the rarest class is drawn more often than its share"
    val = ranks[0]["val_seen"] + ranks[1]["val_seen"]
    assert set(val) == set(range(result["val_size"])), "validation is the plain distributed split"
    assert [e["epoch"] for e in result["report"]["epochs"]] == [0, 1]
