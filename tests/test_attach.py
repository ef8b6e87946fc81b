"""``wtr attach``, driven as a person would: keys typed into a tmux window, the window read.

A ``command`` agent's stream opens a shell in its worktree with the stream's environment;
a running stream is followed, and ``--take-over`` stops its agent (never two alive at
once), hands the session to the person, and the runner checks the work when they leave.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, alive, records, status, stream_of, wait_for
from tests.tmux import ROOT, terminal, wtr_command
from worktree_runner import procs


def _finished_run(repo: Repo, tmp_path: Path) -> None:
    plan = agent_plan({"api": {"files": ["src/api/**"],
                               "env": {"AGENT_WRITE": "src/api/orders.py=ORDERS = [1]"},
                               "verify": ["test -f src/api/done.txt"]}})
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 1, result.stderr  # its verify wants a file the agent forgot


def test_a_command_agents_stream_opens_a_shell_in_its_worktree(repo: Repo,
                                                                tmp_path: Path) -> None:
    _finished_run(repo, tmp_path)
    worktree = stream_of(status(repo), "api")["worktree"]
    with terminal(repo.path, {"PATH": f"{wtr_command(tmp_path / 'bin')}:/usr/bin:/bin"}) as t:
        t.type("wtr attach api")
        t.wait_for("leave it to return")
        t.type('pwd; echo "stream=$WTR_STREAM branch=$WTR_BRANCH PWD=$PWD"')
        shown = t.wait_for("stream=api branch=wtr/")
        assert f"\n{worktree}\n" in shown  # pwd, in the stream's worktree
        assert f"PWD={worktree}" in shown
        t.type("echo done > src/api/done.txt && git add -A && git commit -qm 'the file'")
        t.type("exit 3")
        t.wait_for("wtr: left api (exit 3)")
    attached = stream_of(status(repo), "api")["attached"]
    assert [(a["kind"], a["took_over"], a["exit_code"]) for a in attached] == [
        ("attach", False, 3)]
    assert attached[0]["program"] == "/bin/sh"
    # No runner held the run: the session is an attempt of the stream's own, too.
    api = stream_of(status(repo), "api")
    assert api["attempts"] == 2
    assert [(e["attempt"], e["kind"]) for e in api["attempt_log"]] == [(1, "agent"),
                                                                      (2, "attach")]
    assert api["attempt_log"][-1]["exit_code"] == 3
    # What the person committed is the stream's work: a retry checks it and succeeds.
    retried = run_wtr("retry", "api", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    assert stream_of(status(repo), "api")["status"] == "succeeded"


def test_a_running_agent_is_followed_then_handed_over_and_never_runs_twice(
        repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"api": {"files": ["src/api/**"],
                               "env": {"AGENT_RECORD": str(rec), "AGENT_CHATTY_HANG": "1"}}})
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: records(rec, "api", "child"))
        agent = records(rec, "api", "child")[0]
        worktree = stream_of(status(repo), "api")["worktree"]
        with terminal(repo.path, {"PATH": f"{wtr_command(tmp_path / 'bin')}:/usr/bin:/bin"}) \
                as t:
            t.type("wtr attach api")
            t.wait_for("still working")  # its output, live
            t.wait_for("--take-over")
            t.keys("C-c")
            t.type("wtr attach api --take-over")
            t.wait_for("leave it to return")
            # The agent and everything it started are gone before the session opens.
            assert not alive(agent["pid"]) and not alive(agent["child_pid"])
            stream_dir = repo.path / ".git/worktree-runner/runs"
            assert not [a for d in stream_dir.glob("*/streams/api")
                        for a in procs.live_agents(d)]
            t.type("pwd")
            t.wait_for(f"\n{worktree}\n")
            assert stream_of(status(repo), "api")["status"] == "running"  # the runner waits
            t.type("echo by hand > src/api/hand.py && git add -A && git commit -qm 'by hand'")
            t.type("exit")
            t.wait_for("wtr: left api (exit 0); the runner now checks its work")
        _, err = runner.communicate(timeout=60)
        assert runner.returncode == 0, err
    finally:
        if runner.poll() is None:
            runner.kill()
    api = stream_of(status(repo), "api")
    assert api["status"] == "succeeded" and api["failure"] is None
    assert api["changed_files"] == ["src/api/hand.py"]
    assert [(a["took_over"], a["exit_code"]) for a in api["attached"]] == [(True, 0)]
    # The runner recorded the hand-over: the agent's attempt, then the person's, checked.
    assert api["attempts"] == 2
    assert [(e["kind"], e.get("handed_over", False), e["failure"])
            for e in api["attempt_log"]] == [("agent", True, None), ("attach", False, None)]
    assert all(e["finished_at"] for e in api["attempt_log"])
    # What ended is the person's session (exit 0), not an agent killed by a signal (143).
    assert api["exit_code"] == 0 and api["attempt_log"][-1]["exit_code"] == 0
    assert len(records(rec, "api")) == 1  # no second agent was started
    log = run_wtr("logs", "api", cwd=repo.path).stdout
    assert "handed over to a person" in log
    assert "--- attempt 2 ended: exit code 0; succeeded ---" in log and "143" not in log


def test_a_stream_without_worktree_says_what_to_do(repo: Repo, tmp_path: Path) -> None:
    _finished_run(repo, tmp_path)
    worktree = Path(stream_of(status(repo), "api")["worktree"])
    git(repo.path, "worktree", "remove", "--force", str(worktree))
    result = run_wtr("attach", "api", cwd=repo.path)
    line = result.one_line_error(2)
    assert "api has no worktree any more" in line and "'wtr retry api'" in line
    assert "nosuch" in run_wtr("attach", "nosuch", cwd=repo.path).one_line_error(2)


def test_a_stream_not_started_yet_has_nothing_to_attach_to(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "agent": {"command": ["false"]}},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"]}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    line = run_wtr("attach", "api", cwd=repo.path).one_line_error(2)
    assert "api has no worktree yet (it is blocked)" in line


def test_a_stream_a_live_runner_is_about_to_start_is_refused(repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_HANG": "1"}},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"]}})
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: records(rec, "db", "child"))
        line = run_wtr("attach", "api", cwd=repo.path).one_line_error(2)
        assert "api is about to start in the running run" in line
        assert "'wtr attach api --take-over'" in line
    finally:
        runner.terminate()
        runner.wait(timeout=60)
    assert stream_of(status(repo), "api")["attached"] == []


def _lines_until(mark: str, stream: IO[str] | None) -> Iterator[str]:
    """The lines of ``stream`` up to and with the first holding ``mark`` (or to its end)."""
    assert stream is not None
    for line in stream:
        yield line
        if mark in line:
            return


def test_a_running_stream_is_followed_from_the_end_of_its_log(repo: Repo) -> None:
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": {"command": (
        "yes LINE-OF-OUTPUT | head -c 40000; echo; echo TAIL-MARK; sleep 300")}}})
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: next(iter(repo.path.glob(
            ".git/worktree-runner/runs/*/streams/api/agent.log")), None) is not None)
        log = next(iter(repo.path.glob(".git/worktree-runner/runs/*/streams/api/agent.log")))
        wait_for(lambda: "TAIL-MARK" in log.read_text())
        follower = subprocess.Popen([sys.executable, "-m", "worktree_runner", "attach", "api"],
                                    cwd=repo.path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # It follows until the stream ends: read until the tail is shown, then stop it.
        watchdog = threading.Timer(60, follower.kill)
        watchdog.start()
        try:
            shown = "".join(_lines_until("TAIL-MARK", follower.stdout))
        finally:
            watchdog.cancel()
        follower.terminate()
        rest, err = follower.communicate(timeout=30)
        out = shown + rest
    finally:
        runner.terminate()
        runner.wait(timeout=60)
    assert "following its output" in err and "'wtr logs api' shows it all" in err
    assert out.rstrip().endswith("TAIL-MARK")
    assert 16 * 1024 - 100 < len(out) <= 16 * 1024 + 100  # its end, not all 40 KB
