"""The ``stoker`` command.

``stoker fit|validate|test|predict --config recipes/<name>.yaml`` runs a LightningCLI recipe;
data subcommands (``stoker scan``, ``stoker split``, ``stoker report``) are registered in
:data:`DATA_COMMANDS` and dispatched before LightningCLI sees the arguments.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

# name -> "module:function"; the function takes the remaining argv and returns an exit code.
# Imported lazily so that `stoker fit` never pays for the data tools' imports.
DATA_COMMANDS: dict[str, str] = {
    "scan": "stoker.commands.scan:main",
    "split": "stoker.commands.split:main",
    "report": "stoker.commands.report:main",
}


class StokerCLI(LightningCLI):
    """LightningCLI that links what the DataModule knows into the model.

    ``data.num_classes`` is read after the DataModule is instantiated and passed to the model's
    ``num_classes``, so a recipe never states the class count twice.
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


def run_cli(args: Sequence[str] | None = None, *, run: bool = True) -> StokerCLI:
    """Build (and by default run) the LightningCLI part of ``stoker``; used by tests and ``main``."""
    return StokerCLI(
        args=list(args) if args is not None else None,
        run=run,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf"} if _has_omegaconf() else None,
    )


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of the ``stoker`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in DATA_COMMANDS:
        module_name, function_name = DATA_COMMANDS[args[0]].split(":")
        command = getattr(importlib.import_module(module_name), function_name)
        code = command(args[1:])
        if argv is None:
            sys.exit(code)
        return code
    if args and args[0] in ("-h", "--help"):
        extra = ", ".join(sorted(DATA_COMMANDS)) or "none yet"
        print(f"stoker: LightningCLI subcommands fit, validate, test, predict; data subcommands: {extra}\n")
    # LightningCLI reads sys.argv itself when args is None (and warns when given both).
    run_cli(None if argv is None else args)
    return 0


if __name__ == "__main__":
    main()
