"""``stoker scan`` as a function: read a dataset, run every quality check, render Markdown.

Framework-free; the command in :mod:`stoker.commands.scan` and the Data Pipeline Summary
(:mod:`stoker.report.summary`) both call :func:`scan_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stoker.data.manifest import assign_splits, read_manifest
from stoker.data.sources import Source
from stoker.data.splits import validate_fractions
from stoker.quality.checks import NEAR_MAX_DIFFERENCE, NEAR_THRESHOLD, PROBLEMS, analyze
from stoker.quality.media_source import SourceOptions, detect_kind, location_text, open_media_source
from stoker.quality.sources import Progress, label_text, read_source, scan_text

KINDS: tuple[str, ...] = ("image", "audio", "text")


def scan_dataset(
    path: str | os.PathLike[str] | Sequence[str],
    *,
    kind: str | None = None,
    reader: Source | None = None,
    options: SourceOptions | None = None,
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
    """Scan the images or audio of any source, or text tables; return the JSON-ready result.

    Images and audio are read through the DataModules' source readers (``reader``, or the one
    :func:`~stoker.quality.media_source.open_media_source` opens for ``path`` with ``options``): a class
    folder, a table of files, a Hugging Face dataset (``hf://<name>`` too) or WebDataset tars, keyed as the
    DataModules key them. Splits come from the source (``train``/``val``/``test`` folders, a split column,
    Hub split files, tar names), from a ``manifest``, or, for a source without splits, from
    ``val_fraction``/``test_fraction`` split as the DataModules split (exact per-class quotas), or from
    ``split_map`` (``{key: split}`` of a built DataModule, so leakage is checked on exactly the split
    training sees; unlisted samples count as ``excluded``). ``options.multi_label`` reads label sets
    (see :func:`stoker.quality.checks.analyze`). ``near_threshold`` and ``near_max_difference`` are those
    of :func:`~stoker.quality.checks.analyze`.

    Raises:
        ValueError: An unknown ``kind``, invalid fractions, or a source with fewer than two classes.
        FileNotFoundError: ``path`` or ``manifest`` does not exist.
    """
    options = options or SourceOptions()
    if reader is not None:
        kind = reader.media.name
    kind = kind or detect_kind(path, path_field=options.path_field)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS} (or None to detect it), got {kind!r}")
    validate_fractions(val_fraction, test_fraction)
    split_of = None
    if split_map is not None:
        split_of = lambda key, name, split: split_map.get(key, "excluded")  # noqa: E731
    elif manifest is not None:
        assigned = read_manifest(manifest).split_of()
        split_of = lambda key, name, split: assigned.get(key, "unlisted")  # noqa: E731
    carve = split_of is None and (val_fraction > 0 or test_fraction > 0)
    if kind == "text":
        if not isinstance(path, str | os.PathLike):
            raise ValueError(f"a text scan reads one table or a folder of tables, got {path!r}")
        records, notes = scan_text(path, text_column=text_column, label_column=label_column, split_of=split_of)
        described: dict[str, Any] = {"source_kind": "text"}
    else:
        source = reader or open_media_source(path, kind, options)
        records, notes = read_source(source, split_of=split_of, num_workers=num_workers, progress=progress)
        described = source.describe()  # the reader and its options (subset, revision, fields), for provenance
    if carve:  # the DataModules' own split: exact per-class quotas (one pool for label sets) over what they keep
        pool = [r for r in records if r.split != "excluded"]
        assigned = assign_splits([(r.path, "" if options.multi_label else label_text(r.label), r.split)
                                  for r in pool], val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
        for record in pool:
            record.split = assigned[record.path]
    result = analyze(records, kind=kind, multi_label=options.multi_label, near_threshold=near_threshold,
                     near_max_difference=near_max_difference, notes=notes)
    result["root"] = location_text(path)
    result["source_kind"] = described["source_kind"]
    result["reader"] = described
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
        "label_conflicts": [", ".join(f"`{m['path']}` ({label_text(m['label'])})" for m in group)
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
    source = f" ({result['source_kind']})" if result.get("source_kind") else ""
    labels = "; multi-label (a sample has a set of classes)" if result.get("multi_label") else ""
    lines = [f"# Data scan: `{result.get('root', '')}`{source}", "",
             f"{result['num_samples']} {result['kind']} samples{labels}; splits "
             f"({result.get('split_source', 'layout')}): " + ", ".join(f"{k} {v}" for k, v in result["splits"].items()),
             ""]
    notes = result.get("notes", {}).get("source_notes") or []
    lines += [*(f"- Source: {note}" for note in notes), ""] if notes else []
    problems = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["summary"].items())
    lines += [f"**Problems:** {problems}", ""]
    if "near_duplicate_candidates" in result:
        lines += [_near_method(result), ""]
    caveat = result.get("notes", {}).get("near_duplicates_caveat")
    if caveat:
        lines += [f"Near duplicates: {caveat}.", ""]
    lines += ["## Class counts" + (" (positives per class)" if result.get("multi_label") else ""), ""]
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
    if result.get("multi_label"):
        lines += ["", *_label_set_lines(result)]
    lines += ["", "## Problems", *_problem_lines(result)]
    return "\n".join(lines) + "\n"


def _label_set_lines(result: dict[str, Any]) -> list[str]:
    """Co-occurring label pairs, classes without positives and labels per sample of a multi-label scan."""
    per_sample = result["labels_per_sample"]
    lines = ["## Label sets", "", f"Labels per sample: mean {per_sample['mean']}; "
             + ", ".join(f"{n} label(s) {count}" for n, count in per_sample["counts"].items()), ""]
    without = {split: names for split, names in result["classes_without_positives"].items() if names}
    lines += [f"Classes with no positive in {split}: " + ", ".join(names) for split, names in without.items()]
    lines += ["Every class has a positive in every split."] if not without else []
    pairs = result["label_cooccurrence"]
    lines += ["", "Most frequent label pairs:", ""]
    if not pairs:
        return [*lines, "None: no sample has two labels."]
    lines += ["| classes | samples |", "|---|---|"]
    return lines + [f"| {' + '.join(pair['classes'])} | {pair['count']} |" for pair in pairs]


def _near_method(result: dict[str, Any]) -> str:
    """How the image near duplicates were found, with the pair counts: what a reader needs to trust the count."""
    candidates, confirmed = result["near_duplicate_candidates"], result["near_duplicate_confirmed"]
    return (f"Near duplicates: {candidates} pairs of images within {result['near_duplicate_threshold']} bits of the "
            f"64-bit perceptual hash; {confirmed} confirmed as one picture by their 16x16 gray thumbnails "
            f"(difference at most {result['near_duplicate_max_difference']}), {candidates - confirmed} set aside as "
            "look-alikes. Exact duplicates: SHA-256 of the bytes.")


def datamodule_scan_args(datamodule: Any) -> dict[str, Any] | None:
    """Keyword arguments of :func:`scan_dataset` for the data a built DataModule reads, or ``None``.

    Media DataModules over any source are scanned through their own reader (``reader``), keyed and
    labelled as they key and label samples (multi-label when they are), with their actual split
    (``splits`` after ``setup``; what they left out counts as ``excluded``). A wrapper (the imbalanced
    DataModule) is scanned through the DataModule it wraps. Text DataModules with a local table or
    folder as ``source`` are scanned with their text and label columns. ``None`` for what has no
    per-sample reader (a stoker shard set, a hub text dataset).
    """
    inner = datamodule
    while getattr(inner, "reader", None) is None and getattr(inner, "datamodule", None) is not None:
        inner = inner.datamodule
    reader = getattr(inner, "reader", None)
    info = inner.describe() if hasattr(inner, "describe") else {}
    if isinstance(reader, Source):
        args: dict[str, Any] = {"path": info.get("source", reader.location), "reader": reader,
                                "options": SourceOptions(multi_label=bool(getattr(inner, "multi_label", False)))}
        splits = getattr(inner, "splits", None)
        if isinstance(splits, dict) and splits:
            args["split_map"] = {item[0]: split for split, items in splits.items() for item in items}
        return args
    if getattr(inner, "shards", None) is not None:
        return None
    source = info.get("source") or info.get("dataset")
    if isinstance(source, str) and "://" not in source and Path(source).exists():
        fields = getattr(inner, "text_fields", None) or ["text"]
        return {"path": source, "kind": "text", "text_column": fields[0],
                "label_column": getattr(inner, "label_field", "label")}
    return None
