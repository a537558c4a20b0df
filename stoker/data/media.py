"""One description per modality of what a sample file is, which folders hold none, and how to check one.

The folder DataModules, ``stoker scan`` and ``stoker split`` all index trees with these, so a file
that is a sample for one is a sample for all (two indexers once disagreed about ``_``-folders and
``stoker split`` wrote manifests the audio DataModule refused).

Everywhere, these are not data and are skipped (and counted in the index's ``skipped`` list):
hidden and tool folders (dot-folders such as ``.ipynb_checkpoints`` and ``.git``, ``__MACOSX``,
``__pycache__``) at any depth, and hidden files, AppleDouble ``._name`` files among them (macOS
writes one beside every file it copies to a foreign file system; they carry the image's
extension but no image).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stoker.io.audio import AUDIO_EXTENSIONS, check_audio, check_audio_bytes
from stoker.io.image import IMAGE_EXTENSIONS, check_image, check_image_bytes

TOOL_FOLDERS: frozenset[str] = frozenset({"__MACOSX", "__pycache__"})


def is_skipped_folder(name: str) -> bool:
    """Whether a folder holds no data: hidden (a dot-folder such as ``.ipynb_checkpoints``) or a tool's."""
    return name.startswith(".") or name in TOOL_FOLDERS


def is_skipped_file(name: str) -> bool:
    """Whether a file is not data: hidden, including AppleDouble ``._name`` files."""
    return name.startswith(".")


@dataclass(frozen=True)
class Media:
    """What a sample file of one modality is.

    Attributes:
        name: ``"image"`` or ``"audio"``, for messages.
        extensions: Lower-case suffixes of sample files.
        check: The reason a file is unusable, or ``None`` (a full decode).
        check_bytes: The same for a sample's encoded bytes (``(data, name)``), for samples stored inside
            tables and tars.
        not_classes: Prefixes of folder names that are not classes, besides hidden and tool folders
            (audio: ``_``, where Speech Commands keeps ``_background_noise_``).
    """

    name: str
    extensions: frozenset[str]
    check: Callable[[Path], str | None]
    check_bytes: Callable[[bytes, str], str | None]
    not_classes: tuple[str, ...] = ()

    def is_sample(self, filename: str) -> bool:
        """Whether a file name is a sample of this media (by extension, case-insensitive)."""
        return not is_skipped_file(filename) and os.path.splitext(filename)[1].lower() in self.extensions

    def is_class_folder(self, name: str) -> bool:
        """Whether a folder directly under a split root is a class."""
        return not is_skipped_folder(name) and not (self.not_classes and name.startswith(self.not_classes))


IMAGE = Media("image", IMAGE_EXTENSIONS, check_image, check_image_bytes)
AUDIO = Media("audio", AUDIO_EXTENSIONS, check_audio, check_audio_bytes, not_classes=("_",))
MEDIA: dict[str, Media] = {"image": IMAGE, "audio": AUDIO}


def media_for(kind: str) -> Media:
    """The media description of ``kind``.

    Raises:
        ValueError: An unknown kind.
    """
    if kind not in MEDIA:
        raise ValueError(f"no folder media named {kind!r}; expected one of {sorted(MEDIA)}")
    return MEDIA[kind]
