"""``stoker pack SOURCE --out OUT``: any map-style source as a stoker shard set of encoded bytes, one per split.

SOURCE is anything the media DataModules read sample by sample: a class folder, a table of files, a
Hugging Face dataset (``save_to_disk``, parquet/arrow, ``hf://<name>`` with ``--subset``/``--revision``)
or WebDataset tars. The samples, their labels, their split and the exclusions are exactly the
DataModule's over that source: it is set up (no Trainer), quarantined samples (``--quarantine``, e.g.
from ``stoker scan``) and samples that fail the decode check are left out and listed, splits the
source brings are kept, and the others are the manifest's (``--manifest``, from ``stoker split``) or
carved by the seeded per-class split. Each sample's bytes are then read through the DataModule's
reader, so the shard set holds the same bytes, labels, keys and data fingerprint as the DataModule
over the source; each split is shuffled with a seeded permutation and written with litdata's
``optimize`` (see :mod:`stoker.data.sources.shards.pack`).

Examples::

    stoker pack data/imagenet --out s3://bucket/imagenet-shards --seed 0
    stoker pack hf://user/photos --revision main --out s3://bucket/photos-shards
    stoker pack data/imagenet --manifest splits.csv --quarantine q.json --out shards/
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from stoker.commands._help import HelpFormatter
from stoker.commands.scan import add_source_arguments, source_options

if TYPE_CHECKING:  # stoker.data imports torch; `stoker pack --help` answers without it
    from stoker.data.sources.shards.pack import PackPlan


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker pack``."""
    parser = argparse.ArgumentParser(prog="stoker pack", description="Pack an image or audio source (class folders, "
                                     "a table of files, a Hugging Face dataset or hf://name, WebDataset tars) into "
                                     "litdata shard sets (encoded bytes, one per split) for streaming.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("root", metavar="SOURCE", help="class folders (root/<class>/<file> or root/train|val|test/"
                        "<class>/<file>), a table of files, a Hugging Face dataset or hf://name, or WebDataset tars")
    parser.add_argument("--out", required=True, help="output folder or s3://, gs://, r2:// URL")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of the packing order")
    parser.add_argument("--val", type=float, default=0.1, help="validation fraction per class (no given val split)")
    parser.add_argument("--test", type=float, default=0.0, help="test fraction per class (no given test split)")
    parser.add_argument("--manifest", help="split manifest from `stoker split` (replaces the split)")
    parser.add_argument("--quarantine", help="keys to leave out (a list, or JSON from `stoker scan`)")
    parser.add_argument("--kind", choices=("image", "audio"), help="detected from names and columns by default")
    add_source_arguments(parser)
    parser.add_argument("--val-list", help="audio: file listing the validation files (Speech Commands)")
    parser.add_argument("--test-list", help="audio: file listing the test files")
    parser.add_argument("--verify", choices=("decode", "none"), default="decode",
                        help="decode every sample once before packing (cached) and leave out the bad ones")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01, help="error above this share of bad samples")
    parser.add_argument("--workers", type=int, help="packing processes (default: the cores this process may use)")
    parser.add_argument("--chunk-bytes", default="64MB", help="target size of a chunk file")
    parser.add_argument("--chunk-size", type=int, help="samples per chunk instead of --chunk-bytes")
    parser.add_argument("--part-size", type=int, default=50_000, help="samples per resumable part")
    parser.add_argument("--resume", action="store_true", help="finish a half-written pack in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _source_module(args: argparse.Namespace, kind: str) -> Any:
    """The media DataModule whose reader, exclusions, split and fingerprint the pack follows (set up, no Trainer)."""
    options = source_options(args)
    if options.multi_label:
        raise ValueError("stoker shard sets hold one label per sample, so a multi-label source is not packed: train "
                         "on the source itself (ImageDataModule(source, multi_label=True) reads it directly)")
    common: dict[str, Any] = dict(val_fraction=args.val, test_fraction=args.test, seed=args.seed,
                                  max_bad_fraction=args.max_bad_fraction, verify=args.verify,
                                  quarantine=args.quarantine, manifest=args.manifest, cache_dir=options.cache_dir,
                                  label_field=options.label_field, path_field=options.path_field,
                                  split_field=options.split_field, class_names=options.class_names,
                                  subset=options.subset, revision=options.revision, num_workers=0)
    if kind == "audio":
        from stoker.datamodules.audio import AudioDataModule

        dm: Any = AudioDataModule(args.root, audio_field=options.media_field or "audio", val_list=args.val_list,
                                  test_list=args.test_list, **common)
    else:
        if args.val_list or args.test_list:
            raise ValueError("--val-list and --test-list are for audio; image sources split by their own splits, "
                             "--manifest or --val/--test")
        from stoker.datamodules.image import ImageDataModule

        dm = ImageDataModule(args.root, image_field=options.media_field or "image", **common)
    if dm.reader is None:
        raise ValueError(f"{args.root!r} is a stoker shard set already; pack the source it was made from")
    dm.prepare_data()
    dm.setup()
    return dm


def _plan(args: argparse.Namespace, kind: str) -> PackPlan:
    from stoker.data.sources.folder_tree import printable
    from stoker.data.sources.shards.pack import PackPlan
    from stoker.quality.media_source import location_text

    dm = _source_module(args, kind)
    unit = f"{dm.unit}(s)"
    if dm.bad_files:
        listed = "\n".join(f"  {printable(key)}: {reason}" for key, reason in dm.bad_files.items())
        print(f"stoker pack: left out {len(dm.bad_files)} unusable {unit}:\n{listed}", file=sys.stderr)
    if dm.quarantined:
        print(f"stoker pack: left out {len(dm.quarantined)} quarantined {unit} listed in {args.quarantine}",
              file=sys.stderr)
    where = location_text(args.root)
    extra = {"root": where, "source_kind": dm.source_kind, "subset": args.subset, "revision": args.revision,
             "manifest": args.manifest, "quarantine": args.quarantine,
             "excluded": {printable(key): reason for key, reason in dm.bad_files.items()},
             "quarantined": [printable(key) for key in dm.quarantined]}
    return PackPlan(root=where, media=kind, class_names=list(dm.class_names),
                    splits={split: list(pairs) for split, pairs in dm.splits.items()},
                    fingerprint=str(dm.fingerprint), seed=args.seed, reader=dm.reader, extra=extra)


def main(argv: list[str]) -> int:
    """Run ``stoker pack``; returns 2 on bad arguments, data or output folders."""
    args = build_parser().parse_args(argv)
    from stoker.data.loader import available_cores
    from stoker.data.sources.shards.meta import ShardFormatError
    from stoker.data.sources.shards.pack import write_shard_set

    try:
        from stoker._imports import require

        require("shards", "stoker pack")
        if args.resume and args.overwrite:
            raise ValueError("--resume finishes a half-written pack and --overwrite starts over; pass one of them")
        if args.kind is None:
            from stoker.quality.media_source import detect_kind

            args.kind = detect_kind(args.root, path_field=args.path_column)
            if args.kind not in ("image", "audio"):
                raise ValueError(f"{args.root!r} looks like {args.kind} data; stoker pack packs images or audio "
                                 "(pass --kind to override)")
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
