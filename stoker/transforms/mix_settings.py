"""The settings of MixUp/CutMix (see :mod:`stoker.transforms.mixup` for the maths), validated once.

They describe themselves as rows of (augmentation, probability, parameters) for the pipeline
report, so the callback, the report and the batch functions share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

MixMode = Literal["batch", "pair", "elem"]
MIX_MODES: tuple[str, ...] = ("batch", "pair", "elem")


@dataclass(frozen=True)
class MixSettings:
    """Hyperparameters of MixUp/CutMix, validated once.

    Args:
        mixup_alpha: Beta(alpha, alpha) concentration of MixUp's lambda; 0 turns MixUp off.
        cutmix_alpha: Beta(alpha, alpha) concentration of CutMix's lambda; 0 turns CutMix off
            (unless ``cutmix_minmax`` is set).
        cutmix_minmax: ``(min, max)`` fractions of each side for the CutMix box; when set, CutMix
            is on and the box size is drawn from these bounds instead of from lambda.
        prob: Chance of mixing a batch (``batch`` mode), a pair or an element.
        switch_prob: With both methods on, the chance of CutMix instead of MixUp.
        mode: ``"batch"`` (one draw for the batch), ``"pair"`` (one per pair ``i, N-1-i``) or
            ``"elem"`` (one per element).
        correct_lam: Set CutMix's lambda to the area actually kept after the box is clipped at
            the border (always done with ``cutmix_minmax``).
        label_smoothing: Smoothing applied to the one-hot targets before they are mixed.

    Raises:
        ValueError: On a negative alpha, a probability outside [0, 1], an unknown mode, bad
            ``cutmix_minmax`` bounds, or when neither method is on.
    """

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    cutmix_minmax: tuple[float, float] | None = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: MixMode = "batch"
    correct_lam: bool = True
    label_smoothing: float = 0.1

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                f"mixup_alpha and cutmix_alpha must be >= 0 (0 turns a method off), got "
                f"mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}"
            )
        if not (self.mixup_on or self.cutmix_on):
            raise ValueError(
                "MixUp and CutMix are both off: set mixup_alpha > 0, cutmix_alpha > 0 or cutmix_minmax "
                "(or remove the MixUpCutMix callback)"
            )
        for name in ("prob", "switch_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability and must lie in [0, 1], got {value}")
        if self.mode not in MIX_MODES:
            raise ValueError(f"mode must be one of {list(MIX_MODES)}, got {self.mode!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.cutmix_minmax is not None:
            bounds = tuple(self.cutmix_minmax)
            if len(bounds) != 2 or not 0.0 < bounds[0] < bounds[1] <= 1.0:
                raise ValueError(
                    f"cutmix_minmax must be (min, max) side fractions with 0 < min < max <= 1, got {self.cutmix_minmax}"
                )

    @property
    def mixup_on(self) -> bool:
        """Whether MixUp can be drawn."""
        return self.mixup_alpha > 0

    @property
    def cutmix_on(self) -> bool:
        """Whether CutMix can be drawn."""
        return self.cutmix_alpha > 0 or self.cutmix_minmax is not None

    def augmentation_rows(self) -> list[dict[str, Any]]:
        """One row per active method: ``{"augmentation", "probability", "parameters"}``.

        ``probability`` is the chance that one unit (the batch, a pair or an element, per
        ``mode``) is mixed with that method; the rows of both methods sum to ``prob``.
        """
        cutmix_share = 1.0 if not self.mixup_on else (self.switch_prob if self.cutmix_on else 0.0)
        common = {"mode": self.mode, "label_smoothing": self.label_smoothing}
        minmax = None if self.cutmix_minmax is None else list(self.cutmix_minmax)
        rows: list[dict[str, Any]] = []
        if self.mixup_on and cutmix_share < 1.0:
            rows.append({"augmentation": "MixUp", "probability": self.prob * (1.0 - cutmix_share),
                         "parameters": {"alpha": self.mixup_alpha, **common}})
        if self.cutmix_on and cutmix_share > 0.0:
            cut = {"alpha": self.cutmix_alpha, "minmax": minmax, "correct_lam": self.correct_lam, **common}
            rows.append({"augmentation": "CutMix", "probability": self.prob * cutmix_share, "parameters": cut})
        return rows
