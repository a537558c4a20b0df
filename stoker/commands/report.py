"""``stoker report --config RECIPE [--config MORE] [--out DIR]``: the Data Pipeline Summary of a recipe.

The recipe is parsed and built exactly as ``stoker fit`` builds it (repeated ``--config``, dotted
overrides such as ``--data.init_args.root=...``, ``--print_config``), but not run; the DataModule
is prepared and set up, its training loader measured, its data scanned, and
``data_pipeline.md``, ``data_pipeline.json`` and PNG plots are written to ``DIR``.

Example::

    stoker report --config recipes/quickstart.yaml --config recipes/quickstart_mixup.yaml --out reports/mix
"""

from __future__ import annotations

import argparse
import inspect
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from stoker.commands._help import help_request

_DESCRIPTION = "Write the Data Pipeline Summary of a recipe (Markdown, JSON and PNG plots)."
_OWN_OPTIONS = ("--out", "--batches")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``stoker report`` beside the recipe's (the recipe parser and the help page read them alike)."""
    parser.add_argument("--out", type=str, default="reports/data", help="folder that receives data_pipeline.md, "
                        "data_pipeline.json and the PNG plots")
    parser.add_argument("--batches", type=int, default=20, help="training batches to time (the first, which "
                        "carries the workers' start-up, is reported apart)")


def recipe_argv(argv: list[str]) -> list[str]:
    """``argv`` without the report's own options: the arguments that rebuild the recipe in ``stoker fit``."""
    out: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in _OWN_OPTIONS:
            skip = True
        elif not token.startswith(tuple(option + "=" for option in _OWN_OPTIONS)):
            out.append(token)
    return out


def stated_data(config: Any) -> tuple[str | None, dict[str, Any]]:
    """The DataModule's ``class_path`` and its ``init_args`` that differ from the defaults (for the usage example).

    Args:
        config: The parsed recipe (``cli.config``), every ``--config`` and override merged.
    """
    data = config.get("data")
    if data is None or not data.get("class_path"):
        return None, {}
    stated = data.get("init_args")
    stated = stated.as_dict() if hasattr(stated, "as_dict") else dict(stated or {})
    try:
        module_name, class_name = data["class_path"].rsplit(".", 1)
        parameters = inspect.signature(getattr(__import__(module_name, fromlist=[class_name]), class_name)).parameters
    except (AttributeError, ImportError, ValueError, TypeError):
        return data["class_path"], stated
    defaults = {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}
    # Sorted, as a YAML dump lists them; the defaults are left out, so two recipes that build the same
    # DataModule give the same code.
    return data["class_path"], {k: stated[k] for k in sorted(stated) if k not in defaults or defaults[k] != stated[k]}


def _early_error(argv: list[str]) -> str | None:
    """A bad ``--batches`` or a missing recipe file, named before the recipe is built."""
    for i, token in enumerate(argv):
        value = token.split("=", 1)[1] if "=" in token else (argv[i + 1] if i + 1 < len(argv) else "")
        name = token.split("=", 1)[0]
        if name == "--batches" and (not value.lstrip("-").isdigit() or int(value) < 1):
            return f"--batches must be a positive integer, got {value}"
    for i, token in enumerate(argv):
        name, _, value = token.partition("=")
        if name in ("--config", "-c"):
            path = value or (argv[i + 1] if i + 1 < len(argv) else "")
            if not Path(path).is_file():
                return f"recipe {path!r} does not exist"
    return None


def main(argv: list[str]) -> int:
    """Run ``stoker report``; returns 2 when the recipe or its data cannot be used."""
    from stoker.cli import recipe_cli

    problem = None if help_request(argv) else _early_error(argv)
    if problem:
        print(f"stoker report: error: {problem}", file=sys.stderr)
        return 2
    cli = recipe_cli(argv, prog="stoker report", description=_DESCRIPTION, add_arguments=add_report_arguments)
    if isinstance(cli, int):
        return cli
    from stoker.report.markdown import report_markdown
    from stoker.report.summary import build_report, write_plots

    args = cli.config
    datamodule = cli.datamodule
    datamodule.trainer = cli.trainer  # so num_workers/pin_memory resolve as they will in `stoker fit`
    chain = recipe_argv(argv)
    # usage_section writes `stoker fit --config {recipe}`: the chain after its first "--config".
    recipe = shlex.join(chain[1:]) if chain and chain[0] in ("--config", "-c") else shlex.join(chain) or None
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
        class_path, data_args = stated_data(args)
        report = build_report(datamodule, callbacks=list(getattr(cli.trainer, "callbacks", [])), recipe=recipe,
                              data_args=data_args, class_path=class_path, batches=args.batches, model=cli.model)
    except (ValueError, FileNotFoundError, ModuleNotFoundError) as err:
        print(f"stoker report: error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    plots = write_plots(report, datamodule, out)
    report["files"]["created"] += [str(out / "data_pipeline.md"), str(out / "data_pipeline.json"), *plots.values()]
    (out / "data_pipeline.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "data_pipeline.md").write_text(report_markdown(report, plot_dir=out))
    print(f"wrote {out / 'data_pipeline.md'}, {out / 'data_pipeline.json'} and {len(report['plots'])} plot(s)")
    print(report["summary"])
    return 0
