"""How every stoker DataModule records its constructor arguments, and a small argument helper."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence

import lightning as L

from stoker.data.secrets import without_secrets


def save_init_arguments(datamodule: L.LightningDataModule) -> None:
    """Save the concrete class's ``__init__`` arguments as the DataModule's hyperparameters.

    Lightning's ``save_hyperparameters`` walks the whole constructor chain and keeps every level's
    arguments, including those a subclass passes to its parent on its own (a demo fixing ``mean``);
    only the arguments the concrete class takes are kept, so that ``load_from_checkpoint`` rebuilds it
    and a LightningCLI ``config.yaml`` matches what is logged. Secret-looking entries of option dicts
    (access keys in ``storage_options``) are dropped (:mod:`stoker.data.secrets`). Called from the base
    ``__init__``.
    """
    datamodule.save_hyperparameters(frame=inspect.currentframe().f_back)  # type: ignore[union-attr]
    accepted = set(inspect.signature(type(datamodule).__init__).parameters) - {"self"}
    for key in [key for key in datamodule.hparams if key not in accepted]:
        del datamodule.hparams[key]
    for key in list(datamodule.hparams):  # credentials stay in memory (stoker.data.secrets)
        datamodule.hparams[key] = without_secrets(datamodule.hparams[key])
    datamodule._hparams_initial = copy.deepcopy(datamodule.hparams)  # type: ignore[attr-defined]


def as_sequence(value: str | Sequence[str] | None) -> list[str]:
    """Normalise ``None``, one string or a sequence of strings into a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
