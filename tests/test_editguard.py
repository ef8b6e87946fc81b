"""The edit-time ownership check and the hook Claude Code calls with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worktree_runner.editguard import Scope, ScopeError, refusal, target_of


@pytest.fixture
def scope(tmp_path: Path) -> Scope:
    worktree = tmp_path / "wt"
    (worktree / "src" / "api").mkdir(parents=True)
    state = tmp_path / "state"
    state.mkdir()
    return Scope("api", worktree, ("src/api/**", "docs/api.md"), (state,))


def write(path: Path | str, tool: str = "Write") -> dict[str, object]:
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    return {"hook_event_name": "PreToolUse", "tool_name": tool,
            "tool_input": {key: str(path), "content": "x"}}


@pytest.mark.parametrize("tool", ["Write", "Edit", "MultiEdit", "NotebookEdit"])
def test_a_write_inside_the_streams_patterns_may_run(scope: Scope, tool: str) -> None:
    assert refusal(scope, write(scope.worktree / "src/api/new/handler.py", tool)) is None
    assert refusal(scope, write(scope.worktree / "docs/api.md", tool)) is None


@pytest.mark.parametrize("tool", ["Write", "Edit", "MultiEdit", "NotebookEdit"])
def test_a_write_to_another_file_of_the_worktree_is_refused_with_what_to_do(
        scope: Scope, tool: str) -> None:
    reason = refusal(scope, write(scope.worktree / "README.md", tool))
    assert reason is not None
    assert reason.startswith("README.md is not yours: stream 'api' owns only "
                             "src/api/**, docs/api.md")
    assert "Leave it unchanged" in reason and "report" in reason
    assert 'wtr request README.md --what "the change" --why "what it is for"' in reason


def test_relative_paths_are_read_from_the_calls_cwd(scope: Scope) -> None:
    call = {**write("src/api/x.py"), "cwd": str(scope.worktree)}
    assert refusal(scope, call) is None
    call = {**write("../wt/src/web/x.py"), "cwd": str(scope.worktree / "src")}
    assert refusal(scope, call) is not None


def test_git_metadata_and_the_worktree_itself_are_never_the_streams(scope: Scope) -> None:
    wide = Scope("all", scope.worktree, ("**",), ())
    assert refusal(wide, write(scope.worktree / ".git")) is not None
    assert refusal(wide, write(scope.worktree / ".git/hooks/pre-commit")) is not None
    assert refusal(wide, write(scope.worktree)) is not None
    assert refusal(wide, write(scope.worktree / "any/file.txt")) is None


def test_outside_the_worktree_only_the_state_folder_may_be_written(
        scope: Scope, tmp_path: Path) -> None:
    assert refusal(scope, write(scope.elsewhere[0] / "report.md")) is None
    assert refusal(scope, write("/tmp/scratch.txt")) is not None
    reason = refusal(scope, write(tmp_path / "main-checkout" / "src/api/x.py"))
    assert reason is not None and "outside your worktree" in reason


def test_a_symlink_in_the_worktree_does_not_lead_out_of_it(scope: Scope, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, scope.worktree / "src" / "api" / "link")
    reason = refusal(scope, write(scope.worktree / "src/api/link/x.py"))
    assert reason is not None and "outside your worktree" in reason


def test_tools_that_write_no_file_are_not_looked_at(scope: Scope) -> None:
    assert refusal(scope, {"tool_name": "Bash", "tool_input": {"command": "rm -rf /"}}) is None
    assert refusal(scope, {"tool_name": "Read", "tool_input": {"file_path": "/etc/x"}}) is None
    assert target_of({"tool_name": "Write", "tool_input": "nonsense"}) is None
    assert target_of({"tool_name": "Write", "tool_input": {"file_path": ""}}) is None


def test_the_scope_file_round_trips_and_a_bad_one_is_one_error(scope: Scope,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "scope.json"
    path.write_text(scope.dump())
    assert Scope.load(path) == scope
    path.write_text("{")
    with pytest.raises(ScopeError, match="cannot read the scope file"):
        Scope.load(path)
    with pytest.raises(ScopeError):
        Scope.load(tmp_path / "missing.json")


def hook(scope_file: Path, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worktree_runner", "hook",
                           "claude-pre-tool-use", "--scope", str(scope_file)],
                          input=stdin, capture_output=True, text=True, check=False)


def test_the_hook_exits_2_with_the_reason_on_stderr_when_it_refuses(
        scope: Scope, tmp_path: Path) -> None:
    scope_file = tmp_path / "scope.json"
    scope_file.write_text(scope.dump())
    refused = hook(scope_file, json.dumps(write(scope.worktree / "README.md")))
    assert refused.returncode == 2
    assert refused.stderr.startswith("README.md is not yours") and refused.stdout == ""
    allowed = hook(scope_file, json.dumps(write(scope.worktree / "src/api/a.py")))
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, "", "")


def test_a_hook_that_cannot_decide_lets_the_call_run_and_says_why(
        scope: Scope, tmp_path: Path) -> None:
    # Exit 1 is a hook error to Claude Code: shown, the call goes on; the check after the
    # attempt still catches a write outside the files.
    broken = hook(tmp_path / "missing.json", json.dumps(write("/x")))
    assert broken.returncode == 1 and "cannot read the scope file" in broken.stderr
    scope_file = tmp_path / "scope.json"
    scope_file.write_text(scope.dump())
    garbled = hook(scope_file, "not json")
    assert garbled.returncode == 1 and garbled.stderr.startswith("wtr hook:")


def test_the_hook_command_is_not_in_the_main_help() -> None:
    shown = subprocess.run([sys.executable, "-m", "worktree_runner", "--help"],
                           capture_output=True, text=True, check=True)
    assert " hook " not in shown.stdout
