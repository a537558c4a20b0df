"""``stoker split PATH --val 0.1 --test 0.1 --seed 0 --out MANIFEST``: a versioned, deterministic split.

Inside each class, samples are ranked by a seeded hash of their path and cut at exact per-class
quotas (:mod:`stoker.data.splits`; ``--method hash`` places each sample by its own hash instead), so
the split is stratified, does not depend on listing order, and is the one the DataModules make.
The manifest (CSV: ``path,label,split,sha256``) carries the dataset fingerprint; pass it to a
DataModule (``manifest: splits.csv``) to train on exactly this split.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stoker.commands._help import HelpFormatter, source_constant

# stoker.data imports torch on the way; `stoker split --help` reads the methods without importing it.
_SPLIT_METHODS: tuple[str, ...] = source_constant("stoker.data.splits", "SPLIT_METHODS")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker split``."""
    parser = argparse.ArgumentParser(prog="stoker split", description="Write a deterministic, stratified "
                                     "train/val/test split of a dataset as a manifest with a fingerprint.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("path", help="image or audio class-folder tree, or a text table")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class")
    parser.add_argument("--test", type=float, default=0.0, help="test fraction per class")
    parser.add_argument("--seed", type=int, default=0, help="different seeds give independent splits")
    parser.add_argument("--method", choices=_SPLIT_METHODS, default="quota",
                        help="quota: exact per-class shares (the DataModules' split); hash: per-sample draws, "
                             "shares exact only in expectation, adding a file never moves another")
    parser.add_argument("--out", required=True, help="manifest file to write (CSV)")
    parser.add_argument("--kind", choices=("image", "audio", "text"), help="detected from the files by default")
    parser.add_argument("--text-column", default="text", help="text column of a table")
    parser.add_argument("--label-column", default="label", help="label column of a table")
    parser.add_argument("--workers", type=int, default=4, help="hashing threads")
    return parser


def _samples(args: argparse.Namespace, kind: str) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """``(path, class, folder split)`` samples and their content hashes."""
    from stoker.data.folder import index_folder, printable
    from stoker.data.manifest import content_hashes
    from stoker.data.media import media_for
    from stoker.quality.sources import scan_text

    if kind == "text":
        records, _ = scan_text(args.path, text_column=args.text_column, label_column=args.label_column)
        usable = [r for r in records if r.sha is not None and r.label is not None]
        dropped = len(records) - len(usable)
        if dropped:
            print(f"stoker split: left out {dropped} row(s) with an empty text or label", file=sys.stderr)
        return [(r.path, str(r.label), r.split) for r in usable], {r.path: str(r.sha) for r in usable}
    index = index_folder(args.path, media=media_for(kind))
    samples = [(rel, index.class_names[y], split) for split, pairs in index.files.items() for rel, y in pairs]
    hashes, unreadable = content_hashes(args.path, [rel for rel, _, _ in samples], num_workers=args.workers)
    if unreadable:
        listed = "\n".join(f"  {printable(rel)}: {reason}" for rel, reason in sorted(unreadable.items()))
        print(f"stoker split: left out {len(unreadable)} unreadable file(s):\n{listed}", file=sys.stderr)
    return [s for s in samples if s[0] in hashes], hashes


def main(argv: list[str]) -> int:
    """Run ``stoker split``; returns 2 on bad arguments or data."""
    args = build_parser().parse_args(argv)
    from stoker.data.manifest import build_manifest, write_manifest
    from stoker.quality.sources import detect_kind

    try:
        kind = args.kind or detect_kind(args.path)
        samples, hashes = _samples(args, kind)
        manifest = build_manifest(samples, hashes, val_fraction=args.val, test_fraction=args.test, seed=args.seed,
                                  meta={"kind": kind, "root": str(Path(args.path))}, method=args.method)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker split: error: {err}", file=sys.stderr)
        return 2
    write_manifest(manifest, args.out)
    counts = {split: sum(1 for r in manifest.rows if r.split == split) for split in ("train", "val", "test")}
    print(f"wrote {args.out}: {len(manifest.rows)} samples (train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}), fingerprint {manifest.fingerprint}")
    return 0
