"""Crashes, Ctrl-C, resume, retry, accept, clean and locks: real processes, real repositories."""

from __future__ import annotations

import functools
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import runhelp
from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, alive, records, status, stream_of


def start_runner(repo: Repo, plan: dict, env: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan))],
        cwd=repo.path, env={**os.environ, **(env or {})}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


wait_for = functools.partial(runhelp.wait_for, timeout=30.0)


def slow_streams(rec: Path, seconds: str = "3", gate: Path | None = None) -> dict:
    """db and ui sleep ``seconds`` (or wait at ``gate``); api depends on db."""
    wait = {"AGENT_WAIT_FOR": str(gate)} if gate else {"AGENT_SLEEP": seconds}
    return {
        name: {"files": [f"src/{name}/**"],
               "env": {"AGENT_RECORD": str(rec), **wait,
                       "AGENT_WRITE": f"src/{name}/work.py={name.upper()} = 1"}}
        for name in ("db", "ui")
    } | {"api": {"files": ["src/api/**"], "depends_on": ["db"],
                 "env": {"AGENT_RECORD": str(rec), "AGENT_WRITE": "src/api/work.py=API = 1"}}}


def test_kill_9_mid_run_then_resume_adopts_the_surviving_agents(repo: Repo, rec: Path,
                                                              tmp_path: Path) -> None:
    gate = tmp_path / "gate"  # db and ui work on until the resume has taken them up
    runner = start_runner(repo, agent_plan(slow_streams(rec, gate=gate)))
    wait_for(lambda: len(records(rec, "db")) == 1 and len(records(rec, "ui")) == 1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert status(repo)["state"] == "interrupted"  # its runner is gone
    result = runhelp.resume_adopting(repo, gate, ("db", "ui"))
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    assert doc["counts"]["succeeded"] == 3 and doc["state"] == "finished"
    # no agent was started twice for a stream whose agent survived
    assert len(records(rec, "db")) == 1 and len(records(rec, "ui")) == 1
    for name in ("db", "ui", "api"):
        branch = stream_of(doc, name)["branch"]
        assert repo.git("log", "-1", "--format=%s", branch) == f"{name}: work"
    assert repo.git("show", f"{stream_of(doc, 'api')['branch']}:src/db/work.py") == "DB = 1"


@pytest.mark.parametrize("step", ["after_branch", "after_worktree", "agent_starting",
                                  "agent_running", "agent_ended", "ownership_check"])
def test_resume_recovers_from_a_kill_at_each_step(repo: Repo, rec: Path, step: str) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_SLEEP": "0.5",
                                      "AGENT_WRITE": "src/db/models.py=DB = 3",
                                      "AGENT_COMMIT": "0"}},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"],
                               "env": {"AGENT_WRITE": "src/api/orders.py=API = 3"}}})
    crashed = run_wtr("run", repo.write_plan(plan), cwd=repo.path, env={"WTR_FAULT": f"{step}:db"})
    assert crashed.returncode == -signal.SIGKILL
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    assert doc["counts"]["succeeded"] == 2
    db = stream_of(doc, "db")
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 3"
    assert db["changed_files"] == ["src/db/models.py"]
    # the agent ran exactly once: adopted or checked when it had started before the kill
    assert len(records(rec, "db")) == 1
    assert len(repo.git("worktree", "list").splitlines()) == 3


def test_ctrl_c_stops_agents_exits_130_and_resume_completes(repo: Repo, rec: Path) -> None:
    streams = {"db": {"files": ["src/db/**"],
                      "env": {"AGENT_RECORD": str(rec), "AGENT_HANG": "1",
                              "AGENT_HANG_ATTEMPTS": "1"}},
               "ui": {"files": ["src/ui/**"],
                      "env": {"AGENT_WRITE": "src/ui/view.py=UI = 1"}}}
    runner = start_runner(repo, agent_plan(streams), env={"WTR_KILL_GRACE": "1"})
    wait_for(lambda: bool(records(rec, "db", "child")))
    child = records(rec, "db", "child")[0]
    runner.send_signal(signal.SIGINT)
    _, stderr = runner.communicate(timeout=30)
    assert runner.returncode == 130, stderr
    assert "wtr resume" in stderr
    assert not alive(child["child_pid"]) and not alive(child["pid"])
    doc = status(repo)
    assert doc["state"] == "interrupted"
    assert stream_of(doc, "db")["failure"]["kind"] == "interrupted"
    # resume: the interrupted stream runs again, from the plan as the run stored it; this
    # second attempt of its agent finishes
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert status(repo)["counts"]["succeeded"] == 2
    assert len(records(rec, "db")) == 2


def test_a_second_runner_or_merge_on_an_active_run_is_refused(repo: Repo, rec: Path) -> None:
    runner = start_runner(repo, agent_plan(slow_streams(rec, "60")), {"WTR_KILL_GRACE": "1"})
    wait_for(lambda: len(records(rec, "db")) == 1)
    try:
        second = run_wtr("resume", cwd=repo.path)
        assert second.returncode == 1 and "being worked on by another wtr" in second.stderr
        # a merge during a run is handed to the runner, which has nothing to land yet
        merging = run_wtr("merge", cwd=repo.path)
        assert merging.returncode == 1 and "its runner does this merge" in merging.stderr
        assert "nothing to merge" in merging.stderr
        cleaning = run_wtr("clean", cwd=repo.path)
        assert cleaning.returncode == 1 and "being worked on" in cleaning.stderr
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=60)
    assert runner.returncode == 130


def test_clean_after_landing_keeps_unmerged_work_and_rescues_edits(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 4"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 4",
                                                "AGENT_EXIT": "1"}},
    })
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    doc = status(repo)
    db, ui = stream_of(doc, "db"), stream_of(doc, "ui")
    (Path(db["worktree"]) / "src/db/models.py").write_text("DB = 'hand edit'\n")
    (Path(db["worktree"]) / "src/db/new_file.py").write_text("NEW = 1\n")
    before = repo.refs()
    dry = run_wtr("clean", "--dry-run", cwd=repo.path)
    assert dry.returncode == 0 and "would remove worktree" in dry.stdout
    assert repo.refs() == before and Path(db["worktree"]).exists()
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert doc["run"] not in repo.git("worktree", "list")
    branches = repo.git("branch", "--list", "wtr/*")
    assert db["branch"] not in branches          # merged: deleted
    assert ui["branch"] in branches              # failed, work nowhere else: kept
    assert "kept branch" in result.stdout
    rescue = f"refs/worktree-runner/rescue/{doc['run']}/db"
    assert rescue in result.stdout
    assert repo.git("show", f"{rescue}:src/db/models.py") == "DB = 'hand edit'"
    assert repo.git("show", f"{rescue}:src/db/new_file.py") == "NEW = 1"
    # --force deletes the unmerged branch only after pinning its tip
    ui_tip = repo.head(ui["branch"])
    forced = run_wtr("clean", "--force", cwd=repo.path)
    assert forced.returncode == 0, forced.stderr
    assert repo.head(f"refs/worktree-runner/archive/{doc['run']}/ui") == ui_tip
    assert ui["branch"] not in repo.git("branch", "--list", "wtr/*")


def test_retry_and_accept(repo: Repo, rec: Path) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_RECORD": str(rec),
                                                "AGENT_FAIL_ATTEMPTS": "1",
                                                "AGENT_WRITE": "src/db/models.py=DB = 5"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "env": {"AGENT_WRITE": "src/api/orders.py=API = 5;README.md=out of scope"}},
        "docs": {"files": ["docs/**"], "depends_on": ["api"]},
    })
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    assert stream_of(status(repo), "api")["status"] == "blocked"
    not_failed = run_wtr("retry", "docs", cwd=repo.path)
    assert not_failed.returncode == 2 and "not failed" in not_failed.stderr
    retried = run_wtr("retry", "db", cwd=repo.path)
    assert retried.returncode == 1  # db now succeeds; api writes outside its files
    doc = status(repo)
    assert stream_of(doc, "db")["status"] == "succeeded"
    assert stream_of(doc, "db")["attempts"] == 2
    assert stream_of(doc, "api")["failure"]["kind"] == "ownership"
    assert stream_of(doc, "docs")["status"] == "blocked"
    accepted = run_wtr("accept", "api", "--reason", "README change reviewed", cwd=repo.path)
    assert accepted.returncode == 0, accepted.stderr
    api = stream_of(status(repo), "api")
    assert api["status"] == "succeeded"
    assert api["accepted"]["reason"] == "README change reviewed" and api["accepted"]["by"]
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert status(repo)["counts"]["succeeded"] == 3
    again = run_wtr("accept", "api", cwd=repo.path)  # --reason is optional (docs/commands.md)
    assert again.returncode == 2 and "not failed" in again.stderr


def _locker(repo: Repo, log: Path, hold: float) -> subprocess.Popen[str]:
    script = (f"echo start $$ $(date +%s.%N) >> {log}; sleep {hold}; "
              f"echo end $$ $(date +%s.%N) >> {log}")
    return subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "lock", "shared", "--timeout", "30", "--",
         "sh", "-c", script], cwd=repo.path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_lock_holders_never_overlap(repo: Repo, tmp_path: Path) -> None:
    log = tmp_path / "lock.log"
    lockers = [_locker(repo, log, 0.3) for _ in range(4)]
    for locker in lockers:
        locker.communicate(timeout=60)
        assert locker.returncode == 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 8
    spans: dict[str, list[float]] = {}
    for _kind, pid, at in events:
        spans.setdefault(pid, []).append(float(at))
    ordered = sorted(spans.values())
    for first, second in itertools.pairwise(ordered):
        assert first[1] <= second[0]


def test_a_killed_lock_holder_does_not_leave_the_lock_stuck(repo: Repo, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "lock", "db", "--", "sleep", "30"],
        cwd=repo.path, env={**os.environ, "WTR_STREAM": "api", "WTR_RUN": "r-1"})
    wait_for(lambda: (repo.path / ".git/worktree-runner/locks/db.holder").exists())
    waiting = run_wtr("lock", "db", "--timeout", "1", "--", "true", cwd=repo.path)
    assert waiting.returncode == 1
    assert "stream api of run r-1" in waiting.stderr and f"pid {holder.pid}" in waiting.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    after = run_wtr("lock", "db", "--timeout", "5", "--", "sh", "-c", "exit 4", cwd=repo.path)
    assert after.returncode == 4


def test_worktree_that_vanished_is_recreated_on_resume(repo: Repo, rec: Path) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 6"}}})
    crashed = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                      env={"WTR_FAULT": "after_worktree"})
    assert crashed.returncode == -signal.SIGKILL
    worktree = next(p for p in (repo.path.parent / "repo.worktrees").glob("*/db"))
    git(repo.path, "worktree", "remove", "--force", str(worktree))
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 0, result.stderr + result.stdout
    assert worktree.exists()
    assert repo.git("show", f"{stream_of(status(repo), 'db')['branch']}:src/db/models.py") \
        == "DB = 6"


def test_clean_all_cleans_every_finished_run_and_only_those(repo: Repo, rec: Path) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 7"}}})
    for _ in range(2):
        assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    crashed = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                      env={"WTR_FAULT": "after_worktree"})
    assert crashed.returncode == -signal.SIGKILL
    result = run_wtr("clean", "--all", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert "run plan-1:" in result.stdout and "run plan-2:" in result.stdout
    assert "plan-3" not in result.stdout
    worktrees = repo.git("worktree", "list")
    assert "plan-1" not in worktrees and "plan-2" not in worktrees and "plan-3" in worktrees
    # unmerged work of the cleaned runs stays on its branches
    assert "wtr/plan-1/db" in repo.git("branch", "--list", "wtr/*")
    again = run_wtr("clean", "--all", cwd=repo.path)
    assert again.returncode == 0 and "no finished run to clean" in again.stdout
