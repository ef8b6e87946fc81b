"""Running twice, dying runners, signals and names: real processes on real repositories."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import AGENT, agent_plan, records, resume_adopting, status, stream_of, wait_for
from worktree_runner.run.usage import attempt_start


def start_runner(repo: Repo, plan: dict) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan))],
        cwd=repo.path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# -- 10.4: a run whose runner died is interrupted, and says how to continue ----------------


def test_status_after_kill_9_of_the_runner_says_interrupted_and_how_to_resume(
        repo: Repo, rec: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_WAIT_FOR": str(gate),
                                      "AGENT_WRITE": "src/db/models.py=DB = 1"}}})
    runner = start_runner(repo, plan)
    wait_for(lambda: len(records(rec, "db")) == 1)
    live = status(repo)
    assert live["state"] == "running" and live["runner"]["pid"] == runner.pid
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    doc = status(repo)
    assert doc["state"] == "interrupted" and doc["runner"] is None
    text = run_wtr("status", cwd=repo.path).stdout
    assert "interrupted" in text and f"wtr resume --run {doc['run']}" in text
    markdown = run_wtr("status", "--markdown", cwd=repo.path).stdout
    attention = markdown.split("## Needs attention", 1)[1]
    assert f"wtr resume --run {doc['run']}" in attention
    runs = run_wtr("runs", "--json", cwd=repo.path).json()["runs"]
    assert runs[0]["state"] == "interrupted"
    gate.touch()  # (whether the agent is still at work when it resumes is not the point)
    resumed = run_wtr("resume", "--run", doc["run"], cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert status(repo)["state"] == "finished"


# -- 16.6: never two agents of one stream ----------------------------------------------------


def test_a_resume_killed_after_requeueing_adopts_the_agent_next_time(
        repo: Repo, rec: Path, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_WAIT_FOR": str(gate),
                                      "AGENT_WRITE": "src/db/models.py=DB = 7"}}})
    runner = start_runner(repo, plan)
    wait_for(lambda: len(records(rec, "db")) == 1)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    killed = run_wtr("resume", cwd=repo.path, env={"WTR_FAULT": "reconciled:db"})
    assert killed.returncode == -signal.SIGKILL
    resumed = resume_adopting(repo, gate, ("db",))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert len(records(rec, "db")) == 1
    assert stream_of(status(repo), "db")["status"] == "succeeded"


def spans(path: Path) -> list[tuple[int, int, float, float]]:
    """(pid, parent pid, start, end) of each agent that wrote to ``path`` (AGENT_SPANS); an
    agent with no end yet runs on."""
    starts: dict[int, tuple[int, float]] = {}
    ends: dict[int, float] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        mark, pid, parent, at = line.split()
        if mark == "start":
            starts[int(pid)] = (int(parent), float(at))
        else:
            ends[int(pid)] = float(at)
    return [(pid, parent, start, ends.get(pid, float("inf")))
            for pid, (parent, start) in starts.items()]


def one_at_a_time(path: Path) -> list[tuple[int, int, float, float]]:
    """The agents' spans, after checking that no two of them overlapped."""
    found = sorted(spans(path), key=lambda span: span[2])
    for before, after in itertools.pairwise(found):
        assert before[3] <= after[2], f"two agents of the stream ran at once: {found}"
    return found


def stream_dir(repo: Repo, name: str) -> Path:
    """The stream's state folder in the repository's only run."""
    (run,) = (repo.path / ".git" / "worktree-runner" / "runs").iterdir()
    return run / "streams" / name


def killed_at(repo: Repo, fault: str, rec: Path, gate: Path, spans: Path,
              write: str) -> dict[str, Any]:
    """A run of one stream, db, whose agent records its span and waits for ``gate``,
    with the runner killed (SIGKILL) at the fault point ``fault``; its plan."""
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_WAIT_FOR": str(gate),
                                      "AGENT_SPANS": str(spans), "AGENT_WRITE": write}}})
    crashed = run_wtr("run", repo.write_plan(plan), cwd=repo.path, env={"WTR_FAULT": fault})
    assert crashed.returncode == -signal.SIGKILL
    return plan


def test_a_runner_killed_before_recording_the_agent_never_starts_a_second_one(
        repo: Repo, rec: Path, tmp_path: Path) -> None:
    """The runner dies before recording the agent's pid. The resume finds the agent by its
    supervisor when it looks at the stream, and adopts it: the agent then ends before the
    resume would start the stream's next agent, and is checked, not run again."""
    gate, pause, ran = tmp_path / "gate", tmp_path / "pause", tmp_path / "spans"
    killed_at(repo, "agent_started:db", rec, gate, ran, "src/db/models.py=DB = 8")
    ended = stream_dir(repo, "db") / "exit-1.json"
    pause.touch()
    resume = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "resume"], cwd=repo.path, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "WTR_PAUSE": "reconciled:db", "WTR_PAUSE_FILE": str(pause)})
    try:
        wait_for(lambda: Path(f"{pause}.reached").exists() or resume.poll() is not None)
        gate.touch()
        wait_for(ended.exists)  # (the agent ended meanwhile)
    finally:
        pause.unlink()
    out, err = resume.communicate(timeout=120)
    assert resume.returncode == 0, err + out
    assert len(one_at_a_time(ran)) == 1 and len(records(rec, "db")) == 1
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded" and db["attempts"] == 1
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 8"


def test_an_adopted_agent_is_counted_from_its_own_output_not_the_attempt_befores(
        repo: Repo, rec: Path, tmp_path: Path) -> None:
    """Attempt 1 spends $0.50 and fails; the runner of the retry dies before noting its
    agent. The resume adopts that agent, which spends nothing: its usage is read from
    where its own output starts, so the stream's spend stays $0.50 (not counted twice)."""
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {
        "AGENT_RECORD": str(rec), "AGENT_FAIL_ATTEMPTS": "1", "AGENT_SPEND": "10,1,0.5",
        "AGENT_SPEND_ATTEMPTS": "1", "AGENT_WRITE": "src/db/models.py=DB = 7"}}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    assert stream_of(status(repo), "db")["usage"]["cost_usd"] == 0.5
    crashed = run_wtr("retry", "db", cwd=repo.path, env={"WTR_FAULT": "agent_started:db"})
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded" and db["attempts"] == 2
    assert len(records(rec, "db")) == 2  # (adopted, not run a third time)
    assert db["usage"]["cost_usd"] == 0.5


def test_where_an_attempts_output_starts_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    log.write_text("--- attempt 1 at t ---\nA\n--- attempt 12 at t ---\nB\n")
    text = log.read_bytes()
    assert attempt_start(log, 1) == text.index(b"A")  # (the log's first line)
    assert attempt_start(log, 12) == text.index(b"B")  # (not attempt 1's)
    assert attempt_start(log, 2) == 0 == attempt_start(tmp_path / "none.log", 1)


HALF_STARTED = Path(__file__).resolve().parent / "agents" / "half_started.py"


def test_a_supervisor_still_starting_when_the_runner_died_is_waited_for_and_adopted(
        repo: Repo, rec: Path, tmp_path: Path) -> None:
    """The runner dies between the fork of the agent's supervisor and its exec: that child
    is not yet findable as a supervisor (its command line and environment are still the
    runner's), but it holds the stream's agent lock. The resume waits until it is one."""
    gate, release, ran = tmp_path / "gate", tmp_path / "release", tmp_path / "spans"
    plan = killed_at(repo, "agent_starting:db", rec, release, ran, "src/db/models.py=DB = 9")
    doc, folder = status(repo), stream_dir(repo, "db")
    db = stream_of(doc, "db")
    assert db["status"] == "running" and db["attempts"] == 1
    state_dir = folder.parent.parent
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({
        "lock": str(folder / "agent.lock"), "gate": str(gate),
        "exit_file": str(folder / "exit-1.json"), "argv": [sys.executable, str(AGENT)],
        "cwd": db["worktree"], "log": str(folder / "agent.log"),
        "env": {**os.environ, "WTR_RUN": doc["run"], "WTR_STREAM": "db",
                "WTR_STATE_DIR": str(state_dir), "WTR_WORKTREE": db["worktree"],
                **plan["streams"]["db"]["agent"]["env"]}}))
    child = subprocess.Popen([sys.executable, str(HALF_STARTED), str(spec)],
                             start_new_session=True)
    try:
        wait_for(lambda: Path(f"{gate}.held").exists())
        resume = subprocess.Popen([sys.executable, "-m", "worktree_runner", "resume"],
                                  cwd=repo.path, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        log = state_dir / "events.jsonl"
        # (the resume waits for it; were it blind to it, it would start a second agent)
        wait_for(lambda: '"stream.agent_awaited"' in log.read_text() or spans(ran)
                 or resume.poll() is not None)
        gate.touch()
        # (a second agent, had one started, is still at work when the first one starts)
        wait_for(lambda: any(span[1] == child.pid for span in spans(ran))
                 or resume.poll() is not None)
    finally:
        gate.touch()
        release.touch()
    out, err = resume.communicate(timeout=120)
    assert resume.returncode == 0, err + out
    assert child.wait(timeout=60) == 0
    assert [span[1] for span in one_at_a_time(ran)] == [child.pid]  # adopted, never beside
    assert '"stream.agent_awaited"' in log.read_text()
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded" and db["attempts"] == 1
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 9"


# -- 16.7: wtr lock holds its lock until its command has exited ------------------------------


def test_lock_forwards_sigterm_and_holds_the_lock_until_the_command_exits(
        repo: Repo, tmp_path: Path) -> None:
    log, gate = tmp_path / "log", tmp_path / "gate"
    child = (  # it runs on until the test opens the gate
        "import os, signal, sys, time\n"
        f"log = open({str(log)!r}, 'a', buffering=1)\n"
        "signal.signal(signal.SIGTERM, lambda *a: log.write('term\\n'))\n"
        "log.write('started\\n')\n"
        f"while not os.path.exists({str(gate)!r}):\n"
        "    time.sleep(0.05)\n"
        "log.write('end\\n')\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "lock", "db", "--", sys.executable, "-c",
         child], cwd=repo.path)
    try:
        wait_for(lambda: log.exists() and "started" in log.read_text())
        holder.send_signal(signal.SIGTERM)
        wait_for(lambda: "term" in log.read_text())  # the command got the signal
        blocked = run_wtr("lock", "db", "--timeout", "0.5", "--", "true", cwd=repo.path)
        assert "end" not in log.read_text()
        assert blocked.returncode == 1 and "still held" in blocked.stderr
    finally:
        gate.touch()
    assert holder.wait(timeout=60) == 0  # the command's own exit code
    assert log.read_text().splitlines() == ["started", "term", "end"]
    free = run_wtr("lock", "db", "--timeout", "10", "--", "true", cwd=repo.path)
    assert free.returncode == 0


# -- 16.12: one Compose project per stream ---------------------------------------------------


def test_compose_project_names_differ_for_names_that_fold_alike(repo: Repo, rec: Path) -> None:
    names = ("a.b", "a-b", "HEAD", "head")
    plan = agent_plan({name: {"files": [f"src/{name}/**"], "env": {"AGENT_RECORD": str(rec)}}
                       for name in names})
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr + result.stdout
    projects = {name: records(rec, name)[0]["env"]["COMPOSE_PROJECT_NAME"] for name in names}
    assert len(set(projects.values())) == len(names), projects
    for project in projects.values():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", project), project


def test_lock_passes_on_the_exit_of_a_command_killed_by_a_signal(repo: Repo) -> None:
    result = run_wtr("lock", "x", "--", "sh", "-c", "kill -TERM $$", cwd=repo.path)
    assert result.returncode == 128 + signal.SIGTERM
    assert os.path.exists(repo.path / ".git" / "worktree-runner" / "locks" / "x.lock")


def test_a_ctrl_c_wrapped_by_python_while_a_module_loads_is_an_interrupt() -> None:
    """A KeyboardInterrupt raised while a dataclass is being made reaches us as
    RuntimeError("Error calling __set_name__ ...") (found by the chaos harness: a Ctrl-C
    early in `wtr run` printed that traceback)."""
    from dataclasses import dataclass, field

    from worktree_runner.errors import interrupted

    class Interrupting:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    try:
        @dataclass
        class Landing:
            tips: dict[str, str] = field(default_factory=dict)
            late = Interrupting()
    except RuntimeError as exc:
        wrapped = exc
    else:
        raise AssertionError("Python no longer wraps it: the special case can go")
    assert interrupted(wrapped)
    assert not interrupted(RuntimeError("something else"))


CTRL_C_IN_A_FINALIZER = """
import os, signal, sys, time
if sys.argv[1] == "kept":
    from worktree_runner.entry import keep_interrupts
    keep_interrupts()

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the Ctrl-C lands while __del__ runs
        time.sleep(0.2)

try:
    Finalized()
    time.sleep(2)
    print("went on")
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("kept", [False, True])
def test_a_ctrl_c_during_a_finalizer_stops_the_command_without_a_traceback(kept: bool) -> None:
    """Found by the chaos harness: a Ctrl-C that landed in a finalizer printed "Exception
    ignored in ..." with a traceback, and the run went on as if none had come."""
    done = subprocess.run([sys.executable, "-c", CTRL_C_IN_A_FINALIZER,
                           "kept" if kept else "python's"],
                          capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    if kept:
        assert (done.stdout, done.stderr) == ("interrupted\n", "")
    else:  # what Python does by itself: why wtr keeps the interrupt
        assert done.stdout == "went on\n" and "Traceback" in done.stderr
