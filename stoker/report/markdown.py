"""Markdown rendering of the Data Pipeline Summary built by :func:`stoker.report.summary.build_report`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from stoker.report.step_timing import STEP_NOTE

SECTIONS: tuple[str, ...] = (
    "Data Pipeline Summary", "Dataset Statistics", "Files", "Preprocessing Pipeline", "Augmentation Strategy",
    "Data Loading Performance", "Usage Example", "Data Quality Notes",
)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _statistics(report: dict[str, Any]) -> list[str]:
    stats = report["dataset_statistics"]
    counts = stats["class_distribution"]
    splits = list(counts)
    lines = [f"- Total samples: {stats['total_samples']}",
             "- Split: " + ", ".join(f"{k} {v}" for k, v in stats["split_sizes"].items()),
             (f"- Classes: {stats['num_classes']}; imbalance ratio (largest/smallest training class): "
              + (f"{stats['imbalance_ratio']:.2f}" if stats["imbalance_ratio"] else "n/a")) if stats["num_classes"]
             else f"- Task: {stats.get('task') or 'unlabelled'} (no classes)",
             f"- Data format: {stats['data_format']['datamodule']}; batches {stats['data_format']['batch']}"]
    tokens = stats.get("token_stats") or {}
    if tokens.get("samples"):
        lines.append(f"- Training tokens per text: p50 {tokens['p50']:.0f}, p90 {tokens['p90']:.0f}, p99 "
                     f"{tokens['p99']:.0f}, max {tokens['max']}; {tokens['truncation_rate']:.1%} truncated. Real-token "
                     f"fraction: pad-to-max {tokens['real_fraction_max_length']:.2f}, dynamic "
                     f"{tokens['real_fraction_dynamic']:.2f}, length-bucketed {tokens['real_fraction_bucketed']:.2f}")
    lines += _packing(stats.get("packing") or {})
    if not counts:
        return lines
    lines += ["", "Class distribution:", ""]
    rows = [[name, *(counts[s].get(name, 0) for s in splits)] for name in stats["class_names"]]
    return lines + _table(["class", *splits], rows)


def _packing(packing: dict[str, Any]) -> list[str]:
    """A language-model DataModule's packing figures, one line each."""
    if not packing:
        return []
    lines = [f"- Packing: {packing.get('mode')} into rows of {packing.get('capacity')} tokens "
             f"(attention: {packing.get('attention')}, overflow: {packing.get('overflow')})"]
    if packing.get("rows") is not None:
        fill = packing.get("fill_rate")
        lines.append(f"- Training: {packing.get('examples')} examples -> {packing.get('rows')} rows, "
                     f"{packing.get('tokens')} tokens" + (f", fill rate {fill:.3f}" if fill is not None else "")
                     + f"; real-token fraction {packing.get('real_token_fraction', float('nan')):.3f}")
        lines.append(f"- Split {packing.get('examples_split', 0)}, truncated {packing.get('examples_truncated', 0)} "
                     f"({packing.get('tokens_truncated', 0)} tokens), dropped {packing.get('examples_dropped', 0)} "
                     f"examples; rows left out / repeated per epoch for equal steps per rank: "
                     f"{packing.get('rows_left_out_per_epoch', 0)} / {packing.get('rows_repeated_per_epoch', 0)}")
    else:  # streamed: packed on the fly
        lines.append(f"- Streamed: about {packing.get('rows_per_epoch')} rows per epoch, "
                     f"{packing.get('open_rows')} rows filled at once per worker")
    skipped = packing.get("skipped_rows") or {}
    if skipped:
        lines.append(f"- Skipped rows: {skipped}")
    return lines


def _files(report: dict[str, Any]) -> list[str]:
    files = report["files"]
    kind = f" ({files['source_kind']})" if files.get("source_kind") else ""
    lines = [f"- Source: `{files['source']}`{kind}"]
    lines += [f"- Classes: {', '.join(files['classes'])}"] if files["classes"] else []
    if files.get("extensions"):
        lines.append("- File types: " + ", ".join(f"{ext} {n}" for ext, n in files["extensions"].items()))
    for key in ("manifest", "quarantine", "fingerprint", "tokenizer"):
        if files.get(key):
            lines.append(f"- {key.capitalize()}: `{files[key]}`")
    for name, examples in (files.get("examples") or {}).items():
        lines.append(f"- {name}: " + ", ".join(f"`{p}`" for p in examples))
    created = files.get("created") or []
    if created:
        lines += ["", "Files the pipeline created or modified:", *(f"- `{path}`" for path in created)]
    return lines


def _preprocessing(report: dict[str, Any]) -> list[str]:
    lines = [report["preprocessing"]["line"]]
    if report["preprocessing"].get("evaluation"):
        lines += ["", "Evaluation: Raw Data → " + " → ".join(report["preprocessing"]["evaluation"]) + " → Model Input"]
    return lines


def _augmentations(report: dict[str, Any]) -> list[str]:
    rows = report["augmentations"]
    if not rows:
        return ["No augmentation: training samples are only preprocessed."]
    return _table(["augmentation", "probability", "parameters", "where"],
                  [[r["augmentation"], r["probability"], json.dumps(r["parameters"], default=str), r["source"]]
                   for r in rows])


def _loading(report: dict[str, Any]) -> list[str]:
    load = report["loading"]
    memory = load["memory_mb"]
    lines = [f"- Throughput: {load['samples_per_s']:.1f} samples/s over {load['batches']} batches of "
             f"{load['batch_size']} ({load['num_workers']} workers, {load['cores']} cores), the loader alone",
             f"- First batch (worker start-up): {load['startup_s']:.3f} s; median batch "
             f"{load['median_batch_s'] * 1e3:.1f}"
             f" ms, p90 {load['p90_batch_s'] * 1e3:.1f} ms",
             f"- Memory (peak RSS): main process {memory['main']} MiB, {memory['num_processes']} worker process(es) "
             f"{memory['workers']} MiB in total"]
    lines += _model_step(load.get("model_step"))
    items = load.get("per_item") or {}
    if items:
        parts = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v * 1e3:.2f} ms" for k, v in items.items())
        lines.append(f"- Per sample in one process: {parts}")
    lines += ["", "Bottlenecks:", *(f"- {note}" for note in load["bottlenecks"])]
    return lines


def _model_step(step: dict[str, Any] | None) -> list[str]:
    """The measured training step, what exactly it spans, and why the fit summary's step can differ."""
    if not step:
        return []
    work = (f"forward, backward and the {step['optimizer']} step" if step.get("optimizer")
            else "forward and backward (the model builds no optimizer without a Trainer)")
    return [f"- Training step of the model on one batch (here, {step['device']}): {step['step_s'] * 1e3:.1f} ms "
            f"median (min {step['min_s'] * 1e3:.1f}, max {step['max_s'] * 1e3:.1f} ms over {step['steps']} steps), "
            f"{step['samples_per_s']:.1f} samples/s consumed",
            f"  - What it measures: {work} on one real training batch of {step['batch_size']}, timed after "
            f"{step['warmup']} untimed warm-up step(s) (first calls choose kernels and allocate memory), with the "
            f"loader stopped. {STEP_NOTE}"]


def _usage(report: dict[str, Any]) -> list[str]:
    usage = report["usage"]
    lines = ["```bash", *usage["commands"], "```", ""] if usage["commands"] else []
    return lines + ["```python", usage["python"], "```"]


def _quality(report: dict[str, Any]) -> list[str]:
    quality = report["quality"]
    scan = quality["scan"]
    if scan is None:
        lines = ["No local files to scan (a hub dataset); run `stoker scan` on a local copy."]
    else:
        lines = ["Issues found: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in scan["summary"].items())]
        splits = quality.get("scan_splits") or {}
        if splits:
            sizes = ", ".join(f"{k} {v}" for k, v in splits["sizes"].items())
            unsplit = " (no split known to the scan, so leakage was not checked)" if list(splits["sizes"]) == ["all"] \
                else ""
            lines.append(f"- scanned splits, from the {splits['source']}: {sizes}{unsplit}")
        for leak in scan["leakage"][:5]:
            lines.append(f"- leakage: `{leak['train']}` (train) = `{leak['other']}` ({leak['split']}, {leak['match']})")
        for item in scan["corrupt"][:5]:
            lines.append(f"- corrupt: `{item['path']}`: {item['reason']}")
        if scan.get("mean"):
            lines.append(f"- measured channel mean {scan['mean']}, std {scan['std']}")
    lines += ["", "Cleaning performed:", *(f"- {c}" for c in quality["cleaning"])]
    lines += ["", "Recommendations:", *(f"- {r}" for r in quality["recommendations"])]
    return lines


def report_markdown(report: dict[str, Any], plot_dir: str | os.PathLike[str] | None = None) -> str:
    """The report as Markdown, one ``##`` section per entry of :data:`SECTIONS`, plots linked relatively."""
    plots = {name: Path(path).name if plot_dir is not None else path for name, path in report.get("plots", {}).items()}
    body = {
        "Data Pipeline Summary": [report["summary"]],
        "Dataset Statistics": _statistics(report) + (["", f"![class distribution]({plots['class_distribution']})"]
                                                     if "class_distribution" in plots else []),
        "Files": _files(report),
        "Preprocessing Pipeline": _preprocessing(report),
        "Augmentation Strategy": _augmentations(report) + (["", f"![samples]({plots['sample_grid']})"]
                                                           if "sample_grid" in plots else []),
        "Data Loading Performance": _loading(report) + (["", f"![throughput]({plots['throughput']})"]
                                                        if "throughput" in plots else []),
        "Usage Example": _usage(report),
        "Data Quality Notes": _quality(report) + [f"- note: {n}" for n in report.get("notes", [])],
    }
    title = f"# {report['title']}" + (f": `{report['recipe']}`" if report.get("recipe") else "")
    lines = [title]
    for name in SECTIONS:
        lines += ["", f"## {name}", "", *body[name]]
    return "\n".join(lines) + "\n"
