"""What a media DataModule tells about its data: the setup summary, skipped samples per epoch, ``describe()``.

Functions of a :class:`~stoker.datamodules.source.SourceDataModule` after its ``setup``; the module
holds the data, these say what it found (classes, split sizes and where they came from, unusable,
quarantined and ignored files) in logs and in the summary that reports and ``stoker compare`` read.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from stoker.data.sources.folder_tree import printable

if TYPE_CHECKING:
    from stoker.datamodules.source import SourceDataModule


def sizes_text(sizes: dict[str, int]) -> str:
    """``"train 29, val 8, test 0"``."""
    return ", ".join(f"{split} {n}" for split, n in sizes.items())


def report_setup(dm: SourceDataModule) -> None:
    """Log what setup found: classes, split sizes and origins, and every file left out with its reason."""
    name, media, unit = type(dm).__name__, dm.media.name, dm.unit
    rank_zero_info(f"{name}: {len(dm.class_names)} classes; {sizes_text(dm.split_sizes())} "
                   f"({dm.source_kind} {dm.source})")
    for note in dm.split_notes:
        rank_zero_info(f"  split: {note}")
    if dm.bad_files:
        listed = "\n".join(f"  {printable(key)}: {reason}" for key, reason in dm.bad_files.items())
        rank_zero_warn(f"excluded {len(dm.bad_files)} unusable {media} {unit}(s) under {dm.source!r}:\n{listed}")
    if dm.quarantined:
        rank_zero_info(f"left out {len(dm.quarantined)} quarantined {unit}(s) listed in {dm.quarantine!r}")
    if dm.skipped:
        shown = ", ".join(printable(p) for p in dm.skipped[:5])
        rank_zero_info(f"skipped {len(dm.skipped)} hidden or tool folder(s)/file(s) that hold no data (e.g. {shown})")


def report_skips(dm: SourceDataModule, *, before: int | None) -> None:
    """Warn once about each epoch's samples skipped while training (epochs before ``before``; ``None``: all).

    Called when a later epoch begins and at teardown, on every rank, since each rank skips samples of its own
    share; the counts stay in ``skipped_report`` for ``describe()``.
    """
    for epoch in sorted(e for e in dm.skipped_samples if before is None or e < before):
        found = dm.skipped_samples.pop(epoch)
        listed = "\n".join(f"  {printable(path)}: {reason}" for path, reason in sorted(found.items()))
        rank = dm.trainer.global_rank if dm.trainer is not None else 0
        warnings.warn(f"{type(dm).__name__} (rank {rank}): skipped {len(found)} unreadable {dm.media.name} "
                      f"{dm.unit}(s) in epoch {epoch} (on_bad_sample='skip'):\n{listed}", stacklevel=3)
        dm.skipped_report[epoch] = dm.skipped_report.get(epoch, 0) + len(found)


def source_description(dm: SourceDataModule, info: dict[str, Any]) -> dict[str, Any]:
    """``info`` (the base DataModule's ``describe()``) with the source, its splits and what was left out."""
    info.update(source=dm.source, source_kind=dm.source_kind, split_sizes=dm.split_sizes(),
                multi_label=dm.multi_label, fingerprint=dm.fingerprint, skipped_in_training=dict(dm.skipped_report))
    if dm.shards is not None:
        info.update(dm.shards.describe())
        return info
    world = dm.world()[0]
    for split, pairs in dm.splits.items():
        if pairs:
            plan = dm.plan(split, world)
            info[f"{split}_batches_per_rank"] = plan.num_batches(0)
            info[f"{split}_padding"] = plan.padding  # samples read twice per epoch across ranks
            info[f"{split}_dropped_per_rank"] = plan.dropped(0)
    info.update(
        root=dm.source if isinstance(dm.source, str) else list(dm.source),
        bad_files=[{"path": printable(key), "reason": reason} for key, reason in dm.bad_files.items()],
        quarantined=[printable(key) for key in dm.quarantined],
        skipped=len(dm.skipped),
        manifest=dm.manifest,
        split_notes=list(dm.split_notes),
        split_drift={split: {k: v for k, v in report.items() if k != "classes_without"}
                     | {"classes_without": len(report["classes_without"])}  # type: ignore[arg-type]
                     for split, report in dm.split_drift.items()},
    )
    return info
