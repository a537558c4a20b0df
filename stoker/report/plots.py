"""PNG figures of the Data Pipeline Summary, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: CI machines and training nodes have no display
    import matplotlib.pyplot as plt

    return plt


def class_distribution_png(counts: dict[str, dict[str, int]], class_names: list[str],
                           path: str | os.PathLike[str]) -> Path:
    """Grouped bars of samples per class, one colour per split (``{split: {class: count}}``)."""
    plt = _pyplot()
    splits = [split for split in ("train", "val", "test") if counts.get(split)] or list(counts)
    width = 0.8 / max(1, len(splits))
    figure, axes = plt.subplots(figsize=(max(5.0, 0.5 * len(class_names) + 2), 3.5))
    for offset, split in enumerate(splits):
        xs = [i + offset * width for i in range(len(class_names))]
        axes.bar(xs, [counts[split].get(name, 0) for name in class_names], width=width, label=split)
    axes.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(class_names))])
    axes.set_xticklabels(class_names, rotation=45 if len(class_names) > 8 else 0, ha="right" if len(class_names) > 8
                         else "center")
    axes.set_ylabel("samples")
    axes.set_title("Class distribution")
    axes.legend()
    return _save(figure, plt, path)


def sample_grid_png(grid: torch.Tensor, path: str | os.PathLike[str], *, with_originals: bool = True) -> Path:
    """Save a ``uint8 [3, H, W]`` grid from :func:`stoker.report.grid.pair_grid` with a caption."""
    plt = _pyplot()
    height, width = int(grid.shape[1]), int(grid.shape[2])
    scale = max(1.0, 600 / max(width, 1))
    figure, axes = plt.subplots(figsize=(width * scale / 100, height * scale / 100 + 0.4))
    axes.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.set_axis_off()
    axes.set_title("training samples: original | augmented" if with_originals else "training samples (augmented)")
    return _save(figure, plt, path)


def throughput_png(per_batch: list[float], mean_rate: float, path: str | os.PathLike[str], *,
                   model_rate: float | None = None) -> Path:
    """Samples/s of each loader batch, the first (worker start-up) included, with the steady-state mean and,
    when measured, the rate the model's training step consumes (the line the loader must stay above)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.2))
    axes.plot(range(1, len(per_batch) + 1), per_batch, marker="o", label="loader, per batch")
    axes.axhline(mean_rate, color="tab:red", linestyle="--", label=f"loader steady state {mean_rate:.0f}/s")
    if model_rate:
        axes.axhline(model_rate, color="tab:green", linestyle=":", label=f"training step consumes {model_rate:.0f}/s")
    axes.set_xlabel("batch")
    axes.set_ylabel("samples/s")
    axes.set_title("Loader throughput against the training step" if model_rate else "DataLoader throughput (no model)")
    axes.legend()
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target
