"""The supervisor run as the runner runs it (a real process): how it starts the agent."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

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
