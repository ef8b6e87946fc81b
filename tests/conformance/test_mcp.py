"""``wtr mcp`` with the real agent CLIs, through ``wtr run``.

The preset gives the CLI the server in the run's own config (claude ``--mcp-config``,
codex ``-c mcp_servers.wtr.*``, opencode's run config, gemini's settings in its home of
the run under ``sandbox: true``); the scripted model calls its tools by the names the CLI
offers them under. Checked in wtr's state and in what reached the model server: progress
in ``status --json``, a lock held (its holder note, read by the agent's shell while it
holds it) and given back, ``owner()`` refusing the other stream's file, ``streams()``
naming the other stream. Then, with claude: a server killed in the middle of the run and
a server that never answers the handshake leave the agent to finish its work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import test_claude, test_codex, test_gemini, test_opencode
from tests.conformance.harness import STREAMS, Outcome, run_conformance
from tests.conformance.modelserver import Script, fill, placeholders
from tests.runhelp import alive
from worktree_runner.locks import HeldLock

GATEWAYS = {"claude": test_claude.gateway, "codex": test_codex.gateway}
LOCKS = '"$(git rev-parse --path-format=absolute --git-common-dir)/worktree-runner/locks"'
COMMIT = {"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' > "
                   "src/{stream}/feature.py && git add src/{stream} && "
                   'git commit -q -m "{stream}: add feature"'}


class PerStream(Script):
    """Turns of each stream's own (``{other}`` is the other stream of the plan)."""

    def __init__(self, turns: dict[str, list[dict[str, Any]]]) -> None:
        super().__init__(next(iter(turns.values())))
        self.by_stream = turns

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        found = placeholders(request_text)
        stream = found.get("stream", STREAMS[0])
        turns = self.by_stream[stream]
        chosen = (turns[tool_results] if tool_results < len(turns)
                  else next(t for t in reversed(turns) if "text" in t))
        other = next(s for s in STREAMS if s != stream)
        return fill(chosen, {**found, "other": other})


TOOL_TURNS = [
    {"mcp": "progress", "input": {"message": "mcp progress {stream}", "percent": 30}},
    {"mcp": "lock", "input": {"name": "mcp-conformance", "timeout": 120}},
    {"shell": f"cat {LOCKS}/mcp-conformance.holder"},
    {"mcp": "unlock", "input": {"name": "mcp-conformance"}},
    {"mcp": "owner", "input": {"path": "src/{other}/feature.py"}},
    {"mcp": "streams", "input": {}},
    COMMIT,
    {"text": "REPORT {stream}: done through wtr's tools."},
]


def other_stream(name: str) -> str:
    return next(s for s in STREAMS if s != name)


def assert_each_stream_reported_and_was_refused(outcome: Outcome, sent: str) -> None:
    """Each stream succeeded, its progress through the server is in its status and the
    tool's result reached the model, and owner() refused the other stream's file."""
    for name in STREAMS:
        other = other_stream(name)
        stream = outcome.stream(name)
        assert stream["status"] == "succeeded", (stream["failure"], outcome.describe())
        assert stream["progress"]["message"] == f"mcp progress {name}", outcome.describe()
        assert f"recorded for stream {name} (30%): mcp progress {name}" in sent
        assert f"owned by {other}: changing it fails" in sent


@pytest.mark.parametrize("preset", sorted(GATEWAYS))
def test_the_agent_uses_wtrs_tools_through_its_cli(preset: str) -> None:
    outcome = run_conformance(preset, "checkout", GATEWAYS[preset],
                              script=PerStream({s: TOOL_TURNS for s in STREAMS}))
    assert outcome.exit_code == 0, outcome.describe()
    sent = outcome.server.sent_back()
    assert_each_stream_reported_and_was_refused(outcome, sent)
    for name in STREAMS:
        other = other_stream(name)
        assert f'"stream": "{name}", "run": "{outcome.status["run"]}", "via": "wtr mcp"' in sent
        refusal = f"owned by {other}: changing it fails your stream's ownership check"
        assert refusal in sent, outcome.describe()
        assert f'"you": "{name}"' in sent  # streams(), as each stream saw it
    assert "you hold lock 'mcp-conformance' now" in sent
    assert "lock 'mcp-conformance' released" in sent
    locks = outcome.ws.repo / ".git" / "worktree-runner" / "locks"
    assert (locks / "mcp-conformance.lock").exists()
    assert not (locks / "mcp-conformance.holder").exists()  # given back, note and all
    requests = [r for r in outcome.server.requests if "wtr" in r["body"]]
    assert requests, "the CLI never offered the model a tool of wtr's"


SHORT_TURNS = [
    {"mcp": "progress", "input": {"message": "mcp progress {stream}", "percent": 30}},
    {"mcp": "owner", "input": {"path": "src/{other}/feature.py"}},
    COMMIT,
    {"text": "REPORT {stream}: done through wtr's tools."},
]


@pytest.mark.parametrize(("preset", "variant"), [("opencode", "checkout"),
                                                 ("gemini", "sandbox")])
def test_opencode_and_gemini_find_the_server_where_wtr_put_it(preset: str,
                                                              variant: str) -> None:
    """opencode reads it from the run's OPENCODE_CONFIG; gemini, under sandbox: true, from
    the settings.json of its home of the run (the server then runs in the sandbox too)."""
    gateway = {"opencode": test_opencode.gateway, "gemini": test_gemini.gateway}[preset]
    outcome = run_conformance(preset, variant, gateway,
                              script=PerStream({s: SHORT_TURNS for s in STREAMS}))
    assert outcome.exit_code == 0, outcome.describe()
    assert_each_stream_reported_and_was_refused(outcome, outcome.server.sent_back())


KILL_SERVER = ('kill -9 "$(python3 -c "import json,sys; '
               "print(json.load(open(sys.argv[1]))['pid'])\" "
               f'{LOCKS}/mcp-killed.holder)"')
KILLED_TURNS = [
    {"mcp": "progress", "input": {"message": "before the server died", "percent": 20}},
    {"mcp": "lock", "input": {"name": "mcp-killed", "timeout": 30}},
    {"shell": KILL_SERVER},
    {"mcp": "progress", "input": {"message": "after the server died", "percent": 60}},
    COMMIT,
    {"text": "REPORT {stream}: finished without wtr's tools."},
]
HUNG_TURNS = [
    {"mcp": "progress", "input": {"message": "nobody answers this", "percent": 20}},
    COMMIT,
    {"text": "REPORT {stream}: finished without wtr's tools."},
]


def test_a_dead_or_hung_server_never_hangs_the_agent(tmp_path: Path) -> None:
    """alpha's server dies (SIGKILL) holding a lock; beta's never answers the handshake (it
    pauses before serving, as a wedged server would). Both agents go on, commit and
    finish; the dead server's lock is free again, and the wedged one is gone with its
    agent. (Claude Code may start a dead server again at the next call, so alpha's later
    progress may land through a new one or come back as an error: either way, it goes on.
    Which one depends on the CLI's timing, so neither is asserted.)"""
    pause = tmp_path / "hold-the-server"
    pause.write_text("")
    wait = "15000"  # (ms: for alpha's server to answer (again) on a busy machine)
    agent = {"env": {"WTR_PAUSE": "mcp_serving:beta", "WTR_PAUSE_FILE": str(pause),
                     "MCP_TIMEOUT": wait, "MCP_CONNECT_TIMEOUT_MS": wait}}
    hung = "4000"  # (beta's never answers: this is only how long its CLI waits for it)
    beta = {"env": {"MCP_TIMEOUT": hung, "MCP_CONNECT_TIMEOUT_MS": hung}}
    started = time.monotonic()
    try:
        outcome = run_conformance("claude", "checkout", test_claude.gateway, agent=agent,
                                  script=PerStream({"alpha": KILLED_TURNS,
                                                    "beta": HUNG_TURNS}),
                                  stream_agents={"beta": beta})
        wedged = int(Path(f"{pause}.reached").read_text())
        assert not alive(wedged), "the server that never answered outlived its agent"
    finally:
        pause.unlink()
    took = time.monotonic() - started
    assert outcome.exit_code == 0, outcome.describe()
    assert took < 240, took
    for name in STREAMS:
        stream = outcome.stream(name)
        assert stream["status"] == "succeeded", (stream["failure"], outcome.describe())
        assert stream["changed_files"] == [f"src/{name}/feature.py"]
    sent = outcome.server.sent_back()
    assert "recorded for stream alpha (20%): before the server died" in sent
    assert "No such tool available: mcp__wtr__progress" in sent  # beta's, told and gone on
    assert outcome.stream("beta")["progress"]["message"] is None
    locks = outcome.ws.repo / ".git" / "worktree-runner" / "locks"
    holder = json.loads((locks / "mcp-killed.holder").read_text())  # (killed: no cleanup)
    assert holder["stream"] == "alpha" and not alive(holder["pid"])
    lock = HeldLock(locks / "mcp-killed.lock")
    assert not lock.held() and not lock.busy()  # the kernel gave it back
