"""``wtr mcp``, driven through the MCP SDK's own stdio client against a real run.

One run for the module (three streams of the test agent, in a real repository): ``db``
succeeds, ``api`` commits and then keeps running until the module ends, ``ui`` waits for
it. Each test starts real ``wtr mcp`` subprocesses bound to one stream, as an agent's
CLI would, and checks what a tool call did in the run's state (``wtr status --json``, the
lock files) and what the model would read back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.gitrepo import ROOT, isolated_git_env, make_repo
from tests.runhelp import AGENT, alive, wait_for

PLAN = {
    "version": 1,
    "agent": {"command": [sys.executable, str(AGENT)], "timeout": 120},
    "shared": ["package.json"],
    "streams": {
        "api": {"files": ["src/api/**"], "shared": ["package.json"], "prompt": "api",
                "agent": {"env": {"AGENT_WRITE": "src/api/orders.py=ORDERS = [1]",
                                  "AGENT_SHELL": 'while [ ! -e "$RELEASE" ]; do sleep 0.1; '
                                                 "done"}}},
        "db": {"files": ["src/db/**"], "prompt": "db",
               "agent": {"env": {"AGENT_WRITE": "src/db/models.py=MODELS = [1]"}}},
        "ui": {"files": ["src/ui/**"], "depends_on": ["api"], "prompt": "ui"},
    },
}


@dataclass
class LiveRun:
    repo: Path
    env: dict[str, str]
    state_dir: Path
    worktrees: Path

    def wtr(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worktree_runner", *args], cwd=self.repo,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def status(self) -> dict[str, Any]:
        return json.loads(self.wtr("status", "--json").stdout)  # type: ignore[no-any-return]

    def stream(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status()["streams"] if s["name"] == name)

    def server(self, stream: str) -> StdioServerParameters:
        """``wtr mcp`` as an agent's CLI starts it: the agent's variables, its worktree."""
        worktree = self.worktrees / stream
        env = {**self.env, "WTR_RUN": self.state_dir.name, "WTR_STREAM": stream,
               "WTR_STATE_DIR": str(self.state_dir), "WTR_WORKTREE": str(worktree)}
        return StdioServerParameters(command=sys.executable,
                                     args=["-m", "worktree_runner", "mcp"], env=env,
                                     cwd=str(worktree))


@contextmanager
def started_run(root: Path, files: dict[str, str], plan: dict[str, Any],
                ready: Callable[[LiveRun], bool]) -> Iterator[LiveRun]:
    """A real `wtr run` of ``plan`` on a new repository of ``files`` under ``root``, once
    ``ready`` holds; its agents wait for ``$RELEASE`` to exist, which the end creates."""
    env = {**os.environ, **isolated_git_env(root / "home"), "PYTHONPATH": str(ROOT),
           "RELEASE": str(root / "release")}
    for key in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "WTR_RUN", "WTR_STREAM",
                "WTR_STATE_DIR"):
        env.pop(key, None)
    saved = dict(os.environ)
    os.environ.update(isolated_git_env(root / "home"))  # (make_repo's git sees the same)
    try:
        repo = make_repo(root / "repo", files)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    plan_file = root / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run", str(plan_file),
                               "--repo", str(repo.path)], cwd=repo.path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = repo.path / ".git" / "worktree-runner" / "runs" / "plan-1"
    run = LiveRun(repo.path, env, state, root / "repo.worktrees" / "plan-1")
    try:
        wait_for(lambda: (state / "state.json").exists() and ready(run), timeout=60)
        yield run
    finally:
        (root / "release").write_text("")
        try:
            runner.wait(timeout=60)
        finally:
            if runner.poll() is None:
                runner.kill()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    with started_run(tmp_path_factory.mktemp("mcp"), {
            "README.md": "# shop\n", "package.json": "{}\n",
            "src/api/orders.py": "ORDERS = []\n", "src/db/models.py": "MODELS = []\n",
            "src/ui/view.py": "VIEW = None\n"}, PLAN, _ready) as run:
        yield run


def _ready(run: LiveRun) -> bool:
    streams = {s["name"]: s for s in run.status()["streams"]}
    api_branch = subprocess.run(["git", "log", "--format=%s", "-1", "wtr/plan-1/api"],
                                cwd=run.repo, capture_output=True, text=True, check=False)
    return (streams["db"]["status"] == "succeeded" and streams["api"]["status"] == "running"
            and "api: work" in api_branch.stdout)


@asynccontextmanager
async def session(run: LiveRun, stream: str) -> AsyncIterator[ClientSession]:
    with open(os.devnull, "w") as quiet:
        async with stdio_client(run.server(stream), errlog=quiet) as (read, write), \
                ClientSession(read, write) as client:
            await client.initialize()
            yield client


async def call(client: ClientSession, tool: str, **arguments: Any) -> tuple[bool, str]:
    """(whether it failed, the text the model reads)."""
    result = await client.call_tool(tool, arguments)
    text = "\n".join(getattr(block, "text", "") for block in result.content)
    return bool(result.is_error), text


def test_an_agent_reports_and_asks_about_files_and_streams(live: LiveRun) -> None:
    state = live.state_dir / "state.json"
    inside = str(live.worktrees / "api" / "src" / "api" / "new.py")
    paths = ("src/api/orders.py", "src/db/models.py", "package.json", "README.md", inside,
             "../elsewhere.py", "/etc/passwd")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with session(live, "api") as client:
            listed = {tool.name: tool for tool in (await client.list_tools()).tools}
            said: dict[str, Any] = {
                "progress": await call(client, "progress", message="writing the orders API",
                                       percent=40),
                "report": await call(client, "report", markdown="# api\nEndpoints done."),
                "empty": await call(client, "progress", message="   "),
                "too_far": await call(client, "progress", message="x", percent=140),
                "no_report": await call(client, "report", markdown=""),
                "long_wait": await call(client, "lock", name="x", timeout=601),
                "not_a_number": await call(client, "progress", message="x", percent="half")}
            before = state.read_bytes()
            said["streams"] = await call(client, "streams")
            said["unchanged"] = state.read_bytes() == before
            for path in paths:
                said[path] = await call(client, "owner", path=path)
        return listed, said

    listed, said = anyio.run(scenario)
    assert sorted(listed) == ["lock", "owner", "progress", "report", "request_change",
                              "streams", "unlock"]
    assert "blocked" in listed["progress"].input_schema["properties"]
    assert "may_change" in (listed["owner"].description or "")
    assert "unlock" in (listed["lock"].description or "")

    assert said["progress"] == (False, "recorded for stream api (40%): writing the orders API")
    assert not said["report"][0] and "report saved" in said["report"][1]
    for failed, text in (said[k] for k in ("empty", "too_far", "no_report", "long_wait",
                                           "not_a_number")):
        assert failed and len(text.splitlines()) == 1, text
    assert "percent: Input should be a valid integer" in said["not_a_number"][1]
    assert "message is empty" in said["empty"][1] and "0-100" in said["too_far"][1]
    assert "report is empty" in said["no_report"][1] and "0-600" in said["long_wait"][1]
    api = live.stream("api")
    assert api["progress"]["message"] == "writing the orders API"
    assert api["progress"]["percent"] == 40
    assert api["report"]["text"] == "# api\nEndpoints done.\n"
    assert '"writing the orders API"' in (live.state_dir / "events.jsonl").read_text()

    seen = json.loads(said["streams"][1])
    assert seen["you"] == "api" and said["unchanged"]
    others = {s["name"]: s for s in seen["streams"]}
    assert sorted(others) == ["db", "ui"]
    assert others["db"]["status"] == "succeeded"
    assert others["db"]["changed_files"] == ["src/db/models.py"]
    assert others["ui"]["status"] == "pending" and others["ui"]["depends_on"] == ["api"]

    answers = {path: json.loads(said[path][1]) for path in paths[:5]}
    mine = answers["src/api/orders.py"]
    assert mine["may_change"] and mine["owners"] == ["api"] and not mine["shared"]
    theirs = answers["src/db/models.py"]
    assert not theirs["may_change"] and theirs["owners"] == ["db"]
    assert "owned by db" in theirs["why"]
    assert answers["package.json"]["may_change"] and answers["package.json"]["shared"]
    assert answers["package.json"]["shared_with"] == ["api"]
    unowned = answers["README.md"]
    assert unowned["owners"] == [] and not unowned["may_change"]
    assert "no stream owns it" in unowned["why"]
    assert answers[inside]["path"] == "src/api/new.py" and answers[inside]["may_change"]
    for bad in paths[5:]:
        failed, text = said[bad]
        assert failed and len(text.splitlines()) == 1 and "relative to" in text, text


def test_another_stream_sees_work_in_progress_and_its_own_limits(live: LiveRun) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with session(live, "db") as client:
            _, seen = await call(client, "streams")
            _, asked = await call(client, "owner", path="package.json")
        return json.loads(seen), json.loads(asked)

    seen, asked = anyio.run(scenario)
    api = next(s for s in seen["streams"] if s["name"] == "api")
    assert api["status"] == "running" and api["files"] == ["src/api/**"]
    assert api["changed_files"] == ["src/api/orders.py"]  # its commit so far, read live
    assert not asked["may_change"] and asked["shared"]
    assert "does not list" in asked["why"]


def test_locks_are_the_runs_and_never_outlive_their_server(live: LiveRun) -> None:
    note = live.repo / ".git" / "worktree-runner" / "locks" / "migrations.holder"

    def wtr_lock(timeout: str = "5") -> subprocess.CompletedProcess[str]:
        return live.wtr("lock", "migrations", "--timeout", timeout, "--", "true")

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with session(live, "api") as first:
            async with session(live, "db") as second:
                seen["taken"] = await call(first, "lock", name="migrations", timeout=5)
                seen["again"] = await call(first, "lock", name="migrations")
                seen["holder"] = json.loads(note.read_text())
                seen["cli_refused"] = await anyio.to_thread.run_sync(wtr_lock, "0.2")
                async with anyio.create_task_group() as both:  # (one agent, two calls)
                    for key in ("busy", "twice"):
                        both.start_soon(_into, seen, key,
                                        call(second, "lock", name="migrations", timeout=0.3))
                seen["not_mine"] = await call(second, "unlock", name="migrations")
                seen["released"] = await call(first, "unlock", name="migrations")
                seen["second"] = await call(second, "lock", name="migrations", timeout=5)
                seen["bad_name"] = await call(second, "lock", name="../x")
                pid = json.loads(note.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)  # the server dies holding it
                await anyio.to_thread.run_sync(lambda: wait_for(lambda: not alive(pid)))
                seen["after_kill"] = await anyio.to_thread.run_sync(wtr_lock)
            seen["third"] = await call(first, "lock", name="migrations", timeout=5)
        seen["after_close"] = await anyio.to_thread.run_sync(wtr_lock)
        return seen

    seen = anyio.run(scenario)
    assert not seen["taken"][0] and "you hold lock 'migrations'" in seen["taken"][1]
    assert "already hold" in seen["again"][1]
    assert seen["holder"]["stream"] == "api" and seen["holder"]["via"] == "wtr mcp"
    assert seen["cli_refused"].returncode == 1
    assert "stream api of run plan-1" in seen["cli_refused"].stderr
    waits = sorted([seen["busy"], seen["twice"]], key=lambda answer: "already" in answer[1])
    assert waits[0][0] and "still held after 0.3s, by stream api of run plan-1" in waits[0][1]
    assert waits[1][0] and "already waiting for lock 'migrations'" in waits[1][1]
    assert seen["not_mine"][0] and "you do not hold lock 'migrations'" in seen["not_mine"][1]
    assert not seen["released"][0] and not seen["second"][0]
    assert seen["bad_name"][0] and "not a valid lock name" in seen["bad_name"][1]
    assert seen["after_kill"].returncode == 0, seen["after_kill"].stderr
    assert not seen["third"][0]
    assert seen["after_close"].returncode == 0, seen["after_close"].stderr


def test_outside_a_run_it_says_what_it_is_for(live: LiveRun) -> None:
    env = {k: v for k, v in live.env.items() if not k.startswith("WTR_")}
    done = subprocess.run([sys.executable, "-m", "worktree_runner", "mcp"], cwd=live.repo,
                          env=env, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "wtr: wtr mcp serves an agent started by 'wtr run': WTR_STREAM, WTR_STATE_DIR and "
        "WTR_WORKTREE are not all set; a preset agent gets it in its MCP config; see "
        "docs/agents.md"]
    assert done.stdout == ""


async def _into(seen: dict[str, Any], key: str, answer: Awaitable[tuple[bool, str]]) -> None:
    seen[key] = await answer


ORPHANING_PARENT = """
import json, subprocess, sys
server = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
def send(message):
    server.stdin.write((json.dumps({"jsonrpc": "2.0", **message}) + "\\n").encode())
    server.stdin.flush()
send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18",
      "capabilities": {}, "clientInfo": {"name": "cli", "version": "1"}}})
send({"method": "notifications/initialized"})
send({"id": 2, "method": "tools/call", "params": {"name": "lock",
      "arguments": {"name": "orphaned"}}})
while json.loads(server.stdout.readline()).get("id") != 2:
    pass
holder = subprocess.Popen(["sleep", "60"], pass_fds=(server.stdin.fileno(),),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(server.pid, holder.pid, flush=True)
"""


def test_a_server_whose_agent_is_gone_ends_and_gives_its_locks_back(live: LiveRun) -> None:
    """The agent's CLI dies while something it started still holds the server's stdin
    open: the server sees its parent gone, ends, and its lock is free again."""
    params = live.server("api")
    done = subprocess.run([sys.executable, "-c", ORPHANING_PARENT, params.command,
                           *params.args], env=params.env, cwd=params.cwd, capture_output=True,
                          text=True, timeout=60, check=False)
    server, holder = map(int, done.stdout.split())
    try:
        wait_for(lambda: not alive(server), timeout=10)
        free = live.wtr("lock", "orphaned", "--timeout", "0", "--", "true")
        assert free.returncode == 0, free.stderr
    finally:
        for pid in (holder, server):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
