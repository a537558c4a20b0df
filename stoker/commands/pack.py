"""``stoker pack ROOT --out OUT``: a class-folder tree as shard sets of encoded bytes, one per split, for litdata.

The files, their split and the exclusions are exactly the folder DataModules': the tree is
indexed, quarantined files (``--quarantine``, e.g. from ``stoker scan``) and files that fail the
decode check are left out and listed, and the split is the manifest's (``--manifest``, from
``stoker split``) or the seeded per-file hash. Each split is then shuffled with a seeded
permutation and written with litdata's ``optimize`` (see :mod:`stoker.data.shard_pack`), with
class names, split sizes, the data fingerprint and the stoker version next to the shards.

Examples::

    stoker pack data/imagenet --out s3://bucket/imagenet-shards --seed 0
    stoker pack data/imagenet --manifest splits.csv --quarantine q.json --out shards/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stoker.commands._help import HelpFormatter

if TYPE_CHECKING:  # stoker.data imports torch; `stoker pack --help` answers without it
    from stoker.data.shard_pack import PackPlan


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker pack``."""
    parser = argparse.ArgumentParser(prog="stoker pack", description="Pack an image or audio class-folder tree into "
                                     "litdata shard sets (encoded bytes, one per split) for streaming.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("root", help="class-folder tree: root/<class>/<file> or root/train|val|test/<class>/<file>")
    parser.add_argument("--out", required=True, help="output folder or s3://, gs://, r2:// URL")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the packing order")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class (no val/ folder)")
    parser.add_argument("--test", type=float, default=0.0, help="test fraction per class (no test/ folder)")
    parser.add_argument("--manifest", help="split manifest from `stoker split` (replaces the split)")
    parser.add_argument("--quarantine", help="paths to leave out (a list, or JSON from `stoker scan`)")
    parser.add_argument("--kind", choices=("image", "audio"), help="detected from the files by default")
    parser.add_argument("--val-list", help="audio: file listing the validation files (Speech Commands)")
    parser.add_argument("--test-list", help="audio: file listing the test files")
    parser.add_argument("--verify", choices=("decode", "none"), default="decode",
                        help="decode every file once before packing (cached) and leave out the bad ones")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01, help="error above this share of bad files")
    parser.add_argument("--workers", type=int, help="packing processes (default: the cores this process may use)")
    parser.add_argument("--chunk-bytes", default="64MB", help="target size of a chunk file")
    parser.add_argument("--chunk-size", type=int, help="samples per chunk instead of --chunk-bytes")
    parser.add_argument("--part-size", type=int, default=50_000, help="samples per resumable part")
    parser.add_argument("--resume", action="store_true", help="finish a half-written pack in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--cache-dir", help="where decode-check results are cached (default ~/.cache/stoker)")
    return parser


def _folder_module(args: argparse.Namespace, kind: str) -> Any:
    """The folder DataModule whose index, exclusions and split the pack follows (set up, no Trainer)."""
    common: dict[str, Any] = dict(val_fraction=args.val, test_fraction=args.test, seed=args.seed,
                                  max_bad_fraction=args.max_bad_fraction, verify=args.verify,
                                  quarantine=args.quarantine, manifest=args.manifest, cache_dir=args.cache_dir,
                                  num_workers=0)
    if kind == "audio":
        from stoker.datamodules.audio_folder import AudioFolderDataModule

        dm: Any = AudioFolderDataModule(args.root, val_list=args.val_list, test_list=args.test_list, **common)
    else:
        if args.val_list or args.test_list:
            raise ValueError("--val-list and --test-list are for audio trees; image trees split by folder, "
                             "--manifest or --val/--test")
        from stoker.datamodules.image_folder import ImageFolderDataModule

        dm = ImageFolderDataModule(args.root, **common)
    dm.prepare_data()
    dm.setup()
    return dm


def _plan(args: argparse.Namespace, kind: str) -> PackPlan:
    from stoker.data.folder import printable
    from stoker.data.shard_pack import PackPlan

    dm = _folder_module(args, kind)
    if dm.bad_files:
        listed = "\n".join(f"  {printable(rel)}: {reason}" for rel, reason in dm.bad_files.items())
        print(f"stoker pack: left out {len(dm.bad_files)} unusable file(s):\n{listed}", file=sys.stderr)
    if dm.quarantined:
        print(f"stoker pack: left out {len(dm.quarantined)} quarantined file(s) listed in {args.quarantine}",
              file=sys.stderr)
    extra = {"root": str(args.root), "manifest": args.manifest, "quarantine": args.quarantine,
             "excluded": {printable(rel): reason for rel, reason in dm.bad_files.items()},
             "quarantined": [printable(rel) for rel in dm.quarantined]}
    return PackPlan(root=str(Path(args.root).expanduser()), media=kind, class_names=list(dm.class_names),
                    splits={split: list(pairs) for split, pairs in dm.splits.items()},
                    fingerprint=str(dm.fingerprint), seed=args.seed, extra=extra)


def main(argv: list[str]) -> int:
    """Run ``stoker pack``; returns 2 on bad arguments, data or output folders."""
    args = build_parser().parse_args(argv)
    from stoker.data.loader import available_cores
    from stoker.data.shard_pack import write_shard_set
    from stoker.data.shards import ShardFormatError

    try:
        from stoker._imports import require

        require("shards", "stoker pack")
        if args.resume and args.overwrite:
            raise ValueError("--resume finishes a half-written pack and --overwrite starts over; pass one of them")
        if args.kind is None:
            from stoker.quality.sources import detect_kind

            args.kind = detect_kind(args.root)
            if args.kind not in ("image", "audio"):
                raise ValueError(f"{args.root!r} looks like {args.kind} data; stoker pack packs image or audio "
                                 "class folders (pass --kind to override)")
        plan = _plan(args, args.kind)
        workers = available_cores() if args.workers is None else args.workers
        meta = write_shard_set(plan, args.out, num_workers=workers, chunk_bytes=args.chunk_bytes,
                               chunk_size=args.chunk_size, part_size=args.part_size, resume=args.resume,
                               overwrite=args.overwrite, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError, ModuleNotFoundError, ShardFormatError) as err:
        print(f"stoker pack: error: {err}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{split} {n}" for split, n in meta.splits.items())
    print(f"wrote {args.out}: {len(meta.class_names)} classes; {sizes}; fingerprint {meta.fingerprint}")
    return 0
