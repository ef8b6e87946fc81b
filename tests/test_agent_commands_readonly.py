"""``wtr progress`` and ``wtr lock`` where the agent cannot write the run's state (a CLI's
own sandbox, a read-only mount): one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from tests.test_sandbox import needs_bwrap


def _finished_run(repo: Repo) -> dict[str, str]:
    plan = agent_plan({"db": {"files": ["src/db/**"]}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "db")["status"] == "succeeded"
    runs = next(repo.path.glob(".git/worktree-runner/runs/*/state.json")).parent
    return {"WTR_RUN": doc["run"], "WTR_STREAM": "db", "WTR_STATE_DIR": str(runs)}


def _read_only(argv: list[str]) -> list[str]:
    """``argv`` with the whole filesystem mounted read-only (bubblewrap; /dev/shm, where the
    test's folders may be, again over the fresh /dev)."""
    shm = ["--ro-bind", "/dev/shm", "/dev/shm"] if os.path.isdir("/dev/shm") else []
    return ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", *shm, "--proc", "/proc", "--",
            *argv]


@needs_bwrap
@pytest.mark.parametrize("args", [["progress", "halfway", "--percent", "50"],
                                  ["lock", "db", "--timeout", "1", "--", "true"]])
def test_an_agent_command_on_a_read_only_state_folder_says_so_in_one_line(
        repo: Repo, args: list[str]) -> None:
    env = _finished_run(repo)
    done = subprocess.run(_read_only([sys.executable, "-m", "worktree_runner", *args]),
                          cwd=repo.path, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wtr: cannot "), done.stderr
    assert "Read-only file system" in lines[0]


def test_progress_that_cannot_be_written_is_one_line(repo: Repo) -> None:
    env = _finished_run(repo)
    target = Path(env["WTR_STATE_DIR"]) / "streams" / "db" / "progress.json"
    target.unlink(missing_ok=True)
    target.mkdir()  # the file's place is taken: the write fails whoever runs it
    result = run_wtr("progress", "halfway", cwd=repo.path, env=env)
    line = result.one_line_error(code=1)
    assert line.startswith("wtr: cannot record progress in ")
