"""``stoker scan SOURCE | --config RECIPE``: profile a dataset before training on it.

Two forms. ``stoker scan SOURCE`` scans any source the media DataModules read (a class folder, a
table of files, a Hugging Face dataset or ``hf://<name>``, WebDataset tars) or text tables, with the
source's own splits, a manifest's, or ``--val/--test/--seed``. ``stoker scan --config RECIPE`` scans
the data of a recipe's DataModule through its reader, with the split training sees, and takes what
``stoker fit`` takes: repeated ``--config``, dotted overrides (``--data.init_args.root=...``) and
``--print_config``. Quarantine lists name samples by the keys the DataModules use (``quarantine=``).

Examples::

    stoker scan data/flowers --json scan.json --markdown scan.md --quarantine quarantine.json
    stoker scan hf://user/photos --revision main --multi-label --markdown scan.md
    stoker scan --config recipes/quickstart.yaml --fail-on leakage,corrupt   # non-zero exit in CI
    stoker scan --config recipes/quickstart.yaml --data.init_args.root=/data/digits --json scan.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stoker.commands._help import HelpFormatter, help_request, source_constant

# stoker.quality imports torch on the way; the help pages read these facts without importing it.
_NEAR_THRESHOLD: int = source_constant("stoker.quality.checks", "NEAR_THRESHOLD")
_NEAR_MIN_DETAIL: float | None = source_constant("stoker.quality.checks", "NEAR_MIN_DETAIL")
_PROBLEMS: tuple[str, ...] = source_constant("stoker.quality.checks", "PROBLEMS")
_KINDS: tuple[str, ...] = source_constant("stoker.quality.scan", "KINDS")

_DESCRIPTION = ("Profile a dataset (class folders, a table of files, a Hugging Face dataset or hf://name, WebDataset "
                "tars, or text tables): counts, corrupt files, duplicates, leakage, label conflicts, outliers, "
                "missing values, channel statistics and, for multi-label data, label co-occurrence.")


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both forms share (argparse and LightningCLI's jsonargparse parser read them alike)."""
    parser.add_argument("--near-threshold", type=int, default=_NEAR_THRESHOLD,
                        help="largest perceptual-hash distance (of 64 bits) of a candidate near duplicate; each "
                             "candidate pair is confirmed by comparing 16x16 gray thumbnails")
    parser.add_argument("--near-min-detail", type=float, default=_NEAR_MIN_DETAIL,
                        help="deprecated, ignored: every image is now compared, its candidate pairs confirmed on "
                             "thumbnails")
    parser.add_argument("--workers", type=int, default=4, help="reader threads")
    parser.add_argument("--json", type=str, help="write the full result as JSON here")
    parser.add_argument("--markdown", type=str, help="write a Markdown report here")
    parser.add_argument("--quarantine", type=str, help="write a quarantine list (JSON the DataModules accept) here")
    parser.add_argument("--quarantine-include", type=str, default="corrupt,leakage,label_conflicts,exact_duplicates",
                        help="problems whose files go into the quarantine list")
    parser.add_argument("--fail-on", type=str, default="",
                        help=f"exit 1 if any of these (comma-separated) is found: {', '.join(_PROBLEMS)}")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """How to read a source given by path (``stoker scan``, ``split`` and ``pack`` share them): the
    DataModules' arguments of the same names."""
    parser.add_argument("--label-column", default="label", help="label column of a table or dataset (or field of a "
                        "WebDataset json member); '' for none (text tables)")
    parser.add_argument("--media-column", help="column holding the images or audio of a Hugging Face dataset "
                        "(default: image or audio)")
    parser.add_argument("--path-column", default="path", help="column of file paths of a table of files")
    parser.add_argument("--split-column", default="split", help="column of splits of a table (used when present)")
    parser.add_argument("--class-names", help="comma-separated classes in label order (names WebDataset .cls indices)")
    parser.add_argument("--multi-label", action="store_true",
                        help="a sample has a set of classes (a list, or names joined by ';')")
    parser.add_argument("--subset", help="configuration of an hf:// dataset")
    parser.add_argument("--revision", help="revision (branch, tag or commit) of an hf:// dataset")
    parser.add_argument("--cache-dir", help="where downloads and per-sample results are cached (default "
                        "~/.cache/stoker, and datasets' own cache)")


def source_options(args: argparse.Namespace) -> Any:
    """The :class:`~stoker.quality.media_source.SourceOptions` that :func:`add_source_arguments` parsed."""
    from stoker.quality.media_source import SourceOptions

    names = [name.strip() for name in (args.class_names or "").split(",") if name.strip()]
    return SourceOptions(media_field=args.media_column, label_field=args.label_column or "label",
                         path_field=args.path_column, split_field=args.split_column, class_names=names or None,
                         multi_label=bool(getattr(args, "multi_label", False)), subset=args.subset,
                         revision=args.revision, cache_dir=args.cache_dir)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the path form, ``stoker scan SOURCE``."""
    parser = argparse.ArgumentParser(
        prog="stoker scan", description=_DESCRIPTION, formatter_class=HelpFormatter,
        epilog="Recipe form: stoker scan --config RECIPE [--config MORE] [--data.init_args.KEY=VALUE ...]\n"
               "[options above]: the data of a recipe's DataModule with the split training sees. It takes the\n"
               "arguments of `stoker fit`; `stoker scan --config RECIPE --help` explains them, `--help-all`\n"
               "lists every Trainer, model and data flag.")
    parser.add_argument("path", nargs="?", metavar="SOURCE", help="class folders, a table of files, a Hugging Face "
                        "dataset (save_to_disk, parquet/arrow, hf://name), WebDataset tars, or text tables")
    parser.add_argument("--kind", choices=_KINDS, help="what the samples are (detected from names and columns)")
    parser.add_argument("--manifest", help="take the splits from this manifest (from `stoker split`)")
    parser.add_argument("--val", type=float, default=0.0, help="validation fraction of a source without that split")
    parser.add_argument("--test", type=float, default=0.0, help="test fraction of a source without that split")
    parser.add_argument("--seed", type=int, default=0, help="seed of that split")
    parser.add_argument("--text-column", default="text", help="text column of a text table")
    add_source_arguments(parser)
    add_scan_arguments(parser)
    return parser


def _progress_bar(disabled: bool) -> Any:
    """stoker's one kind of progress (a bar on a terminal, periodic lines in logs), or none with --no-progress."""
    from stoker.data.progress import Progress

    progress = Progress("scanning", "stoker scan reads every sample once", enabled=not disabled)
    return progress, progress


def recipe_target(cli: Any) -> dict[str, Any]:
    """Arguments of :func:`scan_dataset` for the data of a built recipe's DataModule, with its actual split.

    Raises:
        ValueError: The DataModule has no per-sample reader (a shard set, a hub text dataset).
    """
    from stoker.quality.scan import datamodule_scan_args

    datamodule = cli.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    args = datamodule_scan_args(datamodule)
    if args is None:
        raise ValueError(f"the DataModule of the recipe ({type(datamodule).__name__}) has no per-sample reader to "
                         "scan (a stoker shard set streams; a hub text dataset has no local table): run `stoker scan "
                         "SOURCE` on the data it was made from")
    return args


def main(argv: list[str]) -> int:
    """Run ``stoker scan``; returns 1 when a ``--fail-on`` problem is found, 2 on bad arguments."""
    from stoker.cli import recipe_cli, uses_recipe

    cli = None
    if uses_recipe(argv) or help_request(argv) == "all":
        cli = recipe_cli(argv, prog="stoker scan", description=_DESCRIPTION, add_arguments=add_scan_arguments)
        if isinstance(cli, int):
            return cli
        args = cli.config
    else:
        args = build_parser().parse_args(argv)
    from stoker.quality.checks import parse_problems
    from stoker.quality.scan import scan_dataset

    try:
        fail_on = parse_problems(args.fail_on)
        include = parse_problems(args.quarantine_include)
        if cli is not None:
            target = recipe_target(cli)
        elif args.path:
            target = {"path": args.path, "kind": args.kind, "manifest": args.manifest, "val_fraction": args.val,
                      "test_fraction": args.test, "seed": args.seed, "text_column": args.text_column,
                      "label_column": args.label_column or None, "options": source_options(args)}
        else:
            raise ValueError("give a dataset PATH or --config RECIPE")
        bar, update = _progress_bar(args.no_progress)
        if args.near_min_detail is not None:
            print("stoker scan: warning: --near-min-detail is deprecated and ignored: images of any detail are "
                  "compared now, each pair the hash proposes confirmed on 16x16 thumbnails", file=sys.stderr)
        result = scan_dataset(**target, near_threshold=args.near_threshold, num_workers=args.workers,
                              progress=update)
        bar.close()
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker scan: error: {err}", file=sys.stderr)
        return 2
    return _write_and_judge(result, args, include, fail_on)


def _write_and_judge(result: dict[str, Any], args: Any, include: list[str], fail_on: list[str]) -> int:
    from stoker.quality.checks import quarantine_entries
    from stoker.quality.scan import scan_markdown

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
