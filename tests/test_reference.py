"""The user's reference lives in the project: README, docs/plan.md, docs/commands.md and
``--help`` cover every key and command, and nothing points outside the project."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.gitrepo import ROOT
from worktree_runner.cli import cli
from worktree_runner.plan.load import AGENT_KEYS, STREAM_KEYS, TOP_KEYS

OUTSIDE = re.compile(r"SPEC|\.\./shared/")
SEARCHED = ("README.md", "docs", "worktree_runner", "scripts", "samples", "tests",
            "pyproject.toml")


def project_files() -> list[Path]:
    found: list[Path] = []
    for name in SEARCHED:
        path = ROOT / name
        found += [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return [p for p in found if "__pycache__" not in p.parts and p.suffix != ".pyc"]


def test_nothing_in_the_project_points_outside_it() -> None:
    this = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in project_files() if path.resolve() != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def markdown_links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", path.read_text())


def test_readme_and_docs_link_only_files_of_the_project() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for link in markdown_links(page):
            if link.startswith(("http://", "https://", "#")):
                continue
            target = (page.parent / link.split("#")[0]).resolve()
            assert target.is_relative_to(ROOT), (page.name, link)
            assert target.exists(), (page.name, link)
    readme = (ROOT / "README.md").read_text()
    assert "docs/plan.md" in readme and "docs/commands.md" in readme


def test_readme_says_how_to_get_wtr_on_path() -> None:
    readme = (ROOT / "README.md").read_text()
    for way in ("pip install .", "pipx install .", ".venv/bin/wtr"):
        assert way in readme, way


def every_command() -> list[tuple[str, click.Command]]:
    assert isinstance(cli, click.Group)
    ctx = click.Context(cli)  # through the group: it loads each command's module
    commands = [(name, cli.get_command(ctx, name)) for name in cli.list_commands(ctx)]
    return [("", cli), *((name, command) for name, command in commands if command)]


@pytest.mark.parametrize("name", [name for name, _ in every_command()])
def test_help_never_points_outside_the_project(name: str) -> None:
    args = [name, "--help"] if name else ["--help"]
    result = subprocess.run([sys.executable, "-m", "worktree_runner", *args],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not OUTSIDE.search(result.stdout), result.stdout


def test_docs_plan_describes_every_plan_key() -> None:
    text = (ROOT / "docs" / "plan.md").read_text()
    for key in sorted(TOP_KEYS | AGENT_KEYS | STREAM_KEYS):
        assert f"| `{key}` |" in text, key
    for topic in ("depends_on", "conflicts_with", "shared", "starts from"):
        assert topic in text


def test_docs_commands_describes_every_command_and_option() -> None:
    text = (ROOT / "docs" / "commands.md").read_text()
    for name, command in every_command()[1:]:
        assert f"### `wtr {name}" in text, name
        section = text.split(f"### `wtr {name}", 1)[1].split("\n### ", 1)[0]
        for param in command.params:
            if isinstance(param, click.Option) and param.name not in ("help", "repo_dir",
                                                                      "run_id"):
                assert any(f"`{opt}" in section for opt in param.opts), (name, param.opts)
    for code in ("`0`", "`1`", "`2`", "`3`", "`130`"):
        assert f"| {code} |" in text
    for field in ("run", "state", "counts", "streams", "merge", "failure", "base_commit",
                  "head_commit", "changed_files", "conflicted_files", "left_out"):
        assert f"| `{field}`" in text, field
