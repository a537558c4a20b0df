"""`stoker --help` answers at once: stoker's own pages, no torch or Lightning imported to print them.

Wall-clock time is not asserted (a loaded machine makes it flaky); what the pages import is, since
importing torch and Lightning is what took 13-24 s.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import subprocess
import sys

import pytest

from stoker.cli import DATA_COMMANDS, main, recipe_cli
from stoker.commands._help import (
    DATA_SUMMARIES,
    LIGHTNING_SUMMARIES,
    help_request,
    lightning_help_argv,
    source_constant,
)
from stoker.commands.profile import add_profile_arguments
from stoker.commands.report import add_report_arguments
from tests.conftest import REPO

QUICKSTART = "recipes/quickstart.yaml"
SUBCOMMANDS = [*LIGHTNING_SUMMARIES, *DATA_COMMANDS]
HEAVY = ("torch", "lightning", "lightning.pytorch")

# Runs in a fresh interpreter: answers each help request (argv[1]) in turn and records, after each, its
# page and which of the heavy modules (argv[2]) had been imported by then.
_CHILD = """
import contextlib, io, json, sys
import stoker.cli
pages = {}
for argv in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = stoker.cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code
    heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
    pages[" ".join(argv)] = {"code": code, "text": out.getvalue(), "heavy": heavy}
print(json.dumps(pages))
"""


@pytest.fixture(scope="module")
def pages() -> dict[str, dict]:
    """Every help page, answered in one fresh interpreter started in the repository."""
    requests = [["--help"], ["-h"], *([name, "--help"] for name in SUBCOMMANDS),
                ["scan", "--config", QUICKSTART, "--help"], ["report", "--config", QUICKSTART, "-h"],
                ["profile", "--config", QUICKSTART, "--help"]]
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(requests), json.dumps(HEAVY)],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def test_no_help_page_imports_torch_or_lightning(pages: dict[str, dict]) -> None:
    for argv, page in pages.items():
        assert page["code"] in (0, None), f"stoker {argv}: exit {page['code']}\n{page['text']}"
        assert page["text"].strip(), f"stoker {argv} printed nothing"
        assert not page["heavy"], f"stoker {argv} imported {page['heavy']} to print its help"


def test_importing_stoker_is_cheap_and_the_public_names_still_resolve() -> None:
    code = (f"import sys, stoker; heavy = [m for m in {HEAVY!r} if m in sys.modules]; "
            "assert not heavy, heavy; assert set(stoker.__all__) <= set(dir(stoker)); "
            "from stoker import ImageClassifier; print(ImageClassifier.__module__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip() == "stoker.models.image"


def test_every_public_name_resolves() -> None:
    import stoker

    for name in stoker.__all__:
        assert getattr(stoker, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        stoker.NotAThing  # noqa: B018


def test_the_usage_lists_every_subcommand_with_a_sentence(pages: dict[str, dict]) -> None:
    assert set(DATA_SUMMARIES) == set(DATA_COMMANDS), "each data command needs its sentence for `stoker --help`"
    top = pages["--help"]["text"]
    assert pages["-h"]["text"] == top
    usage = top.splitlines()[0]
    for name in SUBCOMMANDS:
        assert name in usage, f"the usage line misses {name}: {usage}"
        assert any(line.strip().startswith(name + " ") and len(line.split()) > 2 for line in top.splitlines()), name
    assert "--help-all" in top


@pytest.mark.parametrize("command", list(LIGHTNING_SUMMARIES))
def test_a_lightning_command_page_names_the_options_a_user_passes(pages: dict[str, dict], command: str) -> None:
    text = pages[f"{command} --help"]["text"]
    assert text.startswith(f"usage: stoker {command} --config RECIPE")
    for option in ("--config", "--print_config", "--seed_everything", "--ckpt_path", "--trainer.KEY", "--model ",
                   "--model.init_args.KEY", "--data ", "--data.init_args.KEY", "--optimizer", "--lr_scheduler",
                   "--data.help", "--help-all"):
        assert option in text, f"stoker {command} --help misses {option}"
    assert "--trainer.max_epochs MAX_EPOCHS" not in text, "the Trainer's ~150 flags belong to --help-all"
    assert "quickstart.yaml: Quickstart" in text, "the recipes under recipes/ are listed with their headers"
    extra = {"validate": "--verbose", "test": "--verbose", "predict": "--return_predictions"}.get(command)
    if extra:
        assert extra in text


@pytest.mark.parametrize(("argv", "own"), [
    ("report --help", ("--out", "--batches")),
    ("report --config recipes/quickstart.yaml -h", ("--out", "--batches")),
    ("profile --help", ("--write", "--batches", "--replay_steps", "--warmup_steps")),
    ("profile --config recipes/quickstart.yaml --help", ("--write", "--batches", "--replay_steps")),
    ("scan --config recipes/quickstart.yaml --help", ("--json", "--fail-on", "--near-threshold")),
])
def test_a_recipe_command_shows_its_own_options_first(pages: dict[str, dict], argv: str, own: tuple[str, ...]) -> None:
    text = pages[argv]["text"]
    first_recipe_option = text.index("--config RECIPE\n")
    for option in own:
        assert text.index(option + " ") < first_recipe_option, f"{option} comes after the recipe's options"
    for option in ("--print_config", "--data.init_args.KEY", "--trainer.KEY", "--help-all"):
        assert option in text
    assert "repeat it to compose" in text
    assert "(default: 20)" in " ".join(text.split()) or "scan" in argv, "own options show their defaults"


def test_the_path_form_of_scan_explains_the_recipe_form(pages: dict[str, dict]) -> None:
    text = pages["scan --help"]["text"]
    assert "--fail-on" in text and "corrupt, exact_duplicates" in text
    assert "Recipe form: stoker scan --config RECIPE" in text and "--help-all" in text


def test_help_requests_are_recognized_and_translated_for_lightning() -> None:
    assert help_request(["fit", "--help"]) == help_request(["-h"]) == "page"
    assert help_request(["fit", "--help-all"]) == help_request(["fit", "--help", "all"]) == "all"
    assert help_request(["fit", "--data.help", "ImageFolderDataModule"]) is None
    assert help_request(["fit", "--config", "a.yaml", "--", "--help"]) is None
    assert lightning_help_argv(["fit", "--help-all"]) == ["fit", "--help"]
    assert lightning_help_argv(["fit", "-c", "a.yaml", "--help", "all"]) == ["fit", "-c", "a.yaml", "--help"]


def test_help_all_is_lightning_complete_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--help-all"])
    assert info.value.code in (0, None)
    text = capsys.readouterr().out
    assert "--trainer.max_epochs" in text and "--data.help" in text


def test_help_all_of_a_recipe_command_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code = recipe_cli(["--help", "all"], prog="stoker report", description="d", add_arguments=add_report_arguments)
    assert code == 0
    text = capsys.readouterr().out
    assert "--trainer.max_epochs" in text and "--out" in text and "--batches" in text


def test_data_help_still_reaches_lightning(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--data.help", "ImageFolderDataModule"])
    assert info.value.code in (0, None)
    assert "--data.root ROOT" in capsys.readouterr().out


def test_no_subcommand_prints_the_usage_and_fails() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main([]) == 2
    assert err.getvalue().startswith("usage: stoker {fit,")


def test_stoker_cli_is_made_on_first_use_and_picklable_by_name() -> None:
    from lightning.pytorch.cli import LightningCLI

    from stoker.cli import StokerCLI

    assert issubclass(StokerCLI, LightningCLI)
    assert pickle.loads(pickle.dumps(StokerCLI)) is StokerCLI


def test_help_pages_read_the_facts_their_modules_define(monkeypatch: pytest.MonkeyPatch) -> None:
    from stoker.commands import scan, split
    from stoker.data import splits
    from stoker.quality import checks
    from stoker.quality import scan as quality_scan

    assert (scan._PROBLEMS, scan._KINDS, split._SPLIT_METHODS) == (checks.PROBLEMS, quality_scan.KINDS,
                                                                    splits.SPLIT_METHODS)
    assert (scan._NEAR_THRESHOLD, scan._NEAR_MIN_DETAIL) == (checks.NEAR_THRESHOLD, checks.NEAR_MIN_DETAIL)
    # From the source, as a fresh `stoker scan --help` reads them.
    monkeypatch.delitem(sys.modules, "stoker.quality.checks")
    monkeypatch.delitem(sys.modules, "stoker.data.splits")
    assert source_constant("stoker.quality.checks", "PROBLEMS") == checks.PROBLEMS
    assert source_constant("stoker.quality.checks", "NEAR_MIN_DETAIL") == checks.NEAR_MIN_DETAIL
    assert source_constant("stoker.data.splits", "SPLIT_METHODS") == splits.SPLIT_METHODS
    with pytest.raises(ValueError, match="assigns no literal to parse_problems"):
        source_constant("stoker.quality.checks", "parse_problems")


def test_own_options_parse_alike_on_the_page_and_in_the_recipe_parser() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_profile_arguments(parser)
    add_report_arguments(argparse.ArgumentParser())
    assert parser.parse_args([]).batches == 20
