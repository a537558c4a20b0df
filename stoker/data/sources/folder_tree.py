"""Indexing a class-folder tree (images, audio) and finding the files that cannot be used.

Framework-free: the image-folder, audio and DALI DataModules, ``stoker scan`` and ``stoker split``
all build their file lists here, with the media descriptions of :mod:`stoker.data.media`, so a
file quarantined for one is quarantined for all.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stoker.data.cache import stoker_cache
from stoker.data.file_cache import per_file_cached
from stoker.data.media import IMAGE, Media, is_skipped_file, is_skipped_folder

SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}


@dataclass
class FolderIndex:
    """What a class-folder tree holds.

    Attributes:
        root: The dataset root.
        class_names: Sorted class folder names; the index of a name is its label.
        files: Per split (``train``/``val``/``test``, or ``all`` for a single-folder layout), the
            ``(path relative to root, label)`` pairs, sorted by path.
        empty_classes: Class folders that hold no sample file, as ``split/class``.
        ignored: Files under class folders without a sample extension.
        skipped: Hidden and tool folders and hidden files (AppleDouble ``._x``) left out, relative to root.
    """

    root: Path
    class_names: list[str]
    files: dict[str, list[tuple[str, int]]]
    empty_classes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def presplit(self) -> bool:
        """Whether the tree has its own ``train``/``val`` folders."""
        return "all" not in self.files

    @property
    def relpaths(self) -> list[str]:
        """Every sample's relative path, over all splits."""
        return [rel for pairs in self.files.values() for rel, _ in pairs]


def printable(path: str) -> str:
    """A path safe to print: bytes that are not UTF-8 (kept by Python as surrogates) become ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _class_dirs(folder: Path, media: Media) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and media.is_class_folder(entry.name))


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, names in SPLIT_DIRS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def _existing_root(root: str | os.PathLike[str], media: Media) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        kind = media.name
        raise FileNotFoundError(
            f"{kind} folder root {printable(str(path))!r} does not exist or is not a directory; expected "
            f"root/<class>/<{kind} file> or root/train/<class>/<{kind} file> with root/val/<class>/..."
        )
    return path


def class_names_of(root: str | os.PathLike[str], media: Media = IMAGE) -> list[str]:
    """Sorted class names of a tree (cheap: lists folders only, reads no file).

    A class folder that exists only in ``val``/``test`` (no training folder) is named in a warning:
    its samples can be evaluated but never learned.
    """
    root_path = _existing_root(root, media)
    splits = _split_dirs(root_path)
    if "train" not in splits:
        return _class_dirs(root_path, media)
    per_split = {split: set(_class_dirs(folder, media)) for split, folder in splits.items()}
    orphans = sorted(set().union(*per_split.values()) - per_split["train"])
    if orphans:
        where = {name: [s for s, names in per_split.items() if name in names] for name in orphans}
        warnings.warn(
            f"class folder(s) {where} under {printable(str(root_path))!r} have no train/ folder: the model gets their "
            "label but never a training sample of them. Add training files, or remove or rename the folders",
            stacklevel=2,
        )
    return sorted(set().union(*per_split.values()))


def _walk_class(folder: Path, root: Path, media: Media, index: FolderIndex) -> list[str]:
    """Sample files under one class folder (any depth), recording what is skipped or ignored."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [d for d in dirnames if is_skipped_folder(d)]:
            index.skipped.append(os.path.relpath(os.path.join(dirpath, name), root))
            dirnames.remove(name)  # os.walk does not descend into what is removed here
        for filename in filenames:
            relative = os.path.relpath(os.path.join(dirpath, filename), root)
            if is_skipped_file(filename):
                index.skipped.append(relative)
            elif media.is_sample(filename):
                found.append(relative)
            else:
                index.ignored.append(relative)
    return found


def index_folder(root: str | os.PathLike[str], class_names: list[str] | None = None, *,
                 media: Media = IMAGE) -> FolderIndex:
    """List a class-folder tree: ``root/train|val|test/<class>/…`` or ``root/<class>/…``.

    Files are sorted by relative path so the result does not depend on the file system's
    listing order; labels follow the sorted class names (or ``class_names`` when given).
    Hidden and tool folders and hidden files are skipped everywhere (see :mod:`stoker.data.media`).

    Args:
        root: The tree.
        class_names: Fix the classes and their order.
        media: What a sample file is (:data:`stoker.data.media.IMAGE` by default).

    Raises:
        FileNotFoundError: The root does not exist.
        ValueError: The root holds no class folder or no sample, or a folder is not in ``class_names``.
    """
    root_path = _existing_root(root, media)
    splits = _split_dirs(root_path)
    if "train" not in splits:
        splits = {"all": root_path}
    names = list(class_names) if class_names is not None else class_names_of(root_path, media)
    if not names:
        raise ValueError(f"no class folders under {printable(str(root_path))!r}; expected root/<class>/<{media.name} "
                         "files>")
    label_of = {name: label for label, name in enumerate(names)}
    index = FolderIndex(root=root_path, class_names=names, files={})
    for split, folder in splits.items():
        pairs: list[tuple[str, int]] = []
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_dir() and is_skipped_folder(entry.name):
                index.skipped.append(os.path.relpath(entry.path, root_path))
        for name in _class_dirs(folder, media):
            if name not in label_of:
                raise ValueError(f"class folder {printable(str(folder / name))!r} is not in class_names {names}")
            found = _walk_class(folder / name, root_path, media, index)
            pairs.extend((relative, label_of[name]) for relative in found)
            if not found:
                index.empty_classes.append(os.path.relpath(folder / name, root_path))
        index.files[split] = sorted(pairs)
    index.skipped.sort()
    if not any(index.files.values()):
        others = f"; other files found, e.g. {[printable(p) for p in index.ignored[:3]]}" if index.ignored else ""
        raise ValueError(
            f"no {media.name} files under {printable(str(root_path))!r} (extensions looked for: "
            f"{', '.join(sorted(media.extensions))}){others}"
        )
    if index.empty_classes:
        warnings.warn(f"class folders with no {media.name} files under {printable(str(root_path))!r}: "
                      f"{index.empty_classes}", stacklevel=2)
    return index


def scan_cache_path(root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the per-file results of a root are cached (one JSON file per root and purpose)."""
    resolved = str(Path(root).expanduser().resolve()).encode("utf-8", "surrogateescape")
    return stoker_cache(cache_dir, "scan") / f"{hashlib.sha1(resolved).hexdigest()[:16]}.json"


def find_bad_files(
    root: str | os.PathLike[str],
    relpaths: Iterable[str],
    media: Media = IMAGE,
    *,
    num_workers: int = 4,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Run the media's check (a full decode) on every file in parallel; ``{relative path: reason}`` of the bad ones.

    Runs in threads and caches per file by size and modification time (see
    :func:`stoker.data.file_cache.per_file_cached`), so a second ``setup`` only checks changed
    files. A file that cannot even be ``stat``-ed (a dangling symlink, a symlink loop) is bad with
    the operating system's reason.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders warn about odd headers of files reported here anyway
        reasons, missing = per_file_cached(root, relpaths, media.check, num_workers=num_workers,
                                           cache_path=cache_path, progress=progress)
    bad = {rel: reason for rel, reason in reasons.items() if reason is not None}
    bad.update({rel: f"unreadable file ({err.strerror or err})" for rel, err in missing.items()})
    return dict(sorted(bad.items()))


def read_path_list(path: str | os.PathLike[str]) -> set[str]:
    """Read a quarantine list: one path per line (JSON from ``stoker scan`` is accepted too).

    Raises:
        ValueError: A JSON file that is neither a list of paths nor an object with a ``quarantine`` list.
    """
    text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    if text.lstrip().startswith(("{", "[")):
        data = json.loads(text)
        items = data.get("quarantine", data.get("corrupt")) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of paths, or an object with a 'quarantine' list")
        return {item["path"] if isinstance(item, dict) else str(item) for item in items}
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
