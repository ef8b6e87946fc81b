"""``wtr agent-file``: Claude Code files that name only real commands and real flags."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests.gitrepo import Repo, Result
from worktree_runner.cli import cli

Wtr = Callable[..., Result]

AGENT = Path(".claude/agents/parallel-worker.md")
COMMAND = Path(".claude/commands/parallel-run.md")
DOCS = Path(__file__).resolve().parents[1] / "docs"

# "wtr WORD" anywhere, and "wtr WORD rest-of-the-invocation" up to the end of a code span,
# a line or a shell operator; not "bin/wtr", "WTR_RUN" or the branch prefix "wtr/".
_WORD = re.compile(r"(?<![\w/.-])wtr\s+([a-z][\w-]*)")
_INVOCATION = re.compile(r"(?<![\w/.-])wtr[ \t]+([a-z][\w-]*)([^`\n;|&)]*)")
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_END_OF_OPTIONS = re.compile(r"\s--(?:\s|$)")


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    assert text.startswith("---\n"), text[:80]
    head, closed, body = text[len("---\n"):].partition("\n---\n")
    assert closed, "the front matter is not closed by a '---' line"
    meta = yaml.safe_load(head)
    assert isinstance(meta, dict), head
    return meta, body


def options_of(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def assert_names_real_commands(text: str, where: str) -> set[str]:
    """Every ``wtr WORD`` is a subcommand and every flag after it one of its options;
    returns the subcommands named."""
    ctx = click.Context(cli)  # through the group: it loads each command's module
    commands = {name: command for name in cli.list_commands(ctx)
                if (command := cli.get_command(ctx, name)) is not None}
    named = set(_WORD.findall(text))
    assert not named - set(commands), f"{where} names unknown commands: {named - set(commands)}"
    for name, rest in _INVOCATION.findall(text):
        flags = set(_FLAG.findall(_END_OF_OPTIONS.split(rest)[0]))
        unknown = flags - options_of(commands[name])
        assert not unknown, f"{where}: 'wtr {name}{rest}' has unknown options {sorted(unknown)}"
    return named


def written(repo: Repo, relative: Path) -> tuple[dict[str, Any], str]:
    return split_front_matter((repo.path / relative).read_text(encoding="utf-8"))


def wrote_lines(repo: Repo, *relatives: Path) -> list[str]:
    return [f"wrote {repo.path.resolve() / relative}" for relative in relatives]


def test_writes_the_subagent_at_the_repository_root(repo: Repo, wtr: Wtr) -> None:
    result = wtr("agent-file", cwd=repo.path / "src" / "api")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == wrote_lines(repo, AGENT)
    assert not (repo.path / COMMAND).exists()
    meta, body = written(repo, AGENT)
    assert set(meta) == {"name", "description", "tools"}
    assert meta["name"] == "parallel-worker"
    assert isinstance(meta["description"], str)
    assert "worktree_runner" in meta["description"]
    assert meta["tools"] == "Bash, Read, Grep, Glob"
    for step in ("wtr check worktree-plan.yaml", "wtr run worktree-plan.yaml",
                 "wtr status --json", "wtr logs STREAM", "wtr merge --check", "    wtr merge\n"):
        assert step in body, step
    assert body.index("wtr check") < body.index("wtr run") < body.index("wtr merge --check")
    for field in ("counts", "status", "failure", "changed_files", "progress", "merge.state"):
        assert f"`{field}`" in body, field
    for section in ("Completed", "Modified files", "Blockers", "Test results (verify)"):
        assert f"**{section}**" in body, section


def test_command_writes_the_slash_command_too(repo: Repo, wtr: Wtr) -> None:
    result = wtr("agent-file", "--command")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == wrote_lines(repo, AGENT, COMMAND)
    meta, body = written(repo, COMMAND)
    assert set(meta) == {"description", "argument-hint", "allowed-tools"}
    assert isinstance(meta["description"], str) and meta["description"]
    assert meta["argument-hint"] == "[plan file]"
    assert meta["allowed-tools"] == "Bash(wtr:*)"
    assert "`$ARGUMENTS`" in body
    assert "`worktree-plan.yaml`" in body
    for step in ("wtr check PLAN", "wtr run PLAN", "wtr status --json", "wtr merge --check"):
        assert step in body, step
    assert "parallel-worker" in body


def test_plan_is_the_one_named_in_every_command(repo: Repo, wtr: Wtr) -> None:
    result = wtr("agent-file", "--plan", "plans/x.yaml", "--command")
    assert result.returncode == 0, result.stderr
    _, agent = written(repo, AGENT)
    _, command = written(repo, COMMAND)
    assert "wtr check plans/x.yaml" in agent
    assert "wtr run plans/x.yaml" in agent
    assert "worktree-plan.yaml" not in agent + command
    assert "`plans/x.yaml`" in command


def test_a_plan_path_with_a_space_is_quoted_for_the_shell(repo: Repo, wtr: Wtr) -> None:
    result = wtr("agent-file", "--plan", "plans/my plan.yaml")
    assert result.returncode == 0, result.stderr
    _, body = written(repo, AGENT)
    assert "wtr run 'plans/my plan.yaml'" in body


@pytest.mark.parametrize("args", [(), ("--command",), ("--plan", "plans/x.yaml", "--command")])
def test_files_name_only_real_commands_and_options(repo: Repo, wtr: Wtr,
                                                   args: tuple[str, ...]) -> None:
    assert wtr("agent-file", *args).returncode == 0
    named = assert_names_real_commands((repo.path / AGENT).read_text(), str(AGENT))
    assert {"check", "run", "status", "logs", "merge", "retry", "accept", "resume"} <= named
    if "--command" in args:
        named = assert_names_real_commands((repo.path / COMMAND).read_text(), str(COMMAND))
        assert {"check", "run", "status", "merge"} <= named


@pytest.mark.parametrize("name", ["agents.md", "integration.md"])
def test_docs_name_only_real_commands_and_options(name: str) -> None:
    assert_names_real_commands((DOCS / name).read_text(encoding="utf-8"), f"docs/{name}")


@pytest.mark.parametrize("text", ["run `wtr frobnicate PLAN`", "then wtr\nfrobnicate",
                                  "`wtr merge --force`", "wtr logs STREAM -x"])
def test_the_check_catches_what_does_not_exist(text: str) -> None:
    with pytest.raises(AssertionError):
        assert_names_real_commands(text, "sample")


def test_the_check_leaves_lock_commands_and_other_words_alone() -> None:
    text = "`wtr lock db --timeout 5 -- npm run x --force` on branch wtr/run-1/api; $WTR_RUN"
    assert assert_names_real_commands(text, "sample") == {"lock"}


def test_refuses_to_overwrite_without_force(repo: Repo, wtr: Wtr) -> None:
    assert wtr("agent-file").returncode == 0
    agent = repo.path / AGENT
    agent.write_text("my own agent\n")
    line = wtr("agent-file").one_line_error()
    assert str(agent.resolve()) in line and "--force" in line
    assert agent.read_text() == "my own agent\n"


def test_refusal_writes_nothing_at_all(repo: Repo, wtr: Wtr) -> None:
    (repo.path / AGENT).parent.mkdir(parents=True)
    (repo.path / AGENT).write_text("my own agent\n")
    wtr("agent-file", "--command").one_line_error()
    assert not (repo.path / COMMAND).exists()


def test_force_overwrites(repo: Repo, wtr: Wtr) -> None:
    assert wtr("agent-file", "--command").returncode == 0
    fresh = {path: (repo.path / path).read_text() for path in (AGENT, COMMAND)}
    for path in fresh:
        (repo.path / path).write_text("stale\n")
    result = wtr("agent-file", "--command", "--force")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == wrote_lines(repo, AGENT, COMMAND)
    assert {path: (repo.path / path).read_text() for path in fresh} == fresh


def test_repo_option_picks_the_repository(repo: Repo, wtr: Wtr, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    result = wtr("agent-file", "--repo", repo.path, cwd=outside)
    assert result.returncode == 0, result.stderr
    assert (repo.path / AGENT).is_file()
    assert not (outside / ".claude").exists()


def test_outside_a_repository_is_bad_input(wtr: Wtr, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    wtr("agent-file", cwd=outside).one_line_error()
    assert not (outside / ".claude").exists()
