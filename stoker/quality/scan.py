"""``stoker scan`` as a function: read a dataset, run every quality check, render Markdown.

Framework-free; the command in :mod:`stoker.commands.scan` and the Data Pipeline Summary
(:mod:`stoker.report.summary`) both call :func:`scan_dataset`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stoker.data.manifest import assign_splits, read_manifest
from stoker.data.splits import validate_fractions
from stoker.quality.checks import NEAR_MAX_DIFFERENCE, NEAR_THRESHOLD, PROBLEMS, analyze
from stoker.quality.sources import Progress, detect_kind, scan_audio_folder, scan_image_folder, scan_text

KINDS: tuple[str, ...] = ("image", "audio", "text")


def scan_dataset(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    manifest: str | None = None,
    val_fraction: float = 0.0,
    test_fraction: float = 0.0,
    seed: int = 0,
    text_column: str = "text",
    label_column: str | None = "label",
    near_threshold: int = NEAR_THRESHOLD,
    near_max_difference: float = NEAR_MAX_DIFFERENCE,
    num_workers: int = 4,
    progress: Progress | None = None,
    split_map: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Scan an image folder, an audio folder or text tables; return the JSON-ready result.

    Splits come from the layout (``train``/``val``/``test`` folders, ``train.csv``...), from a
    ``manifest``, or, for a dataset without splits, from ``val_fraction``/``test_fraction`` split as the
    DataModules split (exact per-class quotas), or from ``split_map`` (``{path: split}`` of a built DataModule,
    so leakage is checked on exactly the split training sees; unlisted files count as ``excluded``).
    ``near_threshold`` and ``near_max_difference`` are those of :func:`stoker.quality.checks.analyze`.

    Raises:
        ValueError: An unknown ``kind`` or invalid fractions.
        FileNotFoundError: ``path`` or ``manifest`` does not exist.
    """
    kind = kind or detect_kind(path)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (or None to detect it), got {kind!r}")
    validate_fractions(val_fraction, test_fraction)
    split_of = None
    if split_map is not None:
        split_of = lambda rel, name, split: split_map.get(rel, "excluded")  # noqa: E731
    elif manifest is not None:
        assigned = read_manifest(manifest).split_of()
        split_of = lambda rel, name, split: assigned.get(rel, "unlisted")  # noqa: E731
    carve = split_of is None and (val_fraction > 0 or test_fraction > 0)
    if kind == "image":
        records, notes = scan_image_folder(path, split_of=split_of, num_workers=num_workers, progress=progress)
    elif kind == "audio":
        records, notes = scan_audio_folder(path, split_of=split_of, num_workers=num_workers, progress=progress)
    else:
        records, notes = scan_text(path, text_column=text_column, label_column=label_column, split_of=split_of)
    if carve:  # the DataModules' own split: exact per-class quotas over the records of every class
        assigned = assign_splits([(r.path, r.label or "", r.split) for r in records], val_fraction=val_fraction,
                                 test_fraction=test_fraction, seed=seed)
        for record in records:
            record.split = assigned[record.path]
    result = analyze(records, kind=kind, near_threshold=near_threshold, near_max_difference=near_max_difference,
                     notes=notes)
    result["root"] = str(Path(path))
    sources = [(split_map is not None, "DataModule"), (manifest is not None, "manifest"), (carve, "per-class quotas")]
    result["split_source"] = next((name for used, name in sources if used), "layout")
    return result


def _paths(items: list[Any], limit: int = 20) -> list[str]:
    lines = [f"- {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"- ... and {len(items) - limit} more (see the JSON)")
    return lines


def _problem_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    sections = {
        "corrupt": [f"`{c['path']}`: {c['reason']}" for c in result["corrupt"]],
        "exact_duplicates": [", ".join(f"`{p}`" for p in group) for group in result["exact_duplicates"]],
        "near_duplicates": [", ".join(f"`{p}`" for p in group) for group in result["near_duplicates"]],
        "leakage": [f"`{p['train']}` (train) = `{p['other']}` ({p['split']}, {p['match']})" for p in result["leakage"]],
        "label_conflicts": [", ".join(f"`{m['path']}` ({m['label']})" for m in group)
                            for group in result["label_conflicts"]],
        "outliers": [f"`{o['path']}` [{o['check']}]: {o['reason']}" for o in result["outliers"]],
        "missing": [f"`{m['path']}`: missing {', '.join(m['fields'])}" for m in result["missing"]],
    }
    for name in PROBLEMS:
        found = sections[name]
        lines += ["", f"### {name.replace('_', ' ').capitalize()}: {len(found)}"]
        lines += _paths(found) if found else ["None found."]
    return lines


def scan_markdown(result: dict[str, Any]) -> str:
    """The scan result as a Markdown page."""
    lines = [f"# Data scan: `{result.get('root', '')}`", "",
             f"{result['num_samples']} {result['kind']} samples; splits ({result.get('split_source', 'layout')}): "
             + ", ".join(f"{k} {v}" for k, v in result["splits"].items()), ""]
    problems = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["summary"].items())
    lines += [f"**Problems:** {problems}", ""]
    if "near_duplicate_candidates" in result:
        lines += [_near_method(result), ""]
    caveat = result.get("notes", {}).get("near_duplicates_caveat")
    if caveat:
        lines += [f"Near duplicates: {caveat}.", ""]
    lines += ["## Class counts", ""]
    counts = result["class_counts"]
    splits = list(counts)
    lines += ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name in result["class_names"]:
        lines.append(f"| {name} | " + " | ".join(str(counts[s].get(name, 0)) for s in splits) + " |")
    ratio = result["imbalance_ratio"]
    shown = f"{ratio:.2f}" if ratio else "n/a (a class is empty)"
    lines += ["", f"Imbalance ratio (largest / smallest class): {shown}"]
    if result.get("mean") is not None:
        lines += ["", f"Per-channel mean of the {result['stats_split']} images: {result['mean']}, "
                      f"std: {result['std']} (the values for Normalize)"]
    lines += ["", "## Problems", *_problem_lines(result)]
    return "\n".join(lines) + "\n"


def _near_method(result: dict[str, Any]) -> str:
    """How the image near duplicates were found, with the pair counts: what a reader needs to trust the count."""
    candidates, confirmed = result["near_duplicate_candidates"], result["near_duplicate_confirmed"]
    return (f"Near duplicates: {candidates} pairs of images within {result['near_duplicate_threshold']} bits of the "
            f"64-bit perceptual hash; {confirmed} confirmed as one picture by their 16x16 gray thumbnails "
            f"(difference at most {result['near_duplicate_max_difference']}), {candidates - confirmed} set aside as "
            "look-alikes. Exact duplicates: SHA-256 of the bytes.")


def datamodule_scan_args(datamodule: Any) -> dict[str, Any] | None:
    """Keyword arguments of :func:`scan_dataset` for the local data a built DataModule reads, or ``None``.

    Folder DataModules (``root`` in ``describe()``) are scanned with their actual split (``splits``
    after ``setup``); text DataModules (a local file or folder as ``dataset``) with their text and
    label columns. Hub datasets have no local files to scan.
    """
    info = datamodule.describe() if hasattr(datamodule, "describe") else {}
    root = info.get("root")
    if root and Path(root).is_dir():
        args: dict[str, Any] = {"path": root}
        splits = getattr(datamodule, "splits", None)
        if isinstance(splits, dict) and splits:
            args["split_map"] = {item[0]: split for split, items in splits.items() for item in items}
        return args
    dataset = info.get("dataset")
    if isinstance(dataset, str) and Path(dataset).exists():
        fields = getattr(datamodule, "text_fields", None) or ["text"]
        return {"path": dataset, "kind": "text", "text_column": fields[0],
                "label_column": getattr(datamodule, "label_field", "label")}
    return None
