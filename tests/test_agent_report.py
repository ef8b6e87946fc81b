"""Stream reports: WTR_REPORT written by the agent, or filled from its final message."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from worktree_runner.run.agent_report import FILLED_MARK, SHOWN_CHARS, final_message

# A stand-in for an agent CLI: does a little work, then prints what FINAL_OUTPUT holds.
STAND_IN = f"""#!{sys.executable}
import os, subprocess, sys
from pathlib import Path
Path(os.environ["WTR_FILES"].splitlines()[0].replace("**", "work.txt")).write_text("x\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
if os.environ.get("OWN_REPORT"):
    Path(os.environ["WTR_REPORT"]).write_text(os.environ["OWN_REPORT"])
sys.stdout.write(os.environ["FINAL_OUTPUT"])
"""


def _stand_in(tmp_path: Path, program: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    script = folder / program
    script.write_text(STAND_IN)
    script.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def _run(repo: Repo, plan: dict, path: str | None = None) -> dict:
    env = {"PATH": path} if path else None
    run_wtr("run", repo.write_plan(plan), cwd=repo.path, env=env)
    return run_wtr("status", "--json", cwd=repo.path).json()


def test_agent_writes_its_report_and_status_shows_it(repo: Repo) -> None:
    text = "# Done\n\n- added the index\n- tests: 12 passed\n"
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_REPORT": text}},
                       "ui": {"files": ["src/ui/**"]}})
    doc = _run(repo, plan)
    report = stream_of(doc, "db")["report"]
    assert report["text"] == text and report["truncated"] is False and not report["filled"]
    assert Path(report["path"]).read_text() == text
    assert Path(report["path"]).parent.name == "db"
    assert stream_of(doc, "ui")["report"] is None
    markdown = run_wtr("status", "--markdown", cwd=repo.path).stdout
    assert "## Stream reports" in markdown and "### db" in markdown
    assert "> - tests: 12 passed" in markdown and "### ui" not in markdown


def test_prompt_names_the_report_file(repo: Repo, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_RECORD": str(rec)}}})
    doc = _run(repo, plan)
    seen = json.loads((rec / "db.1.start.json").read_text())
    report_path = seen["env"]["WTR_REPORT"]
    prompt = Path(seen["env"]["WTR_PROMPT_FILE"]).read_text()
    assert report_path in prompt and "WTR_REPORT" in prompt
    assert stream_of(doc, "db")["report"] is None


def test_a_long_report_is_cut_in_status_and_kept_whole_on_disk(repo: Repo) -> None:
    text = "line of the report\n" * 1000
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_REPORT": text}}})
    report = stream_of(_run(repo, plan), "db")["report"]
    assert report["truncated"] is True and len(report["text"]) == SHOWN_CHARS
    assert Path(report["path"]).read_text() == text
    markdown = run_wtr("status", "--markdown", cwd=repo.path).stdout
    assert f"the whole report: `{report['path']}`" in markdown


def test_claude_stream_json_result_fills_the_report(repo: Repo, tmp_path: Path) -> None:
    output = "\n".join(json.dumps(r) for r in (
        {"type": "assistant", "message": "working"},
        {"type": "result", "result": "All done: 3 endpoints, 9 tests pass.", "num_turns": 4,
         "total_cost_usd": 0.5},
    )) + "\n"
    plan = agent_plan({"db": {"files": ["src/db/**"]}},
                      agent={"preset": "claude", "env": {"FINAL_OUTPUT": output}})
    plan["agent"].pop("command")
    db = stream_of(_run(repo, plan, _stand_in(tmp_path, "claude")), "db")
    assert db["status"] == "succeeded"
    assert db["report"]["filled"] is True
    assert db["report"]["text"] == f"{FILLED_MARK}\n\nAll done: 3 endpoints, 9 tests pass.\n"
    assert db["usage"] == {"input_tokens": None, "output_tokens": None, "cost_usd": 0.5,
                           "turns": 4}


def test_an_own_report_wins_over_the_final_message_and_plain_text_is_no_report(
        repo: Repo, tmp_path: Path) -> None:
    result = json.dumps({"type": "result", "result": "final words"}) + "\n"
    plan = agent_plan({"db": {"files": ["src/db/**"]},
                       "ui": {"files": ["src/ui/**"],
                              "agent": {"env": {"FINAL_OUTPUT": result,
                                                "OWN_REPORT": "my own words"}}}},
                      agent={"preset": "claude", "env": {"FINAL_OUTPUT": "I changed db.\n"}})
    plan["agent"].pop("command")
    doc = _run(repo, plan, _stand_in(tmp_path, "claude"))
    assert stream_of(doc, "db")["report"] is None  # the preset reads stream-json only
    ui = stream_of(doc, "ui")["report"]
    assert ui["text"] == "my own words" and ui["filled"] is False


def test_codex_json_last_message_fills_the_report(repo: Repo, tmp_path: Path) -> None:
    output = "\n".join(json.dumps(r) for r in (
        {"type": "item.completed", "item": {"type": "agent_message", "text": "first"}},
        {"type": "item.completed", "item": {"type": "agent_message", "text": "last word"}},
        {"type": "turn.completed", "usage": {}},
    )) + "\n"
    plan = agent_plan({"db": {"files": ["src/db/**"]}},
                      agent={"preset": "codex", "args": ["--json"],
                             "env": {"FINAL_OUTPUT": output}})
    plan["agent"].pop("command")
    db = stream_of(_run(repo, plan, _stand_in(tmp_path, "codex")), "db")
    assert db["report"]["text"] == f"{FILLED_MARK}\n\nlast word\n"


def test_plain_output_of_other_agents_is_not_taken_for_a_report() -> None:
    assert final_message("just some log output\n") is None
    assert final_message('{"type": "result", "result": ""}\n') is None
    old_codex = json.dumps({"msg": {"type": "task_complete", "last_agent_message": "ok"}})
    assert final_message(old_codex + "\n") == "ok"
