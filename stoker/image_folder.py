"""Indexing a class-folder tree (images, audio) and finding the files that will not decode.

Framework-free: the image-folder, audio and DALI DataModules and ``stoker scan`` all build their
file lists here, so a file quarantined for one is quarantined for all. What counts as a media
file and how a file is checked are arguments; images are the default.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stoker.file_cache import per_file_cached
from stoker.image_ops import IMAGE_EXTENSIONS, ImageDecodeError, is_image_file, read_image

SPLIT_DIRS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "val": ("val", "valid", "validation"),
    "test": ("test",),
}


@dataclass
class FolderIndex:
    """What an image-folder tree holds.

    Attributes:
        root: The dataset root.
        class_names: Sorted class folder names; the index of a name is its label.
        files: Per split (``train``/``val``/``test``, or ``all`` for a single-folder layout), the
            ``(path relative to root, label)`` pairs, sorted by path.
        empty_classes: Class folders that hold no image file, as ``split/class``.
        ignored: Files under class folders without an image extension.
    """

    root: Path
    class_names: list[str]
    files: dict[str, list[tuple[str, int]]]
    empty_classes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    @property
    def presplit(self) -> bool:
        """Whether the tree has its own ``train``/``val`` folders."""
        return "all" not in self.files


def _class_dirs(folder: Path, skip: tuple[str, ...] = (".",)) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith(skip))


def _split_dirs(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, names in SPLIT_DIRS.items():
        for name in names:
            if (root / name).is_dir():
                found[split] = root / name
                break
    return found


def class_names_of(root: str | os.PathLike[str], *, media: str = "image", skip: tuple[str, ...] = (".",)) -> list[str]:
    """Sorted class names of a tree (cheap: lists folders only, reads no file).

    Folders whose names start with one of ``skip`` are not classes.
    """
    root_path = _existing_root(root, media)
    splits = _split_dirs(root_path)
    if "train" in splits:
        return sorted({name for folder in splits.values() for name in _class_dirs(folder, skip)})
    return _class_dirs(root_path, skip)


def _existing_root(root: str | os.PathLike[str], media: str = "image") -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{media} folder root {str(path)!r} does not exist or is not a directory; expected "
            f"root/<class>/<{media} file> or root/train/<class>/<{media} file> with root/val/<class>/..."
        )
    return path


def index_folder(
    root: str | os.PathLike[str],
    class_names: list[str] | None = None,
    *,
    is_media: Callable[[str], bool] = is_image_file,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    media: str = "image",
    skip: tuple[str, ...] = (".",),
) -> FolderIndex:
    """List a class-folder tree: ``root/train|val|test/<class>/…`` or ``root/<class>/…``.

    Files are sorted by relative path so the result does not depend on the file system's
    listing order; labels follow the sorted class names (or ``class_names`` when given).

    Args:
        root: The tree.
        class_names: Fix the classes and their order.
        is_media: Whether a file name is a sample (by default: an image extension).
        extensions: The extensions ``is_media`` accepts, for the "nothing found" message.
        media: What the files are, for messages (``"image"``, ``"audio"``).
        skip: Prefixes of folder names that are not classes.

    Raises:
        FileNotFoundError: The root does not exist.
        ValueError: The root holds no class folder or no sample, or a folder is not in ``class_names``.
    """
    root_path = _existing_root(root, media)
    splits = _split_dirs(root_path)
    if "train" not in splits:
        splits = {"all": root_path}
    names = list(class_names) if class_names is not None else class_names_of(root_path, media=media, skip=skip)
    if not names:
        raise ValueError(f"no class folders under {str(root_path)!r}; expected root/<class>/<{media} files>")
    label_of = {name: label for label, name in enumerate(names)}
    index = FolderIndex(root=root_path, class_names=names, files={})
    for split, folder in splits.items():
        pairs: list[tuple[str, int]] = []
        for name in _class_dirs(folder, skip):
            if name not in label_of:
                raise ValueError(f"class folder {str(folder / name)!r} is not in class_names {names}")
            count = 0
            for dirpath, _, filenames in os.walk(folder / name):
                for filename in filenames:
                    relative = os.path.relpath(os.path.join(dirpath, filename), root_path)
                    if is_media(filename):
                        pairs.append((relative, label_of[name]))
                        count += 1
                    elif not filename.startswith("."):
                        index.ignored.append(relative)
            if count == 0:
                index.empty_classes.append(os.path.relpath(folder / name, root_path))
        index.files[split] = sorted(pairs)
    if not any(index.files.values()):
        others = f"; other files found, e.g. {index.ignored[:3]}" if index.ignored else ""
        raise ValueError(
            f"no {media} files under {str(root_path)!r} (extensions looked for: "
            f"{', '.join(sorted(extensions))}){others}"
        )
    if index.empty_classes:
        warnings.warn(f"class folders with no {media} files under {str(root_path)!r}: {index.empty_classes}",
                      stacklevel=2)
    return index


def _check_one(path: Path) -> str | None:
    try:
        read_image(path)
    except ImageDecodeError as err:
        return err.reason
    return None


def scan_cache_path(root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the decode-check results of a root are cached (one JSON file per root)."""
    base = Path(cache_dir) if cache_dir else Path(os.environ.get("STOKER_CACHE", "~/.cache/stoker")).expanduser()
    digest = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:16]
    return base / "scan" / f"{digest}.json"


def find_bad_images(
    root: str | os.PathLike[str],
    relpaths: Iterable[str],
    *,
    num_workers: int = 4,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Decode every image in parallel; return ``{relative path: reason}`` for those that fail.

    A full decode is the only check that finds a JPEG truncated after its header or corrupt in
    its entropy data. See :func:`find_bad_files` for caching.
    """
    return find_bad_files(root, relpaths, _check_one, num_workers=num_workers, cache_path=cache_path,
                          progress=progress)


def find_bad_files(
    root: str | os.PathLike[str],
    relpaths: Iterable[str],
    check: Callable[[Path], str | None],
    *,
    num_workers: int = 4,
    cache_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str]:
    """Run ``check`` (the reason a file is unusable, or ``None``) on every file in parallel.

    Runs in threads and caches per file by size and modification time (see
    :func:`stoker.file_cache.per_file_cached`), so a second ``setup`` only checks changed files.
    """
    reasons, missing = per_file_cached(root, relpaths, check, num_workers=num_workers, cache_path=cache_path,
                                       progress=progress)
    bad = {rel: reason for rel, reason in reasons.items() if reason is not None}
    bad.update({rel: f"unreadable file ({err.strerror})" for rel, err in missing.items()})
    return dict(sorted(bad.items()))


def read_path_list(path: str | os.PathLike[str]) -> set[str]:
    """Read a quarantine list: one path per line (JSON from ``stoker scan`` is accepted too)."""
    text = Path(path).read_text()
    if text.lstrip().startswith(("{", "[")):
        data = json.loads(text)
        items = data.get("quarantine", data.get("corrupt")) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of paths, or an object with a 'quarantine' list")
        return {item["path"] if isinstance(item, dict) else str(item) for item in items}
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
