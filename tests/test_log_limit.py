"""Logs: ``wtr logs`` streams the file in pieces, and a stream's log is kept under the
plan's ``log_limit`` by dropping its middle (never its end)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.model import DEFAULT_LOG_LIMIT
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore

LOUD_AGENT = """
import pathlib, subprocess
for i in range(30000):
    print(f"line {i:05d} " + "x" * 90)
pathlib.Path("src/db/done.py").write_text("done = 1\\n")
print('{"type": "result", "num_turns": 7, "total_cost_usd": 0.5}')
print("the very last line")
"""


def test_a_loud_agent_keeps_the_start_and_end_of_its_log(repo: Repo, tmp_path: Path) -> None:
    script = tmp_path / "loud.py"
    script.write_text(LOUD_AGENT)
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "agent": {"command": [sys.executable, str(script)]}}},
                      log_limit="512KB")
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    db = stream_of(doc, "db")
    assert db["status"] == "succeeded" and db["changed_files"] == ["src/db/done.py"]
    assert db["usage"] == {"input_tokens": None, "output_tokens": None, "cost_usd": 0.5,
                           "turns": 7}  # read from the kept end

    log = Path(repo.path / ".git/worktree-runner/runs" / doc["run"] / "streams/db/agent.log")
    data = log.read_bytes()
    assert len(data) <= 512 * 1024 + 4096, len(data)
    text = data.decode()
    assert text.startswith("--- attempt 1 at ")
    assert "line 00000 " in text  # the start is kept
    # The agent's last line is kept (the runner may add its own closing line after it).
    assert "\nthe very last line\n" in text
    assert text.index("the very last line") > text.index("[wtr: ")
    assert "line 29999 " in text
    markers = [line for line in text.splitlines() if line.startswith("[wtr: ")]
    assert len(markers) == 1, markers
    assert markers[0].endswith("bytes of output dropped here; a stream's log keeps at most "
                               "524288 bytes (log_limit), its start and its end]")
    dropped = int(markers[0].split()[1])
    lines = [line for line in text.splitlines() if line.startswith("line ")]
    assert dropped > 2_000_000 and len(lines) < 30000
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(numbers)  # what is kept is in order, one gap at the marker

    shown = run_wtr("logs", "db", cwd=repo.path)
    assert shown.returncode == 0 and shown.stdout.encode() == data


TAIL = "agent: {command: [x]}\nstreams: {a: {files: [x]}}\n"


@pytest.mark.parametrize(("value", "expected"), [
    ("50MB", 50 * 1024**2), ("512 kb", 512 * 1024), ("1GB", 1024**3), (65536, 65536),
])
def test_log_limit_values(value: object, expected: int) -> None:
    text = f"version: 1\nlog_limit: {value}\n" + TAIL
    assert parse_plan(text, Path("p.yaml")).log_limit == expected


def test_log_limit_default() -> None:
    text = "version: 1\n" + TAIL
    assert parse_plan(text, Path("p.yaml")).log_limit == DEFAULT_LOG_LIMIT == 50 * 1024**2


@pytest.mark.parametrize(("value", "message"), [
    ("10KB", "must be at least 64KB"), ("lots", "write a size such as 50MB"),
    ("true", "write a size such as 50MB"), ("-5", "must be at least 64KB"),
])
def test_bad_log_limits(value: str, message: str) -> None:
    text = f"version: 1\nlog_limit: {value}\n" + TAIL
    with pytest.raises(PlanInvalid) as caught:
        parse_plan(text, Path("p.yaml"))
    assert [p.where for p in caught.value.problems] == ["log_limit"]
    assert message in caught.value.problems[0].message


def test_logs_are_read_in_pieces(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    run = run_wtr("status", "--json", cwd=repo.path).json()["run"]
    store = RunStore(repo.path / ".git/worktree-runner/runs" / run)
    # A character cut by a piece boundary must come out whole.
    body = ("é" * (registry.LOG_CHUNK // 2 + 1) + "\n") * 6
    store.log_path("db").write_text(body, encoding="utf-8")
    pieces = list(registry.read_log(store, "db", follow=False))
    assert len(pieces) > 6
    assert max(len(p.encode()) for p in pieces) <= registry.LOG_CHUNK + 3  # + a split char
    assert "".join(pieces) == body
    shown = run_wtr("logs", "db", cwd=repo.path)
    assert shown.returncode == 0 and shown.stdout == body
