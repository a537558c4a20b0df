"""MixUp/CutMix as a Lightning Callback: the batch is mixed on the device, the model is unchanged.

Implements MixUp (Zhang et al., ICLR 2018, https://arxiv.org/abs/1710.09412) and CutMix
(Yun et al., ICCV 2019, https://arxiv.org/abs/1905.04899) through the plain functions of
:mod:`stoker.transforms.mixup`, which follow timm's ``Mixup`` semantics.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn

from stoker.seeds import derive_seed
from stoker.transforms.mixup import MixMode, MixParams, MixSettings, mix_batch


class MixUpCutMix(Callback):
    """Mix each training batch with MixUp or CutMix in ``on_train_batch_start``, in place.

    The hook runs after the DataModule's ``on_after_batch_transfer``, so the images are already
    normalized float on the device. The input is mixed in place and the integer labels under the
    target key are replaced by float soft targets ``[N, C]``, which every stoker model's loss
    accepts. Validation, test and predict batches are never touched.

    The input key, target key and ``num_classes`` come from the Trainer's DataModule
    (``input_key``, ``target_key``, ``num_classes``) unless given here. Images ``[N, C, H, W]`` and
    spectrograms ``[N, F, T]`` or ``[N, 1, F, T]`` are accepted; CutMix cuts the last two dims.

    Randomness: every rank has its own stream, seeded from ``(seed, rank)``. The random numbers
    of draw ``k`` come from a CPU ``torch.Generator`` seeded with
    ``stoker.seeds.derive_seed(seed, "mixup", rank, k)``, so the
    stream's whole state is the counter ``k``; :meth:`state_dict` saves it, and because every
    rank has drawn the same number of batches, the one checkpoint written by rank zero resumes
    every rank on its own sequence. The draws are a few dozen host numbers per batch and the
    mixing needs no host synchronisation (labels are range-checked on the first batch of each
    fit only, which reads one value back; on a CPU run every batch is checked).

    Args:
        mixup_alpha: MixUp's Beta concentration (0: MixUp off).
        cutmix_alpha: CutMix's Beta concentration (0: CutMix off unless ``cutmix_minmax``).
        cutmix_minmax: CutMix box side bounds ``(min, max)`` as fractions of the image side.
        prob: Chance of mixing a batch (``batch`` mode), a pair or an element.
        switch_prob: With both on, the chance of CutMix rather than MixUp.
        mode: ``"batch"``, ``"pair"`` or ``"elem"``: how often parameters are drawn.
        correct_lam: Correct CutMix's lambda to the area kept after clipping at the border.
        label_smoothing: Smoothing of the one-hot targets before mixing (leave the model's own
            ``label_smoothing`` at 0 when this is set, or targets are smoothed twice).
        num_classes: Classes of the soft targets (default: the DataModule's ``num_classes``).
        input_key: Batch key of the images/spectrograms (default: the DataModule's ``input_key``).
        target_key: Batch key of the labels (default: the DataModule's ``target_key``).
        stop_epoch: Mix only in epochs before this one (timm's ``mixup_off_epoch``); ``None``: never stop.
        off_last_epochs: Do not mix in the last ``K`` epochs of ``max_epochs``.
        seed: Base seed (default: the DataModule's ``seed``, else 0).

    Logged metrics (every training step while mixing is on, on the step only):
        ``mixup/lambda``: mean weight the samples of the batch keep of themselves.
        ``mixup/cutmix_fraction``: fraction of the samples mixed with CutMix.

    Raises:
        ValueError: On invalid hyperparameters (see :class:`stoker.transforms.mixup.MixSettings`), an
            unknown ``num_classes``, a missing batch key or out-of-range labels.
        TypeError: For a non-dict batch, integer images (not normalized) or token batches.

    Example::

        trainer = L.Trainer(callbacks=[MixUpCutMix(mixup_alpha=0.8, cutmix_alpha=1.0, stop_epoch=90)])
    """

    # Part of the training step's device work: the speed-of-light replay runs it on kept batches.
    stoker_device_work = True

    def __init__(
        self,
        *,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: MixMode = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int | None = None,
        input_key: str | None = None,
        target_key: str | None = None,
        stop_epoch: int | None = None,
        off_last_epochs: int = 0,
        seed: int | None = None,
    ) -> None:
        self.settings = MixSettings(
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            cutmix_minmax=None if cutmix_minmax is None else (float(cutmix_minmax[0]), float(cutmix_minmax[1])),
            prob=prob,
            switch_prob=switch_prob,
            mode=mode,
            correct_lam=correct_lam,
            label_smoothing=label_smoothing,
        )
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if stop_epoch is not None and stop_epoch < 0:
            raise ValueError(f"stop_epoch must be >= 0 or None (mix every epoch), got {stop_epoch}")
        if off_last_epochs < 0:
            raise ValueError(f"off_last_epochs must be >= 0, got {off_last_epochs}")
        self._num_classes_arg = num_classes
        self._input_key_arg = input_key
        self._target_key_arg = target_key
        self.stop_epoch = stop_epoch
        self.off_last_epochs = off_last_epochs
        self._seed_arg = seed
        self.num_classes: int | None = num_classes
        self.input_key: str = input_key or "image"
        self.target_key: str = target_key or "label"
        self.seed: int = 0 if seed is None else seed
        self.rank = 0
        self.draws = 0
        self._restored_seed: int | None = None
        self._checked_labels = False
        self.last_params: MixParams | None = None

    # ----------------------------------------------------------------- wiring
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Resolve keys, ``num_classes``, the seed and the rank from the Trainer and its DataModule."""
        if stage != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        self.input_key = self._input_key_arg or getattr(datamodule, "input_key", None) or "image"
        self.target_key = self._target_key_arg or getattr(datamodule, "target_key", None) or "label"
        num_classes = self._num_classes_arg or getattr(datamodule, "num_classes", None)
        if num_classes is None:
            raise ValueError(
                "MixUpCutMix does not know num_classes: the DataModule does not expose it "
                f"({type(datamodule).__name__ if datamodule is not None else 'no DataModule'}); "
                "pass MixUpCutMix(num_classes=...)"
            )
        self.num_classes = int(num_classes)
        if self._restored_seed is not None:
            self.seed = self._restored_seed  # continue the checkpoint's sequence
        elif self._seed_arg is None:
            self.seed = int(getattr(datamodule, "seed", 0) or 0)
        self.rank = trainer.global_rank
        self._checked_labels = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Check that the schedule leaves some epochs to mix."""
        if self.off_last_epochs and (trainer.max_epochs is None or trainer.max_epochs < 0):
            raise ValueError(
                f"off_last_epochs={self.off_last_epochs} needs a finite Trainer(max_epochs=...), got "
                f"max_epochs={trainer.max_epochs}; use stop_epoch instead"
            )
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return
        if not any(self.active(epoch, max_epochs) for epoch in range(trainer.current_epoch, max_epochs)):
            rank_zero_warn(
                f"MixUpCutMix never mixes: stop_epoch={self.stop_epoch}, off_last_epochs={self.off_last_epochs}, "
                f"max_epochs={trainer.max_epochs}"
            )

    def active(self, epoch: int, max_epochs: int | None) -> bool:
        """Whether batches of ``epoch`` are mixed under the schedule."""
        if self.stop_epoch is not None and epoch >= self.stop_epoch:
            return False
        if self.off_last_epochs and max_epochs is not None and max_epochs >= 0:
            return epoch < max_epochs - self.off_last_epochs
        return True

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Mix ``batch`` in place (inputs and targets) when the schedule says so."""
        if not self.active(trainer.current_epoch, trainer.max_epochs):
            return
        self.mix(batch)
        params = self.last_params
        if params is not None and trainer.logger is not None:
            # CPU tensors: a Python float would be copied to the module's device on every step
            # (a blocking copy); Lightning keeps a CPU tensor's metric on the CPU.
            size = params.lam.shape[0]
            pl_module.log("mixup/lambda", params.lam.mean().float(), on_step=True, on_epoch=False, batch_size=size)
            pl_module.log("mixup/cutmix_fraction", params.use_cutmix.float().mean(), on_step=True, on_epoch=False,
                          batch_size=size)

    # ----------------------------------------------------------------- the work
    def mix(self, batch: Any) -> Any:
        """Mix a dict batch in place with the next draw of this rank's stream; return it."""
        if self.num_classes is None:
            raise ValueError("MixUpCutMix does not know num_classes: pass MixUpCutMix(num_classes=...)")
        if not isinstance(batch, dict):
            raise TypeError(
                f"MixUpCutMix expects dict batches ({{{self.input_key!r}: ..., {self.target_key!r}: ...}}), "
                f"got {type(batch).__name__}"
            )
        for key in (self.input_key, self.target_key):
            if key not in batch:
                raise ValueError(
                    f"the batch has no key {key!r} (keys: {sorted(batch)}); set MixUpCutMix(input_key=..., "
                    "target_key=...) or the DataModule's input_key/target_key"
                )
        inputs = batch[self.input_key]
        generator = torch.Generator().manual_seed(seed_for(self.seed, self.rank, self.draws))
        # Checking the label range reads a value back from the device: once per fit there, always on CPU.
        on_cpu = not isinstance(inputs, torch.Tensor) or inputs.device.type == "cpu"
        check = on_cpu or not self._checked_labels
        _, soft, params = mix_batch(
            inputs, batch[self.target_key], num_classes=self.num_classes, settings=self.settings,
            generator=generator, check_range=check, input_key=self.input_key, target_key=self.target_key,
        )
        self._checked_labels = True
        self.draws += 1
        batch[self.target_key] = soft
        self.last_params = params
        return batch

    # ----------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        """The stream's position: ``{"seed", "draws"}`` (the same on every rank)."""
        return {"seed": self.seed, "draws": self.draws}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved stream on every rank."""
        missing = {"seed", "draws"} - set(state_dict)
        if missing:
            raise ValueError(f"MixUpCutMix state is missing {sorted(missing)}; got keys {sorted(state_dict)}")
        self._restored_seed = self.seed = int(state_dict["seed"])
        self.draws = int(state_dict["draws"])

    # ----------------------------------------------------------------- reporting
    def augmentation_rows(self) -> list[dict[str, Any]]:
        """Rows ``{"augmentation", "probability", "parameters"}`` for the pipeline report.

        One row per active method (MixUp, CutMix); ``probability`` is per batch, pair or element
        according to ``mode``, and ``parameters`` also carry the schedule and the device-side
        placement so the report can say where the work runs.
        """
        schedule = {"stop_epoch": self.stop_epoch, "off_last_epochs": self.off_last_epochs}
        rows = self.settings.augmentation_rows()
        for row in rows:
            row["parameters"] = {**row["parameters"], **schedule, "where": "device (on_train_batch_start)"}
        return rows


def seed_for(seed: int, rank: int, draw: int) -> int:
    """The seed of draw number ``draw`` of ``rank``: ``derive_seed(seed, "mixup", rank, draw)``.

    Deriving every draw's seed from ``(seed, rank, draw)`` makes the whole sequence of a rank a
    function of a counter, which a rank-zero checkpoint can restore for every rank.
    """
    return derive_seed(seed, "mixup", rank, draw)
