"""How each preset's CLI is given ``wtr mcp``: in its own config for the run, never the
user's, with the command and variables that reach the stream.

Stand-ins named like the CLIs read their config where the real CLI reads it (claude's
``--mcp-config`` file, codex's ``-c mcp_servers.wtr.*`` options, opencode's
``OPENCODE_CONFIG``), start the server exactly as configured with only PATH and HOME
besides (codex's way), and call its ``progress`` tool over stdio: the call lands in the
stream's status. The real claude and codex CLIs are in tests/conformance/test_mcp.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from worktree_runner.presets import McpServer, StreamFacts
from worktree_runner.presets.gemini import GEMINI, SANDBOX_HOME
from worktree_runner.run.prompt import render_prompt

STAND_IN = """#!{python}
import json, os, subprocess, sys, tomllib
from pathlib import Path

def configured():
    args = sys.argv[1:]
    program = Path(sys.argv[0]).name
    if program == "claude":
        path = args[args.index("--mcp-config") + 1]
        assert args[args.index("--mcp-config") + 2].startswith("--"), args
        entry = json.loads(Path(path).read_text())["mcpServers"]["wtr"]
        return [entry["command"], *entry["args"]], entry["env"]
    if program == "codex":
        found = {{}}
        for flag, value in zip(args, args[1:]):
            key, _, text = value.partition("=")
            if flag == "-c" and key.startswith("mcp_servers.wtr."):
                found[key.rsplit(".", 1)[1]] = tomllib.loads("v = " + text)["v"]
        return [found["command"], *found["args"]], found["env"]
    entry = json.loads(Path(os.environ["OPENCODE_CONFIG"]).read_text())["mcp"]["wtr"]
    return entry["command"], entry["environment"]

argv, env = configured()
env = {{**env, "PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}}
server = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
def send(message):
    server.stdin.write((json.dumps({{"jsonrpc": "2.0", **message}}) + "\\n").encode())
    server.stdin.flush()
send({{"id": 1, "method": "initialize", "params": {{"protocolVersion": "2025-06-18",
      "capabilities": {{}}, "clientInfo": {{"name": "stand-in", "version": "1"}}}}}})
send({{"method": "notifications/initialized"}})
send({{"id": 2, "method": "tools/call", "params": {{"name": "progress", "arguments":
      {{"message": "via " + Path(sys.argv[0]).name, "percent": 50}}}}}})
while True:
    answer = json.loads(server.stdout.readline())
    if answer.get("id") == 2:
        break
server.stdin.close()
server.wait(timeout=30)
print(json.dumps(answer))
if "error" in answer or answer["result"].get("isError"):
    sys.exit(3)
target = Path(os.environ["WTR_FILES"].splitlines()[0].replace("**", "by-agent.txt"))
target.parent.mkdir(parents=True, exist_ok=True)
target.write_text("x\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "stand-in work"], check=True)
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in ("claude", "codex", "opencode"):
        script = folder / program
        script.write_text(STAND_IN.format(python=sys.executable))
        script.chmod(0o755)
    return folder


PRESETS_WITH_MCP = {"db": "claude", "api": "codex", "ui": "opencode"}


def _run(repo: Repo, stand_ins: Path, streams: dict[str, str], **top: object
         ) -> dict[str, object]:
    """Run one stream per preset (``streams``: stream -> preset; a stream named ``best``
    runs two candidates); the status."""
    plan = agent_plan({name: {"files": [f"src/{name}/**"], "agent": {"preset": preset},
                              # both candidates to the end (first stops the other)
                              **({"attempts": 2, "choose": "smallest"} if name == "best"
                                 else {})}
                       for name, preset in streams.items()}, **top)
    plan["agent"].pop("command")
    path = f"{stand_ins}{os.pathsep}{os.environ['PATH']}"
    run_wtr("run", repo.write_plan(plan), cwd=repo.path, env={"PATH": path}, timeout=180)
    return run_wtr("status", "--json", cwd=repo.path).json()  # type: ignore[no-any-return]


def test_the_cli_finds_the_server_in_its_config_and_reaches_the_stream(
        repo: Repo, stand_ins: Path) -> None:
    doc = _run(repo, stand_ins, {**PRESETS_WITH_MCP, "best": "claude"})
    best = stream_of(doc, "best")  # (a candidate's server: its own state, the run's plan)
    assert best["status"] == "succeeded", best["candidates"]
    assert all(c["status"] == "succeeded" for c in best["candidates"]), best["candidates"]
    for name, preset in PRESETS_WITH_MCP.items():
        stream = stream_of(doc, name)
        assert stream["status"] == "succeeded", stream["failure"]
        assert stream["progress"]["message"] == f"via {preset}"
        state = repo.path / ".git/worktree-runner/runs/plan-1/streams" / name
        prompt = (state / "prompt.md").read_text()
        assert "## Tools of this run (the MCP server 'wtr')" in prompt
        assert "owner(path)" in prompt
    assert not (repo.path / ".mcp.json").exists()  # nothing in the user's own config


def test_mcp_false_gives_the_cli_no_server(repo: Repo, stand_ins: Path) -> None:
    db = stream_of(_run(repo, stand_ins, {"db": "claude"}, mcp=False), "db")
    assert db["status"] == "failed"  # the stand-in finds no --mcp-config
    state = repo.path / ".git/worktree-runner/runs/plan-1/streams/db"
    assert not (state / "claude-mcp.json").exists()
    assert "Tools of this run" not in (state / "prompt.md").read_text()


def test_mcp_must_be_true_or_false(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "mcp": "yes"}})
    line = run_wtr("check", repo.write_plan(plan), cwd=repo.path).error_lines()
    assert any("streams.db.mcp" in text and "true or false" in text for text in line), line


def _facts(tmp_path: Path, sandbox: bool) -> StreamFacts:
    server = McpServer(sys.executable, ("-P", "-m", "worktree_runner", "mcp"),
                       {"WTR_STREAM": "db"})
    return StreamFacts("db", tmp_path / "wt", tmp_path / "state", tmp_path, tmp_path,
                       ("src/db/**",), tmp_path, tmp_path, tmp_path, sandbox=sandbox,
                       mcp=server)


def test_gemini_gets_it_in_the_settings_of_its_home_of_the_run_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    users = {"mcpServers": {"docs": {"command": "docs-server"}}, "ui": {"theme": "x"}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(users))
    monkeypatch.setenv("HOME", str(home))
    assert not GEMINI.gets_mcp(sandbox=False) and GEMINI.gets_mcp(sandbox=True)
    assert GEMINI.launch(_facts(tmp_path, sandbox=False)).files == {}
    launch = GEMINI.launch(_facts(tmp_path, sandbox=True))
    settings = json.loads(launch.files[f"{SANDBOX_HOME}/.gemini/settings.json"])
    assert settings["ui"] == {"theme": "x"}
    assert settings["mcpServers"]["docs"] == {"command": "docs-server"}
    assert settings["mcpServers"]["wtr"]["args"] == ["-P", "-m", "worktree_runner", "mcp"]
    assert settings["mcpServers"]["wtr"]["env"] == {"WTR_STREAM": "db"}
    assert launch.env["GEMINI_CLI_HOME"] == str(tmp_path / "state" / SANDBOX_HOME)
    assert json.loads((home / ".gemini" / "settings.json").read_text()) == users


def test_doctor_says_which_agents_get_the_server(repo: Repo) -> None:
    found = run_wtr("doctor", "--json", cwd=repo.path).json()
    mcp = {agent["name"]: agent["mcp"] for agent in found["agents"]}
    assert mcp["aider"] is None
    assert "--mcp-config" in mcp["claude"] and "mcp_servers.wtr" in mcp["codex"]
    assert "sandbox: true" in mcp["gemini"] and "OPENCODE_CONFIG" in mcp["opencode"]
    said = run_wtr("doctor", cwd=repo.path).stdout
    assert "gets wtr mcp under sandbox: true" in next(
        line for line in said.splitlines() if line[5:].startswith("gemini"))
    plan = agent_plan({"db": {"files": ["src/db/**"]}}, agent={"preset": "claude"}, mcp=False)
    plan["agent"].pop("command")
    off = run_wtr("doctor", repo.write_plan(plan), "--json", cwd=repo.path).json()
    assert off["agents"][0]["mcp"] is None


def test_the_prompt_names_the_tools_only_when_the_agent_has_them(repo: Repo) -> None:
    from worktree_runner.plan.load import load_plan

    plan = load_plan(repo.write_plan(agent_plan({"db": {"files": ["src/db/**"]}})))
    stream = plan.stream("db")
    with_tools = render_prompt(plan, stream, "/wt", "wtr/p-1/db", mcp=True)
    assert "lock(name, timeout) / unlock(name)" in with_tools
    assert "wtr progress" in with_tools  # the shell commands stay
    assert "with the tool request_change(path, what, why, wait)" in with_tools
    assert "if you do not have it, with: wtr request PATH" in with_tools
    assert "with the tool request_change" not in render_prompt(plan, stream, "/wt",
                                                                "wtr/p-1/db")
    assert "Tools of this run" not in render_prompt(plan, stream, "/wt", "wtr/p-1/db")
