"""Isolation that is physical: what an agent does outside its worktree is seen, reported,
blamed on the stream that did it, and never run by the runner's own git commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, alive, stream_of, wait_for

COMMON = '"$(git rev-parse --path-format=absolute --git-common-dir)"'


def shell_agent(script: str, **extra: Any) -> dict[str, Any]:
    return {"command": script, "timeout": 60, **extra}


def run(repo: Repo, plan: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    status = run_wtr("status", "--json", cwd=repo.path)
    assert status.returncode == 0, status.stderr
    return result, status.json()


def events(repo: Repo, run_id: str, name: str) -> list[dict[str, Any]]:
    path = repo.path / ".git" / "worktree-runner" / "runs" / run_id / "events.jsonl"
    lines = path.read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == name]


def test_runner_git_commands_never_run_hooks_an_agent_planted(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "hook-ran"
    hook = f'#!/bin/sh\necho "$0" >> {marker}\n'
    script = (
        f"for h in post-commit pre-commit commit-msg reference-transaction post-checkout; do "
        f"printf '%s' '{hook}' > {COMMON}/hooks/$h && chmod +x {COMMON}/hooks/$h; done; "
        "echo 'X = 1' > src/api/orders.py"  # left uncommitted: the runner commits it
    )
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "agent": shell_agent(script)},
        "ui": {"files": ["src/ui/**"], "depends_on": ["api"],
               "env": {"AGENT_WRITE": "src/ui/view.py=UI = 1", "AGENT_COMMIT": "0"}},
    })
    result, doc = run(repo, plan)
    assert not marker.exists(), marker.read_text()
    # the planting is reported, and blamed on the stream that did it
    api = stream_of(doc, "api")
    assert api["status"] == "failed", api
    assert api["failure"]["kind"] == "error"
    assert "hooks/post-commit" in api["failure"]["message"]
    assert "wtr accept api" in api["failure"]["message"]
    assert result.returncode == 1
    breaches = doc["isolation"]
    assert breaches and breaches[0]["stream"] == "api"
    assert any("post-commit" in c for c in breaches[0]["changes"])
    assert events(repo, doc["run"], "run.isolation_breach")


def test_agent_moving_the_users_branch_is_reported_and_the_old_tip_kept(repo: Repo) -> None:
    before = repo.head("main")
    script = ("echo 'X = 2' > src/api/orders.py && git commit -qam mine && "
              "git update-ref refs/heads/main HEAD && git tag -f sneaky HEAD")
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": shell_agent(script)}})
    result, doc = run(repo, plan)
    assert result.returncode == 1
    api = stream_of(doc, "api")
    assert api["status"] == "failed" and api["failure"]["kind"] == "error"
    message = api["failure"]["message"]
    assert "branch main moved" in message and "tag sneaky created" in message
    # the tip it had is kept under a ref of the runner, so the user can put it back
    kept = repo.git("for-each-ref", "--format=%(objectname)",
                    f"refs/worktree-runner/isolation/{doc['run']}/")
    assert before in kept.split()
    text = run_wtr("status", cwd=repo.path)
    assert "branch main moved" in text.stdout, text.stdout


def test_agent_writing_into_the_main_checkout_or_config_is_reported(repo: Repo) -> None:
    script = (f"echo hacked >> {COMMON}/../README.md && "
              f"git config --file {COMMON}/config core.sneaky yes && "
              "echo 'X = 3' > src/api/orders.py")
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": shell_agent(script)}})
    _, doc = run(repo, plan)
    message = stream_of(doc, "api")["failure"]["message"]
    assert "main checkout: README.md" in message
    assert ".git/config changed" in message


def test_looks_through_a_copy_of_the_index_see_staging_and_new_files_after_the_first(
        repo: Repo) -> None:
    """The looks read a copy of the main checkout's index that keeps git's untracked cache
    between them: a change only to the index (staging) and a new file in a folder the
    cache already knows are both seen, each blamed on the stream that made it."""
    (repo.path / "src/ui/view.py").write_text("VIEW = 'yours, not staged'\n")
    (repo.path / "notes").mkdir()
    (repo.path / "notes/todo.txt").write_text("yours\n")
    stage = f"git -C {COMMON}/.. add src/ui/view.py && echo 'X = 3' > src/api/orders.py"
    drop = f"echo new > {COMMON}/../notes/new.txt && echo 'M = 3' > src/db/models.py"
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "agent": shell_agent(stage)},
        "db": {"files": ["src/db/**"], "agent": shell_agent(drop), "depends_on": ["api"]},
    })
    _, doc = run(repo, plan)
    assert "main checkout: src/ui/view.py changed" in stream_of(doc, "api")["failure"]["message"]
    assert stream_of(doc, "db")["status"] == "blocked"
    plan["streams"]["db"].pop("depends_on")
    plan["streams"].pop("api")
    _, doc = run(repo, {**plan, "name": "again"})  # (its first look makes the cache)
    assert "main checkout: notes/new.txt added" in stream_of(doc, "db")["failure"]["message"]
    runs = repo.path / ".git" / "worktree-runner" / "runs"
    assert not list(runs.glob("*/guard-index*"))  # (each run's copy went with it)


def test_change_made_while_two_agents_ran_is_reported_on_the_run(repo: Repo, rec: Path,
                                                                tmp_path: Path) -> None:
    # api makes the change once ui's agent has started; ui goes on once it is made
    gate = tmp_path / "gate"
    script = (f"while [ ! -e {rec}/ui.1.start ]; do sleep 0.05; done; "
              f"echo hacked >> {COMMON}/../README.md; echo 'X = 4' > src/api/orders.py; "
              f"touch {gate}")
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "agent": shell_agent(script)},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 1",
                                               "AGENT_RECORD": str(rec),
                                               "AGENT_WAIT_FOR": str(gate)}},
    })
    result, doc = run(repo, plan)
    # both were running: nobody can be blamed for sure, so the run carries a warning
    assert result.returncode == 0, result.stderr
    assert doc["counts"]["succeeded"] == 2
    [breach] = doc["isolation"]
    assert breach["stream"] is None and sorted(breach["suspects"]) == ["api", "ui"]
    assert any("README.md" in c for c in breach["changes"])


def test_a_well_behaved_run_and_its_merge_report_nothing(repo: Repo) -> None:
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "env": {"AGENT_WRITE": "src/api/orders.py=A = 1"}},
        "ui": {"files": ["src/ui/**"], "depends_on": ["api"],
               "env": {"AGENT_WRITE": "src/ui/view.py=U = 1", "AGENT_COMMIT": "0"}},
    })
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert doc["isolation"] == []
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    assert run_wtr("status", "--json", cwd=repo.path).json()["isolation"] == []


# -- no process of a stream outlives it --------------------------------------------------------


def _escaping_child(pidfile: Path, out: Path) -> str:
    """Shell text starting a child in a session of its own that keeps writing ``out``."""
    loop = f"echo $$ > {pidfile}; while true; do echo tick >> {out}; sleep 0.1; done"
    return (f"setsid sh -c '{loop}' > /dev/null 2>&1 < /dev/null & "
            f"while [ ! -s {pidfile} ]; do sleep 0.05; done; ")


def _still_growing(*paths: Path) -> list[Path]:
    """Those of ``paths`` still growing over one second (all watched in the same second)."""
    sizes = [path.stat().st_size for path in paths]
    time.sleep(1.0)
    return [path for path, size in zip(paths, sizes, strict=True)
            if path.stat().st_size != size]


def test_setsid_child_of_a_finished_agent_is_killed(repo: Repo, tmp_path: Path) -> None:
    pidfile, out = tmp_path / "child.pid", tmp_path / "ticks"
    script = _escaping_child(pidfile, out) + "echo 'X = 5' > src/api/orders.py"
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": shell_agent(script)}})
    result, _ = run(repo, plan)
    assert result.returncode == 0, result.stderr
    pid = int(pidfile.read_text())
    assert not alive(pid), f"the agent's setsid child {pid} survived its stream"
    assert _still_growing(out) == []


def test_setsid_children_of_setup_verify_and_timed_out_agents_are_killed(
        repo: Repo, tmp_path: Path) -> None:
    files = {k: (tmp_path / f"{k}.pid", tmp_path / f"{k}.ticks") for k in ("setup", "verify",
                                                                          "agent")}
    plan = agent_plan(
        {"api": {"files": ["src/api/**"],
                 "verify": [_escaping_child(*files["verify"]) + "true"],
                 "agent": shell_agent(_escaping_child(*files["agent"]) + "sleep 600",
                                      timeout=3)},
         "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=U = 1"},
                "verify": [_escaping_child(*files["verify"]) + "true"]}},
        setup=[_escaping_child(*files["setup"]) + "true"],
    )
    _, doc = run(repo, plan)
    assert stream_of(doc, "api")["failure"]["kind"] == "timeout"
    assert stream_of(doc, "ui")["status"] == "succeeded", doc
    for what, (pidfile, _) in files.items():
        pid = int(pidfile.read_text())
        assert not alive(pid), f"the {what} command's setsid child {pid} survived"
    assert _still_growing(*(out for _, out in files.values())) == []


def _supervisor_of(script_mark: str) -> int | None:
    """The pid of the supervisor whose command line carries ``script_mark``."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"supervise.py") for arg in argv[:6]) and any(
                script_mark.encode() in arg for arg in argv):
            return int(cmdline.parent.name)
    return None


def _run_until_child(repo: Repo, plan: dict[str, Any], pidfile: Path,
                     mark: str) -> tuple[subprocess.Popen[str], int]:
    """Start `wtr run`, wait until the agent's child wrote its pid; the runner and the pid of
    the agent's supervisor (found by ``mark`` in the agent's command line)."""
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    supervisor = _supervisor_of(mark)
    assert supervisor is not None
    return runner, supervisor


def test_a_setsid_child_outlives_neither_a_killed_supervisor_nor_its_run(
        repo: Repo, tmp_path: Path) -> None:
    """kill -9 of the supervisor (a `pkill -9 -f` aimed at the agent hits it too: its
    command line ends with the agent's): the agent's setsid child is still found, by the
    run and stream its environment names, and stopped when the stream ends."""
    pidfile, out, lock = tmp_path / "child.pid", tmp_path / "ticks", tmp_path / "held.lock"
    mark = "chaos-mark-7d1"
    # the child holds a "lock" it removes when told to stop, as git does on SIGTERM
    loop = (f"trap 'rm -f {lock}; exit 0' TERM; touch {lock}; echo $$ > {pidfile}; "
            f"while true; do echo tick >> {out}; sleep 0.1; done")
    script = (f"setsid sh -c \"{loop}\" > /dev/null 2>&1 < /dev/null & "
              f"while [ ! -s {pidfile} ]; do sleep 0.05; done; sleep 600 # {mark}")
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": shell_agent(script)}})
    runner, supervisor = _run_until_child(repo, plan, pidfile, mark)
    os.kill(supervisor, signal.SIGKILL)
    _, err = runner.communicate(timeout=120)
    assert "Traceback" not in err, err
    child = int(pidfile.read_text())
    assert not alive(child), f"the agent's setsid child {child} survived its killed supervisor"
    assert _still_growing(out) == []
    assert not lock.exists(), "the child was killed before it could let go of its lock"


def test_a_resume_stops_what_a_killed_runner_and_supervisor_left_running(
        repo: Repo, tmp_path: Path) -> None:
    """Runner and supervisor both killed -9: the agent and its setsid child run on, owned
    by nobody. The resume stops them before it starts the stream's next attempt."""
    pidfile, out, marker = tmp_path / "child.pid", tmp_path / "ticks", tmp_path / "tried"
    mark = "chaos-mark-9e4"
    script = (f"if [ -e {marker} ]; then echo 'X = 5' > src/api/orders.py; exit 0; fi; "
              f"touch {marker}; " + _escaping_child(pidfile, out) + f"sleep 600 # {mark}")
    plan = agent_plan({"api": {"files": ["src/api/**"], "agent": shell_agent(script)}})
    runner, supervisor = _run_until_child(repo, plan, pidfile, mark)
    runner.kill()
    runner.wait()
    os.kill(supervisor, signal.SIGKILL)
    child = int(pidfile.read_text())
    assert alive(child)
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr
    assert not alive(child), f"the setsid child {child} ran on beside the resumed stream"
    assert _still_growing(out) == []

    def first_agent_gone() -> bool:  # init reaps the killed orphan in its own time
        found = subprocess.run(["pgrep", "-f", mark], capture_output=True, text=True)
        return found.stdout == ""

    wait_for(first_agent_gone, timeout=20)


def test_a_change_made_between_runs_is_never_blamed_on_a_stream_that_ends_first(
        repo: Repo, tmp_path: Path) -> None:
    """The run's snapshot is taken beside the streams' preparation; a stream that ends
    before it is done (its agent program missing) waits for it, so the change made while no
    runner ran is reported on the run, not blamed on that stream."""
    plan = agent_plan({"api": {"files": ["src/api/**"],
                               "agent": {"command": ["no-such-agent-program"]}}})
    first = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert first.returncode == 1, first.stderr
    repo.git("branch", "made-by-hand")  # while no runner runs: nobody's stream did it
    pause = tmp_path / "pause"
    pause.write_text("")
    retry = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "retry", "api"], cwd=repo.path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "WTR_PAUSE": "guard_snapshot", "WTR_PAUSE_FILE": str(pause)})
    try:
        wait_for(Path(f"{pause}.reached").exists, timeout=120)
        time.sleep(1.0)  # the stream fails at once; it must not look before the snapshot
    finally:
        pause.unlink()
    retry.communicate(timeout=120)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    api = stream_of(doc, "api")
    assert api["status"] == "failed" and "no-such-agent-program" in api["failure"]["message"]
    [breach] = doc["isolation"]
    assert breach["stream"] is None and breach["suspects"] == []
    assert breach["changes"] == ["branch made-by-hand created at " + repo.head("main")[:12]]


def test_streams_make_their_worktrees_while_the_first_look_is_taken(
        repo: Repo, tmp_path: Path) -> None:
    """The run's first look (a minute at a million files) holds up no stream's worktree;
    no agent starts before it is done."""
    pause = tmp_path / "pause"
    pause.write_text("")
    plan = agent_plan({"api": {"files": ["src/api/**"]}, "ui": {"files": ["src/ui/**"]}})
    run = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan))],
        cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "WTR_PAUSE": "guard_snapshot", "WTR_PAUSE_FILE": str(pause)})
    try:
        wait_for(Path(f"{pause}.reached").exists, timeout=60)
        worktrees = repo.path.parent / "repo.worktrees" / "plan-1"
        wait_for(lambda: all((worktrees / s / "src").is_dir() for s in ("api", "ui")),
                 timeout=60)
        assert events(repo, "plan-1", "stream.agent_started") == []
    finally:
        pause.unlink()
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, out + err
