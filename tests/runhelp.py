"""Helpers for tests that run plans with the test agent (tests/agents/agent.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gitrepo import Repo, Result, run_wtr

AGENT = Path(__file__).resolve().parent / "agents" / "agent.py"


def agent_plan(streams: dict[str, dict[str, Any]], **top: Any) -> dict[str, Any]:
    """A plan whose default agent is the test agent; ``env`` in a stream goes to its agent."""
    specs = {}
    for name, spec in streams.items():
        spec = dict(spec)
        env = spec.pop("env", None)
        agent = dict(spec.pop("agent", {}))
        if env:
            agent["env"] = env
        if agent:
            spec["agent"] = agent
        spec.setdefault("prompt", f"do the {name} work")
        specs[name] = spec
    default_agent = {"command": [sys.executable, str(AGENT)], "timeout": 60}
    default_agent.update(top.pop("agent", {}))
    return {"version": 1, "agent": default_agent, **top, "streams": specs}


def records(folder: Path, stream: str, stage: str = "start") -> list[dict[str, Any]]:
    """What the test agent recorded for ``stream``, one entry per attempt."""
    files = sorted(folder.glob(f"{stream}.*.{stage}.json"))
    return [json.loads(f.read_text()) for f in files]


def stream_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in doc["streams"] if s["name"] == name)


def wait_for(condition: Callable[[], object], timeout: float = 60.0, poll: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(poll)


def status(repo: Repo) -> dict[str, Any]:
    """``wtr status --json`` of the repository's latest run."""
    doc: dict[str, Any] = run_wtr("status", "--json", cwd=repo.path).json()
    return doc


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def resume_adopting(repo: Repo, gate: Path, streams: tuple[str, ...], *args: str,
                    until: str = "taken up") -> Result:
    """``wtr resume ARGS`` of a run whose agents (of ``streams``) wait at ``gate``. The gate
    opens once the resumed runner has taken those streams up again (``stream.resumed``: it
    surely found their agents still at work), or with ``until="started"`` once it holds the
    run (their agents then end while it looks for them). A fixed sleep instead would have
    to outlast a loaded machine's start-ups, and would cost that every time."""
    run = status(repo)["run"]
    log = repo.path / ".git" / "worktree-runner" / "runs" / run / "events.jsonl"
    resume = subprocess.Popen([sys.executable, "-m", "worktree_runner", "resume", *args],
                              cwd=repo.path, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=dict(os.environ))

    def ready() -> bool:
        if until == "started":
            return (status(repo)["runner"] or {}).get("pid") == resume.pid
        events = [json.loads(line) for line in log.read_text().splitlines()
                  if '"stream.resumed"' in line]
        return set(streams) <= {e.get("stream") for e in events}

    try:
        wait_for(lambda: resume.poll() is not None or ready(), poll=0.1)
    finally:
        gate.touch()
    out, err = resume.communicate(timeout=120)
    return Result(resume.returncode, out, err)
