"""The help pages of the ``stoker`` command, answered without importing torch or Lightning.

LightningCLI can only describe a recipe's flags after importing Lightning and torch (seconds, more
on a loaded machine), and then lists ~150 Trainer flags. ``stoker --help``, ``stoker fit --help``
and the recipe form of the data commands therefore print stoker's own page: the options a user
passes, a sentence each; ``--help-all`` (or ``--help all``) hands over to LightningCLI's complete
help. Nothing here imports beyond the standard library.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HELP_FLAGS: tuple[str, ...] = ("-h", "--help")
FULL_HELP = "--help-all"

LIGHTNING_SUMMARIES: dict[str, str] = {
    "fit": "Train a recipe's model on its DataModule; --ckpt_path resumes an interrupted run.",
    "validate": "Run one pass over the validation split with the recipe's model or a checkpoint.",
    "test": "Run one pass over the test split with the recipe's model or a checkpoint.",
    "predict": "Run the model over the predict split and return (or, with a PredictionWriter, write) its outputs.",
}
DATA_SUMMARIES: dict[str, str] = {
    "scan": "Profile a dataset (a folder, a table or a recipe's data): corrupt files, duplicates, leakage, label "
            "conflicts, outliers.",
    "split": "Write a deterministic, stratified train/val/test split as a manifest with a fingerprint.",
    "report": "Write a recipe's Data Pipeline Summary: loader speed, data quality and plots (Markdown, JSON, PNG).",
    "pack": "Pack any image or audio source (folder, table, Hugging Face dataset, tars) into litdata shard sets.",
    "profile": "Measure a recipe's speed of light and tune its loader's workers, prefetch depth and worker type.",
    "compare": "Compare the settings and measured figures of two runs (their stoker_summary.json files).",
}


class HelpFormatter(argparse.HelpFormatter):
    """Each option's default after its sentence when it has one; a description or epilog that holds line
    breaks is kept as written (a list), one without them is wrapped as argparse wraps."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or not action.option_strings or default is None or default is False
                or default == "" or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def help_request(argv: Sequence[str]) -> str | None:
    """``"page"`` when ``argv`` asks for stoker's help page (``-h``/``--help``), ``"all"`` for LightningCLI's
    complete help (``--help-all`` or ``--help all``), ``None`` otherwise. Tokens after ``--`` are not read."""
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == FULL_HELP:
            return "all"
        if token in HELP_FLAGS:
            return "all" if i + 1 < len(argv) and argv[i + 1] == "all" else "page"
    return None


def lightning_help_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--help-all`` or ``--help all`` replaced by LightningCLI's own ``--help``."""
    out: list[str] = []
    for token in argv:
        if not (token == "all" and out[-1:] == ["--help"]):
            out.append("--help" if token in (*HELP_FLAGS, FULL_HELP) else token)
    return out


def source_constant(module: str, name: str) -> Any:
    """The literal a stoker module assigns to ``name``, read from its source unless the module is loaded.

    The data commands' options name facts that live in framework-free modules (problem names, split
    methods, near-duplicate defaults) whose packages import torch on the way; reading the literal keeps
    ``--help`` instant and the fact in one place. tests/test_cli_help.py checks each use against the
    imported value.

    Raises:
        ValueError: ``module`` assigns no literal to ``name`` at its top level.
    """
    loaded = sys.modules.get(module)
    if loaded is not None:
        return getattr(loaded, name)
    package_root = Path(__file__).resolve().parents[1]  # stoker/
    path = package_root.joinpath(*module.split(".")[1:]).with_suffix(".py")
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(target, ast.Name) and target.id == name for target in targets):
            return ast.literal_eval(value)
    raise ValueError(f"{module} assigns no literal to {name} at its top level; import it instead")


def _width() -> int:
    return max(60, min(shutil.get_terminal_size().columns, 120) - 2)


def _columns(rows: Sequence[tuple[str, str]], *, name_width: int) -> str:
    """Names and sentences side by side, the sentences wrapped in their column as argparse wraps its options."""
    pad = " " * (2 + name_width)
    lines: list[str] = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, _width() - len(pad)) or [""]
        lines += [f"  {name:<{name_width}}{wrapped[0]}", *(pad + line for line in wrapped[1:])]
    return "\n".join(lines)


def _wrap(text: str) -> str:
    return textwrap.fill(text, _width())


def top_help() -> str:
    """``stoker --help``: every subcommand with a sentence, and where to go next."""
    names = ",".join([*LIGHTNING_SUMMARIES, *DATA_SUMMARIES])
    name_width = max(len(name) for name in names.split(",")) + 2
    return "\n".join([
        f"usage: stoker {{{names}}} [options]",
        "",
        "PyTorch Lightning DataModules and Callbacks that keep the accelerator fed.",
        "",
        "train and evaluate a recipe (LightningCLI):",
        _columns(list(LIGHTNING_SUMMARIES.items()), name_width=name_width),
        "",
        "know and tune the data:",
        _columns(list(DATA_SUMMARIES.items()), name_width=name_width),
        "",
        _wrap("`stoker COMMAND --help` shows a command's own options, a sentence each; `stoker fit --help-all` "
              "is LightningCLI's complete list of Trainer, model and data flags."),
        "Start with: stoker fit --config recipes/quickstart.yaml",
    ]) + "\n"


def _add_recipe_arguments(group: Any, *, command: str | None) -> None:
    """The recipe arguments every recipe command takes (documentation only: LightningCLI parses them)."""
    group.add_argument("-c", "--config", metavar="RECIPE", help="a recipe YAML (see recipes/); repeat it to "
                       "compose recipes: each file overrides the keys of the ones before it")
    group.add_argument("--print_config", nargs="?", metavar="FLAGS", help="print the recipe with every --config and "
                       "override merged, then exit; FLAGS: skip_default, skip_unset")
    group.add_argument("--seed_everything", metavar="SEED", help="seed of every random stream (an int; true draws "
                       "one); the recipes set 0")
    if command is not None:
        ckpt = ("resume training from this checkpoint, exactly where it stopped ('last': the newest this run saved)"
                if command == "fit" else "the checkpoint to evaluate: a path, or 'best'/'last' from this run's "
                "ModelCheckpoint (default: the model as built)")
        group.add_argument("--ckpt_path", metavar="PATH", help=ckpt)
    group.add_argument("--trainer.KEY", metavar="VALUE", help="any Trainer argument, e.g. --trainer.max_epochs=10 "
                       "--trainer.devices=2 --trainer.precision=bf16-mixed")
    group.add_argument("--model", metavar="CLASS", help="the LightningModule, by class path or name (e.g. "
                       "stoker.models.ImageClassifier), replacing the recipe's")
    group.add_argument("--model.init_args.KEY", metavar="VALUE", help="one argument of the model, e.g. "
                       "--model.init_args.model_name=resnet18")
    group.add_argument("--data", metavar="CLASS", help="the DataModule, by class path or name (e.g. "
                       "stoker.datamodules.ImageFolderDataModule), replacing the recipe's")
    group.add_argument("--data.init_args.KEY", metavar="VALUE", help="one argument of the DataModule, e.g. "
                       "--data.init_args.root=/data/flowers --data.init_args.batch_size=128")
    if command is not None:
        group.add_argument("--optimizer", metavar="CLASS", help="an optimizer replacing the model's own "
                           "(--model.init_args.optimizer), e.g. --optimizer AdamW --optimizer.lr=1e-3")
        group.add_argument("--lr_scheduler", metavar="CLASS", help="a learning-rate scheduler, e.g. "
                           "--lr_scheduler CosineAnnealingLR --lr_scheduler.T_max=10")
    group.add_argument("--data.help", metavar="CLASS", help="list a DataModule's arguments with types and defaults "
                       "(e.g. --data.help ImageFolderDataModule); --model.help CLASS does the same for a model")


def _help_arguments(group: Any) -> None:
    group.add_argument("-h", "--help", action="store_true", help="this page")
    group.add_argument(FULL_HELP, action="store_true", help="LightningCLI's complete help (also --help all): every "
                       "Trainer, model, data, optimizer and scheduler flag with its type and default; imports "
                       "Lightning, so it takes a few seconds")


def lightning_command_help(command: str) -> str:
    """``stoker fit --help`` (and validate, test, predict): the options a user passes, then the recipes."""
    parser = argparse.ArgumentParser(
        prog=f"stoker {command}", add_help=False, formatter_class=HelpFormatter,
        usage=f"stoker {command} --config RECIPE [--config MORE ...] [--KEY=VALUE ...]",
        description=f"{LIGHTNING_SUMMARIES[command]} The options are the recipe's keys: a YAML sets them, "
                    "the command line overrides them (--trainer.max_epochs=10 beats the recipe's value).",
        epilog=recipe_listing())
    group = parser.add_argument_group("options")
    _help_arguments(group)
    _add_recipe_arguments(group, command=command)
    if command in ("validate", "test"):
        group.add_argument("--verbose", metavar="{true,false}", help="print the metrics when the pass ends "
                           "(default: true)")
    if command == "predict":
        group.add_argument("--return_predictions", metavar="{true,false}", help="keep every prediction in "
                           "memory and return it (a PredictionWriter callback writes them to files instead)")
    group.add_argument("--weights_only", metavar="{true,false}", help="load only tensors and plain values from "
                       "--ckpt_path (use true for a checkpoint you did not make)")
    return parser.format_help()


def recipe_help(*, prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None]) -> str:
    """The recipe form of a data command: its own options first, then how the recipe arguments work."""
    parser = argparse.ArgumentParser(
        prog=prog, add_help=False, formatter_class=HelpFormatter, description=description,
        usage=f"{prog} --config RECIPE [--config MORE ...] [--data.init_args.KEY=VALUE ...] [options]",
        epilog=f"The recipe is parsed and built exactly as `stoker fit` builds it, and not run: `{prog} --config "
               "recipes/quickstart.yaml --data.init_args.root=/data/digits` reads the quickstart's recipe with "
               "another data folder.")
    add_arguments(parser)
    parser._optionals.title = f"options of {prog}"  # argparse names no public way to title the default group
    group = parser.add_argument_group("recipe arguments (those of `stoker fit`)")
    _help_arguments(group)
    _add_recipe_arguments(group, command=None)
    return parser.format_help()


def recipe_folder() -> Path | None:
    """``recipes/`` of the working directory, else of the source checkout stoker runs from; ``None`` without one."""
    for folder in (Path.cwd() / "recipes", Path(__file__).resolve().parents[2] / "recipes"):
        if folder.is_dir():
            return folder
    return None


def recipe_listing() -> str:
    """The recipes with the first sentence of their headers, as a help page's closing section ("" without any)."""
    folder = recipe_folder()
    paths = sorted(folder.rglob("*.yaml")) if folder is not None else []
    if folder is None or not paths:
        return ""
    try:
        shown = folder.relative_to(Path.cwd())
    except ValueError:
        shown = folder
    entries = [textwrap.fill(f"{path.relative_to(folder)}: {_recipe_title(path)}", _width(), initial_indent="  ",
                             subsequent_indent="      ") for path in paths]
    return f"recipes in {shown}/ (compose them with repeated --config):\n" + "\n".join(entries)


def _recipe_title(path: Path) -> str:
    """The first line of a recipe's header comment that says what it is (``compose-with:`` lines skipped)."""
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if not line.startswith("#"):
                    break
                text = line.lstrip("#").strip()
                if text and not text.startswith("compose-with:"):
                    return text
    except OSError:
        pass
    return ""
