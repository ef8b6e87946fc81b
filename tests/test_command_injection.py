"""A value put into an agent's command can never run as shell code: ``wtr check`` refuses
placeholders a shell would read as code, and bare ones are quoted by wtr."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan


def command_problem(command: object) -> str:
    text = yaml.safe_dump({"version": 1, "streams": {"a": {"files": ["x"],
                                                           "agent": {"command": command}}}})
    with pytest.raises(PlanInvalid) as caught:
        parse_plan(text, Path("p.yaml"))
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert problems[0].where == "streams.a.agent.command"
    return problems[0].message


@pytest.mark.parametrize(
    ("command", "quote"),
    [('my-agent "{prompt}"', "double"), ("my-agent '{prompt}'", "single"),
     ('my-agent --msg="{prompt}" --in {worktree}', "double"),
     ("cd {worktree} && my-agent '{branch}'", "single")],
)
def test_a_quoted_placeholder_in_a_shell_command_is_refused(command: str, quote: str) -> None:
    message = command_problem(command)
    assert f"is inside {quote} quotes; write it bare: wtr quotes the value for the shell " \
           "itself" in message
    assert "command injection" in message


def test_a_placeholder_inside_a_shell_script_of_a_list_command_is_refused() -> None:
    message = command_problem(["bash", "-c", "my-agent {prompt}"])
    assert message.startswith("the placeholder {prompt} is put unquoted into the script of "
                               "'bash -c'")


@pytest.mark.parametrize("command", [
    "my-agent {prompt}", 'my-agent "$(cat {prompt_file})"', 'echo "${HOME}" {stream}',
    ["sh", "-c", 'my-agent "$1"', "sh", "{prompt}"], ["my-agent", "--msg={prompt}"],
])
def test_safe_placeholders_are_accepted(command: object) -> None:
    text = yaml.safe_dump({"version": 1, "streams": {"a": {"files": ["x"],
                                                           "agent": {"command": command}}}})
    assert parse_plan(text, Path("p.yaml")).streams[0].agent.command is not None


def test_check_says_why_on_the_command_line(repo: Repo) -> None:
    plan = agent_plan({"a": {"files": ["src/**"], "agent": {"command": 'x "{prompt}"'}}})
    result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
    lines = result.error_lines()
    assert any("streams.a.agent.command: the placeholder {prompt} is inside double quotes"
               in line for line in lines), lines


def test_a_hostile_commit_message_reaches_the_dependant_as_text(repo: Repo,
                                                                 tmp_path: Path) -> None:
    # The first stream's commit subject lands in the second one's prompt, and the second
    # one's agent is a shell command with a bare {prompt}: wtr's quoting keeps it text.
    marker = tmp_path / "pwned"
    subject = (f"work $(touch {marker}1) `touch {marker}2` '; touch {marker}3; ' "
               f"\"; touch {marker}4; \"")
    writer = tmp_path / "writer.py"
    writer.write_text("import subprocess, pathlib\n"
                      "pathlib.Path('src/db/x.py').write_text('x')\n"
                      "subprocess.run(['git', 'add', '-A'], check=True)\n"
                      f"subprocess.run(['git', 'commit', '-qm', {subject!r}], check=True)\n")
    seen = tmp_path / "seen.txt"
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "agent": {"command": [sys.executable, str(writer)]}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "agent": {"command": f"printf '%s' {{prompt}} > {seen}"}},
    })
    run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "db")["status"] == "succeeded", stream_of(doc, "db")["failure"]
    assert stream_of(doc, "api")["status"] == "succeeded", stream_of(doc, "api")["failure"]
    assert subject in seen.read_text()
    assert not list(tmp_path.glob("pwned*"))
