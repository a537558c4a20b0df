"""A media source's splits: carved out by seeded per-class shares, or read from a manifest, and explained.

:class:`~stoker.datamodules.source.SourceDataModule` keeps the splits a source brings; these functions
carve what it lacks, apply a ``stoker split`` manifest, and say at setup where each split came from and
how far a carved share is from the one asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from stoker.data.manifest import read_manifest
from stoker.data.sources import Pairs, SourceIndex
from stoker.data.sources.labels import LabelMap
from stoker.data.splits import drifted, split_folder_files, split_report

EVAL_SPLITS: tuple[str, ...] = ("val", "test")


def carve_splits(kept: dict[str, Pairs], *, multi_label: bool, val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, Pairs]:
    """The splits ``kept`` lacks carved out by seeded per-class shares (multi-label rows: one pool, exact quotas)."""
    if not multi_label:
        return split_folder_files(kept, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    # Multi-label rows have no single class to stratify by.
    labels = {key: y for pairs in kept.values() for key, y in pairs}
    flat = {split: [(key, 0) for key, _ in pairs] for split, pairs in kept.items()}
    out = split_folder_files(flat, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    return {split: [(key, labels[key]) for key, _ in pairs] for split, pairs in out.items()}


def manifest_splits(kept: dict[str, Pairs], manifest: str, *, class_names: Sequence[str],
                    multi_label: bool) -> dict[str, Pairs]:
    """The splits a manifest says, among the samples still available (files it does not list are left out).

    Raises:
        ValueError: The manifest's labels are not among ``class_names`` (it was made for other data).
    """
    rows = read_manifest(manifest).rows
    label_map = LabelMap(list(class_names), multi_label=multi_label)
    available = {key for pairs in kept.values() for key, _ in pairs}
    out: dict[str, Pairs] = {split: [] for split in ("train", *EVAL_SPLITS)}
    labels = {row.path: label_map(row.label) for row in rows}
    unknown = sorted({row.label for row in rows if labels[row.path][0] is None})
    if unknown:
        raise ValueError(f"manifest {str(manifest)!r} uses labels {unknown[:10]} that are not class names "
                         f"{list(class_names)}; the manifest was made for other data")
    for row in rows:
        if row.path in available:
            out[row.split].append((row.path, labels[row.path][0]))  # type: ignore[arg-type]
    return out


def explain_splits(index: SourceIndex, splits: dict[str, Pairs], *, manifest: str | None,
                   fractions: dict[str, float], multi_label: bool, class_names: Sequence[str],
                   owner: str) -> tuple[list[str], dict[str, dict[str, object]]]:
    """``(notes, drift)``: where each split came from, and each carved split's asked vs realised share.

    A carved share that drifts from the one asked (per-class rounding), or leaves classes without a held-out
    sample, is also warned about, naming ``owner`` (the DataModule).
    """
    if manifest:
        return [f"splits from the manifest {manifest!r}"], {}
    given = [split for split in ("train", *EVAL_SPLITS) if split in index.files]
    notes = list(index.notes)
    carved = {split: fraction for split, fraction in fractions.items() if split not in index.files}
    if index.presplit:
        notes.append(f"the source brings its splits ({', '.join(given)}): kept as they are")
    for split, fraction in carved.items():
        if fraction > 0:
            pool = "train" if index.presplit else "the whole pool"
            notes.append(f"{split}: carved out of {pool} by a seeded per-class {fraction:.0%} share")
    pool_labels: list[Any] = [y for _, y in splits["train"]] + [y for split in carved for _, y in splits[split]]
    if multi_label:
        pool_labels = [0] * len(pool_labels)
    held = {split: [y if not multi_label else 0 for _, y in splits[split]] for split in carved}
    drift = split_report(pool_labels, held, carved)
    for split, report in drift.items():
        if drifted(report):
            without = report["classes_without"]
            names = [class_names[int(y)] for y in without][:5] if not multi_label else []  # type: ignore[attr-defined]
            text = (f"{split}_fraction={report['asked']} asked, {report['samples']} of {report['of']} samples "
                    f"({float(report['realised']):.1%}) held out: each class's share is rounded on its own")  # type: ignore[arg-type]
            if without:
                text += (f"; {len(without)} class(es) have no {split} sample (e.g. {names}): a class keeps its "  # type: ignore[arg-type]
                         "only sample(s) for training")
            rank_zero_warn(f"{owner}: {text}. Give small classes more samples, or split with a manifest from "
                           "`stoker split --method hash` (per-sample draws)")
            notes.append(text)
    return notes, drift
