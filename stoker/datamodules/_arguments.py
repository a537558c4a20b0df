"""How every stoker DataModule records its constructor arguments, names a DataModule as a class spec, and a
small argument helper."""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Sequence
from typing import Any

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


def class_spec(datamodule: Any) -> dict[str, Any]:
    """``{"class_path", "init_args"}`` of a DataModule: its class and the arguments it saved."""
    cls = type(datamodule)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(getattr(datamodule, "hparams", {}))}


def instantiate_class_spec(spec: dict[str, Any]) -> Any:
    """Build the object a ``{"class_path", "init_args"}`` dict names (LightningCLI's format).

    Raises:
        ValueError: The dict has no ``class_path``, or it does not name an importable class.
    """
    path = spec.get("class_path")
    if not isinstance(path, str) or "." not in path:
        raise ValueError(f"expected a DataModule or a dict with 'class_path' and 'init_args', got {spec!r}")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"class_path {path!r} names no importable class: {err}") from err
    return cls(**dict(spec.get("init_args") or {}))
