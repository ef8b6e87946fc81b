"""``wtr logs``: a stream that never started says why; every attempt in the log ends with a
line giving its exit code and its outcome."""

from __future__ import annotations

import re

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan


def run_plan(repo: Repo, plan: dict) -> None:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                     env={"WTR_RETRY_BACKOFF": "0.1"})
    assert result.returncode in (0, 1), result.stderr


def logs(repo: Repo, stream: str) -> str:
    result = run_wtr("logs", stream, cwd=repo.path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_logs_of_streams_that_never_started_say_why(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"],
               "agent": {"command": ["no-such-agent-program", "{prompt_file}"]}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
    })
    run_plan(repo, plan)
    db = logs(repo, "db")
    assert "db never started an agent" in db
    assert "no-such-agent-program" in db and "not found on PATH" in db
    api = logs(repo, "api")
    assert "api never started" in api and "'db'" in api and "did not succeed" in api


def attempt_ends(text: str) -> list[str]:
    return re.findall(r"^--- attempt \d+ ended: .*$", text, flags=re.MULTILINE)


def test_every_attempt_ends_with_its_exit_code_and_outcome(repo: Repo, tmp_path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({
        "db": {"files": ["src/db/**"],
               "env": {"AGENT_WRITE": "src/db/models.py=DB;top.txt=x"}},
        "ui": {"files": ["src/ui/**"], "agent": {"retries": 1},
               "env": {"AGENT_FAIL_ATTEMPTS": "1", "AGENT_RECORD": str(rec),
                       "AGENT_WRITE": "src/ui/view.py=UI"}},
    })
    run_plan(repo, plan)
    assert attempt_ends(logs(repo, "db")) == [
        "--- attempt 1 ended: exit code 0; ownership: changed 1 file outside its files: "
        "top.txt ---"]
    assert attempt_ends(logs(repo, "ui")) == [
        "--- attempt 1 ended: exit code 1; exit_code: the agent exited with code 1 ---",
        "--- attempt 2 ended: exit code 0; succeeded ---"]
