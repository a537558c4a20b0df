"""The Data Pipeline Summary: what a configured DataModule feeds the model, how fast, and how clean.

Built from live objects (the DataModule after ``setup``, the Trainer's callbacks), measured on the
real DataLoader, and checked with :func:`stoker.quality.scan.scan_dataset`; rendered as a JSON-ready
dict, Markdown (:func:`report_markdown`) and PNG plots (:mod:`stoker.report.plots`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from stoker.data.loader import available_cores
from stoker.profiling.loader_probe import find_bottlenecks, measure_loader, time_items
from stoker.quality.scan import datamodule_scan_args, scan_dataset
from stoker.report.pipeline import (
    augmentation_rows,
    describe_step,
    device_steps,
    preprocessing_line,
    preprocessing_steps,
    transform_steps,
)
from stoker.report.step_timing import step_timing


def batch_format(batch: Any) -> str:
    """``image uint8 [64, 3, 32, 32], label int64 [64]`` for a dict batch."""
    if isinstance(batch, dict):
        return ", ".join(f"{key} {str(v.dtype).replace('torch.', '')} {list(v.shape)}"
                         for key, v in batch.items() if isinstance(v, torch.Tensor))
    return type(batch).__name__


def _class_indices(label: Any) -> list[int]:
    """The classes of one label: one index, or each index of a multi-label tuple (a positive per class)."""
    return [int(y) for y in label] if isinstance(label, tuple | list) else [int(label)]


def split_class_counts(datamodule: Any) -> dict[str, dict[str, int]]:
    """``{split: {class: count}}`` from ``splits`` (media DataModules, any source) or ``train_labels()``; ``{}``
    without classes (a language-model corpus). A multi-label sample counts once for each of its classes."""
    if not getattr(datamodule, "num_classes", None):
        return {}
    names = list(datamodule.class_names or [])
    splits = getattr(datamodule, "splits", None)
    counts: dict[str, Counter[int]] = {}
    if isinstance(splits, dict) and splits:
        counts = {split: Counter(y for item in items for y in _class_indices(item[1]))
                  for split, items in splits.items() if items}
    else:
        labels = datamodule.train_labels()
        if labels is not None:
            counts = {"train": Counter(y for label in labels for y in _class_indices(label))}
        counts.update(_label_columns(datamodule))
    return {split: {names[y] if y < len(names) else str(y): n for y, n in sorted(c.items())}
            for split, c in counts.items()}


def _label_columns(datamodule: Any) -> dict[str, Counter[int]]:
    """Evaluation-split label counts of DataModules whose ``datasets`` are column tables (Hugging Face)."""
    out: dict[str, Counter[int]] = {}
    datasets = getattr(datamodule, "datasets", None)
    key = getattr(datamodule, "target_key", None)
    if not isinstance(datasets, dict) or key is None:
        return out
    for split in ("val", "validation", "test"):
        table = datasets.get(split)
        try:
            labels = table[key] if table is not None else None
        except (KeyError, TypeError, IndexError):  # not a column table (a stream, a list of samples)
            continue
        if labels is not None and len(labels):
            out["val" if split == "validation" else split] = Counter(int(y) for y in labels)
    return out


def dataset_statistics(datamodule: Any, info: dict[str, Any], first_batch: Any) -> dict[str, Any]:
    """Total samples, split sizes, class distribution and data format."""
    counts = split_class_counts(datamodule)
    sizes = dict(info.get("split_sizes") or {split: sum(c.values()) for split, c in counts.items()})
    train = counts.get("train", {})
    ratio = max(train.values()) / min(train.values()) if train and min(train.values()) > 0 else None
    return {
        "total_samples": sum(sizes.values()),
        "split_sizes": sizes,
        "num_classes": getattr(datamodule, "num_classes", None),
        "class_names": list(getattr(datamodule, "class_names", None) or []),
        "class_distribution": counts,
        "imbalance_ratio": ratio,
        "data_format": {"datamodule": type(datamodule).__name__, "batch": batch_format(first_batch)},
        "token_stats": dict(info.get("token_stats") or {}),
        "packing": dict(info.get("packing") or {}),  # language-model DataModules: rows, fill rate, splits
        "task": info.get("task"),
    }


def files_section(datamodule: Any, info: dict[str, Any], per_class: int = 3) -> dict[str, Any]:
    """Where the data lives (the source and its kind), its file types and a few example samples (keys) per class."""
    source = info.get("source") or info.get("root") or info.get("dataset")
    out: dict[str, Any] = {"source": (source if isinstance(source, str) else ",".join(source)) if source else None,
                           "source_kind": info.get("source_kind"),
                           "classes": list(getattr(datamodule, "class_names", None) or [])}
    splits = getattr(datamodule, "splits", None)
    if isinstance(splits, dict):
        keys = [str(item[0]) for items in splits.values() for item in items]
        reader = getattr(datamodule, "reader", None)
        if reader is None or getattr(reader, "local_files", False):  # keys of stored samples have no suffix
            out["extensions"] = dict(Counter(Path(k).suffix.lower() or "(none)" for k in keys).most_common())
        examples: dict[str, list[str]] = {}
        for item in splits.get("train", []):
            for y in _class_indices(item[1]):
                name = out["classes"][y]
                if len(examples.setdefault(name, [])) < per_class:
                    examples[name].append(str(item[0]))
        out["examples"] = examples
    for key in ("manifest", "quarantine", "fingerprint", "tokenizer"):
        value = info.get(key, getattr(datamodule, key, None))
        if value is not None:
            out[key] = value
    created = getattr(datamodule, "created_files", None)
    out["created"] = list(created()) if callable(created) else []
    return out


def loading_section(datamodule: Any, batches: int, model: Any = None) -> tuple[dict[str, Any], Any]:
    """Measure the training DataLoader (and, given the model, its training step); return the section and a batch."""
    measured = measure_loader(datamodule.train_dataloader(), datamodule.batch_size_of, batches=batches)
    first = measured.pop("first_batch")
    dataset = getattr(datamodule.train_dataloader(), "dataset", None)
    items: dict[str, float] = {}
    if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        items = time_items(dataset)
    workers = int(datamodule.num_workers)
    model_step = step_timing(model, datamodule, first)
    measured.update(
        num_workers=workers, batch_size=datamodule.batch_size, cores=available_cores(), per_item=items,
        model_step=model_step,
        bottlenecks=find_bottlenecks(measured, items, num_workers=workers, cores=available_cores(),
                                     persistent_workers=bool(getattr(datamodule, "persistent_workers", False)),
                                     step_s=model_step["step_s"] if model_step else None),
    )
    return measured, first


def quality_section(datamodule: Any, info: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Issues found by the scan, cleaning the DataModule performed, and recommendations."""
    args = datamodule_scan_args(datamodule)
    scan = scan_dataset(**args, num_workers=min(8, available_cores())) if args else None
    unit = f"{getattr(datamodule, 'unit', 'file')}(s)"
    cleaning = [f"excluded {len(info['bad_files'])} unusable {unit}"] if info.get("bad_files") else []
    if info.get("quarantined"):
        cleaning.append(f"left out {len(info['quarantined'])} quarantined {unit}")
    if info.get("skipped"):
        cleaning.append(f"skipped {info['skipped']} hidden or tool folder(s) and file(s) (.ipynb_checkpoints, "
                        "__MACOSX, AppleDouble ._ files) that hold no data")
    for epoch, count in sorted((info.get("skipped_in_training") or {}).items()):
        cleaning.append(f"skipped {count} file(s) that failed to load in epoch {epoch} (on_bad_sample='skip')")
    for key, value in (info.get("dropped_rows") or {}).items():
        if value:
            cleaning.append(f"dropped {value} row(s) from {key} (empty text or label)")
    recs: list[str] = []
    if scan is not None:
        summary = scan["summary"]
        if summary["leakage"]:
            exact = sum(1 for pair in scan["leakage"] if pair["match"] == "exact")
            recs.append(f"{summary['leakage']} train/eval pair(s) share content ({exact} exact, "
                        f"{summary['leakage'] - exact} near): quarantine the eval copies (`stoker scan --quarantine "
                        "q.json`, then `quarantine: q.json`) or re-split with `stoker split`")
        if scan["notes"].get("near_duplicates_caveat"):
            recs.append(f"near-duplicate caveat: {scan['notes']['near_duplicates_caveat']}")
        if summary["label_conflicts"]:
            recs.append(f"{summary['label_conflicts']} group(s) of identical content carry different labels: "
                        "review them")
        if summary["exact_duplicates"]:
            recs.append(f"{summary['exact_duplicates']} group(s) of exact duplicates weigh those samples twice")
        if summary["corrupt"] and not info.get("bad_files"):
            recs.append(f"{summary['corrupt']} corrupt sample(s): quarantine or fix them")
        without = (scan.get("classes_without_positives") or {}).get("train") or []
        if without:
            recs.append(f"{len(without)} class(es) have no positive training sample ({', '.join(without[:5])}): the "
                        "model cannot learn them")
        if summary["outliers"]:
            recs.append(f"{summary['outliers']} outlier(s) (size, aspect, mode, duration or length): check them")
        measured = scan.get("mean")
        configured = getattr(datamodule, "mean", None)
        if measured and configured and max(abs(a - b) for a, b in zip(measured, configured)) > 0.05:
            recs.append(f"the data's channel mean {measured} / std {scan['std']} differ from the configured "
                        f"mean {list(configured)}: pass them as mean/std unless a pretrained model expects its own")
    ratio = stats.get("imbalance_ratio")
    if ratio and ratio > 3 and getattr(datamodule, "multi_label", False):
        recs.append(f"classes are imbalanced {ratio:.1f}:1 (positives per class): consider per-class positive "
                    "weights in the loss (BCEWithLogitsLoss pos_weight)")
    elif ratio and ratio > 3:
        recs.append(f"classes are imbalanced {ratio:.1f}:1: consider stoker's ImbalancedDataModule or class weights")
    return {
        "scan": {k: scan[k] for k in ("summary", "corrupt", "exact_duplicates", "near_duplicates", "leakage",
                                      "label_conflicts", "outliers", "missing", "mean", "std", "notes", "multi_label",
                                      "label_cooccurrence", "classes_without_positives") if k in scan}
        if scan else None,
        "scanned": scan is not None,
        "scan_splits": {"source": scan["split_source"], "sizes": scan["splits"]} if scan else None,
        "cleaning": cleaning or ["none"],
        "recommendations": recs or ["no data-quality issue that needs action"],
    }


def usage_section(recipe: str | None, datamodule: Any, data_args: dict[str, Any] | None,
                  class_path: str | None = None) -> dict[str, Any]:
    """The commands and the Python code that build this pipeline (imported from the recipe's ``class_path``)."""
    cls = type(datamodule)
    module = class_path.rsplit(".", 1)[0] if class_path else cls.__module__
    args = ", ".join(f"{k}={v!r}" for k, v in (data_args or {}).items())
    code = (f"from {module} import {cls.__name__}\n\n"
            f"datamodule = {cls.__name__}({args})\n"
            "trainer.fit(model, datamodule=datamodule)")
    commands = [f"stoker fit --config {recipe}", f"stoker scan --config {recipe} --fail-on leakage,corrupt",
                f"stoker report --config {recipe} --out reports/data"] if recipe else []
    return {"commands": commands, "python": code}


def summary_paragraph(report: dict[str, Any]) -> str:
    """One paragraph over all sections."""
    stats, load, quality = report["dataset_statistics"], report["loading"], report["quality"]
    sizes = ", ".join(f"{k} {v}" for k, v in stats["split_sizes"].items())
    issues = quality["scan"]["summary"] if quality["scan"] else {}
    found = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in issues.items() if v) or "no issues"
    what = f"{stats['num_classes']} classes" if stats["num_classes"] else f"{stats.get('task') or 'unlabelled'} text"
    return (f"{stats['data_format']['datamodule']} feeds {stats['total_samples']} samples of "
            f"{what} ({sizes}) from {report['files']['source']}. Training batches are "
            f"{stats['data_format']['batch']}, built by {len(report['preprocessing']['steps'])} steps with "
            f"{len(report['augmentations'])} augmentation(s). The loader alone delivers "
            f"{load['samples_per_s']:.0f} samples/s with {load['num_workers']} worker(s) on {load['cores']} cores. "
            f"Data quality: {found if quality['scanned'] else 'not scanned (no per-sample reader)'}.")


def build_report(datamodule: Any, *, callbacks: list[Any] | None = None, recipe: str | None = None,
                 data_args: dict[str, Any] | None = None, class_path: str | None = None,
                 batches: int = 20, model: Any = None) -> dict[str, Any]:
    """Every section of the Data Pipeline Summary for a DataModule after ``setup``.

    With the recipe's ``model``, a few training steps are timed on a real batch, so the bottlenecks
    are judged against what the model consumes, not the loader alone.
    """
    callbacks = list(callbacks or [])
    info = datamodule.describe()
    loading, first = loading_section(datamodule, batches, model)
    report: dict[str, Any] = {"title": "Data Pipeline Summary", "recipe": recipe}
    report["dataset_statistics"] = dataset_statistics(datamodule, info, first)
    report["files"] = files_section(datamodule, info)
    steps = preprocessing_steps(datamodule, callbacks, batch_format(first))
    report["preprocessing"] = {"steps": steps, "line": preprocessing_line(steps)}
    eval_transform = getattr(datamodule, "eval_transform", None)
    if eval_transform is not None:
        evaluation = [describe_step(s) for s in transform_steps(eval_transform)]
        report["preprocessing"]["evaluation"] = evaluation + device_steps(datamodule)
    report["augmentations"] = augmentation_rows(datamodule, callbacks)
    report["loading"] = loading
    report["usage"] = usage_section(recipe, datamodule, data_args, class_path)
    report["quality"] = quality_section(datamodule, info, report["dataset_statistics"])
    report["summary"] = summary_paragraph(report)
    return report


def write_plots(report: dict[str, Any], datamodule: Any, out_dir: str | os.PathLike[str]) -> dict[str, str]:
    """The class-distribution, sample-grid (image data) and throughput PNGs; returns ``{name: path}``."""
    from stoker.report.grid import draw_samples
    from stoker.report.plots import class_distribution_png, sample_grid_png, throughput_png

    out = Path(out_dir)
    stats = report["dataset_statistics"]
    plots: dict[str, str] = {}
    if stats["class_distribution"]:
        plots["class_distribution"] = str(class_distribution_png(stats["class_distribution"], stats["class_names"],
                                                                 out / "class_distribution.png"))
    dataset = getattr(datamodule.train_dataloader(), "dataset", None)
    key = getattr(datamodule, "input_key", "image")
    try:
        samples = draw_samples(dataset, 8, key=key, target_key=getattr(datamodule, "target_key", "label"))
    except (ValueError, TypeError, KeyError, IndexError) as err:
        report.setdefault("notes", []).append(f"no sample grid: {err}")
    else:
        plots["sample_grid"] = str(sample_grid_png(samples, stats["class_names"], out / "sample_grid.png"))
    load = report["loading"]
    model_rate = (load.get("model_step") or {}).get("samples_per_s")
    plots["throughput"] = str(throughput_png(load["samples_per_s_per_batch"], load["samples_per_s"],
                                             out / "throughput.png", model_rate=model_rate))
    report["plots"] = plots
    return plots
