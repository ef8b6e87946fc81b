"""Text ``wtr status`` off a terminal: whole lines (no wrapping at 80 columns, no trailing
spaces), a worktree per stream, what needs attention, and accepted streams as accepted."""

from __future__ import annotations

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of

LONG = "src/db/" + "a_rather_long_module_name_" * 3 + ".py"


def failed_run(repo: Repo) -> dict:
    plan = agent_plan({
        "db": {"files": ["src/db/**"],
               "env": {"AGENT_WRITE": f"{LONG}=DB;outside_of_scope_file.txt=x"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI"}},
    })
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 1, result.stderr
    doc: dict = run_wtr("status", "--json", cwd=repo.path).json()
    return doc


def text_status(repo: Repo) -> str:
    result = run_wtr("status", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_text_status_off_a_terminal_keeps_whole_lines_and_says_what_to_do(repo: Repo) -> None:
    doc = failed_run(repo)
    text = text_status(repo)
    lines = text.splitlines()
    assert all(line == line.rstrip() for line in lines), text
    message = stream_of(doc, "db")["failure"]["message"]
    assert any(message in line for line in lines), text
    for name in ("db", "api", "ui"):
        worktree = stream_of(doc, name)["worktree"]
        if worktree:
            assert any(worktree in line for line in lines), (name, text)
    attention = text.split("Needs attention", 1)[1]
    assert "wtr logs db" in attention and "wtr retry db" in attention
    assert "wtr accept db" in attention
    assert "api" in attention and "db" in attention


def test_an_accepted_stream_shows_its_reason_not_its_old_failure(repo: Repo) -> None:
    failed_run(repo)
    accepted = run_wtr("accept", "db", "--reason", "scope widened on purpose", cwd=repo.path)
    assert accepted.returncode == 0, accepted.stderr
    text = text_status(repo)
    db_line = next(line for line in text.splitlines() if line.split()[:1] == ["db"])
    assert "accepted: scope widened on purpose" in db_line
    assert "ownership" not in db_line
    markdown = run_wtr("status", "--markdown", cwd=repo.path).stdout
    assert "accepted: scope widened on purpose" in markdown
