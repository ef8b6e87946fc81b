"""Messages that say exactly what happened: retry's lines, accept's next step, a landed
merge's verify and log, plurals, and "nothing to undo" as bad input."""

from __future__ import annotations

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan


def test_retry_announces_its_attempt_once(repo: Repo, tmp_path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_FAIL_ATTEMPTS": "1", "AGENT_RECORD": str(rec),
                                      "AGENT_WRITE": "src/db/models.py=DB"}}})
    first = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert first.returncode == 1
    assert first.stdout.splitlines()[0] == "db: started"
    retried = run_wtr("retry", "db", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    lines = retried.stdout.splitlines()
    assert lines[:2] == ["db: started (attempt 2)", "db: succeeded"], lines


def test_automatic_retries_are_announced_as_attempts(repo: Repo, tmp_path) -> None:
    rec = tmp_path / "rec"
    rec.mkdir()
    plan = agent_plan({"db": {"files": ["src/db/**"], "agent": {"retries": 1},
                              "env": {"AGENT_FAIL_ATTEMPTS": "1", "AGENT_RECORD": str(rec),
                                      "AGENT_WRITE": "src/db/models.py=DB"}}})
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                     env={"WTR_RETRY_BACKOFF": "0.1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == ["db: started", "db: attempt 2", "db: succeeded"]


def test_accept_names_what_waits_on_it_or_says_nothing_does(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB;x.txt=1"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI;y.txt=1"}},
    })
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    db = run_wtr("accept", "db", "--reason", "ok", cwd=repo.path)
    assert db.returncode == 0, db.stderr
    assert "(2 changed files)" in db.stdout
    assert "'wtr resume' starts api" in db.stdout
    ui = run_wtr("accept", "ui", cwd=repo.path)
    assert ui.returncode == 0, ui.stderr
    assert "nothing waits on it" in ui.stdout and "wtr resume" not in ui.stdout


def test_landed_merge_says_verify_ran_and_where_its_log_is(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB"}}},
                      verify=["test -f src/db/models.py", "true"])
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    landed = run_wtr("merge", cwd=repo.path)
    assert landed.returncode == 0, landed.stderr
    assert "merged 1 stream onto main" in landed.stdout
    state_dir = run_wtr("status", "--json", cwd=repo.path).json()
    log = repo.path / ".git" / "worktree-runner" / "runs" / state_dir["run"] / "merge.log"
    assert log.exists()
    assert f"verify: 2 commands passed on the merged result (output: {log})" in landed.stdout


def test_nothing_to_undo_is_bad_input(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB"}}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    assert "no landed merge" in run_wtr("merge", "--undo", cwd=repo.path).one_line_error(2)
