"""``stoker scan PATH | --config RECIPE``: profile a dataset before training on it.

Examples::

    stoker scan data/flowers --json scan.json --markdown scan.md --quarantine quarantine.json
    stoker scan --config recipes/quickstart.yaml --fail-on leakage,corrupt   # non-zero exit in CI
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stoker.quality.checks import PROBLEMS, parse_problems, quarantine_entries
from stoker.quality.scan import KINDS, datamodule_scan_args, scan_dataset, scan_markdown


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker scan``."""
    parser = argparse.ArgumentParser(prog="stoker scan", description="Profile an image folder, audio folder or "
                                     "text table: counts, corrupt files, duplicates, leakage, label conflicts, "
                                     "outliers, missing values and channel statistics.")
    parser.add_argument("path", nargs="?", help="dataset folder or table file")
    parser.add_argument("--config", help="a stoker recipe: scan the data of its DataModule, with its split")
    parser.add_argument("--kind", choices=KINDS, help="dataset kind (detected from the files by default)")
    parser.add_argument("--manifest", help="take the splits from this manifest (from `stoker split`)")
    parser.add_argument("--val", type=float, default=0.0, help="split a single-folder dataset: validation fraction")
    parser.add_argument("--test", type=float, default=0.0, help="split a single-folder dataset: test fraction")
    parser.add_argument("--seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--text-column", default="text", help="text column of a table")
    parser.add_argument("--label-column", default="label", help="label column of a table ('' for none)")
    parser.add_argument("--near-threshold", type=int, default=8,
                        help="largest perceptual-hash distance (of 64 bits) called a near duplicate")
    parser.add_argument("--workers", type=int, default=4, help="reader threads")
    parser.add_argument("--json", help="write the full result as JSON here")
    parser.add_argument("--markdown", help="write a Markdown report here")
    parser.add_argument("--quarantine", help="write a quarantine list (JSON the DataModules accept) here")
    parser.add_argument("--quarantine-include", default="corrupt,leakage,label_conflicts,exact_duplicates",
                        help="problems whose files go into the quarantine list")
    parser.add_argument("--fail-on", default="", help=f"exit 1 if any of these is found: {','.join(PROBLEMS)}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _progress_bar(disabled: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=0, unit="file", desc="scanning", file=sys.stderr, disable=disabled)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)  # update() redraws at most every mininterval, unlike refresh()

    return bar, update


def config_target(recipe: str) -> dict[str, Any]:
    """Arguments of :func:`scan_dataset` for the data of a recipe's DataModule, with its actual split.

    Raises:
        ValueError: The DataModule reads no local files (a hub dataset).
    """
    from stoker.cli import run_cli

    cli = run_cli(["--config", recipe, "--trainer.logger=false"], run=False)
    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    args = datamodule_scan_args(datamodule)
    if args is None:
        raise ValueError(f"the DataModule of {recipe!r} ({type(datamodule).__name__}) reads no local files "
                         "(no folder 'root' or local 'dataset' in describe()); run `stoker scan PATH` on the data")
    return args


def main(argv: list[str]) -> int:
    """Run ``stoker scan``; returns 1 when a ``--fail-on`` problem is found, 2 on bad arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        fail_on = parse_problems(args.fail_on)
        include = parse_problems(args.quarantine_include)
        if args.config:
            target = config_target(args.config)
        elif args.path:
            target = {"path": args.path, "manifest": args.manifest, "val_fraction": args.val,
                      "test_fraction": args.test, "seed": args.seed, "text_column": args.text_column,
                      "label_column": args.label_column or None}
        else:
            raise ValueError("give a dataset PATH or --config RECIPE")
        bar, update = _progress_bar(args.no_progress)
        result = scan_dataset(**{"kind": args.kind, **target}, near_threshold=args.near_threshold,
                              num_workers=args.workers, progress=update)
        bar.close()
    except (ValueError, FileNotFoundError) as err:
        print(f"stoker scan: error: {err}", file=sys.stderr)
        return 2
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
