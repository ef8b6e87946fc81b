"""The estimated completion of a run: earlier runs' durations, this run's, max_parallel."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan
from worktree_runner.run.eta import estimate
from worktree_runner.run.state import RunRecord, StreamRecord, write_json_atomic

NOW = 1_800_000_000.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _record(run: str, streams: dict[str, dict], max_parallel: int = 4,
            state: str = "running") -> RunRecord:
    records = {}
    for name, spec in streams.items():
        records[name] = StreamRecord(name=name, branch=f"wtr/{run}/{name}", worktree=None,
                                     depends_on=spec.get("depends_on", []),
                                     status=spec.get("status", "pending"),
                                     seconds=spec.get("seconds"),
                                     started_at=spec.get("started_at"))
    return RunRecord(run=run, plan="p.yaml", repo="/r", base="main", base_commit="0" * 40,
                     target="main", worktrees_root="/w", max_parallel=max_parallel,
                     streams=records, state=state)


def _history(root: Path, run: str, seconds: dict[str, float]) -> None:
    record = _record(run, {n: {"status": "merged", "seconds": s} for n, s in seconds.items()},
                     state="finished")
    write_json_atomic(root / run / "state.json", record.to_json())


def _at(doc_time: str | None) -> float:
    assert doc_time is not None
    return datetime.fromisoformat(doc_time).timestamp()


def test_a_chain_timed_by_earlier_runs(tmp_path: Path) -> None:
    _history(tmp_path, "p-1", {"a": 10, "b": 20, "c": 30})
    _history(tmp_path, "p-2", {"a": 12, "b": 20, "c": 40})  # medians: 11, 20, 35
    record = _record("p-3", {"a": {"status": "running", "started_at": _iso(NOW - 4)},
                             "b": {"depends_on": ["a"]}, "c": {"depends_on": ["b"]}})
    ordering = {"a": [], "b": ["a"], "c": ["b"]}
    found = estimate(record, tmp_path, ordering, now=NOW)
    assert _at(found.eta) == NOW + 7 + 20 + 35
    assert found.next_stream == "a" and _at(found.next_at) == NOW + 7
    assert "3 timed by earlier runs" in found.basis


def test_max_parallel_is_honoured(tmp_path: Path) -> None:
    _history(tmp_path, "p-1", {"a": 10, "b": 10, "c": 10, "d": 30})
    streams = {"a": {}, "b": {}, "c": {}}
    ordering: dict[str, list[str]] = {n: [] for n in streams}
    two = estimate(_record("p-2", streams, max_parallel=2), tmp_path, ordering, now=NOW)
    three = estimate(_record("p-3", streams, max_parallel=3), tmp_path, ordering, now=NOW)
    assert _at(two.eta) == NOW + 20 and _at(three.eta) == NOW + 10
    # A conflict (the later stream waits for the earlier one) serializes them.
    serial = estimate(_record("p-4", streams, max_parallel=3), tmp_path,
                      {"a": [], "b": ["a"], "c": ["b"]}, now=NOW)
    assert _at(serial.eta) == NOW + 30


def test_this_runs_finished_streams_time_the_unknown_ones(tmp_path: Path) -> None:
    record = _record("p-1", {"a": {"status": "succeeded", "seconds": 8},
                             "b": {"status": "succeeded", "seconds": 12},
                             "c": {}, "d": {"depends_on": ["c"]}}, max_parallel=1)
    found = estimate(record, tmp_path, {"a": [], "b": [], "c": [], "d": ["c"]}, now=NOW)
    assert _at(found.eta) == NOW + 20
    assert found.next_stream == "c" and _at(found.next_at) == NOW + 10
    assert "median of the 2 finished in this run" in found.basis


def test_streams_behind_a_failure_do_not_count(tmp_path: Path) -> None:
    record = _record("p-1", {"a": {"status": "failed", "seconds": 5},
                             "b": {"depends_on": ["a"]}, "c": {}})
    found = estimate(record, tmp_path, {"a": [], "b": ["a"], "c": []}, now=NOW)
    assert _at(found.eta) == NOW + 5 and found.next_stream == "c"


@pytest.mark.parametrize("state", ["finished", "interrupted"])
def test_no_estimate_for_a_run_that_is_not_running(tmp_path: Path, state: str) -> None:
    found = estimate(_record("p-1", {"a": {}}, state=state), tmp_path, {"a": []}, now=NOW)
    assert found.eta is None and state in found.basis


def test_no_estimate_before_anything_finished(tmp_path: Path) -> None:
    found = estimate(_record("p-1", {"a": {"status": "running", "started_at": _iso(NOW)}}),
                     tmp_path, {"a": []}, now=NOW)
    assert found.eta is None and "nothing to time" in found.basis


def test_status_shows_the_estimate_of_a_second_run(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_SLEEP": "1"}},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"]}})
    path = repo.write_plan(plan)
    assert run_wtr("run", path, cwd=repo.path).returncode == 0
    first = run_wtr("status", "--json", cwd=repo.path).json()
    assert first["eta"] is None and "finished" in first["eta_basis"]
    plan["streams"]["db"]["agent"]["env"]["AGENT_SLEEP"] = "30"
    path = repo.write_plan(plan)
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run", str(path)],
                              cwd=repo.path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        doc: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            result = run_wtr("status", "--json", cwd=repo.path)
            doc = result.json() if result.returncode == 0 else {}
            if doc.get("run") != first["run"] and doc["streams"][0]["status"] == "running":
                break
            time.sleep(0.5)
        assert doc["eta"] is not None, doc["eta_basis"]
        assert "2 timed by earlier runs" in doc["eta_basis"]
        assert doc["next_milestone"]["stream"] == "db"
        assert _at(doc["eta"]) >= _at(doc["next_milestone"]["at"])
        text = run_wtr("status", cwd=repo.path).stdout
        assert "estimated completion:" in text and "next milestone: db" in text
        markdown = run_wtr("status", "--markdown", cwd=repo.path).stdout
        assert "- estimated completion:" in markdown
    finally:
        runner.terminate()
        runner.wait(timeout=60)
