"""``stoker scan PATH | --config RECIPE``: profile a dataset before training on it.

Two forms. ``stoker scan PATH`` scans a folder or table, with the split of its layout, of a
manifest or of ``--val/--test/--seed``. ``stoker scan --config RECIPE`` scans the data of a
recipe's DataModule with the split training sees, and takes what ``stoker fit`` takes: repeated
``--config``, dotted overrides (``--data.init_args.root=...``) and ``--print_config``.

Examples::

    stoker scan data/flowers --json scan.json --markdown scan.md --quarantine quarantine.json
    stoker scan --config recipes/quickstart.yaml --fail-on leakage,corrupt   # non-zero exit in CI
    stoker scan --config recipes/quickstart.yaml --data.init_args.root=/data/digits --json scan.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stoker.quality.checks import NEAR_MIN_DETAIL, NEAR_THRESHOLD, PROBLEMS, parse_problems, quarantine_entries
from stoker.quality.scan import KINDS, datamodule_scan_args, scan_dataset, scan_markdown

_DESCRIPTION = ("Profile an image folder, audio folder or text table: counts, corrupt files, duplicates, leakage, "
                "label conflicts, outliers, missing values and channel statistics.")


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both forms share (argparse and LightningCLI's jsonargparse parser read them alike)."""
    parser.add_argument("--near-threshold", type=int, default=NEAR_THRESHOLD,
                        help="largest perceptual-hash distance (of 64 bits) called a near duplicate")
    parser.add_argument("--near-min-detail", type=float, default=NEAR_MIN_DETAIL,
                        help="compare by hash only images with at least this detail beyond 16 px (0: every image "
                             "of 32 px or more; below it tiny and upsampled look-alikes collide)")
    parser.add_argument("--workers", type=int, default=4, help="reader threads")
    parser.add_argument("--json", type=str, help="write the full result as JSON here")
    parser.add_argument("--markdown", type=str, help="write a Markdown report here")
    parser.add_argument("--quarantine", type=str, help="write a quarantine list (JSON the DataModules accept) here")
    parser.add_argument("--quarantine-include", type=str, default="corrupt,leakage,label_conflicts,exact_duplicates",
                        help="problems whose files go into the quarantine list")
    parser.add_argument("--fail-on", type=str, default="",
                        help=f"exit 1 if any of these is found: {','.join(PROBLEMS)}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the path form, ``stoker scan PATH``."""
    parser = argparse.ArgumentParser(
        prog="stoker scan", description=_DESCRIPTION,
        epilog="Recipe form: stoker scan --config RECIPE [--config MORE] [--data.init_args.KEY=VALUE ...] [options "
               "above], the arguments of `stoker fit`; `stoker scan --config RECIPE --help` lists them all.")
    parser.add_argument("path", nargs="?", help="dataset folder or table file")
    parser.add_argument("--kind", choices=KINDS, help="dataset kind (detected from the files by default)")
    parser.add_argument("--manifest", help="take the splits from this manifest (from `stoker split`)")
    parser.add_argument("--val", type=float, default=0.0, help="split a single-folder dataset: validation fraction")
    parser.add_argument("--test", type=float, default=0.0, help="split a single-folder dataset: test fraction")
    parser.add_argument("--seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--text-column", default="text", help="text column of a table")
    parser.add_argument("--label-column", default="label", help="label column of a table ('' for none)")
    add_scan_arguments(parser)
    return parser


def _progress_bar(disabled: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", desc="scanning", file=sys.stderr, disable=disabled)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)  # update() redraws at most every mininterval, unlike refresh()

    return bar, update


def recipe_target(cli: Any) -> dict[str, Any]:
    """Arguments of :func:`scan_dataset` for the data of a built recipe's DataModule, with its actual split.

    Raises:
        ValueError: The DataModule reads no local files (a hub dataset).
    """
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    args = datamodule_scan_args(datamodule)
    if args is None:
        raise ValueError(f"the DataModule of the recipe ({type(datamodule).__name__}) reads no local files "
                         "(no folder 'root' or local 'dataset' in describe()); run `stoker scan PATH` on the data")
    return args


def main(argv: list[str]) -> int:
    """Run ``stoker scan``; returns 1 when a ``--fail-on`` problem is found, 2 on bad arguments."""
    from stoker.cli import recipe_cli, uses_recipe

    cli = None
    if uses_recipe(argv):
        cli = recipe_cli(argv, prog="stoker scan", description=_DESCRIPTION, add_arguments=add_scan_arguments)
        if isinstance(cli, int):
            return cli
        args = cli.config
    else:
        args = build_parser().parse_args(argv)
    try:
        fail_on = parse_problems(args.fail_on)
        include = parse_problems(args.quarantine_include)
        if cli is not None:
            target = recipe_target(cli)
        elif args.path:
            target = {"path": args.path, "kind": args.kind, "manifest": args.manifest, "val_fraction": args.val,
                      "test_fraction": args.test, "seed": args.seed, "text_column": args.text_column,
                      "label_column": args.label_column or None}
        else:
            raise ValueError("give a dataset PATH or --config RECIPE")
        bar, update = _progress_bar(args.no_progress)
        result = scan_dataset(**target, near_threshold=args.near_threshold, near_min_detail=args.near_min_detail,
                              num_workers=args.workers, progress=update)
        bar.close()
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker scan: error: {err}", file=sys.stderr)
        return 2
    return _write_and_judge(result, args, include, fail_on)


def _write_and_judge(result: dict[str, Any], args: Any, include: list[str], fail_on: list[str]) -> int:
    result["quarantine"] = quarantine_entries(result, include)
    for target_path, text in ((args.json, json.dumps(result, indent=2)), (args.markdown, scan_markdown(result)),
                              (args.quarantine, json.dumps({"quarantine": result["quarantine"]}, indent=2))):
        if target_path:
            Path(target_path).parent.mkdir(parents=True, exist_ok=True)
            Path(target_path).write_text(text + ("\n" if not text.endswith("\n") else ""), encoding="utf-8",
                                         errors="surrogateescape")
    summary = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in result["summary"].items())
    print(f"scanned {result['num_samples']} {result['kind']} samples under {result['root']}: {summary}")
    failed = [name for name in fail_on if result["summary"][name]]
    if failed:
        print(f"stoker scan: failing on {', '.join(failed)} (--fail-on {args.fail_on})", file=sys.stderr)
        return 1
    return 0
