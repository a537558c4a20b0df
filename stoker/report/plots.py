"""PNG figures of the Data Pipeline Summary, drawn with matplotlib's Agg backend (no display needed).

Each figure has a ``*_figure`` function that returns the matplotlib ``Figure`` (tests read its axes,
titles and legend rather than pixels) and a ``*_png`` function that saves it and closes it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stoker.report.grid import GridSample, class_title, pair_grid, short_name

_DPI = 100
# Up to this many classes the bars stand side by side; beyond, they lie down with the names along the side.
_VERTICAL_MAX_CLASSES = 30
# Beyond this many classes only the largest and the smallest are drawn: the tails are where imbalance shows,
# and a thousand bars show nothing. The Markdown table and the JSON keep every class.
_SHOWN_CLASSES = 40
# Rates further apart than this are compared on a log axis: on a linear one the smaller lies flat on zero.
_LOG_RATIO = 10.0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: CI machines and training nodes have no display
    import matplotlib.pyplot as plt

    return plt


def _rate(value: float) -> str:
    return f"{value:,.0f}/s" if value >= 100 else f"{value:.3g}/s"


def _ordered_splits(counts: dict[str, dict[str, int]]) -> list[str]:
    known = [split for split in ("train", "val", "test") if counts.get(split)]
    return known + [split for split in counts if split not in known and counts[split]]


def _shown_classes(counts: dict[str, dict[str, int]], splits: list[str], names: list[str],
                   max_shown: int) -> tuple[list[str], str]:
    """The classes to draw and, when some are left out, a note saying which are shown."""
    if len(names) <= max_shown or not splits:
        return names, ""
    reference = counts[splits[0]]
    order = sorted(names, key=lambda name: -reference.get(name, 0))  # stable: ties keep the class order
    half = max(1, max_shown // 2)
    return (order[:half] + order[-half:],
            f"the {half} largest and {half} smallest of {len(names)} classes by {splits[0]} samples")


def class_distribution_figure(counts: dict[str, dict[str, int]], class_names: list[str], *,
                              max_shown: int = _SHOWN_CLASSES) -> Any:
    """Samples per class, one colour per split (``{split: {class: count}}``).

    Up to 30 classes: grouped vertical bars. More: horizontal bars stacked by split, names down the
    side, largest class on top; beyond ``max_shown`` classes only the ``max_shown // 2`` largest and
    smallest training classes are drawn, and the title says so. The legend (drawn only with more
    than one split; one split is named in the title) sits outside the axes, clear of every bar.
    """
    plt = _pyplot()
    splits = _ordered_splits(counts)
    names = list(class_names) or sorted({name for split in counts.values() for name in split})
    shown, note = _shown_classes(counts, splits, names, max_shown)
    labels = [short_name(name) for name in shown]
    if len(shown) <= _VERTICAL_MAX_CLASSES:
        figure, axes = plt.subplots(figsize=(max(5.0, 0.5 * len(shown) + 2) + (1.2 if len(splits) > 1 else 0), 3.5))
        width = 0.8 / max(1, len(splits))
        for offset, split in enumerate(splits):
            axes.bar([i + offset * width for i in range(len(shown))], [counts[split].get(n, 0) for n in shown],
                     width=width, label=split)
        axes.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(shown))])
        tilt = len(shown) > 8 or max((len(label) for label in labels), default=0) > 6
        axes.set_xticklabels(labels, rotation=45 if tilt else 0, ha="right" if tilt else "center")
        axes.set_ylabel("samples")
    else:
        gap = len(shown) // 2 if note else len(shown)  # an empty row between the largest and the smallest
        rows = [i if i < gap else i + 1 for i in range(len(shown))]
        figure, axes = plt.subplots(figsize=(7.5, 1.4 + 0.22 * (len(shown) + 1)))
        left = [0] * len(shown)
        for split in splits:
            values = [counts[split].get(n, 0) for n in shown]
            axes.barh(rows, values, left=left, height=0.75, label=split)
            left = [a + b for a, b in zip(left, values)]
        axes.set_yticks(rows)
        axes.set_yticklabels(labels, fontsize=8)
        axes.invert_yaxis()  # largest on top, as the list is ordered
        if note:
            axes.text(0.01, gap, f"⋮  {len(names) - len(shown)} classes in between not shown",
                      transform=axes.get_yaxis_transform(), va="center", fontsize=8, color="dimgrey")
        axes.set_xlabel("samples")
    title = "Class distribution" + (f" ({splits[0]})" if len(splits) == 1 else "")
    axes.set_title(title + (f"\nshowing {note}; the table lists every class" if note else ""), fontsize=10)
    if len(splits) > 1:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)
    return figure


def class_distribution_png(counts: dict[str, dict[str, int]], class_names: list[str],
                           path: str | os.PathLike[str]) -> Path:
    """Save :func:`class_distribution_figure` as a PNG."""
    return _save(class_distribution_figure(counts, class_names), path)


def sample_grid_figure(samples: list[GridSample], class_names: list[str] | None, *, per_row: int = 4) -> Any:
    """One tile per training sample (original beside augmented, when the original is known), titled with its class.

    Samples come from :func:`stoker.report.grid.draw_samples`. Each image is drawn at least an inch
    (100 px) wide whatever its size, with nearest-neighbour scaling, so 32 px digits stay sharp and
    the class names legible.

    Raises:
        ValueError: ``samples`` is empty or ``per_row`` is not positive.
    """
    if not samples:
        raise ValueError("sample_grid_figure needs at least one sample")
    if per_row < 1:
        raise ValueError(f"per_row must be a positive integer, got {per_row}")
    plt = _pyplot()
    with_originals = all(sample.original is not None for sample in samples)
    side = min(1.6, max(1.0, int(samples[0].augmented.shape[-1]) / _DPI))
    cols = min(per_row, len(samples))
    rows = math.ceil(len(samples) / cols)
    tile_width = side * (2 if with_originals else 1) + 0.25
    figure, grid = plt.subplots(rows, cols, figsize=(cols * tile_width, rows * (side + 0.45) + 0.45), squeeze=False)
    for axes in grid.flat:
        axes.set_axis_off()
    for axes, sample in zip(grid.flat, samples):
        tile = pair_grid([(sample.original if with_originals else None, sample.augmented)], pairs_per_row=1)
        axes.imshow(tile.permute(1, 2, 0).numpy(), interpolation="nearest")
        axes.set_title(class_title(sample.label, class_names), fontsize=11)
    figure.suptitle("training samples by class: original | augmented" if with_originals
                    else "training samples by class (augmented)", fontsize=11)
    figure.tight_layout()
    return figure


def sample_grid_png(samples: list[GridSample], class_names: list[str] | None, path: str | os.PathLike[str], *,
                    per_row: int = 4) -> Path:
    """Save :func:`sample_grid_figure` as a PNG."""
    return _save(sample_grid_figure(samples, class_names, per_row=per_row), path)


def figure_tensor(figure: Any) -> torch.Tensor:
    """A figure rendered as ``uint8 [3, H, W]`` (what image loggers take), at the PNGs' resolution; closes it."""
    plt = _pyplot()
    figure.set_dpi(_DPI)
    figure.tight_layout()
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _per_batch(axes: Any, per_batch: list[float], mean_rate: float) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.plot(range(1, len(per_batch) + 1), per_batch, marker="o", markersize=3, label="per batch")
    axes.axhline(mean_rate, color="tab:red", linestyle="--", label=f"steady state {_rate(mean_rate)}")
    axes.set_xlabel("batch (the first carries the worker start-up)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("samples/s")
    axes.set_ylim(bottom=0)
    axes.legend(loc="best", fontsize=8)


def throughput_figure(per_batch: list[float], mean_rate: float, *, model_rate: float | None = None) -> Any:
    """Samples/s of each loader batch with the steady-state mean; beside it, when the model's training step
    was measured, the loader's rate against the rate the step consumes, each bar labelled with its value.

    The comparison uses a log axis when the two rates are more than 10x apart, so that a model
    consuming 20 samples/s does not lie flat under a loader supplying 2,000.
    """
    plt = _pyplot()
    if not model_rate:
        figure, axes = plt.subplots(figsize=(6, 3.2))
        _per_batch(axes, per_batch, mean_rate)
        axes.set_title("DataLoader throughput (no model)")
        return figure
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    _per_batch(left, per_batch, mean_rate)
    left.set_title("Loader alone, per batch", fontsize=10)
    rates = [mean_rate, model_rate]
    bars = right.bar(["loader supplies", "training step\nconsumes"], rates, color=["tab:red", "tab:green"], width=0.6)
    log = max(rates) / max(min(rates), 1e-12) > _LOG_RATIO
    if log:
        right.set_yscale("log")
        right.set_ylim(min(rates) / 3, max(rates) * 4)  # room for the value labels above the bars
    else:
        right.set_ylim(0, max(rates) * 1.2)
    right.bar_label(bars, labels=[_rate(rate) for rate in rates], padding=2)
    ratio = mean_rate / model_rate
    right.set_title(f"the loader supplies {ratio:,.0f}x what the step consumes" if ratio >= 10 else
                    f"the loader supplies {ratio:.2g}x what the step consumes", fontsize=10)
    right.set_ylabel("samples/s" + (" (log scale)" if log else ""))
    return figure


def throughput_png(per_batch: list[float], mean_rate: float, path: str | os.PathLike[str], *,
                   model_rate: float | None = None) -> Path:
    """Save :func:`throughput_figure` as a PNG."""
    return _save(throughput_figure(per_batch, mean_rate, model_rate=model_rate), path)


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(target, dpi=_DPI)
    _pyplot().close(figure)
    return target
