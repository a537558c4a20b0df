"""Describe a data pipeline from its objects: the preprocessing line and the augmentation table.

Nothing here is typed by hand: steps and parameters are read from the transform objects a
DataModule holds (torchvision v2 ``Compose``), from its ``describe()`` dict, and from callbacks
that expose ``augmentation_rows()`` (:class:`stoker.callbacks.MixUpCutMix`). A DataModule that
is not an image pipeline can say what it does with ``describe()["preprocessing"]`` (a list of
step strings) and ``describe()["augmentations"]`` (rows like the table's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Parameters worth showing, in this order, when a transform has them.
_PARAMS: tuple[str, ...] = (
    "size", "max_size", "scale", "ratio", "p", "num_ops", "magnitude", "num_magnitude_bins", "policy",
    "degrees", "brightness", "contrast", "saturation", "hue", "kernel_size", "sigma", "value", "mean", "std",
    "dtype", "padding",
)
# Transforms that draw randomly although their name does not start with "Random".
_RANDOM: frozenset[str] = frozenset({
    "RandAugment", "TrivialAugmentWide", "AutoAugment", "AugMix", "ColorJitter", "GaussianBlur", "GaussianNoise",
    "ElasticTransform", "ScaleJitter", "RandomShortestSize",
})


def _value(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_value(v) for v in value]
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(getattr(value, "value", value))  # enums (InterpolationMode, AutoAugmentPolicy), dtypes


def transform_steps(transform: Any) -> list[Any]:
    """The flat list of transforms inside (possibly nested) ``Compose`` objects."""
    if transform is None:
        return []
    inner = getattr(transform, "transforms", None)
    if isinstance(inner, (list, tuple)):
        return [step for item in inner for step in transform_steps(item)]
    return [transform]


def transform_params(step: Any) -> dict[str, Any]:
    """The shown parameters of one transform (see :data:`_PARAMS`)."""
    return {name: _value(getattr(step, name)) for name in _PARAMS if hasattr(step, name)}


def describe_step(step: Any) -> str:
    """``RandomResizedCrop(size=[32, 32], scale=[0.7, 1.0], ...)`` from the object."""
    params = ", ".join(f"{k}={v}" for k, v in transform_params(step).items())
    return f"{type(step).__name__}({params})" if params else type(step).__name__


def is_random(step: Any) -> bool:
    """Whether a transform draws at random (an augmentation) rather than preprocessing deterministically."""
    name = type(step).__name__
    return name.startswith("Random") or name in _RANDOM


def preprocessing_steps(datamodule: Any, callbacks: Iterable[Any] = (), batch_format: str | None = None) -> list[str]:
    """The training pipeline from raw data to model input, one string per step.

    Args:
        datamodule: A stoker DataModule (any object with ``describe()``).
        callbacks: The Trainer's callbacks; those with ``augmentation_rows()`` add their device step.
        batch_format: What a collated batch looks like (``"image uint8 [64, 3, 32, 32]"``), if measured.
    """
    info = datamodule.describe() if hasattr(datamodule, "describe") else {}
    steps: list[str] = []
    if isinstance(info.get("preprocessing"), list):
        steps += [str(step) for step in info["preprocessing"]]
    elif getattr(datamodule, "train_transform", None) is not None:
        steps.append("decode to uint8 RGB (CPU worker)")
        steps += [describe_step(step) for step in transform_steps(datamodule.train_transform)]
    elif isinstance(info.get("packing"), dict):  # a language-model DataModule
        packing = info["packing"]
        steps.append(f"tokenize ({info.get('tokenizer')}, task {info.get('task')}, once before training"
                     + (")" if not info.get("streaming") else ", on the fly in the workers)"))
        steps.append(f"pack ({packing.get('mode')}, rows of {packing.get('capacity')} tokens, overflow "
                     f"{packing.get('overflow')}; position ids restart per example)")
    elif "tokenizer" in info:
        steps.append(f"tokenize ({info['tokenizer']}, truncate to max_length={info.get('max_length')})")
        bucket = " within length buckets" if info.get("bucket_by_length") else ""
        steps.append(f"pad per batch ({info.get('padding', 'dynamic')}){bucket}")
    elif "sample_rate" in info:
        steps.append(f"decode audio, resample to {info['sample_rate']} Hz, clip to {info.get('clip_seconds')} s")
        if info.get("features"):
            steps.append(f"features on the device {info['features']}")
        if info.get("spec_augment"):
            steps.append(f"SpecAugment on the device {info['spec_augment']}")
    if batch_format:
        steps.append(f"collate {batch_format}")
    steps += device_steps(datamodule)
    attention = (info.get("packing") or {}).get("attention") if isinstance(info.get("packing"), dict) else None
    if attention == "mask":
        steps.append("block-diagonal 4-D attention mask built on the device (no example sees another)")
    elif attention == "varlen":
        steps.append("sequence boundaries (cu_seq_lens) passed to the flash-attention kernel")
    for callback in callbacks:
        rows = callback.augmentation_rows() if hasattr(callback, "augmentation_rows") else []
        if rows:
            steps.append(" / ".join(str(row["augmentation"]) for row in rows) + f" ({type(callback).__name__}, device)")
    return steps


def device_steps(datamodule: Any) -> list[str]:
    """What happens after the loader, training and evaluation alike: the copy and the device normalization."""
    info = datamodule.describe() if hasattr(datamodule, "describe") else {}
    steps = ["copy to the device" + (" (pinned memory)" if info.get("pin_memory") else "")]
    mean = getattr(datamodule, "mean", None)
    if mean is not None:
        layout = ", channels_last" if getattr(datamodule, "channels_last", False) else ""
        steps.append(f"normalize to float32 on the device (mean={_value(list(mean))}, "
                     f"std={_value(list(getattr(datamodule, 'std', None) or ()))}{layout})")
    return steps


def preprocessing_line(steps: list[str]) -> str:
    """``Raw Data → step → … → Model Input``."""
    return " → ".join(["Raw Data", *steps, "Model Input"])


def augmentation_rows(datamodule: Any, callbacks: Iterable[Any] = ()) -> list[dict[str, Any]]:
    """Table rows ``{"augmentation", "probability", "parameters", "source"}``.

    Read from the training transform, from ``describe()["augmentations"]`` and from callbacks.
    """
    rows: list[dict[str, Any]] = []
    for step in transform_steps(getattr(datamodule, "train_transform", None)):
        if is_random(step):
            params = transform_params(step)
            probability = params.pop("p", 1.0)
            rows.append({"augmentation": type(step).__name__, "probability": probability, "parameters": params,
                         "source": "train_transform (CPU workers)"})
    info = datamodule.describe() if hasattr(datamodule, "describe") else {}
    for row in info.get("augmentations") or []:
        rows.append({**row, "source": row.get("source", type(datamodule).__name__)})
    if info.get("spec_augment"):
        rows.append({"augmentation": "SpecAugment", "probability": 1.0, "parameters": dict(info["spec_augment"]),
                     "source": f"{type(datamodule).__name__} (device)"})
    for callback in callbacks:
        if hasattr(callback, "augmentation_rows"):
            for row in callback.augmentation_rows():
                rows.append({**row, "source": type(callback).__name__})
    return rows
