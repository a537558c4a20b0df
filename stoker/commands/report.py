"""``stoker report --config RECIPE [--out DIR]``: the Data Pipeline Summary of a recipe.

The recipe is built through the CLI exactly as ``stoker fit`` builds it, but not run; the
DataModule is prepared and set up, its training loader measured, its data scanned, and
``data_pipeline.md``, ``data_pipeline.json`` and PNG plots are written to ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``stoker report``."""
    parser = argparse.ArgumentParser(prog="stoker report", description="Write the Data Pipeline Summary of a "
                                     "recipe (Markdown, JSON and PNG plots).")
    parser.add_argument("--config", required=True, help="the recipe (LightningCLI YAML)")
    parser.add_argument("--out", default="reports/data", help="output folder")
    parser.add_argument("--batches", type=int, default=20, help="training batches to time")
    return parser


def recipe_data(recipe: str) -> tuple[str | None, dict[str, Any]]:
    """The ``data.class_path`` and ``data.init_args`` a recipe states (for the usage example)."""
    loaded = yaml.safe_load(Path(recipe).read_text()) or {}
    data = loaded.get("data") or {}
    if not isinstance(data, dict):
        return None, {}
    return data.get("class_path"), dict(data.get("init_args") or {})


def main(argv: list[str]) -> int:
    """Run ``stoker report``; returns 2 when the recipe or its data cannot be used."""
    args = build_parser().parse_args(argv)
    from stoker.cli import run_cli
    from stoker.report.markdown import report_markdown
    from stoker.report.summary import build_report, write_plots

    if args.batches < 1:
        print(f"stoker report: error: --batches must be a positive integer, got {args.batches}", file=sys.stderr)
        return 2
    if not Path(args.config).is_file():
        print(f"stoker report: error: recipe {args.config!r} does not exist", file=sys.stderr)
        return 2
    cli = run_cli(["--config", args.config, "--trainer.logger=false"], run=False)
    datamodule = cli.datamodule
    datamodule.trainer = cli.trainer  # so num_workers/pin_memory resolve as they will in `stoker fit`
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
        class_path, data_args = recipe_data(args.config)
        report = build_report(datamodule, callbacks=list(getattr(cli.trainer, "callbacks", [])), recipe=args.config,
                              data_args=data_args, class_path=class_path, batches=args.batches)
    except (ValueError, FileNotFoundError) as err:
        print(f"stoker report: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    write_plots(report, datamodule, out)
    (out / "data_pipeline.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "data_pipeline.md").write_text(report_markdown(report, plot_dir=out))
    print(f"wrote {out / 'data_pipeline.md'}, {out / 'data_pipeline.json'} and {len(report['plots'])} plot(s)")
    print(report["summary"])
    return 0
