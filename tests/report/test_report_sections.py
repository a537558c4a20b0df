"""The Data Pipeline Summary says what it measured: the model's step, device steps, token statistics, created files."""

from __future__ import annotations

from pathlib import Path

from stoker.datamodules import ImageFolderDataModule
from stoker.models import ImageClassifier
from stoker.profiling.loader_probe import find_bottlenecks
from stoker.report.markdown import report_markdown
from stoker.report.summary import build_report, write_plots


def test_the_report_judges_the_loader_against_the_model_step_and_lists_device_steps(image_tree, tmp_path) -> None:
    dm = ImageFolderDataModule(str(image_tree({"a": 6, "b": 6}, size=(32, 32))), batch_size=4, num_workers=0,
                               image_size=24, val_fraction=0.25)
    dm.setup("fit")
    report = build_report(dm, batches=3, model=ImageClassifier("resnet10t", num_classes=2))
    step = report["loading"]["model_step"]
    assert step["step_s"] > 0 and step["samples_per_s"] > 0
    assert (step["warmup"], step["steps"], step["batch_size"], step["optimizer"]) == (2, 5, 4, "AdamW")
    assert step["min_s"] <= step["step_s"] <= step["max_s"]
    evaluation = report["preprocessing"]["evaluation"]
    assert any(s.startswith("normalize to float32 on the device") for s in evaluation), "evaluation normalizes too"
    created = report["files"]["created"]
    assert any(path.endswith(".image.json") for path in created) and any(p.endswith(".sha256.json") for p in created)
    markdown = report_markdown(report)
    assert "Training step of the model on one batch" in markdown and "Files the pipeline created" in markdown
    # The figure says what it measures and why the fit summary's step differs from it.
    assert " ms median (min " in markdown and "over 5 steps" in markdown
    assert ("What it measures: forward, backward and the AdamW step on one real training batch of 4, timed after 2 "
            "untimed warm-up step(s)") in markdown
    assert "fit summary's `step`" in markdown and "mean over every training step of the run" in markdown
    plots = write_plots(report, dm, tmp_path / "plots")
    assert Path(plots["throughput"]).stat().st_size > 0


def test_bottlenecks_follow_the_measured_step() -> None:
    measured = {"samples_per_s": 400.0, "median_batch_s": 0.01, "p90_batch_s": 0.011, "startup_s": 0.02}
    compute = find_bottlenecks(measured, {"item_s": 0.002}, num_workers=0, cores=2, persistent_workers=True,
                               step_s=0.05)
    assert len(compute) == 1 and compute[0].startswith("compute-bound") and "will not speed" in compute[0]
    starved = find_bottlenecks(measured, {"item_s": 0.002}, num_workers=0, cores=2, persistent_workers=True,
                               step_s=0.004)
    assert starved[0].startswith("input-bound") and any("num_workers" in note for note in starved)


def test_token_statistics_reach_the_text_report() -> None:
    report = {"dataset_statistics": {"total_samples": 3, "split_sizes": {"train": 3}, "num_classes": 2,
                                     "imbalance_ratio": 1.0, "class_names": ["a", "b"],
                                     "class_distribution": {"train": {"a": 2, "b": 1}},
                                     "data_format": {"datamodule": "HFTextDataModule", "batch": "input_ids"},
                                     "token_stats": {"samples": 3, "p50": 12, "p90": 30, "p99": 40, "max": 41,
                                                     "truncation_rate": 0.1, "real_fraction_max_length": 0.3,
                                                     "real_fraction_dynamic": 0.6, "real_fraction_bucketed": 0.9}}}
    from stoker.report.markdown import _statistics

    text = "\n".join(_statistics(report))
    assert "Training tokens per text: p50 12" in text and "length-bucketed 0.90" in text
