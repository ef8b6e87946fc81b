"""``request_change`` of ``wtr mcp``, through the MCP SDK's stdio client, against a real run.

Two streams of the test agent (``api`` and ``db``) commit and then keep running until the
test releases them. The test speaks for their agents: ``wtr mcp`` subprocesses bound to
each stream, as the agent's CLI would start them. What the routes do with a request is
shown with real CLIs in tests/conformance/test_coordination.py; here: the tool's answers
and refusals, two waiting requests that close a cycle (escalated, the one closing it
halted, the other answered by a person: nobody deadlocked), a waiting call that does not
hold up the server's other tools, a wait that runs out (an answer, not an error), and a
server that ends while a call waits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from tests.runhelp import AGENT, wait_for
from tests.test_mcp import LiveRun, call, session, started_run

WAIT_HERE = 'while [ ! -e "$RELEASE" ]; do sleep 0.1; done'
PLAN = {
    "version": 1,
    "agent": {"command": [sys.executable, str(AGENT)], "timeout": 120},
    "streams": {
        "api": {"files": ["src/api/**"], "prompt": "api",
                "agent": {"env": {"AGENT_WRITE": "src/api/orders.py=ORDERS = [1]",
                                  "AGENT_SHELL": WAIT_HERE}}},
        "db": {"files": ["src/db/**"], "prompt": "db",
               "agent": {"env": {"AGENT_WRITE": "src/db/models.py=MODELS = [1]",
                                 "AGENT_SHELL": WAIT_HERE}}},
    },
}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    with started_run(tmp_path_factory.mktemp("mcp-request"), {
            "README.md": "# shop\n", "src/api/orders.py": "ORDERS = []\n",
            "src/db/models.py": "MODELS = []\n"}, PLAN,
            lambda run: all(s["status"] == "running" for s in run.status()["streams"])) as run:
        yield run


def book(run: LiveRun) -> dict[str, dict[str, Any]]:
    path = run.state_dir / "coordination" / "requests.json"
    found = json.loads(path.read_text())["requests"] if path.exists() else []
    return {r["id"]: r for r in found}


def status_of(run: LiveRun, stream: str) -> str:
    return str(json.loads((run.state_dir / "state.json").read_text())["streams"][stream]
               ["status"])


def test_a_cycle_of_waiting_requests_is_escalated_and_nobody_is_stuck(live: LiveRun) -> None:
    said: dict[str, Any] = {}

    async def api_waits(client: Any) -> None:
        said["r1"] = await call(client, "request_change", path="src/db/models.py",
                                what="add PAID to the models", why="the API returns it",
                                wait=True, timeout=60)

    async def scenario() -> None:
        async with session(live, "api") as api, session(live, "db") as db:
            listed = {t.name: t for t in (await api.list_tools()).tools}
            said["described"] = listed["request_change"].description or ""
            said["mine"] = await call(api, "request_change", path="src/api/orders.py",
                                      what="x", why="y")
            said["too_long"] = await call(api, "request_change", path="src/db/models.py",
                                          what="x", why="y", wait=True, timeout=601)
            said["unowned"] = await call(api, "request_change", path="README.md",
                                         what="a line about the API", why="docs")
            async with anyio.create_task_group() as group:
                group.start_soon(api_waits, api)
                await anyio.to_thread.run_sync(lambda: wait_for(lambda: "r2" in book(live)))
                started = time.monotonic()
                said["progress"] = await call(api, "progress", message="still here")
                said["progress_took"] = time.monotonic() - started
                said["cycle"] = await call(db, "request_change", path="src/api/orders.py",
                                           what="an ORDERS type", why="the models",
                                           wait=True, timeout=60)
                await anyio.to_thread.run_sync(lambda: wait_for(
                    lambda: status_of(live, "db") == "failed", timeout=30))
                said["answered"] = live.wtr("answer", "r2", "db halted; go on without it")
            said["timed_out"] = await call(api, "request_change", path="README.md",
                                           what="a line", why="docs", wait=True, timeout=0.3)

    anyio.run(scenario)
    assert "follow-up" in said["described"] and "wait=true" in said["described"]
    assert said["mine"][0] and "src/api/orders.py is yours" in said["mine"][1]
    assert said["too_long"][0] and "0-600" in said["too_long"][1]
    assert len(said["mine"][1].splitlines()) == 1
    unowned = json.loads(said["unowned"][1])
    assert not said["unowned"][0]
    assert (unowned["route"], unowned["state"], unowned["target"]) == ("person", "escalated",
                                                                       None)
    assert unowned["message"].startswith("request r1 (README.md) went to a person")

    assert said["progress"] == (False, "recorded for stream api: still here")
    assert said["progress_took"] < 5  # the waiting call holds up no other tool
    failed, text = said["cycle"]
    assert failed and len(text.splitlines()) == 1, text
    assert "would close a cycle of streams waiting on each other: db -> api -> db" in text
    assert "report being blocked" in text
    db = live.stream("db")
    assert "would close a cycle of streams waiting on each other (db -> api -> db)" \
        in db["failure"]["message"]
    assert said["answered"].returncode == 0, said["answered"].stderr
    failed, text = said["r1"]
    answer = json.loads(text)
    assert not failed and answer["state"] == "answered" and answer["id"] == "r2"
    assert answer["message"] == ("request r2 (src/db/models.py) answered: db halted; go on "
                                 "without it")
    requests = book(live)
    assert requests["r3"]["cycle"] == ["db", "api", "db"]
    failed, text = said["timed_out"]  # an answer, not an error: the agent goes on
    assert not failed and json.loads(text)["state"] == "timed_out"
    assert "no answer within 0.3s; a person decides" in json.loads(text)["message"]
    assert requests["r3"]["state"] == "escalated"


HANDSHAKE = [
    {"id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "cli", "version": "1"}}},
    {"method": "notifications/initialized"},
    {"id": 2, "method": "tools/call", "params": {"name": "request_change", "arguments": {
        "path": "README.md", "what": "a line", "why": "docs", "wait": True,
        "timeout": 300}}},
]


def test_a_server_ends_while_a_call_waits_and_the_request_waits_no_more(
        live: LiveRun) -> None:
    """The CLI closes the server's stdin while request_change waits: the server ends at
    once (the wait is given up, not sat out), and the request no longer counts as waiting."""
    params = live.server("api")
    server = subprocess.Popen([params.command, *params.args], env=params.env, cwd=params.cwd,
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        assert server.stdin is not None
        for message in HANDSHAKE:
            server.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\n").encode())
        server.stdin.flush()
        wait_for(lambda: waiting(live) is not None, timeout=30)
        asked = waiting(live)
        server.stdin.close()
        started = time.monotonic()
        server.wait(timeout=15)
        assert time.monotonic() - started < 10
    finally:
        if server.poll() is None:
            server.kill()
    assert asked is not None and book(live)[asked]["wait"] is False
    assert waiting(live) is None


def waiting(run: LiveRun) -> str | None:
    """The open request of api's about README.md that waits, if there is one."""
    return next((r["id"] for r in book(run).values() if r["from"] == "api" and r["wait"]
                 and r["path"] == "README.md" and r["state"] == "escalated"), None)
