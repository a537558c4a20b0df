"""The ``stoker`` command.

``stoker fit|validate|test|predict --config recipes/<name>.yaml`` runs a LightningCLI recipe;
data subcommands (``stoker scan``, ``split``, ``report``, ``profile``, ``compare``, ``pack``) are
registered in :data:`DATA_COMMANDS` and dispatched before LightningCLI sees the arguments. A data command that
reads a recipe builds it with :func:`recipe_cli`: the parser of ``stoker fit`` (repeated
``--config``, dotted overrides, ``--print_config``) plus the command's own options, never run.

``--help`` answers from :mod:`stoker.commands._help` without importing torch or Lightning (they
take seconds); ``--help-all`` hands over to LightningCLI's complete help. Lightning is imported
inside the functions that build a CLI, and :class:`StokerCLI` is made on first use.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stoker.commands._help import (
    LIGHTNING_SUMMARIES,
    help_request,
    lightning_command_help,
    lightning_help_argv,
    recipe_help,
    top_help,
)

if TYPE_CHECKING:
    from lightning.pytorch.cli import LightningCLI

# name -> "module:function"; the function takes the remaining argv and returns an exit code.
# Imported lazily so that `stoker fit` never pays for the data tools' imports.
DATA_COMMANDS: dict[str, str] = {
    "scan": "stoker.commands.scan:main",
    "split": "stoker.commands.split:main",
    "report": "stoker.commands.report:main",
    "profile": "stoker.commands.profile:main",
    "compare": "stoker.commands.compare:main",
    "pack": "stoker.commands.pack:main",
}

# Options that only the recipe parser knows: a data command given any of them reads a recipe.
RECIPE_OPTIONS: tuple[str, ...] = ("--config", "-c", "--print_config", "--seed_everything", "--trainer", "--model",
                                   "--data", "--optimizer", "--lr_scheduler")


@functools.cache
def _cli_classes() -> tuple[type[LightningCLI], Callable[..., LightningCLI]]:
    """``(StokerCLI, _RecipeCLI)``, made on first use so that importing this module imports no Lightning."""
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

    import stoker
    from stoker.data.secrets import without_secrets

    # The public classes, imported as `import stoker` did before it became lazy: LightningCLI lists
    # them as known subclasses and resolves short names (`--data.help ImageFolderDataModule`).
    for name in stoker.__all__:
        getattr(stoker, name)

    class StokerCLI(LightningCLI):
        """LightningCLI that links what the DataModule knows into the model.

        ``data.num_classes`` is read after the DataModule is instantiated and passed to the model's
        ``num_classes``, so a recipe never states the class count twice.
        """

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")

    class SecretFreeSaveConfig(SaveConfigCallback):
        """LightningCLI's ``config.yaml`` of the run, with credentials left out of every option dict.

        ``--data.init_args.storage_options`` may carry access keys; the DataModule keeps them in memory
        (:mod:`stoker.data.secrets`), and the saved config, like the hyperparameters, holds the rest.
        """

        def __init__(self, parser: LightningArgumentParser, config: Any, *args: Any, **kwargs: Any) -> None:
            clean = config.clone()
            for key, value in config.items():
                if isinstance(value, dict):
                    clean[key] = without_secrets(value)
            super().__init__(parser, clean, *args, **kwargs)

    StokerCLI.save_config_class = SecretFreeSaveConfig  # type: ignore[attr-defined]

    class _RecipeCLI(StokerCLI):
        """:class:`StokerCLI` without subcommands, plus a data command's own options; builds and never runs."""

        def __init__(self, args: list[str], *, add_arguments: Callable[[argparse.ArgumentParser], None],
                     parser_kwargs: dict[str, Any]) -> None:
            self._add_command_arguments = add_arguments
            super().__init__(args=args, run=False, save_config_callback=None, **_cli_kwargs(parser_kwargs))

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            super().add_arguments_to_parser(parser)
            self._add_command_arguments(parser)

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            # LightningCLI warns when it gets `args` while sys.argv holds arguments too, in case both were
            # meant; here `args` is the share of sys.argv after "stoker <command>", so there is one source.
            self.config = parser.parse_args(args)

        def before_instantiate_classes(self) -> None:
            # A data command trains nothing: a recipe's logger would only create empty run folders.
            self.config["trainer.logger"] = False

    for cls in (StokerCLI, _RecipeCLI):  # importable and picklable as stoker.cli.<name> (see __getattr__)
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return StokerCLI, _RecipeCLI


def __getattr__(name: str) -> Any:
    # PEP 562: `from stoker.cli import StokerCLI` imports Lightning then, not when the module loads.
    if name == "StokerCLI":
        return _cli_classes()[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def recipe_cli(argv: Sequence[str], *, prog: str, description: str,
               add_arguments: Callable[[argparse.ArgumentParser], None]) -> LightningCLI | int:
    """The recipe of a data command, parsed and instantiated exactly as ``stoker fit`` would, but not run.

    Accepts what ``stoker fit`` accepts (``--config`` repeated, ``--data.init_args.root=...``,
    ``--print_config``) plus the options ``add_arguments`` adds to the parser. ``--help`` prints the
    command's own options and how the recipe arguments work, without importing Lightning;
    ``--help-all`` prints LightningCLI's complete help.

    Returns:
        The CLI (``.config`` holds the command's options, ``.datamodule``, ``.model`` and ``.trainer``
        are built), or the exit status when parsing ended the command (``--help``, ``--print_config``,
        a bad argument: jsonargparse has printed why).
    """
    wanted = help_request(argv)
    if wanted == "page":
        print(recipe_help(prog=prog, description=description, add_arguments=add_arguments), end="")
        return 0
    args = lightning_help_argv(argv) if wanted == "all" else list(argv)
    try:
        return _cli_classes()[1](args, add_arguments=add_arguments,
                                 parser_kwargs={"prog": prog, "description": description})
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)


def uses_recipe(argv: Sequence[str]) -> bool:
    """Whether a data command's arguments name a recipe (any of :data:`RECIPE_OPTIONS`)."""
    return any(token == option or token.startswith((option + ".", option + "=")) for token in argv
               for option in RECIPE_OPTIONS)


def run_cli(args: Sequence[str] | None = None, *, run: bool = True) -> LightningCLI:
    """Build (and by default run) the LightningCLI part of ``stoker``; used by tests and ``main``."""
    cli_class = _cli_classes()[0]
    return cli_class(args=list(args) if args is not None else None, run=run,
                     save_config_callback=cli_class.save_config_class, **_cli_kwargs())  # type: ignore[attr-defined]


def _cli_kwargs(parser_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The LightningCLI arguments every stoker command shares."""
    parser_kwargs = dict(parser_kwargs or {})
    if _has_omegaconf():
        parser_kwargs["parser_mode"] = "omegaconf"
    return {"subclass_mode_model": True, "subclass_mode_data": True, "save_config_kwargs": {"overwrite": True},
            "parser_kwargs": parser_kwargs or None}


def _has_omegaconf() -> bool:
    try:
        import omegaconf  # noqa: F401
    except ImportError:
        return False
    return True


def _subcommand(args: Sequence[str]) -> str | None:
    """The LightningCLI subcommand named in ``args`` (skipping the value of a top-level ``-c/--config``)."""
    after_config = False
    for token in args:
        if not after_config and token in LIGHTNING_SUMMARIES:
            return token
        after_config = token in ("-c", "--config")
    return None


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
    wanted = help_request(args)
    if not args or wanted == "page":
        subcommand = _subcommand(args)
        page = lightning_command_help(subcommand) if subcommand else top_help()
        print(page, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if wanted == "all":
        args = lightning_help_argv(args)
        if argv is None:
            sys.argv[1:] = args  # LightningCLI reads sys.argv itself (and warns when also given args)
    # LightningCLI reads sys.argv itself when args is None (and warns when given both).
    run_cli(None if argv is None else args)
    release_process_group()
    return 0


def release_process_group() -> None:
    """Destroy the default process group a finished DDP run left behind (no-op outside one).

    Lightning keeps the group after ``fit`` returns. Left to interpreter finalization, gloo's worker
    threads can still hold tensors then, and the process aborts ("terminate called without an active
    exception") after a run that succeeded. Call it once training is over, on every rank; not after an
    exception, where another rank may still be inside a collective.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
