"""What every class-folder DataModule (images, audio) does the same way."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from stoker.data.file_dataset import BAD_SAMPLE_POLICIES, SKIPPED_KEY, BadSamplePolicy, SkippingCollate
from stoker.data.folder import (
    FolderIndex,
    class_names_of,
    find_bad_files,
    index_folder,
    printable,
    read_path_list,
    scan_cache_path,
)
from stoker.data.loader import available_cores
from stoker.data.manifest import check_manifest_fingerprint, content_hashes, manifest_splits, splits_fingerprint
from stoker.data.media import IMAGE, Media
from stoker.data.progress import FileProgress
from stoker.data.splits import split_folder_files, validate_fractions
from stoker.datamodules.base import StokerDataModule

Pairs = list[tuple[str, int]]


class ClassFolderDataModule(StokerDataModule):
    """Base of the DataModules that read ``root/[train|val|test/]<class>/<file>`` trees.

    It owns the steps that do not depend on the media: indexing the tree with the media's
    description (:attr:`media`); decode-checking and hashing every file once per node
    (``prepare_data``) and reading the cached results back (``setup``); leaving out quarantined,
    undecodable and unreadable files, with an error past ``max_bad_fraction``; the split (a
    manifest, the tree's own folders, or the seeded per-file hash of :mod:`stoker.data.splits`);
    the data fingerprint; the loaders; files that fail while training (``on_bad_sample``); and the
    report. A subclass builds a dataset from ``(relative path, label)`` pairs.

    Args:
        root: Dataset root.
        val_fraction: Per-class fraction held out for validation when the tree has no ``val`` folder.
        test_fraction: Per-class fraction held out for testing when the tree has no ``test`` folder.
        max_bad_fraction: Largest tolerated fraction of unusable files.
        verify: ``"decode"`` checks every file by decoding it; ``"none"`` trusts the files (unreadable
            ones are still found when they are hashed).
        on_bad_sample: A file that fails to load during training: ``"raise"`` an error naming it, or
            ``"skip"`` it (left out of its batch, counted and reported at the end of the epoch).
        quarantine: A file listing paths (relative to ``root``) to leave out, e.g. from ``stoker scan``.
        manifest: A split manifest from ``stoker split``; it replaces the tree's own split.
        strict_fingerprint: Resuming from a checkpoint whose data fingerprint differs is an error.
        class_names: Fix the class list (and order) instead of reading it from the folders.
        cache_dir: Where scan results are cached (default ``~/.cache/stoker``).
        batch_size: See :class:`~stoker.datamodules.base.StokerDataModule` (so are the rest).
    """

    media: Media = IMAGE

    def __init__(
        self,
        root: str,
        *,
        val_fraction: float,
        test_fraction: float,
        max_bad_fraction: float,
        verify: str,
        on_bad_sample: BadSamplePolicy,
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
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got {on_bad_sample!r}")
        self.root = root
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.max_bad_fraction = max_bad_fraction
        self.verify = verify
        self.on_bad_sample = on_bad_sample
        self.quarantine = quarantine
        self.manifest = manifest
        self.strict_fingerprint = strict_fingerprint
        self.cache_dir = cache_dir
        self._class_names = list(class_names) if class_names is not None else None
        self.bad_files: dict[str, str] = {}
        self.quarantined: list[str] = []
        self.skipped: list[str] = []
        self.skipped_samples: dict[int, dict[str, str]] = {}  # epoch -> {path: reason}, until reported
        self.skipped_report: dict[int, int] = {}  # epoch -> files skipped under on_bad_sample="skip"
        self.splits: dict[str, Pairs] = {}
        self.datasets: dict[str, Any] = {}

    # ----------------------------------------------------------------- what a subclass provides
    def _build_dataset(self, root: Path, split: str, pairs: Pairs) -> Any:
        """A map-style dataset of the pairs (or whatever this DataModule's loaders read)."""
        raise NotImplementedError

    def _split(self, kept: dict[str, Pairs]) -> dict[str, Pairs]:
        return split_folder_files(
            kept, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed
        )

    def _scan(self, index: FolderIndex, relpaths: list[str]) -> dict[str, str]:
        """``{relative path: reason}`` of the files the media's check refuses (cached per file)."""
        if self.verify == "none":
            return {}
        cache = scan_cache_path(index.root, self.cache_dir)
        progress = FileProgress(f"decode-checking {self.media.name} files under {self.root}",
                                "verify='none' skips the check (a corrupt file then fails the run when it is read)")
        try:
            return find_bad_files(index.root, relpaths, self.media, num_workers=min(8, available_cores()),
                                  cache_path=cache.with_suffix(f".{self.media.name}.json"), progress=progress)
        finally:
            progress.close()

    # ----------------------------------------------------------------- self-description
    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self._class_names = class_names_of(self.root, self.media)
        return self._class_names

    def train_labels(self) -> list[int]:
        """Labels of the training split in dataset order (available after ``setup``)."""
        return [label for _, label in self.splits["train"]]

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Decode-check and hash every file once per node; every rank's ``setup`` then reads the caches."""
        self._unusable(self._index(), self._excluded())

    def setup(self, stage: str | None = None) -> None:
        """Index the tree, leave out bad and quarantined files, split, and build the datasets."""
        if self.datasets:
            return
        index = self._index()
        excluded = self._excluded()
        self.skipped = list(index.skipped)
        self.quarantined = sorted(rel for rel in index.relpaths if rel in excluded)
        self.bad_files, hashes = self._unusable(index, excluded)
        self._check_bad_fraction(len(index.relpaths))
        drop = excluded | set(self.bad_files)
        kept = {split: [(rel, y) for rel, y in pairs if rel not in drop] for split, pairs in index.files.items()}
        self.splits = manifest_splits(self.manifest, kept, self.class_names) if self.manifest else self._split(kept)
        if not self.splits["train"]:
            raise ValueError(f"no training {self.media.name} files left under {self.root!r} after the split and "
                             "exclusions")
        self.datasets = {split: self._build_dataset(index.root, split, pairs) for split, pairs in self.splits.items()}
        self.record_fingerprint(splits_fingerprint(self.splits, self.class_names, hashes))
        check_manifest_fingerprint(self.manifest, self.fingerprint or "")
        self._report()

    def train_dataloader(self) -> Any:
        # Stage times ride with the batches of a Trainer's loader only (the load profile).
        return self.make_loader(self.datasets["train"], train=True,
                                collate_fn=self.profiled(SkippingCollate()))

    def val_dataloader(self) -> Any:
        return self.make_loader(self.datasets["val"], train=False, collate_fn=SkippingCollate())

    def test_dataloader(self) -> Any:
        return self.make_loader(self.datasets["test"], train=False, collate_fn=SkippingCollate())

    @property
    def predict_split(self) -> str:
        """The split ``predict`` runs on: test when there is one, else validation."""
        return "test" if self.splits.get("test") else "val"

    def predict_dataloader(self) -> Any:
        return self.make_loader(self.datasets[self.predict_split], train=False, collate_fn=SkippingCollate())

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Take the load profile and the files skipped under ``on_bad_sample="skip"`` out of the batch; count them."""
        batch = super().on_before_batch_transfer(batch, dataloader_idx)
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        if isinstance(batch, dict) and SKIPPED_KEY in batch:
            found = self.skipped_samples.setdefault(epoch, {})
            for path, reason in batch.pop(SKIPPED_KEY):
                found[path] = reason
        if self.skipped_samples:
            self._report_skips(before=epoch)
        return batch

    def teardown(self, stage: str | None = None) -> None:
        self._report_skips(before=None)

    def sample_name(self, index: int) -> str:
        pairs = self.splits.get("train", [])
        return printable(pairs[index][0]) if 0 <= index < len(pairs) else f"index {index}"

    # ----------------------------------------------------------------- internals
    def _index(self) -> FolderIndex:
        return index_folder(self.root, self.class_names, media=self.media)

    def _excluded(self) -> set[str]:
        return read_path_list(self.quarantine) if self.quarantine else set()

    def _unusable(self, index: FolderIndex, excluded: set[str]) -> tuple[dict[str, str], dict[str, str]]:
        """``(bad files with their reasons, content hashes of the others)``, both cached per file."""
        relpaths = [rel for rel in index.relpaths if rel not in excluded]
        bad = self._scan(index, relpaths)
        readable = [rel for rel in relpaths if rel not in bad]
        cache = scan_cache_path(index.root, self.cache_dir).with_suffix(".sha256.json")
        progress = FileProgress(f"hashing {self.media.name} files under {self.root} for the data fingerprint",
                                "a manifest from `stoker split` carries the hashes of the split it pins")
        try:
            hashes, unreadable = content_hashes(index.root, readable, num_workers=min(8, available_cores()),
                                                cache_path=cache, progress=progress)
        finally:
            progress.close()
        bad.update(unreadable)  # with verify="none", hashing is what meets an unreadable file
        return dict(sorted(bad.items())), hashes

    def _check_bad_fraction(self, total: int) -> None:
        if not self.bad_files:
            return
        fraction = len(self.bad_files) / max(1, total)
        if fraction > self.max_bad_fraction:
            listed = "\n".join(f"  {printable(rel)}: {reason}" for rel, reason in list(self.bad_files.items())[:10])
            raise ValueError(
                f"{len(self.bad_files)} of {total} {self.media.name} files under {self.root!r} ({fraction:.1%}) are "
                f"unusable, more than max_bad_fraction={self.max_bad_fraction:.1%}. First ones:\n{listed}\n"
                "Fix or remove them, or raise max_bad_fraction to train without them."
            )

    def _report_skips(self, *, before: int | None) -> None:
        # Each epoch's skipped files are reported once, when a later epoch begins (or at teardown);
        # on every rank, since each rank skips files of its own shard.
        for epoch in sorted(e for e in self.skipped_samples if before is None or e < before):
            found = self.skipped_samples.pop(epoch)
            listed = "\n".join(f"  {printable(path)}: {reason}" for path, reason in sorted(found.items()))
            rank = self.trainer.global_rank if self.trainer is not None else 0
            warnings.warn(f"{type(self).__name__} (rank {rank}): skipped {len(found)} unreadable {self.media.name} "
                          f"file(s) in epoch {epoch} (on_bad_sample='skip'):\n{listed}", stacklevel=2)
            self.skipped_report[epoch] = self.skipped_report.get(epoch, 0) + len(found)

    def _report(self) -> None:
        sizes = ", ".join(f"{split} {len(pairs)}" for split, pairs in self.splits.items())
        rank_zero_info(f"{type(self).__name__}: {len(self.class_names)} classes; {sizes}")
        if self.bad_files:
            listed = "\n".join(f"  {printable(rel)}: {reason}" for rel, reason in self.bad_files.items())
            rank_zero_warn(f"excluded {len(self.bad_files)} unusable {self.media.name} file(s) under {self.root!r}:\n"
                           f"{listed}")
        if self.quarantined:
            rank_zero_info(f"left out {len(self.quarantined)} quarantined file(s) listed in {self.quarantine!r}")
        if self.skipped:
            shown = ", ".join(printable(p) for p in self.skipped[:5])
            rank_zero_info(f"skipped {len(self.skipped)} hidden or tool folder(s)/file(s) that hold no data (e.g. "
                           f"{shown})")

    def created_files(self) -> list[str]:
        """The per-file caches of the decode check and the content hashes (one JSON file each per root)."""
        cache = scan_cache_path(Path(self.root), self.cache_dir)
        candidates = (cache.with_suffix(f".{self.media.name}.json"), cache.with_suffix(".sha256.json"))
        return [*super().created_files(), *(str(path) for path in candidates if path.is_file())]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            root=os.fspath(self.root),
            split_sizes={split: len(pairs) for split, pairs in self.splits.items()},
            bad_files=[{"path": printable(rel), "reason": reason} for rel, reason in self.bad_files.items()],
            quarantined=[printable(rel) for rel in self.quarantined],
            skipped=len(self.skipped),
            skipped_in_training=dict(self.skipped_report),
            manifest=self.manifest,
            fingerprint=self.fingerprint,
        )
        return info
