"""Which split a file, folder, column value or dataset key names: one place for every source.

Hugging Face writes splits as ``train``/``validation``/``test`` files, alone or sharded as
``<split>-00000-of-00004.parquet``, often under a ``data/`` folder; people also use ``val``,
``valid`` and ``dev``. The class-folder trees, the tables' split column, the text tables, the
Hugging Face readers and the WebDataset reader all recognise splits here, so a file that is a
validation split for one is a validation split for all.

A source that brings its own splits keeps them: they are never merged and re-split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Our split name -> the names datasets, hubs and people use for it (GLUE says "validation", others "dev").
SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("validation", "val", "valid", "dev"),
    "test": ("test", "testing"),
}
_ALIAS_TO_SPLIT: dict[str, str] = {alias: ours for ours, names in SPLIT_ALIASES.items() for alias in names}
# <split>, <split>-00000-of-00004 (Hugging Face's shards), <split>-0003, <split>_01, <split>.0 (numbered parts).
_SPLIT_FILE = re.compile(r"^(?P<split>[a-z]+)(?:[-_.]\d+(?:-of-\d+)?)?$")


def canonical_split(name: str) -> str | None:
    """Our split (``"train"``, ``"val"``, ``"test"``) for a split's name, case-insensitive; ``None`` for others."""
    return _ALIAS_TO_SPLIT.get(str(name).strip().lower())


def split_of_name(name: str) -> str | None:
    """The split a file or folder name stands for (its suffixes ignored), or ``None``.

    ``train.csv``, ``validation-00000-of-00001.parquet``, ``dev.jsonl`` and ``test_03.tar`` name
    splits; ``flowers.csv`` and ``train_images.csv`` do not.
    """
    stem = Path(name).name.lower()
    while "." in stem:  # data.tar.gz -> data; train-00000-of-00001.parquet -> train-00000-of-00001
        head, _, tail = stem.rpartition(".")
        if tail.isdigit():
            break
        stem = head
    match = _SPLIT_FILE.match(stem)
    return canonical_split(match.group("split")) if match else None


def group_by_split(paths: Iterable[Path], *, where: str) -> dict[str, list[Path]]:
    """Files grouped by the split their name (or their parent folder's name) says, or ``{"all": files}``.

    A parent folder named like a split (``train/part-0.parquet``) counts when the file name says none.
    Files that name no split beside files that do (``part0.csv`` beside ``val.csv``) are the training split.

    Raises:
        ValueError: Unnamed files beside a named training split (which split would they be?).
    """
    files = sorted(paths)
    named: dict[str, list[Path]] = {}
    unnamed: list[Path] = []
    for path in files:
        split = split_of_name(path.name) or canonical_split(path.parent.name)
        if split is None:
            unnamed.append(path)
        else:
            named.setdefault(split, []).append(path)
    if not named:
        return {"all": files} if files else {}
    if unnamed and "train" in named:
        shown = ", ".join(str(p) for p in unnamed[:3])
        raise ValueError(
            f"{where}: files {', '.join(sorted(named))} name their splits, but {len(unnamed)} file(s) name none "
            f"(e.g. {shown}); rename them after their split (train, validation, test, or "
            "<split>-00000-of-00001.<ext>) or move them out"
        )
    if unnamed:  # val.csv beside part0.csv, part1.csv: the unnamed files are the training data
        named["train"] = unnamed
    return {split: named[split] for split in SPLITS if split in named}


def split_files(folder: Path, suffixes: Iterable[str]) -> dict[str, list[Path]]:
    """Data files of a folder by split: ``folder/*``, else ``folder/data/*``, else ``folder/<split>/*``.

    Returns ``{}`` when the folder holds no file with one of ``suffixes``.

    Raises:
        ValueError: Mixed named and unnamed files (see :func:`group_by_split`).
    """
    wanted = {suffix.lower() for suffix in suffixes}

    def files_in(where: Path) -> list[Path]:
        return [p for p in where.iterdir() if p.is_file() and not p.name.startswith(".") and _suffix(p) in wanted]

    for candidate in (folder, folder / "data"):
        if candidate.is_dir():
            found = files_in(candidate)
            if found:
                return group_by_split(found, where=str(candidate))
    nested = [p for child in sorted(folder.iterdir()) if child.is_dir() and canonical_split(child.name)
              for p in files_in(child)]
    return group_by_split(nested, where=str(folder)) if nested else {}


def _suffix(path: Path) -> str:
    return path.suffix.lower()
