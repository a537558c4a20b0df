"""The class-folder reader: ``root/<class>/<file>`` or ``root/train|val|test/<class>/<file>``.

Indexing is :func:`stoker.data.sources.folder_tree.index_folder` (shared with ``stoker scan``, ``split`` and
``pack``); keys are paths relative to the root.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from stoker.data.media import Media, is_skipped_folder
from stoker.data.sources.base import UNLABELLED, Pairs, Source, SourceIndex, stat_signature
from stoker.data.sources.folder_tree import class_names_of, index_folder, printable
from stoker.data.sources.labels import check_class_count


class FolderSource(Source):
    """Samples are the media files under class folders; the class is the folder's name.

    Args:
        root: The tree.
        media: What a sample file is.
        class_names: Fix the classes and their order (default: the sorted class folder names).
    """

    kind = "folder"
    local_files = True

    def __init__(self, root: str, media: Media, *, class_names: list[str] | None = None,
                 labelled: bool = True) -> None:
        super().__init__(os.fspath(root), media, labelled=labelled)
        self.root = Path(root).expanduser()
        self._class_names = list(class_names) if class_names is not None else None

    def known_class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = class_names_of(self.root, self.media)
        return self._class_names

    def index(self) -> SourceIndex:
        if not self.labelled:
            return self._unlabelled()
        names = self.known_class_names()
        inferred = self._class_names is not None and names is self._class_names
        found = index_folder(self.root, names, media=self.media) if names else None
        if inferred or found is None:
            self._check(names)  # after index_folder, whose "no image files (other files: ...)" says more
        assert found is not None
        files: dict[str, Pairs] = {split: list(pairs) for split, pairs in found.files.items()}
        return SourceIndex(kind=self.kind, location=self.location, class_names=found.class_names, files=files,
                           skipped=found.skipped, ignored=found.ignored, empty_classes=found.empty_classes)

    def _unlabelled(self) -> SourceIndex:
        """Every media file under the root, at any depth, with no label (class folders or not)."""
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.media.name} folder {printable(str(self.root))!r} does not exist")
        found: list[str] = []
        skipped: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [d for d in dirnames if is_skipped_folder(d)]:
                skipped.append(os.path.relpath(os.path.join(dirpath, name), self.root))
                dirnames.remove(name)
            found += [os.path.relpath(os.path.join(dirpath, f), self.root) for f in filenames
                      if self.media.is_sample(f)]
        if not found:
            raise ValueError(f"no {self.media.name} files under {printable(str(self.root))!r} (extensions looked for: "
                             f"{', '.join(sorted(self.media.extensions))})")
        return SourceIndex(kind=self.kind, location=self.location, class_names=list(self._class_names or []),
                           files={"all": [(rel, UNLABELLED) for rel in sorted(found)]},  # type: ignore[dict-item]
                           skipped=sorted(skipped))

    def read_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def local_path(self, key: str) -> Path:
        return self.root / key

    def signature(self, key: str) -> list[Any]:
        return stat_signature(self.root / key)

    def name_of(self, key: str) -> str:
        return printable(str(self.root / key))

    def cache_id(self) -> str:
        # The id the folder caches have always had (the resolved root), so existing caches stay valid.
        resolved = str(self.root.resolve()).encode("utf-8", "surrogateescape")
        return hashlib.sha1(resolved).hexdigest()[:16]

    def _check(self, names: list[str]) -> None:
        if len(names) >= 2:
            return
        loose = [entry.name for entry in os.scandir(self.root) if entry.is_file() and self.media.is_sample(entry.name)]
        if not names:
            found = (f"{len(loose)} {self.media.name} file(s) directly in the folder and no class folder" if loose
                     else "no class folder")
        else:
            found = f"one class folder {names[0]!r} and no other"
        check_class_count(names, where=f"{self.media.name} folder {printable(str(self.root))!r}", found=found)
