"""Agent presets with stand-in executables on PATH, worktree setup, ports, init --streams."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, records, stream_of

PROMPT = "<the prompt>"
PROMPT_FILE = "<the prompt file>"
WORKTREE = "<the worktree>"
STATE = "<the stream's state folder>"
# Written out by hand from what each CLI needs to work unattended in a worktree (proven
# against the real CLIs in tests/conformance), not taken from the preset files: a flag
# changed there must be changed here too, on purpose.
DOCUMENTED_ARGV = {
    "claude": ["claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose",
               "--permission-mode", "bypassPermissions",
               "--settings", f"{STATE}/claude-settings.json"],
    "codex": ["codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox",
              "--skip-git-repo-check", "--cd", WORKTREE, "-c", "allow_login_shell=false",
              PROMPT],
    "aider": ["aider", "--message-file", PROMPT_FILE, "--yes-always", "--no-stream",
              "--no-pretty", "--no-fancy-input", "--no-gitignore", "--map-tokens", "0",
              "--no-check-update", "--no-show-release-notes", "--no-analytics",
              "--analytics-log", "/dev/stdout", "--no-suggest-shell-commands",
              "--no-detect-urls", "--disable-playwright",
              "--chat-history-file", f"{STATE}/aider.chat.history.md",
              "--input-history-file", f"{STATE}/aider.input.history"],
    "gemini": ["gemini", "--skip-trust", "--approval-mode", "yolo", "--output-format",
               "stream-json", "--prompt", PROMPT],
    "opencode": ["opencode", "run", "--dir", WORKTREE, "--format", "json", "--title",
                 "wtr db", PROMPT],
}

STAND_IN = """#!{python}
import json, os, subprocess, sys
from pathlib import Path
record = Path(os.environ["RECORD_DIR"]) / (os.environ["WTR_STREAM"] + ".json")
env = {{k: v for k, v in os.environ.items() if k.startswith(("WTR_", "COMPOSE_"))}}
record.write_text(json.dumps({{"argv": sys.argv, "cwd": os.getcwd(), "env": env,
                               "program": Path(sys.argv[0]).name}}))
target = Path(os.environ["WTR_FILES"].splitlines()[0].replace("**", "by-agent.txt"))
target.parent.mkdir(parents=True, exist_ok=True)
target.write_text(Path(sys.argv[0]).name + "\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "stand-in work"], check=True)
if "stream-json" in sys.argv:
    print(json.dumps({{"type": "assistant", "message": "working"}}))
    print(json.dumps({{"type": "result", "num_turns": 3, "total_cost_usd": 0.25,
                      "usage": {{"input_tokens": 1200, "output_tokens": 34}}}}))
"""


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    """A folder with a fake of every preset's program, each recording how it was called."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in DOCUMENTED_ARGV:
        script = folder / program
        script.write_text(STAND_IN.format(python=sys.executable))
        script.chmod(0o755)
    return folder


def run_with_path(repo: Repo, plan: dict, bin_dir: Path | None) -> dict:
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}" if bin_dir else os.environ["PATH"]
    run_wtr("run", repo.write_plan(plan), cwd=repo.path, env={"PATH": path})
    return run_wtr("status", "--json", cwd=repo.path).json()


def test_every_preset_has_a_documented_command_line() -> None:
    from worktree_runner.presets import PRESETS

    assert sorted(PRESETS) == sorted(DOCUMENTED_ARGV)


@pytest.mark.parametrize("preset", sorted(DOCUMENTED_ARGV))
def test_each_preset_runs_its_program_with_the_exact_arguments(
        repo: Repo, stand_ins: Path, tmp_path: Path, preset: str) -> None:
    record_dir = tmp_path / "seen"
    record_dir.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"], "prompt": "Add an index; don't `rm`."}},
                      agent={"preset": preset, "args": ["--model", "big one"],
                             "env": {"RECORD_DIR": str(record_dir)}})
    plan["agent"].pop("command")
    plan["mcp"] = False  # (what wtr mcp adds to the argv: tests/test_mcp_config.py)
    doc = run_with_path(repo, plan, stand_ins)
    db = stream_of(doc, "db")
    assert db["status"] == "succeeded", db["failure"]
    seen = json.loads((record_dir / "db.json").read_text())
    prompt_file = seen["env"]["WTR_PROMPT_FILE"]
    prompt, state = Path(prompt_file).read_text(), str(Path(prompt_file).parent)
    named = {PROMPT: prompt, PROMPT_FILE: prompt_file, WORKTREE: db["worktree"]}
    expected = [named.get(a, a.replace(STATE, state)) for a in DOCUMENTED_ARGV[preset]]
    assert [Path(seen["argv"][0]).name, *seen["argv"][1:]] == [*expected, "--model", "big one"]
    assert "Add an index; don't `rm`." in prompt
    assert seen["cwd"] == db["worktree"]
    assert seen["env"]["WTR_STREAM"] == "db" and seen["env"]["WTR_BRANCH"] == db["branch"]
    assert db["changed_files"] == ["src/db/by-agent.txt"]


def test_copy_and_worktreeinclude_bring_untracked_files_into_every_worktree(
        repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    repo.commit({".gitignore": ".env\nconfig/*.local\n"}, "ignore local files")
    repo.write({".env": "SECRET=1\n", "config/db.local": "local db\n",
                ".worktreeinclude": "# files each worktree needs\n.env\n"})
    marker = "test -f .env && test -f config/db.local && echo both > $AGENT_RECORD/$WTR_STREAM"
    plan = agent_plan(
        {name: {"files": [f"src/{name}/**"], "env": {"AGENT_RECORD": str(rec)}}
         for name in ("db", "ui")},
        copy=["config/*.local"],
        setup=[f"{marker}.setup; echo $WTR_STREAM $WTR_PORT >> $AGENT_RECORD/setup.log"],
    )
    doc = run_with_path(repo, plan, None)
    assert doc["counts"]["succeeded"] == 2, [s["failure"] for s in doc["streams"]]
    for name in ("db", "ui"):
        worktree = Path(stream_of(doc, name)["worktree"])
        assert (worktree / ".env").read_text() == "SECRET=1\n"
        assert (worktree / "config/db.local").read_text() == "local db\n"
        assert (rec / f"{name}.setup").read_text().strip() == "both"
        assert stream_of(doc, name)["changed_files"] == []
    assert sorted((rec / "setup.log").read_text().split()) == sorted(
        ["db", "41000", "ui", "41001"])


def test_a_worktreeinclude_pattern_escaping_the_repo_is_rejected(repo: Repo) -> None:
    repo.write({".worktreeinclude": ".env\n../secrets\n"})
    result = run_wtr("run", repo.write_plan(agent_plan({"db": {"files": ["src/db/**"]}})),
                     cwd=repo.path)
    assert result.returncode == 2
    assert ".worktreeinclude:2" in result.stderr and "'..'" in result.stderr
    assert "wtr/" not in repo.git("branch", "--list")


def test_parallel_streams_get_distinct_ports_and_compose_names(repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({name: {"files": [f"src/{name}/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_SLEEP": "0.5"}}
                       for name in ("db", "ui", "api")}, port_range="5000-5009")
    doc = run_with_path(repo, plan, None)
    seen = {name: records(rec, name)[0]["env"] for name in ("db", "ui", "api")}
    ports = {name: env["WTR_PORT"] for name, env in seen.items()}
    assert ports == {"db": "5000", "ui": "5001", "api": "5002"}
    assert all(s["status"] == "succeeded" for s in doc["streams"])


def test_compose_project_name_is_run_and_stream(repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"Db.Main": {"files": ["src/db/**"],
                                   "env": {"AGENT_RECORD": str(rec)}}}, name="Shop")
    run_with_path(repo, plan, None)
    seen = json.loads(next(rec.glob("Db.Main.*.start.json")).read_text())
    assert re.fullmatch(r"shop-1-db-main-[0-9a-f]{8}", seen["env"]["COMPOSE_PROJECT_NAME"])


def test_port_range_too_small_is_a_plan_error(repo: Repo) -> None:
    plan = agent_plan({n: {"files": [f"src/{n}/**"]} for n in ("db", "ui")},
                      port_range="5000-5000")
    result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 2 and "port_range" in result.stderr


def test_init_streams_writes_a_plan_that_checks(repo: Repo) -> None:
    result = run_wtr("init", "--streams", "api:src/api/**,db:src/db/**|docs/**", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    plan = yaml.safe_load((repo.path / "worktree-plan.yaml").read_text())
    assert plan["streams"]["api"]["files"] == ["src/api/**"]
    assert plan["streams"]["db"]["files"] == ["src/db/**", "docs/**"]
    check = run_wtr("check", "worktree-plan.yaml", cwd=repo.path)
    assert check.returncode == 0, check.stderr
    bad = run_wtr("init", "other.yaml", "--streams", "api", cwd=repo.path)
    assert bad.returncode == 2 and bad.stderr.startswith("wtr: --streams")
    assert not (repo.path / "other.yaml").exists()
    both = run_wtr("init", "x.yaml", "--streams", "a:b", "--from-dirs", cwd=repo.path)
    assert both.returncode == 2


def test_claude_stream_json_usage_reaches_the_status_and_a_command_agent_has_none(
        repo: Repo, stand_ins: Path, tmp_path: Path) -> None:
    record_dir = tmp_path / "seen"
    record_dir.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"]}, "ui": {"files": ["src/ui/**"]}},
                      agent={"preset": "claude", "env": {"RECORD_DIR": str(record_dir)}})
    plan["streams"]["ui"]["agent"] = {"command": [sys.executable, "-c", "print('no usage')"]}
    plan["agent"].pop("command")
    doc = run_with_path(repo, plan, stand_ins)
    assert stream_of(doc, "db")["usage"] == {"input_tokens": 1200, "output_tokens": 34,
                                             "cost_usd": 0.25, "turns": 3}
    assert stream_of(doc, "ui")["usage"] is None
