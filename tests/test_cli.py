"""The stoker command: every recipe parses; the quickstart runs; every example smoke-runs."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stoker.cli import main, release_process_group, run_cli
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").glob("*.py"))


def recipe_configs(recipe: Path) -> list[str]:
    """The --config chain of a recipe: its `# compose-with:` bases first, then itself."""
    bases = re.findall(r"^#\s*compose-with:\s*(\S+)", recipe.read_text(), flags=re.MULTILINE)
    chain: list[str] = []
    for base in bases:
        chain += ["--config", str(REPO / base)]
    return [*chain, "--config", str(recipe)]


def test_there_are_recipes_and_examples() -> None:
    assert REPO.joinpath("recipes", "quickstart.yaml") in RECIPES
    assert EXAMPLES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_recipe_parses_through_the_cli(recipe: Path) -> None:
    text = recipe.read_text()
    assert text.startswith("#"), f"{recipe.name} needs a header saying what it trains and the command"
    assert "stoker fit --config" in text.split("\n\n")[0] or "stoker fit --config" in text[:1500]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        run_cli(["fit", *recipe_configs(recipe), "--print_config"])
    assert info.value.code in (0, None)
    assert "class_path" in out.getvalue()


def test_quickstart_runs_one_batch(tmp_path: Path) -> None:
    cli = run_cli(
        ["fit", "--config", str(REPO / "recipes" / "quickstart.yaml"), "--trainer.fast_dev_run=true",
         f"--data.init_args.root={tmp_path / 'digits'}", "--data.init_args.num_workers=0",
         f"--trainer.default_root_dir={tmp_path}"]
    )
    assert cli.model.hparams.num_classes == 10, "num_classes is linked from the DataModule"
    assert cli.trainer.state.finished


def test_help_lists_the_data_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out.splitlines()[0]
    assert usage == "usage: stoker {fit,validate,test,predict,scan,split,report,pack,profile,compare} [options]"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_smoke_runs(example: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(example), "--fast-dev-run"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**__import__("os").environ,
                                                                      "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]


def test_data_commands_read_a_recipe_when_given_recipe_options() -> None:
    from stoker.cli import uses_recipe

    assert uses_recipe(["--config", "a.yaml"]) and uses_recipe(["--config=a.yaml"]) and uses_recipe(["-c", "a.yaml"])
    assert uses_recipe(["--data.init_args.root=x"]) and uses_recipe(["--trainer.max_epochs", "1"])
    assert uses_recipe(["--print_config"])
    assert not uses_recipe(["data/flowers", "--json", "s.json", "--fail-on", "leakage", "--database"])


def test_a_finished_run_leaves_no_process_group_behind(tmp_path: Path) -> None:
    # Lightning keeps the group after fit; left to interpreter finalization, gloo aborted exiting ranks.
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        release_process_group()
        assert not dist.is_initialized()
        release_process_group()  # outside a group: nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
