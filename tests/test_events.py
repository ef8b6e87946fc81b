"""The run's event log and ``wtr events``: numbered across processes, each stream's start
and end published once, also across a kill -9 of the runner and ``wtr resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import runhelp
from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, records, status
from worktree_runner.events import EventLog, Kind, follow, last_seq, read_since

ROOT = Path(__file__).resolve().parent.parent


def log_of(repo: Repo, run: str) -> list[dict]:
    path = repo.path / ".git/worktree-runner/runs" / run / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- the log itself -------------------------------------------------------------------------


def test_processes_writing_at_once_number_every_event_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = ("import sys; from pathlib import Path; from worktree_runner.events import "
              "EventLog\nlog = EventLog(Path(sys.argv[1]))\nfor i in range(150):\n"
              "    log.append('run.note', 'r', None, {'writer': sys.argv[2], 'i': i})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", writer, str(path), str(n)], env=env)
               for n in range(3)]
    assert [w.wait(timeout=60) for w in writers] == [0, 0, 0]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 451))
    for n in range(3):  # each writer's own events stay in its order
        mine = [e["i"] for e in lines if e["writer"] == str(n)]
        assert mine == list(range(150))
    assert last_seq(path) == 450 and [e.seq for e in read_since(path, 447)] == [448, 449, 450]


def test_a_stream_starts_and_ends_once_in_the_log(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    first, second = EventLog(path), EventLog(path)  # a runner, then the one that resumes
    assert first.append(Kind.STREAM_STARTED, "r", "db", {}) is not None
    again = second.append(Kind.STREAM_STARTED, "r", "db", {})
    assert again is not None and again.kind == Kind.STREAM_RESUMED
    assert second.open_streams() == {"db"}
    assert first.append(Kind.STREAM_SUCCEEDED, "r", "db", {}) is not None
    assert second.append(Kind.STREAM_SUCCEEDED, "r", "db", {}) is None  # already said
    # a retry is a new life: started and ended again
    assert second.append(Kind.STREAM_STARTED, "r", "db", {}).kind == Kind.STREAM_STARTED
    assert first.append(Kind.STREAM_FAILED, "r", "db", {}) is not None
    kinds = [e.kind for e in read_since(path)]
    assert kinds == ["stream.started", "stream.resumed", "stream.succeeded", "stream.started",
                     "stream.failed"]
    assert first.open_streams() == set()


def test_a_line_cut_short_and_an_older_log_keep_their_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event": "stream_started", "at": "2026-01-01T00:00:00+00:00", '
                    '"run": "r", "stream": "db", "status": "running"}\n'
                    '{"event": "attempt_started", "at": "2026-01-01T00:00:01+00:00", '
                    '"run": "r", "stream": "db", "attempt": 2, "kind": "feedback"}\n'
                    '{"event": "stream_finished", "at": "2026-01-01T00:00:09+00:00", '
                    '"run": "r", "stream": "db", "status": "failed"}\n'
                    '{"kind": "run.note", "seq": 4, "ti')  # a writer killed mid-line
    old = read_since(path)
    assert [(e.seq, e.kind, e.time[-14:-6]) for e in old] == [
        (1, "stream.started", "00:00:00"), (2, "stream.attempt_started", "00:00:01"),
        (3, "stream.failed", "00:00:09")]
    assert old[1].facts["attempt_kind"] == "feedback"
    event = EventLog(path).append("run.note", "r", None, {})
    assert event is not None and event.seq == 5  # the cut line is number 4
    assert [e.seq for e in read_since(path)] == [1, 2, 3, 5]


def test_a_line_an_agent_nested_too_deep_is_no_event(tmp_path: Path) -> None:
    """An agent can write to the run's folder: a line nested beyond what a JSON parser
    recurses through is skipped, as any junk is, and still counts as a line."""
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "run.note", "time": "T"}\n' + "[" * 100_000 + "\n"
                    '{"kind": "run.note", "time": "T"}\n')
    assert [e.seq for e in read_since(path)] == [1, 3]
    assert last_seq(path) == 3


def test_a_held_lock_or_a_symlink_in_the_logs_place_does_not_stop_the_writer(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = EventLog(path)  # holds the file open between events
    writer.append("run.note", "r", None, {"seq": True})  # a fact, renamed
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\nf = open(sys.argv[1], 'ab')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)\n"),
        str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        started = time.monotonic()
        event = EventLog(path).append("run.note", "r", None, {})
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert event is not None and event.seq == 2 and took < 10
    assert read_since(path)[0].facts == {"seq_": True}
    precious = tmp_path / "precious.txt"
    precious.write_text("keep\n")
    path.unlink()
    path.symlink_to(precious)
    assert writer.append("run.note", "r", None, {}) is not None  # not written through
    assert precious.read_text() == "keep\n" and not path.is_symlink()
    assert [e.kind for e in read_since(path)] == ["run.note"]


def test_follow_yields_new_events_until_done(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append(Kind.RUN_STARTED, "r", None, {})
    seen = follow(path, 0, done=lambda e: e.kind == Kind.RUN_FINISHED, poll=0.02)
    assert next(seen).kind == Kind.RUN_STARTED
    log.append(Kind.STREAM_STARTED, "r", "db", {})
    assert next(seen).stream == "db"
    log.append(Kind.RUN_FINISHED, "r", None, {})
    assert [e.kind for e in seen] == [Kind.RUN_FINISHED]


# -- wtr events -----------------------------------------------------------------------------

CHAIN = {
    "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
    "api": {"files": ["src/api/**"], "depends_on": ["db"], "env": {"AGENT_EXIT": "3"}},
    "ui": {"files": ["src/ui/**"], "depends_on": ["api"]},
}


def test_events_prints_the_log_as_text_and_json_and_since(repo: Repo) -> None:
    ran = run_wtr("run", repo.write_plan(agent_plan(CHAIN)), cwd=repo.path)
    assert ran.returncode == 1, ran.stderr
    text = run_wtr("events", cwd=repo.path)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any("stream.succeeded" in line and "db: succeeded" in line for line in lines)
    assert any("stream.failed" in line and "api: failed (exit_code" in line for line in lines)
    assert any("stream.blocked" in line and "ui: blocked" in line for line in lines)
    as_json = [json.loads(line) for line in run_wtr("events", "--json", cwd=repo.path)
               .stdout.splitlines()]
    assert as_json == log_of(repo, status(repo)["run"])
    assert [e["seq"] for e in as_json] == list(range(1, len(as_json) + 1))
    assert {"seq", "kind", "time", "run"} <= set(as_json[0])
    assert as_json[-1]["kind"] == "run.finished"
    later = run_wtr("events", "--json", "--since", str(len(as_json) - 2), cwd=repo.path)
    assert [json.loads(line)["seq"] for line in later.stdout.splitlines()] == [
        len(as_json) - 1, len(as_json)]
    # a finished run: --follow prints what there is and ends
    followed = run_wtr("events", "--follow", "--json", cwd=repo.path, timeout=30)
    assert followed.returncode == 0 and len(followed.stdout.splitlines()) == len(as_json)


def test_events_of_an_unknown_run_or_a_bad_since_is_bad_input(repo: Repo) -> None:
    run_wtr("run", repo.write_plan(agent_plan({"db": CHAIN["db"]})), cwd=repo.path)
    unknown = run_wtr("events", "--run", "nope-1", cwd=repo.path)
    assert unknown.returncode == 2 and "nope-1" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    negative = run_wtr("events", "--since", "-1", cwd=repo.path)
    assert negative.returncode == 2


def slow_streams(rec: Path) -> dict:
    """db and ui wait at ``rec``/gate; api waits on db."""
    slow = {name: {"files": [f"src/{name}/**"],
                   "env": {"AGENT_RECORD": str(rec), "AGENT_WAIT_FOR": str(rec / "gate"),
                           "AGENT_WRITE": f"src/{name}/work.py={name.upper()} = 1"}}
            for name in ("db", "ui")}
    return slow | {"api": {"files": ["src/api/**"], "depends_on": ["db"],
                           "env": {"AGENT_RECORD": str(rec),
                                   "AGENT_WRITE": "src/api/work.py=API = 1"}}}


def wtr_process(repo: Repo, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "worktree_runner", *args], cwd=repo.path,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.timeout(180)
def test_follow_sees_each_start_and_end_once_across_kill_9_and_resume(
        repo: Repo, rec: Path) -> None:
    runner = wtr_process(repo, "run", str(repo.write_plan(agent_plan(slow_streams(rec)))))
    runs = repo.path / ".git/worktree-runner/runs"
    runhelp.wait_for(lambda: any(runs.glob("*/events.jsonl")), timeout=30)
    follower = wtr_process(repo, "events", "--follow", "--json")
    runhelp.wait_for(lambda: len(records(rec, "db")) == 1 and len(records(rec, "ui")) == 1,
                     timeout=30)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    assert follower.poll() is None  # a runner that died is not the end of the run
    resumed = runhelp.resume_adopting(repo, rec / "gate", ("db", "ui"))
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    out, err = follower.communicate(timeout=60)  # it ends by itself with the run
    assert follower.returncode == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    assert seen == log_of(repo, status(repo)["run"])  # nothing missed, nothing twice
    assert [e["seq"] for e in seen] == list(range(1, len(seen) + 1))
    for name in ("db", "ui", "api"):
        life = [e["kind"] for e in seen if e.get("stream") == name and e["kind"] in (
            "stream.started", "stream.succeeded", "stream.failed", "stream.blocked")]
        assert life == ["stream.started", "stream.succeeded"], (name, life)
    assert [e["kind"] for e in seen].count("run.finished") == 1
    assert seen[-1]["kind"] == "run.finished"
    # the resumed runner started the two running streams again: said once, as resumed
    resumed_streams = sorted(e["stream"] for e in seen if e["kind"] == "stream.resumed")
    assert resumed_streams == ["db", "ui"]


@pytest.mark.timeout(180)
def test_resume_with_merge_lands_what_the_killed_runner_left(repo: Repo, rec: Path) -> None:
    """The lander is attached by the command: ``wtr resume --merge`` lands as the run ends."""
    runner = wtr_process(repo, "run", str(repo.write_plan(agent_plan(slow_streams(rec)))))
    runhelp.wait_for(lambda: len(records(rec, "db")) == 1, timeout=30)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    resumed = runhelp.resume_adopting(repo, rec / "gate", ("db",), "--merge")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = status(repo)
    assert doc["counts"]["merged"] == 3 and doc["merge"]["state"] == "landed"
    assert repo.git("show", "main:src/api/work.py") == "API = 1"
    kinds = [e["kind"] for e in log_of(repo, doc["run"])]
    # every landing happened before the run was recorded finished
    assert kinds.index("run.finished") > max(i for i, k in enumerate(kinds)
                                             if k == "landing.landed")


def test_clean_publishes_what_it_removed_and_rescued(repo: Repo) -> None:
    plan = agent_plan({name: {"files": [f"src/{name}/**"],
                              "env": {"AGENT_WRITE": f"src/{name}/work.py=X = 1"}}
                       for name in ("db", "ui")}, pool=0)
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    doc = status(repo)
    db_tree = Path(next(s for s in doc["streams"] if s["name"] == "db")["worktree"])
    (db_tree / "src/db/work.py").write_text("X = 'hand edit'\n")
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    seen = log_of(repo, doc["run"])
    rescued = [e for e in seen if e["kind"] == "clean.rescued"]
    assert [(e["stream"], e["worktree"]) for e in rescued] == [("db", str(db_tree))]
    assert f"refs/worktree-runner/rescue/{doc['run']}/db" in rescued[0]["saved"][0]
    removed = [e for e in seen if e["kind"] == "clean.removed"]
    assert sorted((e["stream"], "worktree" if "worktree" in e else "branch")
                  for e in removed) == [("db", "branch"), ("db", "worktree"),
                                        ("ui", "branch"), ("ui", "worktree")]
    assert all(e["pooled"] is False for e in removed if "worktree" in e)
    assert seen[-1]["kind"] == "clean.finished"
