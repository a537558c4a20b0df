"""The report's figures read well: rates far apart on a log axis, class names on the sample tiles, legends
clear of the bars, many classes trimmed to the tails; and the training-step figure excludes warm-up."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from matplotlib.patches import Rectangle
from torch import nn

from stoker.report.grid import GridSample, draw_samples
from stoker.report.plots import class_distribution_figure, sample_grid_figure, throughput_figure
from stoker.report.step_timing import step_timing

DIGITS = [str(i) for i in range(10)]
# The quickstart's split counts: with the legend inside the axes, it covered the last train bar.
DIGIT_COUNTS = {"train": dict(zip(DIGITS, [124, 128, 123, 129, 127, 128, 127, 125, 122, 126])),
                "val": dict.fromkeys(DIGITS, 27), "test": dict.fromkeys(DIGITS, 27)}


def _texts(axes: Any) -> list[str]:
    return [text.get_text() for text in axes.texts]


def test_throughput_compares_far_apart_rates_on_a_log_axis_with_values() -> None:
    figure = throughput_figure([300.0, 2900.0, 1800.0, 2500.0], 2774.0, model_rate=19.5)
    assert len(figure.axes) == 2, "the per-batch detail and the loader-against-step comparison"
    per_batch, comparison = figure.axes
    assert per_batch.get_yscale() == "linear" and comparison.get_yscale() == "log"
    bars = [patch for patch in comparison.patches if isinstance(patch, Rectangle)]
    assert sorted(bar.get_height() for bar in bars) == [19.5, 2774.0]
    assert comparison.get_ylim()[0] < 19.5, "the model's bar stands above the axis floor"
    assert _texts(comparison) == ["2,774/s", "19.5/s"]
    assert "142x" in comparison.get_title()
    assert any("2,774/s" in text.get_text() for text in per_batch.get_legend().get_texts())

    close = throughput_figure([300.0, 2900.0], 2774.0, model_rate=1500.0)
    assert close.axes[1].get_yscale() == "linear" and _texts(close.axes[1]) == ["2,774/s", "1,500/s"]
    assert len(throughput_figure([300.0, 2900.0], 2774.0).axes) == 1  # no model: the loader alone


def test_sample_grid_tiles_are_titled_with_their_class_names_and_upscaled() -> None:
    def tile(value: int) -> torch.Tensor:
        return torch.full((3, 32, 32), value, dtype=torch.uint8)

    samples = [GridSample(tile(0), tile(200), 1), GridSample(tile(0), tile(90), 0),
               GridSample(tile(0), tile(40), 7), GridSample(tile(0), tile(40), None)]
    figure = sample_grid_figure(samples, ["cat", "dog"], per_row=2)
    titles = [axes.get_title() for axes in figure.axes]
    assert titles == ["dog", "cat", "7", ""], "the class name; a label outside the class list shows as its number"
    assert "original | augmented" in figure.get_suptitle()
    figure.canvas.draw()
    width = figure.axes[0].images[0].get_window_extent().width
    assert width >= 2 * 100, f"a 32 px pair is drawn {width:.0f} px wide: too small to read"


def test_draw_samples_gives_each_tile_its_label(image_tree) -> None:
    from stoker.datamodules import ImageFolderDataModule

    dm = ImageFolderDataModule(str(image_tree({"ant": 3, "bee": 3, "cow": 3})), image_size=16, num_workers=0,
                               val_fraction=0.0)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    samples = draw_samples(dataset, 4, seed=0)
    expected = [dataset[position]["label"] for position in (0, 3, 5, 8)]  # spread over the dataset
    assert [sample.label for sample in samples] == [int(y) for y in expected]
    titles = [axes.get_title() for axes in sample_grid_figure(samples, dm.class_names).axes[:4]]
    assert titles == [dm.class_names[int(y)] for y in expected]


def _overlaps(a: Any, b: Any) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_the_class_distribution_legend_sits_clear_of_the_bars() -> None:
    figure = class_distribution_figure(DIGIT_COUNTS, DIGITS)
    figure.canvas.draw()
    (axes,) = figure.axes
    legend = axes.get_legend().get_window_extent()
    bars = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    assert len(bars) == 30
    assert not [bar for bar in bars if _overlaps(legend, bar.get_window_extent())]
    single = class_distribution_figure({"train": DIGIT_COUNTS["train"]}, DIGITS)
    assert single.axes[0].get_legend() is None and "(train)" in single.axes[0].get_title()


def test_many_classes_lie_horizontally_and_keep_the_tails() -> None:
    names = [f"class_{i:03d}" for i in range(150)]
    counts = {"train": {name: 10 + i for i, name in enumerate(names)}, "val": dict.fromkeys(names, 2)}
    figure = class_distribution_figure(counts, names)
    (axes,) = figure.axes
    shown = [label.get_text() for label in axes.get_yticklabels()]
    assert len(shown) == 40 and shown[0] == "class_149" and shown[-1] == "class_000"
    assert all(bar.get_width() > bar.get_height() for bar in axes.patches if isinstance(bar, Rectangle))
    assert "20 largest and 20 smallest of 150 classes" in axes.get_title()
    assert any("110 classes in between not shown" in text for text in _texts(axes))


class _CountingSGD(torch.optim.SGD):
    calls = 0

    def step(self, closure: Any = None) -> Any:
        type(self).calls += 1
        return super().step(closure)


class _Model(nn.Module):
    """A model whose first steps are slow on a fake clock, as first calls are (kernel choice, allocation)."""

    def __init__(self, clock: list[float], costs: list[float]) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        self.clock, self.costs = clock, costs

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.clock[0] += self.costs.pop(0)
        return nn.functional.cross_entropy(self.net(batch["image"]), batch["label"])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return _CountingSGD(self.parameters(), lr=0.5, momentum=0.9)


class _DataModule:
    def normalize(self, batch: dict[str, torch.Tensor], *, training: bool) -> dict[str, torch.Tensor]:
        return {**batch, "image": batch["image"].float() / 255}

    def batch_size_of(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["image"].shape[0])


def test_step_timing_leaves_out_warm_up_and_takes_the_median_of_whole_steps() -> None:
    clock = [0.0]
    model = _Model(clock, costs=[9.0, 6.0, 1.0, 1.2, 0.9, 5.0, 1.1])  # two slow first calls, one slow outlier
    batch = {"image": torch.randint(0, 256, (8, 3, 2, 2), dtype=torch.uint8), "label": torch.arange(8) % 2}
    weights = [p.detach().clone() for p in model.parameters()]
    running_mean = model.net[2].running_mean.clone()
    _CountingSGD.calls = 0
    step = step_timing(model, _DataModule(), batch, clock=lambda: clock[0])
    assert step is not None
    assert step["step_s"] == pytest.approx(1.1) and step["samples_per_s"] == pytest.approx(8 / 1.1)
    assert (step["min_s"], step["max_s"], step["steps"], step["warmup"]) == pytest.approx((0.9, 5.0, 5, 2))
    assert step["optimizer"] == "_CountingSGD" and _CountingSGD.calls == 7, "the optimizer step is part of a step"
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters())), "the recipe's model is left as it was"
    assert torch.equal(model.net[2].running_mean, running_mean)
    with pytest.raises(ValueError, match="warmup >= 0 and steps >= 1, got warmup=0, steps=0"):
        step_timing(model, _DataModule(), batch, warmup=0, steps=0)


def test_a_model_without_a_loss_is_not_timed() -> None:
    class _NoLoss(nn.Module):
        def training_step(self, batch: Any, batch_idx: int) -> None:
            return None

    assert step_timing(_NoLoss(), _DataModule(), {"image": torch.zeros(2, 3, 2, 2, dtype=torch.uint8)}) is None
