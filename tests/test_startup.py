"""wtr starts quickly: every agent's ``wtr progress`` and every test pays its start-up, so
the command line imports a command's module only when that command runs, and the heavy
libraries only where they are used."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import click
import pytest

import worktree_runner.cli
from worktree_runner.cli.base import COMMAND_MODULES, cli

HEAVY = {"git", "structlog", "rich", "jinja2", "networkx", "dask", "distributed", "yaml",
         "pydantic", "mcp"}
COMMAND_MODULE_NAMES = {f"worktree_runner.cli.{module}" for module in COMMAND_MODULES.values()}


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_importing_the_command_line_loads_no_command_and_no_heavy_library() -> None:
    loaded = modules_after("import worktree_runner.cli")
    assert "click" in loaded and "worktree_runner.cli.base" in loaded  # it did import
    assert not {m.split(".")[0] for m in loaded} & HEAVY, sorted(loaded)
    assert not loaded & COMMAND_MODULE_NAMES, sorted(loaded & COMMAND_MODULE_NAMES)


@pytest.mark.parametrize(("command", "module"), [("progress", "agents"), ("status", "run")])
def test_a_command_loads_its_own_module_only(command: str, module: str) -> None:
    """Also what ``wtr status`` prints with (render, the run's status document, the
    change requests' book): none of it brings a heavy library."""
    loaded = modules_after(
        "import click\nfrom worktree_runner.cli import cli\n"
        "import worktree_runner.coordinate.book, worktree_runner.render\n"
        f"assert cli.get_command(click.Context(cli), {command!r}).name == {command!r}")
    assert loaded & COMMAND_MODULE_NAMES == {f"worktree_runner.cli.{module}"}
    assert not {m.split(".")[0] for m in loaded} & HEAVY, sorted(loaded)


def test_every_command_is_in_the_table_under_the_module_that_defines_it() -> None:
    """A command added in a new module without its line in COMMAND_MODULES would be missing
    from wtr; a line naming the wrong module would fail when the command runs."""
    for info in pkgutil.iter_modules(worktree_runner.cli.__path__):
        __import__(f"worktree_runner.cli.{info.name}")
    defined = {name: command.callback.__module__ if command.callback else ""
               for name, command in cli.commands.items()}
    assert defined == {name: f"worktree_runner.cli.{module}"
                       for name, module in COMMAND_MODULES.items()}


def test_a_command_the_table_misses_still_runs() -> None:
    """Another branch may add a command without its line: slower, never missing."""
    loaded = modules_after(
        "import click\nfrom worktree_runner.cli import base\n"
        "del base.COMMAND_MODULES['status']\nctx = click.Context(base.cli)\n"
        "assert base.cli.get_command(ctx, 'status').name == 'status'\n"
        "assert 'status' in base.cli.list_commands(ctx)")
    assert "worktree_runner.cli.run" in loaded


def test_help_lists_every_command_and_an_unknown_one_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "worktree_runner", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("\nCommands:\n", 1)[1]
    shown = {line.split()[0] for line in listed.splitlines() if line.strip()}
    ctx = click.Context(cli)
    commands = {name: cli.get_command(ctx, name) for name in COMMAND_MODULES}
    visible = {name for name, command in commands.items() if command and not command.hidden}
    assert shown == visible
    wrong = subprocess.run([sys.executable, "-m", "worktree_runner", "statuss"],
                           capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and "No such command 'statuss'" in wrong.stderr
    assert "Traceback" not in wrong.stderr
