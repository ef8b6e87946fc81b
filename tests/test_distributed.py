"""Streams on a real Dask LocalCluster (worker processes) through a real bare remote."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import runhelp
from tests.gitrepo import ROOT, Repo, git, run_wtr
from tests.runhelp import agent_plan, alive, records, stream_of

pytest.importorskip("distributed", reason="Dask is part of the test extra; install it")
# LocalClusters start in seconds, but a loaded CI machine can take minutes.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

STREAMS = {
    "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2",
                                           "AGENT_PROGRESS": "1",
                                           "AGENT_REPORT": "models done; migrations next"}},
    "api": {"files": ["src/api/**"], "depends_on": ["db"],
            "env": {"AGENT_WRITE": "src/api/orders.py=API = 2"}},
    "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}},
    "docs": {"files": ["docs/**"], "conflicts_with": ["ui"],
             "env": {"AGENT_WRITE": "docs/index.md=orders"}},
}


def bare_remote(repo: Repo, tmp_path: Path) -> Path:
    remote = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    repo.git("push", "-q", str(remote), "main")
    return remote


def dask_plan(streams: dict, remote: Path, workers: int = 2, **top: object) -> dict:
    return agent_plan(streams, executor={"kind": "dask", "scheduler": f"local:{workers}",
                                         "remote": str(remote)}, **top)


def events(repo: Repo, run: str) -> list[dict]:
    path = repo.path / ".git" / "worktree-runner" / "runs" / run / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_plan_runs_on_dask_workers_and_merges_and_cleans_here(repo: Repo,
                                                               tmp_path: Path) -> None:
    remote = bare_remote(repo, tmp_path)
    result = run_wtr("run", repo.write_plan(dask_plan(STREAMS, remote)), cwd=repo.path,
                     timeout=240)
    assert result.returncode == 0, result.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert {s["status"] for s in doc["streams"]} == {"succeeded"}
    for stream in doc["streams"]:
        # every branch came home, at the commit the worker pushed
        remote_tip = git(remote, "rev-parse", f"refs/heads/{stream['branch']}")
        assert repo.head(stream["branch"]) == remote_tip == stream["head_commit"]
        assert stream["worktree"] is None  # it lived on a worker
    assert stream_of(doc, "api")["base_commit"] == stream_of(doc, "db")["head_commit"]
    assert stream_of(doc, "db")["progress"]["message"] == "halfway"
    seen = events(repo, doc["run"])
    workers = {e["worker"] for e in seen if e["kind"] == "remote.started"}
    assert len([e for e in seen if e["kind"] == "remote.started"]) == 4 and workers
    # docs and ui never ran at once, even on different workers
    spans = {e["stream"]: e for e in seen if e["kind"] in ("stream.succeeded", "stream.failed")}
    starts = {e["stream"]: e for e in seen if e["kind"] == "stream.started"}
    ui_docs = sorted(["ui", "docs"], key=lambda n: starts[n]["time"])
    assert spans[ui_docs[0]]["time"] <= starts[ui_docs[1]]["time"]
    log = run_wtr("logs", "db", cwd=repo.path).stdout
    assert "done" in log
    # the report the agent wrote on its worker came home with the result
    report = repo.path / ".git" / "worktree-runner" / "runs" / doc["run"] / "streams" / "db"
    assert (report / "report.md").read_text() == "models done; migrations next"
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "API = 2\n"
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert repo.git("branch", "--list", "wtr/*") == ""
    # the remote keeps the stream branches (deleting them there is --remote's job)
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/heads/wtr").count("\n") == 3


def test_dry_run_says_where_streams_would_run(repo: Repo, tmp_path: Path) -> None:
    plan = repo.write_plan(agent_plan({"db": STREAMS["db"]}))
    result = run_wtr("run", plan, "--dry-run", "--executor", "dask", "--scheduler",
                     "tcp://10.1.2.3:8786", "--remote", "git@host:team/repo.git", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert ("streams would run on the Dask cluster at tcp://10.1.2.3:8786, through the git "
            "remote git@host:team/repo.git") in result.stdout


@pytest.mark.parametrize(("executor", "expected"), [
    ({"kind": "dask", "scheduler": "local:2"}, "kind: dask needs a scheduler"),
    ({"kind": "dask", "scheduler": "http//x", "remote": "/r.git"}, "is not a Dask address"),
    ({"kind": "dask", "scheduler": "local:2", "remote": "not a url"}, "is not a git URL"),
    ({"kind": "k8s"}, "kind must be one of local, dask"),
    ({"kind": "local", "remote": "/r.git"}, "scheduler and remote go with kind: dask"),
])
def test_check_rejects_a_bad_executor_section(repo: Repo, executor: dict, expected: str) -> None:
    plan = repo.write_plan(agent_plan({"db": STREAMS["db"]}, executor=executor))
    result = run_wtr("check", plan, cwd=repo.path)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_scheduler_is_one_line(repo: Repo, tmp_path: Path) -> None:
    remote = bare_remote(repo, tmp_path)
    plan = repo.write_plan(agent_plan({"db": STREAMS["db"]}))
    started = time.monotonic()
    result = run_wtr("run", plan, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9",
                     "--remote", str(remote), cwd=repo.path, timeout=120,
                     env={"WTR_DASK_CONNECT_TIMEOUT": "2"})  # (20 s unless told)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.stderr
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("wtr: cannot reach"), result.stderr
    assert "after 2 s" in result.stderr and time.monotonic() - started < 20, result.stderr


def test_a_connect_timeout_that_is_no_number_of_seconds_stops_the_run_at_once(
        repo: Repo, tmp_path: Path) -> None:
    remote = bare_remote(repo, tmp_path)
    plan = repo.write_plan(agent_plan({"db": STREAMS["db"]}))
    for bad in ("soon", "0", "nan"):
        result = run_wtr("run", plan, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9",
                         "--remote", str(remote), cwd=repo.path,
                         env={"WTR_DASK_CONNECT_TIMEOUT": bad})
        assert result.one_line_error() == (
            f"wtr: WTR_DASK_CONNECT_TIMEOUT={bad!r} is not a number of seconds between 0 and "
            "3600; unset it to wait 20 s"), result.stderr
    assert not (repo.path / ".git" / "worktree-runner" / "runs").exists()


def start_run(repo: Repo, plan: Path, record: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENT_RECORD": str(record), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "worktree_runner", "run", str(plan)],
                            cwd=repo.path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


wait_for = functools.partial(runhelp.wait_for, timeout=120.0, poll=0.2)


def latest_run(repo: Repo) -> str:
    runs = repo.path / ".git" / "worktree-runner" / "runs"
    found = sorted(runs.iterdir(), key=lambda p: p.stat().st_mtime) if runs.exists() else []
    return found[-1].name if found else ""


def test_a_worker_killed_mid_stream_loses_no_pushed_commit(repo: Repo, tmp_path: Path) -> None:
    remote = bare_remote(repo, tmp_path)
    record = tmp_path / "record"
    record.mkdir()
    streams = {"db": {**STREAMS["db"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2",
                                               "AGENT_SLEEP_FIRST": "90"}}}
    run = start_run(repo, repo.write_plan(dask_plan(streams, remote)), record)
    wait_for(lambda: bool(records(record, "db")))  # the first attempt committed, now sleeps
    started = next(e for e in events(repo, latest_run(repo)) if e["kind"] == "remote.started")
    wait_for(lambda: git(remote, "for-each-ref", "refs/heads/wtr") != "")
    first_commit = git(remote, "for-each-ref", "--format=%(objectname)", "refs/heads/wtr")
    first_agent = records(record, "db")[0]["pid"]
    os.kill(started["pid"], signal.SIGKILL)
    # the agent ends with its worker (after its grace period), never beside the next one
    runhelp.wait_for(lambda: not alive(first_agent), timeout=45.0, poll=0.2)  # it sleeps 90
    _, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    db = stream_of(doc, "db")
    assert db["status"] == "succeeded" and db["attempts"] == 2
    # what the lost worker had pushed is still in the branch
    assert repo.git("merge-base", "--is-ancestor", first_commit, db["branch"], check=False) == ""
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 2"


def test_ctrl_c_stops_remote_agents_and_resume_finishes_without_redoing(
        repo: Repo, tmp_path: Path) -> None:
    remote = bare_remote(repo, tmp_path)
    record = tmp_path / "record"
    record.mkdir()
    streams = {"db": STREAMS["db"],
               "ui": {**STREAMS["ui"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2",
                                               "AGENT_SLEEP_FIRST": "120"}}}
    run = start_run(repo, repo.write_plan(dask_plan(streams, remote)), record)
    wait_for(lambda: bool(records(record, "db", "end")) and bool(records(record, "ui")))
    wait_for(lambda: any(e["kind"] in ("stream.succeeded", "stream.failed") and e["stream"] == "db"
                         for e in events(repo, latest_run(repo))))
    agent_pid = records(record, "ui")[0]["pid"]
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=180)
    assert run.returncode == 130, err
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "ui")["failure"]["kind"] == "interrupted"
    with pytest.raises(ProcessLookupError):
        os.kill(agent_pid, 0)  # the remote agent was stopped, not left running
    resumed = run_wtr("resume", cwd=repo.path, env={"AGENT_RECORD": str(record)}, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert {s["status"] for s in doc["streams"]} == {"succeeded"}
    assert len(records(record, "db")) == 1  # db was not redone
    assert len(records(record, "ui")) == 2


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_coordinator_killed_outright_adopts_what_finished_meanwhile(
        repo: Repo, tmp_path: Path) -> None:
    """A long-lived cluster (scheduler and worker processes of their own) outlives a
    coordinator killed with -9; `wtr resume` takes the finished stream's pushed result
    instead of running its agent again."""
    remote = bare_remote(repo, tmp_path)
    record = tmp_path / "record"
    record.mkdir()
    dask = Path(sys.executable).parent / "dask"
    address = f"tcp://127.0.0.1:{free_port()}"
    # the agents run on the worker, in its environment
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGENT_RECORD": str(record)}
    cluster = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port",
                                 address.rsplit(":", 1)[1], "--no-dashboard"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    cluster.append(subprocess.Popen([str(dask), "worker", address, "--nthreads", "2",
                                     "--no-dashboard", "--local-directory",
                                     str(tmp_path / "worker")], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        gate = tmp_path / "gate"  # the agent finishes once its coordinator is dead
        streams = {"db": {**STREAMS["db"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2",
                                                   "AGENT_WAIT_FOR": str(gate)}}}
        plan = repo.write_plan(agent_plan(streams, executor={
            "kind": "dask", "scheduler": address, "remote": str(remote)}))
        run = start_run(repo, plan, record)
        wait_for(lambda: bool(records(record, "db")))
        run.kill()  # -9: no chance to hear the result
        run.wait()
        gate.touch()
        result_ref = f"refs/worktree-runner/dask/{latest_run(repo)}/db/result"
        wait_for(lambda: git(remote, "for-each-ref", result_ref) != "")
        resumed = run_wtr("resume", cwd=repo.path, env={"AGENT_RECORD": str(record)},
                          timeout=240)
        assert resumed.returncode == 0, resumed.stderr
    finally:
        for process in reversed(cluster):
            process.terminate()
        for process in cluster:
            process.wait(timeout=60)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    db = stream_of(doc, "db")
    assert db["status"] == "succeeded"
    assert len(records(record, "db")) == 1  # adopted, not run again
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 2"
    assert any(e["kind"] == "remote.result_adopted" for e in events(repo, doc["run"]))


def test_a_worker_reuses_its_pooled_worktree_and_the_next_run_its_clone(
        repo: Repo, tmp_path: Path) -> None:
    """One worker, one stream at a time: the second stream takes the worktree the first
    left in the worker's pool (a checkout of what differs); the clone and the pool live in
    the repository's state folder, where the next run finds them."""
    remote = bare_remote(repo, tmp_path)
    streams = {"db": STREAMS["db"], "ui": STREAMS["ui"]}
    plan = repo.write_plan(dask_plan(streams, remote, workers=1, max_parallel=1))
    first = run_wtr("run", plan, cwd=repo.path, timeout=240)
    assert first.returncode == 0, first.stderr
    seen = events(repo, latest_run(repo))
    reused = [e["stream"] for e in seen if e["kind"] == "stream.worktree_reused"]
    created = [e["stream"] for e in seen if e["kind"] == "stream.worktree_created"]
    assert len(created) == 2 and len(reused) == 1 and reused[0] == created[1], seen
    cache = repo.path / ".git" / "worktree-runner" / "dask-workers"
    clones = [p for p in cache.iterdir() if (p / ".git").is_dir()]
    assert len(clones) == 1
    pooled = clones[0].parent / f"{clones[0].name}.worktrees" / ".pool"
    assert len(list(pooled.iterdir())) == 1  # the second stream's, given back in turn
    assert not list((clones[0] / ".git" / "worktree-runner" / "tasks").iterdir())
    run_wtr("clean", cwd=repo.path)
    second = run_wtr("run", plan, cwd=repo.path, timeout=240)
    assert second.returncode == 0, second.stderr
    seen = events(repo, latest_run(repo))
    assert len([e for e in seen if e["kind"] == "stream.worktree_reused"]) == 2, seen
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert {s["status"] for s in doc["streams"]} == {"succeeded"}
    # a reused worktree holds the stream's own start, not the last stream's work
    ui = stream_of(doc, "ui")
    assert repo.git("show", f"{ui['branch']}:src/ui/view.py") == "UI = 2"
    assert repo.git("diff", "--name-only", ui["base_commit"], ui["branch"]) == "src/ui/view.py"
