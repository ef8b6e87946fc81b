"""The real Claude Code (pinned) against a scripted Anthropic server, through ``wtr run``,
then ``wtr attach`` in tmux as a person would use it; and a budget stop read from its live
``stream-json`` usage.

The attached session must be the stream's own: Claude Code's terminal interface opens in
the stream's worktree, resumed (``--resume``) on the conversation of the headless attempt,
so the model server receives that conversation, with the person's new message, in the
next request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conformance.harness import cli_bin_dir
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.conformance.protocols.anthropic import PROTOCOL
from tests.gitrepo import Repo, run_wtr
from tests.runhelp import status, stream_of, wait_for
from tests.tmux import Terminal, terminal, wtr_command
from worktree_runner import procs
from worktree_runner.presets import PRESETS

CLAUDE = PRESETS["claude"]
KEY = "sk-test-attach-0123456789"
FIRST_ANSWER = "FIRST-RUN-DONE: committed src/api/x.py"
TURNS = [
    {"shell": "mkdir -p src/api && echo 'x = 1' > src/api/x.py && git add src/api && "
              "git commit -q -m 'api: x' && echo COMMITTED"},
    {"text": FIRST_ANSWER},
]


def _environment(server: ModelServer, home: Path) -> dict[str, str]:
    """Claude Code on PATH, pointed at the scripted server as a user does it: variables."""
    return {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": KEY,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1", "DISABLE_AUTOUPDATER": "1", "HOME": str(home),
            "PATH": f"{cli_bin_dir('claude')}{os.pathsep}{os.environ['PATH']}"}


def _plan(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"version": 1, "agent": {"preset": "claude", "timeout": 300},
            "streams": {"api": {"files": ["src/api/**"], "prompt": "Add src/api/x.py.",
                                **(extra or {})}}}


def _run(repo: Repo, plan: dict[str, Any], env: dict[str, str]) -> int:
    done = subprocess.run([sys.executable, "-m", "worktree_runner", "run",
                           str(repo.write_plan(plan))], cwd=repo.path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def _seen_before(home: Path, worktree: str) -> None:
    """What a person who has used Claude Code here before has answered once already: its
    first-start questions (theme, this API key, trusting the folder)."""
    config = {"hasCompletedOnboarding": True, "theme": "dark", "bypassPermissionsModeAccepted":
              True, "customApiKeyResponses": {"approved": [KEY[-20:]],
                                              "rejected": []},
              "projects": {worktree: {"hasTrustDialogAccepted": True,
                                      "hasCompletedProjectOnboarding": True}}}
    (home / ".claude.json").write_text(json.dumps(config))


def test_attach_resumes_the_streams_claude_session_in_its_worktree(repo: Repo,
                                                                    tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    with ModelServer(Script(TURNS), [PROTOCOL]) as server:
        env = _environment(server, home)
        assert _run(repo, _plan(), env) == 0
        api = stream_of(status(repo), "api")
        session = CLAUDE.session(run_wtr("logs", "api", cwd=repo.path).stdout)
        assert session and api["status"] == "succeeded"
        _seen_before(home, api["worktree"])
        path = f"{wtr_command(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
        with terminal(repo.path, {**env, "PATH": path}) as t:
            t.type("wtr attach api")
            shown = t.wait_for(FIRST_ANSWER, timeout=90)  # the resumed conversation
            assert f"session {session} in {api['worktree']}" in shown
            t.submit("SECOND-QUESTION-FROM-A-PERSON")
            t.wait_for(FIRST_ANSWER, after=1, timeout=90)  # the model's answer to it
            # The same conversation: the headless attempt's prompt and tool output with it
            # (its side requests, a title for instance, carry the new message alone).
            asked = _asked(server, "SECOND-QUESTION-FROM-A-PERSON")
            assert [b for b in asked if "# Task: stream 'api'" in b and "COMMITTED" in b
                    and api["worktree"] in b], asked
            _leave_claude(t)
    attached = stream_of(status(repo), "api")["attached"]
    assert [(a["program"], a["session"], a["took_over"]) for a in attached] == [
        ("claude", session, False)]


def test_claude_past_its_token_budget_is_stopped_from_its_live_usage(repo: Repo) -> None:
    # Each answer says it used 1,200 input tokens; the budget allows two answers, the
    # script asks for ten, a second apart: stopped soon after the third answer's usage
    # shows in its stream-json, long before its result record.
    turns = [{"shell": f"sleep 1 && echo step {n}"} for n in range(10)] + [
        {"text": "never reached"}]
    budget = 2 * (INPUT_TOKENS + OUTPUT_TOKENS) + 1
    with ModelServer(Script(turns), [PROTOCOL]) as server:
        code = _run(repo, _plan({"budget": {"tokens": budget}}),
                    _environment(server, Path(os.environ["HOME"])))
        asked = len([r for r in server.requests if "echo step" in r["body"]
                     or "# Task: stream" in r["body"]])
    assert code == 1
    api = stream_of(status(repo), "api")
    assert api["failure"]["kind"] == "budget", api["failure"]
    assert f"tokens of {budget:,}" in api["failure"]["message"]
    assert asked < 10  # stopped while it ran
    spent = api["usage"]["input_tokens"] + api["usage"]["output_tokens"]
    assert budget < spent <= 5 * (INPUT_TOKENS + OUTPUT_TOKENS), api["usage"]
    text = run_wtr("status", cwd=repo.path).stdout
    assert f"(budget {budget:,} tokens)" in text


def _claude_processes(stream_dir: Path) -> list[str]:
    """Command lines of the processes the stream's Claude Code runs (its own and its tools')."""
    found = []
    for pid in procs.tagged_processes(stream_dir.parent.parent, "api"):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                         .decode(errors="replace"))
        except OSError:
            continue
    return found


def test_a_running_claude_is_handed_over_and_never_runs_twice(repo: Repo,
                                                              tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    turns = [{"shell": "sleep 300 && echo SLEPT"}, {"text": "never reached"}]
    with ModelServer(Script(turns), [PROTOCOL]) as server:
        env = _environment(server, home)
        runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                                   str(repo.write_plan(_plan()))], cwd=repo.path,
                                  env={**os.environ, **env}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: any("sleep 300" in c for c in _running(repo)), timeout=120)
            api = stream_of(status(repo), "api")
            _seen_before(home, api["worktree"])
            path = f"{wtr_command(tmp_path / 'bin')}{os.pathsep}{env['PATH']}"
            with terminal(repo.path, {**env, "PATH": path}) as t:
                t.type("wtr attach api --take-over")
                t.wait_for("leave it to return", timeout=90)
                # The headless claude -p and its tool are gone; only the person's claude runs.
                running = _running(repo)
                assert not [c for c in running if " -p " in c or "sleep 300" in c], running
                assert [c for c in running if "--resume" in c], running
                assert stream_of(status(repo), "api")["status"] == "running"
                t.submit("A-PERSON-TOOK-OVER")
                wait_for(lambda: _asked(server, "A-PERSON-TOOK-OVER"), timeout=90)
                # The same conversation: the headless attempt's prompt comes with it (its
                # side requests, a title for instance, carry the new message alone).
                wait_for(lambda: [b for b in _asked(server, "A-PERSON-TOOK-OVER")
                                  if "# Task: stream 'api'" in b], timeout=90)
                _leave_claude(t)
            _, err = runner.communicate(timeout=120)
        finally:
            if runner.poll() is None:
                runner.kill()
    assert runner.returncode == 0, err  # handed over, not failed; then checked
    api = stream_of(status(repo), "api")
    assert api["status"] == "succeeded" and api["attempts"] == 2  # its agent's, the person's
    assert [e["kind"] for e in api["attempt_log"]] == ["agent", "attach"]
    assert api["attempt_log"][1]["resumed"] == api["session"]
    assert [(a["took_over"], a["program"]) for a in api["attached"]] == [(True, "claude")]
    assert not _running(repo)


def _running(repo: Repo) -> list[str]:
    folders = list(repo.path.glob(".git/worktree-runner/runs/*/streams/api"))
    return _claude_processes(folders[0]) if folders else []


def _asked(server: ModelServer, text: str) -> list[str]:
    return [r["body"] for r in server.requests if text in r["body"]]


def _leave_claude(t: Terminal) -> None:
    """Leave Claude Code as a person does: Esc stops what it is doing, Ctrl-C twice exits."""
    t.keys("Escape")
    for _ in range(5):
        t.keys("C-c")
        time.sleep(0.3)
        t.keys("C-c")
        deadline = time.monotonic() + 2  # it may take a moment to exit
        while time.monotonic() < deadline:
            if "wtr: left api (exit" in t.screen():
                return
            time.sleep(0.1)
    t.wait_for("wtr: left api (exit", timeout=30)
