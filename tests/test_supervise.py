"""The supervisor run as the runner runs it (a real process): how it starts the agent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runhelp import alive, wait_for
from worktree_runner import procs
from worktree_runner.errors import WtrError
from worktree_runner.procs import supervised


def supervise(tmp_path: Path, command: list[str]) -> tuple[subprocess.CompletedProcess[str],
                                                           Path, Path]:
    exit_file, log = tmp_path / "exit.json", tmp_path / "agent.log"
    done = subprocess.run(supervised(exit_file, command, ["--log", str(log), "--log-limit",
                                                          "100000"]),
                          capture_output=True, text=True, timeout=60, check=False)
    return done, exit_file, log


def test_an_agent_that_cannot_be_started_exits_127_and_says_so(tmp_path: Path) -> None:
    done, exit_file, _ = supervise(tmp_path, [str(tmp_path / "no-such-agent")])
    assert done.returncode == 127
    assert "wtr: cannot start the agent" in done.stdout and "No such file" in done.stdout
    assert json.loads(exit_file.read_text())["exit_code"] == 127


def test_the_agent_gets_the_signals_python_ignores_back_at_their_defaults(
        tmp_path: Path) -> None:
    # grep reads its own mask of ignored signals: SIGPIPE and SIGXFSZ must not be in it
    done, exit_file, log = supervise(tmp_path, ["grep", "^SigIgn:", "/proc/self/status"])
    assert done.returncode == 0, done.stdout + done.stderr
    ignored = int(log.read_text().split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} is ignored in the agent"
    assert json.loads(exit_file.read_text())["exit_code"] == 0


def test_the_agents_output_and_exit_code_come_through(tmp_path: Path) -> None:
    done, exit_file, log = supervise(tmp_path, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert done.returncode == 3
    assert log.read_text() == "out\nerr\n"
    assert json.loads(exit_file.read_text())["exit_code"] == 3
    killed, exit_file, _ = supervise(tmp_path, ["sh", "-c", "kill -9 $$"])
    assert killed.returncode == 128 + signal.SIGKILL
    assert json.loads(exit_file.read_text())["exit_code"] == -signal.SIGKILL


# -- the stream's agent lock: held by the supervisor from before its exec to its end ---------


def _agent_pid(tmp_path: Path, folder: Path) -> tuple[procs.Agent, int]:
    """An agent started as the runner starts one, that writes its pid and sleeps."""
    pid_file = tmp_path / "agent.pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " \
             "time.sleep(60)"
    agent = procs.start_agent([sys.executable, "-c", script], tmp_path, dict(os.environ),
                              tmp_path / "agent.log", folder / "exit-1.json")
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    return agent, int(pid_file.read_text())


def _holds(pid: int, path: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) == str(path) for fd in fds.iterdir())


def test_the_supervisor_holds_the_agent_lock_for_its_life_and_never_passes_it_on(
        tmp_path: Path) -> None:
    folder = tmp_path / "stream"
    folder.mkdir()
    agent, pid = _agent_pid(tmp_path, folder)
    try:
        assert procs.agent_lock_held(folder)
        assert _holds(agent.pid, folder / procs.AGENT_LOCK)
        assert not _holds(pid, folder / procs.AGENT_LOCK)  # (nor would its children)
        assert [found.pid for found in procs.stream_agents(folder)] == [agent.pid]
        os.kill(agent.pid, signal.SIGKILL)  # the supervisor dies, its agent lives on
        assert agent.process is not None and agent.process.wait(timeout=30)
        assert alive(pid)
        # (so a stray never makes a resume wait: the runner stops it before a new agent)
        assert not procs.agent_lock_held(folder) and procs.stream_agents(folder) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_no_agent_starts_while_another_supervisor_of_the_stream_holds_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "stream"
    folder.mkdir()
    first, pid = _agent_pid(tmp_path, folder)
    monkeypatch.setattr(procs, "KILL_GRACE_SECONDS", 0.3)
    try:
        with pytest.raises(WtrError, match="an earlier agent of this stream still runs"):
            procs.start_agent(["sh", "-c", "echo second > second"], tmp_path,
                              dict(os.environ), tmp_path / "agent.log", folder / "exit-2.json")
        assert not (tmp_path / "second").exists()
        assert [found.pid for found in procs.live_agents(folder)] == [first.pid]
    finally:
        first.stop(grace=0)
    second = procs.start_agent(["sh", "-c", "echo second > second"], tmp_path,
                               dict(os.environ), tmp_path / "agent.log", folder / "exit-2.json")
    assert second.process is not None and second.process.wait(timeout=30) == 0
    assert (tmp_path / "second").read_text() == "second\n"
    assert not alive(pid)  # (stopped with its supervisor)
