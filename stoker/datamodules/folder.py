"""What every class-folder DataModule (images, audio) does the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from stoker.datamodules.base import StokerDataModule
from stoker.image_folder import FolderIndex, read_path_list, scan_cache_path
from stoker.loader import available_cores
from stoker.manifest import check_manifest_fingerprint, content_hashes, manifest_splits, splits_fingerprint
from stoker.splits import split_folder_files, validate_fractions

Pairs = list[tuple[str, int]]


class ClassFolderDataModule(StokerDataModule):
    """Base of the DataModules that read ``root/[train|val|test/]<class>/<file>`` trees.

    It owns the steps that do not depend on the media: decode-checking every file once per node
    (``prepare_data``) and reading the cached result back (``setup``); leaving out quarantined and
    undecodable files, with an error past ``max_bad_fraction``; the split (a manifest, the tree's
    own folders, or the seeded per-file hash of :mod:`stoker.splits`); the data fingerprint; the
    loaders; and the report. A subclass says how to index its files, check one, and build a
    dataset from ``(relative path, label)`` pairs.

    Args:
        root: Dataset root.
        val_fraction: Per-class fraction held out for validation when the tree has no ``val`` folder.
        test_fraction: Per-class fraction held out for testing when the tree has no ``test`` folder.
        max_bad_fraction: Largest tolerated fraction of unusable files.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts the files.
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        manifest: A split manifest from ``stoker split``; it replaces the tree's own split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Where scan results are cached (default ``~/.cache/stoker``).
        batch_size: See :class:`~stoker.datamodules.base.StokerDataModule` (so are the rest).
    """

    media = "file"

    def __init__(
        self,
        root: str,
        *,
        val_fraction: float,
        test_fraction: float,
        max_bad_fraction: float,
        verify: str,
        quarantine: str | None,
        manifest: str | None,
        strict_fingerprint: bool,
        class_names: list[str] | None,
        cache_dir: str | None,
        batch_size: int,
        num_workers: int | None,
        pin_memory: bool | None,
        persistent_workers: bool,
        prefetch_factor: int,
        seed: int,
    ) -> None:
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=persistent_workers, prefetch_factor=prefetch_factor, seed=seed,
        )
        validate_fractions(val_fraction, test_fraction)
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction}")
        if verify not in ("decode", "none"):
            raise ValueError(f"verify must be 'decode' or 'none', got {verify!r}")
        self.root = root
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_bad_fraction = max_bad_fraction
        self.verify = verify
        self.quarantine = quarantine
        self.manifest = manifest
        self.strict_fingerprint = strict_fingerprint
        self.cache_dir = cache_dir
        self._class_names = list(class_names) if class_names is not None else None
        self.bad_files: dict[str, str] = {}
        self.quarantined: list[str] = []
        self.splits: dict[str, Pairs] = {}
        self.datasets: dict[str, Any] = {}

    # ----------------------------------------------------------------- what a subclass provides
    def _discover_class_names(self) -> list[str]:
        raise NotImplementedError

    def _index(self) -> FolderIndex:
        raise NotImplementedError

    def _find_bad(self, index: FolderIndex, relpaths: list[str], cache_path: Path) -> dict[str, str]:
        raise NotImplementedError

    def _build_dataset(self, root: Path, split: str, pairs: Pairs) -> Any:
        """A map-style dataset of the pairs (or whatever this DataModule's loaders read)."""
        raise NotImplementedError

    def _split(self, kept: dict[str, Pairs]) -> dict[str, Pairs]:
        return split_folder_files(
            kept, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed
        )

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = self._discover_class_names()
        return self._class_names

    def train_labels(self) -> list[int]:
        """Labels of the training split in dataset order (available after ``setup``)."""
        return [label for _, label in self.splits["train"]]

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Decode-check and hash every file once per node; every rank's ``setup`` then reads the caches."""
        index = self._index()
        self._scan(index)
        relpaths = [rel for pairs in index.files.values() for rel, _ in pairs]
        content_hashes(index.root, relpaths, num_workers=min(8, available_cores()),
                       cache_path=self._hashes_cache(index.root))

    def setup(self, stage: str | None = None) -> None:
        """Index the tree, leave out bad and quarantined files, split, and build the datasets."""
        if self.datasets:
            return
        index = self._index()
        all_files = [rel for pairs in index.files.values() for rel, _ in pairs]
        excluded = read_path_list(self.quarantine) if self.quarantine else set()
        self.quarantined = sorted(rel for rel in all_files if rel in excluded)
        self.bad_files = self._scan(index)
        self._check_bad_fraction(len(all_files))
        drop = excluded | set(self.bad_files)
        kept = {split: [(rel, y) for rel, y in pairs if rel not in drop] for split, pairs in index.files.items()}
        self.splits = manifest_splits(self.manifest, kept, self.class_names) if self.manifest else self._split(kept)
        if not self.splits["train"]:
            raise ValueError(
                f"no training {self.media} files left under {self.root!r} after the split and exclusions"
            )
        self.datasets = {split: self._build_dataset(index.root, split, pairs) for split, pairs in self.splits.items()}
        self.record_fingerprint(splits_fingerprint(index.root, self.splits, self.class_names,
                                                   cache_path=self._hashes_cache(index.root),
                                                   num_workers=min(8, available_cores())))
        check_manifest_fingerprint(self.manifest, self.fingerprint or "")
        self._report()

    def train_dataloader(self) -> Any:
        return self.make_loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> Any:
        return self.make_loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> Any:
        return self.make_loader(self.datasets["test"], train=False)

    def predict_dataloader(self) -> Any:
        return self.make_loader(self.datasets["test"] if self.splits["test"] else self.datasets["val"], train=False)

    # ----------------------------------------------------------------- internals
    def _hashes_cache(self, root: Path) -> Path:
        return scan_cache_path(root, self.cache_dir).with_suffix(".sha256.json")

    def _scan(self, index: FolderIndex) -> dict[str, str]:
        if self.verify == "none":
            return {}
        relpaths = [rel for pairs in index.files.values() for rel, _ in pairs]
        return self._find_bad(index, relpaths, scan_cache_path(index.root, self.cache_dir))

    def _check_bad_fraction(self, total: int) -> None:
        if not self.bad_files:
            return
        fraction = len(self.bad_files) / max(1, total)
        if fraction > self.max_bad_fraction:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in list(self.bad_files.items())[:10])
            raise ValueError(
                f"{len(self.bad_files)} of {total} {self.media} files under {self.root!r} ({fraction:.1%}) are "
                f"unusable, more than max_bad_fraction={self.max_bad_fraction:.1%}. First ones:\n{listed}\n"
                "Fix or remove them, or raise max_bad_fraction to train without them."
            )

    def _report(self) -> None:
        sizes = ", ".join(f"{split} {len(pairs)}" for split, pairs in self.splits.items())
        rank_zero_info(f"{type(self).__name__}: {len(self.class_names)} classes; {sizes}")
        if self.bad_files:
            listed = "\n".join(f"  {rel}: {reason}" for rel, reason in self.bad_files.items())
            rank_zero_warn(f"excluded {len(self.bad_files)} unusable {self.media} file(s) under {self.root!r}:\n"
                           f"{listed}")
        if self.quarantined:
            rank_zero_info(f"left out {len(self.quarantined)} quarantined file(s) listed in {self.quarantine!r}")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            root=os.fspath(self.root),
            split_sizes={split: len(pairs) for split, pairs in self.splits.items()},
            bad_files=[{"path": rel, "reason": reason} for rel, reason in self.bad_files.items()],
            quarantined=self.quarantined,
            manifest=self.manifest,
            fingerprint=self.fingerprint,
        )
        return info
