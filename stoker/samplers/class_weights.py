"""Per-class weights for imbalanced data: inverse frequency, inverse square root, effective number.

The effective number of samples follows Cui, Jia, Lin, Song and Belongie, *Class-Balanced Loss
Based on Effective Number of Samples*, CVPR 2019: with ``n`` samples of a class, the expected
volume they cover is ``E_n = (1 - beta**n) / (1 - beta)``, and the class weight is ``1 / E_n``.
``beta = 0`` gives equal weights, ``beta -> 1`` approaches inverse frequency.

All strategies are normalised the way that paper does it: the weights of the classes that have
samples sum to the number of those classes (mean 1), so a weighted loss keeps its scale. A class
with no samples gets weight 0 and a warning naming it (it can be neither sampled nor learnt).
The weights serve both a weighted loss (``F.cross_entropy(..., weight=w)``) and resampling (each
sample drawn with probability proportional to its class weight).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import torch

Strategy = Literal["inverse", "sqrt_inverse", "effective_number"]
STRATEGIES: tuple[str, ...] = ("inverse", "sqrt_inverse", "effective_number")


def class_counts(labels: Sequence[int], num_classes: int) -> list[int]:
    """How many samples each class has.

    Args:
        labels: Integer class index of every sample.
        num_classes: Number of classes; every label must lie in ``[0, num_classes)``.

    Raises:
        ValueError: ``num_classes`` is below 1 or a label is outside the class range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    counts = [0] * num_classes
    for position, label in enumerate(labels):
        if not 0 <= int(label) < num_classes:
            raise ValueError(
                f"label {label} of sample {position} is outside [0, {num_classes}); check the class list of the "
                "DataModule (num_classes / class_names) against the labels of its training split"
            )
        counts[int(label)] += 1
    return counts


def compute_class_weights(
    counts: Sequence[int],
    strategy: Strategy | Sequence[float] = "inverse",
    *,
    beta: float = 0.999,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Normalised per-class weights from class counts.

    Args:
        counts: Samples per class (index order).
        strategy: ``"inverse"`` (``1/n``), ``"sqrt_inverse"`` (``1/sqrt(n)``), ``"effective_number"``
            (``(1 - beta) / (1 - beta**n)``), or explicit per-class weights (one per class).
        beta: Hyper-parameter of ``"effective_number"`` in ``[0, 1)``; Cui et al. use 0.9 to 0.9999.
        class_names: Names used in messages (default: the class indices).

    Returns:
        float64 tensor ``[C]``; classes with samples have mean weight 1, empty classes weight 0.

    Raises:
        ValueError: fewer than two classes have samples, a count is negative, ``beta`` is outside
            ``[0, 1)``, the strategy is unknown, or explicit weights are negative, NaN, infinite, all
            zero or of the wrong length.

    Example::

        >>> compute_class_weights([90, 10], "inverse")
        tensor([0.2000, 1.8000], dtype=torch.float64)
    """
    names = _names(counts, class_names)
    _check_counts(counts, names)
    present = torch.tensor([c > 0 for c in counts])
    n = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    raw = _strategy_weights(n, strategy, beta) if isinstance(strategy, str) else _explicit_weights(strategy, names)
    empty = [names[i] for i, c in enumerate(counts) if c == 0]
    if empty:
        warnings.warn(
            f"class(es) {', '.join(repr(x) for x in empty)} have no training samples; they get weight 0 and can be "
            "neither sampled nor learnt. Add samples for them or drop them from the class list.",
            UserWarning,
            stacklevel=2,
        )
    weights = torch.where(present, raw, torch.zeros_like(raw))
    total = float(weights.sum())
    if total <= 0:
        listed = ", ".join(repr(names[i]) for i in range(len(counts)) if counts[i] > 0)
        raise ValueError(
            f"every class that has samples ({listed}) got weight 0; give at least one of them a positive weight"
        )
    return weights * (int(present.sum()) / total)


def target_mix(counts: Sequence[int], weights: torch.Tensor | Sequence[float]) -> list[float]:
    """The class mix that weighted sampling aims for: ``p_c ∝ n_c * w_c`` (sums to 1).

    Raises:
        ValueError: the lengths differ or no class ends up with probability mass.
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    if len(counts) != len(w):
        raise ValueError(f"got {len(counts)} class counts but {len(w)} class weights; give one weight per class")
    mass = torch.tensor([float(c) for c in counts], dtype=torch.float64) * w
    total = float(mass.sum())
    if total <= 0:
        raise ValueError("no class has both samples and a positive weight, so nothing can be sampled")
    return [float(x) for x in mass / total]


def natural_mix(counts: Sequence[int]) -> list[float]:
    """The class mix of uniform sampling (each class's share of the samples)."""
    total = sum(counts)
    return [c / total if total else 0.0 for c in counts]


# --------------------------------------------------------------------------------- internals
def _names(counts: Sequence[int], class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(i) for i in range(len(counts))]
    if len(class_names) != len(counts):
        raise ValueError(f"got {len(class_names)} class names for {len(counts)} class counts; give one name per class")
    return [str(x) for x in class_names]


def _check_counts(counts: Sequence[int], names: list[str]) -> None:
    negative = [(names[i], c) for i, c in enumerate(counts) if c < 0]
    if negative:
        raise ValueError(f"class counts must be >= 0, got {negative[0][1]} for class {negative[0][0]!r}")
    present = [names[i] for i, c in enumerate(counts) if c > 0]
    if len(present) < 2:
        found = f"only class {present[0]!r}" if present else "no class"
        raise ValueError(
            f"class weighting needs at least two classes with samples, but {found} has any (counts {list(counts)}); "
            "check the labels of the training split, or train without ImbalancedDataModule"
        )


def _strategy_weights(n: torch.Tensor, strategy: str, beta: float) -> torch.Tensor:
    safe = n.clamp(min=1.0)  # empty classes are zeroed by the caller; this only avoids 1/0
    if strategy == "inverse":
        return 1.0 / safe
    if strategy == "sqrt_inverse":
        return 1.0 / safe.sqrt()
    if strategy == "effective_number":
        if not (0.0 <= beta < 1.0) or math.isnan(beta):
            raise ValueError(f"beta must be in [0, 1) for 'effective_number', got {beta}; Cui et al. use 0.9-0.9999")
        # 1 - beta**n computed as -expm1(n * log(beta)) keeps precision when beta is close to 1.
        if beta == 0.0:
            return torch.ones_like(n)
        effective = -torch.expm1(safe * math.log(beta)) / (1.0 - beta)
        return 1.0 / effective
    raise ValueError(f"unknown class-weight strategy {strategy!r}; expected one of {list(STRATEGIES)} or a list of "
                     "per-class weights")


def _explicit_weights(weights: Sequence[float], names: list[str]) -> torch.Tensor:
    values = [float(w) for w in weights]
    if len(values) != len(names):
        raise ValueError(
            f"got {len(values)} explicit class weights for {len(names)} classes ({names}); give one weight per class"
        )
    for name, value in zip(names, values, strict=True):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"class weight for class {name!r} is {value}; weights must be finite numbers >= 0")
        if value < 0:
            raise ValueError(f"class weight for class {name!r} is negative ({value}); weights must be >= 0")
    if not any(values):
        raise ValueError(f"all {len(values)} explicit class weights are zero; give one class a positive weight")
    return torch.tensor(values, dtype=torch.float64)
