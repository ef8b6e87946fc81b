"""Change requests between streams with the real claude and codex CLIs, through ``wtr run``.

One run per CLI, four streams of the plan and the scripted model calling wtr's MCP tool
``request_change``. ``model`` finishes first; then ``db`` and ``api`` start from it, and
``docs`` waits for a free place (``max_parallel: 2``). ``api`` asks three owners for a
change, each in another state:

- ``docs`` has not started: the request lands in its prompt (seen in its first request);
- ``db`` is running: the request reaches db's same session as a new round once its turn
  has ended (the model holds db's last answer until the request is recorded), and db
  makes the change; api waits for that answer;
- ``model`` has finished: a follow-up stream ``model+req-1`` makes the change, api waits
  for it and, its worktree moved onto the follow-up's result, builds on it.

``wtr merge`` then lands every stream: main holds each change, each committed on its
owner's branch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance import test_claude, test_codex
from tests.conformance.harness import _environment, cli_bin_dir, git, workspace, wtr_in
from tests.conformance.modelserver import ModelServer, Script, placeholders
from tests.conformance.rounds import RoundScript

GATEWAYS = {"claude": test_claude.gateway, "codex": test_codex.gateway}
ROUND_START = "Other streams need changes in files you own:"  # (the round's message)
MARK = "FOLLOWUP_RESULT_7"  # only the follow-up writes it: api sees it once brought in
HOLD_SECONDS = 240.0

TURNS: dict[str, list[list[dict[str, Any]]]] = {
    "model": [[
        {"shell": "mkdir -p src/model && printf 'def value():\\n    return 42\\n' > "
                  "src/model/feature.py && git add src/model && "
                  "git commit -q -m 'model: value()'"},
        {"text": "REPORT model: value() added."}]],
    "db": [
        [{"shell": "mkdir -p src/db && printf 'TABLES = [\"orders\"]\\n' > src/db/feature.py"
                   " && git add src/db && git commit -q -m 'db: tables' && echo DB ROUND ONE"},
         {"text": "db: tables added.", "hold_until_asked": "db"}],
        [{"shell": "printf 'PAID = True\\n' >> src/db/feature.py && "
                   "git commit -q -am 'db: PAID for api' && echo DB ROUND TWO"},
         {"text": "REPORT db: PAID added, as api asked."}]],
    "api": [[
        {"mcp": "request_change", "input": {
            "path": "src/docs/index.md", "what": "document GET /orders/paid",
            "why": "api adds that endpoint"}},
        {"mcp": "request_change", "input": {
            "path": "src/db/feature.py", "what": "add PAID = True",
            "why": "orders say whether they are paid", "wait": True, "timeout": 400}},
        {"mcp": "request_change", "input": {
            "path": "src/model/feature.py", "what": "add def paid() returning a marker",
            "why": "the API calls it", "wait": True, "timeout": 400}},
        {"shell": "cat src/model/feature.py && mkdir -p src/api && printf 'from "
                  "src.model.feature import paid\\n' > src/api/feature.py && git add src/api "
                  "&& git commit -q -m 'api: GET /orders/paid'"},
        {"text": "REPORT api: built on the follow-up's paid()."}]],
    "follow-up": [[
        {"shell": f"printf '\\n\\ndef paid():\\n    return \"{MARK}\"\\n' >> "
                  "src/model/feature.py && git commit -q -am 'model: paid() for api'"},
        {"text": "REPORT follow-up: paid() added."}]],
    "docs": [[
        {"shell": "mkdir -p src/docs && printf '# API\\n\\nGET /orders/paid\\n' > "
                  "src/docs/index.md && git add src/docs && "
                  "git commit -q -m 'docs: GET /orders/paid for api'"},
        {"text": "REPORT docs: documented, as api asked."}]],
}


class Coordination(Script):
    """Each stream's rounds (a follow-up's under ``follow-up``). A turn marked
    ``hold_until_asked`` is answered only once the run holds a request for that stream:
    a model still thinking, so the request comes while the owner runs."""

    def __init__(self, repo: Path) -> None:
        super().__init__(TURNS["model"][0])
        self.repo = repo
        self.scripts = {name: RoundScript(rounds, starts=(ROUND_START,))
                        for name, rounds in TURNS.items()}

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        stream = placeholders(request_text).get("stream", "")
        key = "follow-up" if "+req-" in stream else stream
        chosen = self.scripts[key].turn(request_text, tool_results)
        if "hold_until_asked" in chosen:
            self._hold(chosen["hold_until_asked"])
        return chosen

    def _hold(self, target: str) -> None:
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            for book in self.repo.glob(".git/worktree-runner/runs/*/coordination/"
                                       "requests.json"):
                if any(r.get("target") == target
                       for r in json.loads(book.read_text()).get("requests", [])):
                    return
            time.sleep(0.2)


def _plan(preset: str) -> dict[str, Any]:
    def stream(files: str, prompt: str, *after: str) -> dict[str, Any]:
        return {"files": [files], "prompt": prompt, "depends_on": list(after)}

    return {"version": 1, "name": "coordination",
            "agent": {"preset": preset, "timeout": 500}, "max_parallel": 2,
            "streams": {"model": stream("src/model/**", "Add value() to src/model."),
                        "db": stream("src/db/**", "Add the tables.", "model"),
                        "api": stream("src/api/**", "Add GET /orders/paid.", "model"),
                        "docs": stream("src/docs/**", "Document the API.", "model")}}


def _first_request(sent: list[dict[str, Any]], stream: str) -> str:
    return next(e["body"] for e in sent if f"# Task: stream '{stream}'" in e["body"])


@pytest.mark.parametrize("preset", sorted(GATEWAYS))
def test_requests_reach_their_owners_in_every_state(preset: str) -> None:
    ws = workspace("checkout")
    plan_path = ws.root / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(_plan(preset), sort_keys=False))
    with ModelServer(Coordination(ws.repo), log_path=ws.root / "requests.jsonl") as server:
        env = _environment(ws, cli_bin_dir(preset), GATEWAYS[preset](server.url, ws.home))
        wtr = wtr_in(ws, env, timeout=540)

        ran = wtr("run", str(plan_path))
        status = json.loads(wtr("status", "--json").stdout)
        merged = wtr("merge")
        with server._lock:
            sent = list(server.requests)
    told = f"{ran.stdout}{ran.stderr}\n{merged.stdout}{merged.stderr}"
    assert ran.returncode == 0, (told, status)
    streams = {s["name"]: s for s in status["streams"]}
    assert sorted(streams) == ["api", "db", "docs", "model", "model+req-1"], told
    assert all(s["status"] == "succeeded" for s in streams.values()), status
    requests = {r["id"]: r for r in status["requests"]}
    routes = {k: (r["route"], r["target"], r["state"], r["answered_by"])
              for k, r in requests.items()}
    assert routes == {"r1": ("prompt", "docs", "answered", "docs"),
                      "r2": ("feedback", "db", "answered", "db"),
                      "r3": ("follow_up", "model+req-1", "answered", "model+req-1")}, requests

    # db: the request came as a second round of its same session, and db made the change
    db = streams["db"]
    assert [e["kind"] for e in db["attempt_log"]] == ["agent", "request"], db["attempt_log"]
    assert db["session"] and db["attempt_log"][1]["resumed"] == db["session"]
    assert any(ROUND_START in e["body"] and "DB ROUND ONE" in e["body"]
               and "(request r2) for a change in src/db/feature.py" in e["body"]
               and "# Task: stream 'db'" in e["body"] for e in sent), "not the same session"
    said = "\n".join(e["body"] for e in sent if "# Task: stream 'api'" in e["body"])
    assert "request r2 (src/db/feature.py) answered: 'db' made its work" in said

    # model: a follow-up made the change; api depends on it and built on its result
    assert "model+req-1" in streams["api"]["depends_on"]
    assert "request r3 (src/model/feature.py) answered: follow-up 'model+req-1'" in said
    assert MARK in said  # api's `cat` saw the follow-up's paid() in its worktree
    assert streams["api"]["changed_files"] == ["src/api/feature.py"]

    # docs: not started when asked; the request was in its prompt from the first request
    first = _first_request(sent, "docs")
    assert "Stream 'api' asks (request r1) for a change in src/docs/index.md" in first
    assert "document GET /orders/paid" in first
    assert "request r1 (src/docs/index.md) went to 'docs': it has not started" in said

    # the merged result: every change on main, each committed on its owner's branch
    assert merged.returncode == 0, told
    owners = {"db: PAID for api": "db", "model: paid() for api": "model+req-1",
              "api: GET /orders/paid": "api", "docs: GET /orders/paid for api": "docs"}
    on_main = git(ws.repo, "log", "--format=%s", "main").splitlines()
    for subject, owner in owners.items():
        assert subject in on_main, on_main
        mine = git(ws.repo, "log", "--format=%s",
                   f"{streams[owner]['base_commit']}..{streams[owner]['branch']}")
        assert subject in mine.splitlines(), (owner, mine)
    assert "PAID = True" in git(ws.repo, "show", "main:src/db/feature.py")
    assert MARK in git(ws.repo, "show", "main:src/model/feature.py")
    assert "GET /orders/paid" in git(ws.repo, "show", "main:src/docs/index.md")
