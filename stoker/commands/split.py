"""``stoker split SOURCE --val 0.1 --test 0.1 --seed 0 --out MANIFEST``: a versioned, deterministic split.

Any source the media DataModules read (a class folder, a table of files, a Hugging Face dataset or
``hf://<name>``, WebDataset tars) or a text table. Splits the source brings are kept; the ones it
lacks are carved out of its training samples: inside each class, samples are ranked by a seeded hash
of their key and cut at exact per-class quotas (:mod:`stoker.data.splits`; ``--method hash`` places
each sample by its own hash instead), so the split is stratified, does not depend on listing order,
and is the one the DataModules make (multi-label samples, which have no single class, form one pool).
The manifest (CSV: ``path,label,split,sha256``; ``path`` is the sample's key, the labels of a
multi-label sample are joined by ``;``) carries the dataset fingerprint; pass it to a DataModule on
the same source (``manifest: splits.csv``) to train on exactly this split.
"""

from __future__ import annotations

import argparse
import sys

from stoker.commands._help import HelpFormatter, source_constant
from stoker.commands.scan import add_source_arguments, source_options

# stoker.data imports torch on the way; `stoker split --help` reads the methods without importing it.
_SPLIT_METHODS: tuple[str, ...] = source_constant("stoker.data.splits", "SPLIT_METHODS")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker split``."""
    parser = argparse.ArgumentParser(prog="stoker split", description="Write a deterministic, stratified "
                                     "train/val/test split of a dataset as a manifest with a fingerprint.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("path", metavar="SOURCE", help="class folders, a table of files, a Hugging Face dataset "
                        "(save_to_disk, parquet/arrow, hf://name), WebDataset tars, or a text table")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class (no given val split)")
    parser.add_argument("--test", type=float, default=0.0, help="test fraction per class (no given test split)")
    parser.add_argument("--seed", type=int, default=0, help="different seeds give independent splits")
    parser.add_argument("--method", choices=_SPLIT_METHODS, default="quota",
                        help="quota: exact per-class shares (the DataModules' split); hash: per-sample draws, "
                             "shares exact only in expectation, adding a file never moves another")
    parser.add_argument("--out", required=True, help="manifest file to write (CSV)")
    parser.add_argument("--kind", choices=("image", "audio", "text"), help="detected from names and columns")
    parser.add_argument("--text-column", default="text", help="text column of a text table")
    add_source_arguments(parser)
    parser.add_argument("--workers", type=int, default=4, help="hashing threads")
    return parser


def _text_samples(args: argparse.Namespace) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    from stoker.quality.sources import scan_text

    records, _ = scan_text(args.path, text_column=args.text_column, label_column=args.label_column)
    usable = [r for r in records if r.sha is not None and r.label is not None]
    dropped = len(records) - len(usable)
    if dropped:
        print(f"stoker split: left out {dropped} row(s) with an empty text or label", file=sys.stderr)
    return [(r.path, str(r.label), r.split) for r in usable], {r.path: str(r.sha) for r in usable}


def _source_samples(args: argparse.Namespace,
                    kind: str) -> tuple[list[tuple[str, str, str]], dict[str, str], dict[str, str], str]:
    """``(key, class name(s), source split)`` samples, their content hashes, their labels as the manifest
    writes them (``a;b`` for label sets) and the source's kind, read through the DataModules' reader."""
    from stoker.data.sources import LabelMap
    from stoker.data.sources.checks import sample_hashes, source_cache_path
    from stoker.data.sources.folder_tree import printable
    from stoker.quality.media_source import open_media_source

    options = source_options(args)
    reader = open_media_source(args.path, kind, options)
    index = reader.index()  # refuses fewer than two classes, as the DataModules do
    names = LabelMap(index.class_names)
    if index.bad:
        listed = "\n".join(f"  {printable(key)}: {reason}" for key, reason in index.bad.items())
        print(f"stoker split: left out {len(index.bad)} sample(s) the source cannot label:\n{listed}", file=sys.stderr)
    pairs = [(key, label, split) for split, listed_pairs in index.files.items() for key, label in listed_pairs]
    # The DataModules' content hashes, in their cache: a DataModule on this source reuses them.
    hashes, unreadable = sample_hashes(reader, [key for key, _, _ in pairs], num_workers=args.workers,
                                       cache_path=source_cache_path(reader, options.cache_dir, "sha256"))
    if unreadable:
        listed = "\n".join(f"  {printable(key)}: {reason}" for key, reason in sorted(unreadable.items()))
        print(f"stoker split: left out {len(unreadable)} unreadable sample(s):\n{listed}", file=sys.stderr)
    labels = {key: names.name_of(label) for key, label, _ in pairs}
    # Label sets have no single class to stratify by: one pool, as the DataModules split them.
    samples = [(key, "" if options.multi_label else labels[key], split) for key, _, split in pairs if key in hashes]
    return samples, hashes, labels, reader.kind


def main(argv: list[str]) -> int:
    """Run ``stoker split``; returns 2 on bad arguments or data."""
    args = build_parser().parse_args(argv)
    from stoker.data.manifest import Manifest, ManifestRow, build_manifest, write_manifest
    from stoker.quality.media_source import detect_kind, location_text

    try:
        kind = args.kind or detect_kind(args.path, path_field=args.path_column)
        meta = {"kind": kind, "root": location_text(args.path)}
        if kind == "text":
            samples, hashes = _text_samples(args)
            labels = {key: name for key, name, _ in samples}
        else:
            samples, hashes, labels, meta["source_kind"] = _source_samples(args, kind)
        manifest = build_manifest(samples, hashes, val_fraction=args.val, test_fraction=args.test, seed=args.seed,
                                  meta=meta, method=args.method)
        manifest = Manifest(sorted(ManifestRow(r.path, labels[r.path], r.split, r.sha256) for r in manifest.rows),
                            manifest.meta)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker split: error: {err}", file=sys.stderr)
        return 2
    write_manifest(manifest, args.out)
    counts = {split: sum(1 for r in manifest.rows if r.split == split) for split in ("train", "val", "test")}
    print(f"wrote {args.out}: {len(manifest.rows)} samples (train {counts['train']}, val {counts['val']}, "
          f"test {counts['test']}), fingerprint {manifest.fingerprint}")
    return 0
