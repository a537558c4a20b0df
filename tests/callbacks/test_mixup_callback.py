"""MixUpCutMix in a Trainer: training-only, keys from the DataModule, schedule, resume, DDP, errors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from stoker.callbacks import MixUpCutMix
from stoker.callbacks.mixup import seed_for
from stoker.models.image import ImageClassifier
from stoker.transforms.mixup import MixSettings, draw_mix_params
from tests.conftest import REPO, run_script
from tests.scripts.ddp_mixup import MixRecorder, TensorDataModule


def _trainer(callback: MixUpCutMix, max_epochs: int = 1, **kwargs) -> L.Trainer:
    options = {
        "accelerator": "cpu", "devices": 1, "max_epochs": max_epochs, "logger": False,
        "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
        "num_sanity_val_steps": 0, **kwargs,
    }
    return L.Trainer(callbacks=[callback], **options)


def _fit(callback: MixUpCutMix, max_epochs: int = 1, dm: TensorDataModule | None = None, **kwargs) -> MixRecorder:
    model = MixRecorder()
    _trainer(callback, max_epochs, **kwargs).fit(model, datamodule=dm or TensorDataModule())
    return model


def test_training_batches_are_mixed_and_validation_batches_untouched() -> None:
    dm = TensorDataModule(num_samples=12, batch_size=4)
    model = _fit(MixUpCutMix(mode="elem"), dm=dm)
    assert model.train_targets == [("torch.float32", [4, 4])] * 3
    assert all(lams and any(lam < 1 for lam in lams) for lams in model.lams)
    assert model.val_batches, "validation ran"
    for batch in model.val_batches:
        assert batch["label"].dtype == torch.int64 and batch["label"].ndim == 1
        index = batch["index"]
        expected = (dm.images[index].float() / 255 - 0.5) / 0.25
        torch.testing.assert_close(batch["image"], expected)
        assert torch.equal(batch["label"], dm.labels[index])


def test_lambda_and_cutmix_fraction_are_logged(tmp_path: Path) -> None:
    callback = MixUpCutMix(mode="elem")
    trainer = _trainer(callback, logger=CSVLogger(tmp_path), log_every_n_steps=1, limit_val_batches=0)
    trainer.fit(MixRecorder(), datamodule=TensorDataModule(num_samples=8))
    params = callback.last_params
    assert params is not None
    metrics = trainer.callback_metrics
    assert float(metrics["mixup/lambda"]) == pytest.approx(float(params.lam.mean()))
    assert float(metrics["mixup/cutmix_fraction"]) == pytest.approx(float(params.use_cutmix.double().mean()))


def test_keys_and_num_classes_come_from_the_datamodule_unless_overridden() -> None:
    class Renamed(TensorDataModule):
        input_key = "pixels"
        target_key = "y"

    # setup reads only the Trainer's datamodule and global_rank.
    trainer = SimpleNamespace(datamodule=Renamed(num_classes=6, seed=4), global_rank=1)
    callback = MixUpCutMix()
    callback.setup(trainer, MixRecorder(), "fit")  # type: ignore[arg-type]
    assert (callback.input_key, callback.target_key, callback.num_classes) == ("pixels", "y", 6)
    assert (callback.seed, callback.rank) == (4, 1)
    override = MixUpCutMix(input_key="x", target_key="t", num_classes=9, seed=3)
    override.setup(trainer, MixRecorder(), "fit")  # type: ignore[arg-type]
    assert (override.input_key, override.target_key, override.num_classes, override.seed) == ("x", "t", 9, 3)


def test_unknown_num_classes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"does not know num_classes: the DataModule does not expose it "
                                         r"\(TensorDataModule\); pass MixUpCutMix\(num_classes=...\)"):
        _fit(MixUpCutMix(), dm=TensorDataModule(num_classes=None))


def test_bad_batches_are_named() -> None:
    callback = MixUpCutMix(num_classes=3)
    with pytest.raises(ValueError, match=r"the batch has no key 'label' \(keys: \['image', 'target'\]\); set "
                                         r"MixUpCutMix\(input_key=..., target_key=...\)"):
        callback.mix({"image": torch.randn(2, 3, 4, 4), "target": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(TypeError, match="expects dict batches"):
        callback.mix([torch.randn(2, 3, 4, 4), torch.zeros(2)])
    with pytest.raises(TypeError, match=r"integer images \(torch.uint8\) under 'image'"):
        callback.mix({"image": torch.zeros(2, 3, 4, 4, dtype=torch.uint8), "label": torch.zeros(2, dtype=torch.long)})
    tokens = MixUpCutMix(num_classes=3, input_key="input_ids", target_key="labels")
    with pytest.raises(TypeError, match=r"cannot mix integer inputs \(torch.int64\) under 'input_ids'"):
        tokens.mix({"input_ids": torch.ones(2, 16, dtype=torch.long), "labels": torch.zeros(2, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"label 3 under 'label' is outside \[0, 3\)"):
        callback.mix({"image": torch.randn(2, 3, 4, 4), "label": torch.tensor([0, 3])})
    assert callback.draws == 0, "failed batches consume no draw"


def test_invalid_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="stop_epoch must be >= 0"):
        MixUpCutMix(stop_epoch=-1)
    with pytest.raises(ValueError, match="off_last_epochs must be >= 0"):
        MixUpCutMix(off_last_epochs=-2)
    with pytest.raises(ValueError, match="MixUp and CutMix are both off"):
        MixUpCutMix(mixup_alpha=0.0, cutmix_alpha=0.0)
    with pytest.raises(ValueError, match=r"off_last_epochs=1 needs a finite Trainer\(max_epochs=...\)"):
        _fit(MixUpCutMix(off_last_epochs=1), max_epochs=-1, max_steps=2)


def test_spectrogram_batches_are_mixed_on_the_last_two_dims() -> None:
    callback = MixUpCutMix(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=3, input_key="audio")
    spec = torch.randn(5, 1, 20, 30)
    batch = {"audio": spec.clone(), "label": torch.tensor([0, 1, 2, 1, 0])}
    callback.mix(batch)
    params = callback.last_params
    assert params is not None and batch["label"].shape == (5, 3)
    changed = (batch["audio"] != spec).any(dim=1).double().mean(dim=(1, 2))
    partner_differs = (spec != spec.flip(0)).all(dim=1).all(dim=(1, 2))
    torch.testing.assert_close(changed[partner_differs], (1 - params.lam)[partner_differs])
    flat = {"audio": torch.randn(5, 20, 30), "label": torch.tensor([0, 1, 2, 1, 0])}
    assert callback.mix(flat)["audio"].shape == (5, 20, 30)


@pytest.mark.parametrize(("kwargs", "mixed_epochs"), [({"stop_epoch": 1}, [0]), ({"off_last_epochs": 2}, [0])])
def test_schedule_turns_mixing_off(kwargs: dict, mixed_epochs: list[int]) -> None:
    model = _fit(MixUpCutMix(**kwargs), max_epochs=3, dm=TensorDataModule(num_samples=8, batch_size=4))
    per_epoch = [model.train_targets[i:i + 2] for i in range(0, 6, 2)]
    mixed = [e for e, targets in enumerate(per_epoch) if all(dtype == "torch.float32" for dtype, _ in targets)]
    assert mixed == mixed_epochs
    assert all(dtype == "torch.int64" for e in range(3) if e not in mixed for dtype, _ in per_epoch[e])


def test_draws_follow_the_seeded_stream_and_resume_continues_it(tmp_path: Path) -> None:
    dm_args = {"num_samples": 8, "batch_size": 4, "seed": 5}
    full = _fit(MixUpCutMix(mode="pair"), max_epochs=3, dm=TensorDataModule(**dm_args))
    settings = MixSettings(mode="pair")
    expected = [draw_mix_params(4, (8, 8), settings, torch.Generator().manual_seed(seed_for(5, 0, k))).lam.tolist()
                for k in range(6)]
    assert full.lams == expected

    first = MixUpCutMix(mode="pair")
    trainer = _trainer(first, max_epochs=1)
    trainer.fit(MixRecorder(), datamodule=TensorDataModule(**dm_args))
    trainer.save_checkpoint(tmp_path / "epoch1.ckpt")
    assert first.state_dict() == {"seed": 5, "draws": 2}
    resumed = MixRecorder()
    _trainer(MixUpCutMix(mode="pair", seed=99), max_epochs=3).fit(
        resumed, datamodule=TensorDataModule(**dm_args), ckpt_path=tmp_path / "epoch1.ckpt"
    )
    assert resumed.lams == full.lams[2:], "the checkpoint's stream continues (its seed wins over seed=99)"


def test_state_dict_round_trip_without_a_trainer() -> None:
    make = lambda: {"image": torch.randn(4, 3, 6, 6), "label": torch.tensor([0, 1, 2, 0])}  # noqa: E731
    a = MixUpCutMix(num_classes=3, mode="elem", seed=1)
    for _ in range(3):
        a.mix(make())
    b = MixUpCutMix(num_classes=3, mode="elem")
    b.load_state_dict(a.state_dict())
    a.mix(make())
    b.mix(make())
    assert a.last_params is not None and b.last_params is not None
    assert torch.equal(a.last_params.lam, b.last_params.lam)
    with pytest.raises(ValueError, match=r"state is missing \['draws'\]"):
        b.load_state_dict({"seed": 0})


def test_image_classifier_trains_on_soft_targets() -> None:
    model = ImageClassifier("test_resnet", num_classes=4)
    trainer = _trainer(MixUpCutMix(), max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=TensorDataModule(num_samples=16, size=16))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_augmentation_rows_carry_the_schedule() -> None:
    rows = MixUpCutMix(prob=0.5, switch_prob=0.5, stop_epoch=10).augmentation_rows()
    assert [(r["augmentation"], r["probability"]) for r in rows] == [("MixUp", 0.25), ("CutMix", 0.25)]
    assert all(r["parameters"]["stop_epoch"] == 10 and "device" in r["parameters"]["where"] for r in rows)
    assert set(rows[0]) == {"augmentation", "probability", "parameters"}


@pytest.mark.ddp
def test_two_ranks_draw_different_lambdas_from_their_own_streams() -> None:
    result = run_script(REPO / "tests" / "scripts" / "ddp_mixup.py", "--mode", "elem", "--seed", "7")
    ranks = result["ranks"]
    assert len(ranks) == 2
    for rank, record in enumerate(ranks):
        assert record["lams"], "every rank mixed"
        assert all(dtype == "torch.float32" and shape == [4, 4] for dtype, shape in record["targets"])
        settings = MixSettings(mode="elem", label_smoothing=0.0)
        expected = [draw_mix_params(4, (8, 8), settings, torch.Generator().manual_seed(seed_for(7, rank, k))).lam
                    .tolist() for k in range(len(record["lams"]))]
        assert record["lams"] == expected
    assert ranks[0]["lams"] != ranks[1]["lams"]
    assert ranks[0]["state"] == ranks[1]["state"] == {"seed": 7, "draws": len(ranks[0]["lams"])}
