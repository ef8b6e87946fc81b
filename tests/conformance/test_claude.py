"""The claude preset against the real Claude Code (pinned) and a scripted Anthropic server.

Through ``wtr run`` in every variant (``harness.VARIANTS``); then the CLI alone, started
the way the preset starts it, for what the issue found broken: shell commands denied
under ``acceptEdits`` while the agent said it was done, ``bypassPermissions`` refused as
root, and the PreToolUse hook that refuses a write outside the stream's files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import harness
from tests.conformance.harness import (
    STREAMS,
    VARIANTS,
    cli_bin_dir,
    run_conformance,
    standard_turns,
)
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.conformance.protocols.anthropic import PROTOCOL
from tests.gitrepo import isolated_git_env
from worktree_runner.presets import PRESETS, StreamFacts
from worktree_runner.presets.claude import SCOPE_FILE, SETTINGS_FILE
from worktree_runner.procs import write_wtr_shim

CLAUDE = PRESETS["claude"]
SAMPLES = Path(__file__).parent / "samples"
OLD_ARGV = ("claude", "-p", "{prompt}", "--permission-mode", "acceptEdits")
HOOK_TURNS = [
    {"tool": "Read", "input": {"file_path": "{worktree}/README.md"}},
    {"tool": "Write", "input": {"file_path": "{worktree}/README.md", "content": "mine now\n"}},
]


def gateway(url: str, home: Path) -> dict[str, str]:
    """Claude Code pointed at a gateway as a user does it: variables only."""
    return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-test",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1"}


# -- through wtr run ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_claude_does_the_standard_work_through_wtr_run(variant: str) -> None:
    outcome = run_conformance("claude", variant, gateway)
    outcome.assert_standard()
    requests = len(standard_turns())  # one request per turn: 5 tool calls, 1 final text
    for name in STREAMS:
        usage = outcome.stream(name)["usage"]
        assert usage["input_tokens"] == requests * INPUT_TOKENS, usage
        assert usage["output_tokens"] == requests * OUTPUT_TOKENS, usage
        assert usage["turns"] == requests, usage
        assert usage["cost_usd"] > 0, usage  # Claude Code's own estimate, at list prices
        assert CLAUDE.denials(outcome.log(name)) == []


@pytest.mark.parametrize("variant", ["checkout", "sandbox"])
def test_a_write_outside_the_streams_files_is_refused_and_the_agent_is_told(
        variant: str) -> None:
    outcome = run_conformance("claude", variant, gateway, turns=HOOK_TURNS + standard_turns())
    outcome.assert_standard()
    sent = outcome.server.sent_back()
    assert "README.md is not yours: stream 'alpha' owns only src/alpha/**" in sent
    assert "README.md is not yours: stream 'beta' owns only src/beta/**" in sent
    for name in STREAMS:
        shown = outcome.git("show", f"wtr/{outcome.status['run']}/{name}:README.md")
        assert shown == "# conformance"
        warnings = [w["message"] for w in outcome.stream(name)["warnings"]
                    if w["kind"] == "denied"]
        assert len(warnings) == 1 and warnings[0].endswith("/README.md"), warnings


def test_a_commit_claude_makes_in_the_users_checkout_is_blamed_on_its_stream() -> None:
    """Its shell tool passes GIT_REFLOG_ACTION on: the commit is marked as the agent's in
    the user's checkout, never taken for the user's own (run/by_hand.py)."""
    main = '"$(git rev-parse --path-format=absolute --git-common-dir)/.."'
    turns = [{"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
                       "> src/{stream}/feature.py && git add src && git commit -qm work"},
             {"shell": f"cd {main} && git commit -q --allow-empty -m 'from {{stream}}'"},
             {"text": "REPORT {stream}: committed."}]
    outcome = run_conformance("claude", "checkout", gateway, turns=turns,
                              plan_extra={"max_parallel": 1})
    assert outcome.exit_code == 1, outcome.describe()
    for name in STREAMS:
        failure = outcome.stream(name)["failure"]
        assert failure["kind"] == "error" and "branch main moved" in failure["message"], failure
    assert not any(entry.get("by_hand") for entry in outcome.status["isolation"])
    reflog = outcome.git("reflog", "show", "--format=%gs", "HEAD")
    assert f"wtr-agent {outcome.status['run']}/alpha: from alpha" in reflog, reflog


def test_under_the_sandbox_a_read_only_home_is_no_obstacle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The sandbox variant keeps HOME under /tmp, which bubblewrap replaces by an empty
    # writable folder; a real HOME is read-only there, and Claude Code's shell tool
    # needs to write its config folder (session-env): CLAUDE_CONFIG_DIR moves it.
    monkeypatch.setattr(harness, "_in_tmp", harness._outside_tmp)
    outcome = run_conformance("claude", "sandbox", gateway)
    outcome.assert_standard()
    assert not (outcome.ws.home / ".claude").exists()


# -- the CLI alone, started as the preset starts it ----------------------------------------


def _facts(tmp_path: Path, as_root: bool) -> StreamFacts:
    worktree, state = tmp_path / "wt", tmp_path / "state"
    state.mkdir(parents=True)
    # The wtr the hook runs is the one under test, as the runner gives agents theirs: not
    # a .venv's beside the tests, missing in a checkout without one (the hook then fails,
    # and Claude Code lets the write through).
    wtr_bin = write_wtr_shim(tmp_path / "bin")
    return StreamFacts("alpha", worktree, state, worktree / ".git", worktree / ".git",
                       ("src/alpha/**",), wtr_bin, state, state / "locks", as_root)


def _repo(path: Path, env: dict[str, str]) -> None:
    path.mkdir()
    for argv in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"],
                 ["git", "commit", "-q", "-m", "initial"]):
        (path / "README.md").write_text("# repo\n")
        subprocess.run(argv, cwd=path, env=env, check=True)


def _claude(tmp_path: Path, turns: list[dict[str, Any]], argv: tuple[str, ...],
            env: dict[str, str], facts: StreamFacts) -> tuple[subprocess.CompletedProcess[str],
                                                              ModelServer]:
    base = {**os.environ, **isolated_git_env(tmp_path / "home")}
    _repo(facts.worktree, base)
    prompt = (f"# Task: stream 'alpha' of plan 'p'\n\n- You work in the git worktree "
              f"{facts.worktree}, on branch main. Stay in it.\n")
    bin_dir = cli_bin_dir("claude")
    with ModelServer(Script(turns), [PROTOCOL]) as server:
        run_env = {**base, **env, **gateway(server.url, tmp_path / "home"),
                   "PATH": f"{bin_dir}{os.pathsep}{facts.wtr_bin}{os.pathsep}{os.environ['PATH']}",
                   "PWD": str(facts.worktree)}
        done = subprocess.run([a.replace("{prompt}", prompt) for a in argv], cwd=facts.worktree,
                              env=run_env, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL, check=False)
    return done, server


def _launched(tmp_path: Path, turns: list[dict[str, Any]], as_root: bool = True
              ) -> tuple[subprocess.CompletedProcess[str], ModelServer, StreamFacts]:
    facts = _facts(tmp_path, as_root)
    launch = CLAUDE.launch(facts)
    for name, text in launch.files.items():
        (facts.state_dir / name).write_text(text)
    done, server = _claude(tmp_path, turns, launch.argv, dict(launch.env), facts)
    return done, server, facts


COMMIT_TURNS = [
    {"shell": "mkdir -p src/alpha && echo 'x = 1' > src/alpha/x.py && python3 -c 'print(6*7)'"},
    {"shell": "git add src/alpha && git commit -q -m 'alpha: x' && echo COMMITTED"},
    {"text": "Done: committed src/alpha/x.py, tests passed."},
]


def test_the_shell_runs_unattended_so_tests_and_commits_happen(tmp_path: Path) -> None:
    # Under the old --permission-mode acceptEdits both commands were denied
    # ("This command requires approval") and the agent still ended with "Done".
    done, server, facts = _launched(tmp_path, COMMIT_TURNS, as_root=os.geteuid() == 0)
    assert done.returncode == 0, done.stderr
    assert "COMMITTED" in server.sent_back() and "42" in server.sent_back()
    log = subprocess.run(["git", "log", "--format=%s"], cwd=facts.worktree,
                         capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0] == "alpha: x"
    assert CLAUDE.denials(done.stdout) == []
    assert CLAUDE.final_message(done.stdout) == "Done: committed src/alpha/x.py, tests passed."
    usage = CLAUDE.usage(done.stdout) or {}
    assert usage.pop("cost_usd", 0) > 0
    assert usage == {"input_tokens": 3 * INPUT_TOKENS, "output_tokens": 3 * OUTPUT_TOKENS,
                     "turns": 3}


def test_the_old_accept_edits_argv_denied_the_shell_and_says_so(tmp_path: Path) -> None:
    facts = _facts(tmp_path, as_root=False)
    argv = (*OLD_ARGV, "--output-format", "stream-json", "--verbose")
    done, _ = _claude(tmp_path, COMMIT_TURNS, argv, {}, facts)
    assert done.returncode == 0  # the silent success the issue reported
    assert [line.split(":")[0] for line in CLAUDE.denials(done.stdout)] == ["Bash", "Bash"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root is refused bypassPermissions")
def test_as_root_bypass_needs_is_sandbox_which_the_preset_sets(tmp_path: Path) -> None:
    facts = _facts(tmp_path, as_root=True)
    assert CLAUDE.launch(facts).env["IS_SANDBOX"] == "1"
    assert "IS_SANDBOX" not in CLAUDE.launch(_facts(tmp_path / "u", as_root=False)).env
    done, _ = _claude(tmp_path, COMMIT_TURNS, CLAUDE.argv, {}, facts)  # no IS_SANDBOX
    assert done.returncode != 0
    assert "cannot be used with root" in done.stderr


def test_the_hook_refuses_edits_outside_the_files_and_the_model_reads_why(
        tmp_path: Path) -> None:
    turns = [*HOOK_TURNS,
             {"tool": "Edit", "input": {"file_path": "{worktree}/README.md",
                                        "old_string": "repo", "new_string": "mine"}},
             {"tool": "Write", "input": {"file_path": "{worktree}/src/alpha/new.py",
                                         "content": "y = 2\n"}},
             {"text": "Left README.md alone."}]
    done, server, facts = _launched(tmp_path, turns, as_root=os.geteuid() == 0)
    assert done.returncode == 0, done.stderr
    assert (facts.worktree / "README.md").read_text() == "# repo\n"
    assert (facts.worktree / "src/alpha/new.py").read_text() == "y = 2\n"
    refusal = "README.md is not yours: stream 'alpha' owns only src/alpha/**"
    assert refusal in server.sent_back()
    assert [d.split(":")[0] for d in CLAUDE.denials(done.stdout)] == ["Write", "Edit"]


# -- the preset's facts and parsers ---------------------------------------------------------


def test_per_run_settings_go_to_the_state_folder_and_user_args_come_last(
        tmp_path: Path) -> None:
    facts = _facts(tmp_path, as_root=False)
    launch = CLAUDE.launch(facts)
    assert launch.argv[-2:] == ("--settings", str(facts.state_dir / SETTINGS_FILE))
    assert set(launch.files) == {SETTINGS_FILE, SCOPE_FILE}
    assert "--permission-mode" in launch.argv and "bypassPermissions" in launch.argv
    settings = json.loads(launch.files[SETTINGS_FILE])
    (hook,) = settings["hooks"]["PreToolUse"]
    assert set(hook["matcher"].split("|")) >= {"Write", "Edit", "NotebookEdit"}
    assert "claude-pre-tool-use --scope" in hook["hooks"][0]["command"]
    assert json.loads(launch.files[SCOPE_FILE])["patterns"] == ["src/alpha/**"]
    assert "CLAUDE_CONFIG_DIR" not in launch.env  # the user's own, login included
    sandboxed = CLAUDE.launch(dataclasses.replace(facts, sandbox=True))
    assert Path(sandboxed.env["CLAUDE_CONFIG_DIR"]).parent == facts.state_dir


def test_usage_final_message_and_denials_from_captured_output() -> None:
    denied = (SAMPLES / "claude-accept-edits-denied.jsonl").read_text()
    assert CLAUDE.usage(denied) == {"input_tokens": 4800, "output_tokens": 136,
                                    "cost_usd": pytest.approx(0.0274), "turns": 4}
    assert CLAUDE.final_message(denied) == "All done, tests passed."
    assert CLAUDE.denials(denied) == [
        "Bash: wtr progress 'x' --percent 10", "Bash: python3 -c 'print(1)'",
        "Bash: git add -A && git commit -q -m 'x: commit' && echo COMMITTED"]
    refused = (SAMPLES / "claude-hook-refused.jsonl").read_text()
    assert CLAUDE.denials(refused) == ["Write: /var/tmp/cl/repo/README.md",
                                       "Edit: /var/tmp/cl/repo/README.md",
                                       "Write: /var/tmp/cl/elsewhere.md"]


def test_output_without_a_result_record_says_nothing() -> None:
    assert CLAUDE.usage("") is None and CLAUDE.final_message("") is None
    partial = '{"type":"system","subtype":"init"}\nnot json\n'
    assert CLAUDE.usage(partial) is None and CLAUDE.denials(partial) == []
    error = json.dumps({"type": "result", "is_error": True, "result": "API Error: 500",
                        "num_turns": 1, "usage": {"input_tokens": 10}})
    assert CLAUDE.final_message(error) is None
    assert CLAUDE.usage(error) == {"input_tokens": 10, "output_tokens": None,
                                   "cost_usd": None, "turns": 1}
