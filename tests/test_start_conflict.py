"""A stream whose predecessors' results conflict halts for a human instead of a dead end:
the conflicted merge waits in its worktree; once resolved and committed there,
``wtr retry`` starts the agent from that commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, records, stream_of


def conflicting_plan(rec: Path) -> dict[str, Any]:
    """``notes`` owns NOTES.md; ``extra`` also writes it (out of scope, later accepted);
    ``report`` depends on both, so it must start from a merge of the two."""
    return agent_plan({
        "notes": {"files": ["NOTES.md"], "env": {"AGENT_WRITE": "NOTES.md=from notes"}},
        "extra": {"files": ["extra/**"],
                  "env": {"AGENT_WRITE": "extra/x.txt=x;NOTES.md=from extra"}},
        "report": {"files": ["report/**"], "depends_on": ["notes", "extra"],
                   "env": {"AGENT_WRITE": "report/r.txt=r", "AGENT_RECORD": str(rec)}},
    })


def status(repo: Repo) -> dict[str, Any]:
    result = run_wtr("status", "--json", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = result.json()
    return doc


def halted_report(repo: Repo, rec: Path) -> tuple[Any, dict[str, Any]]:
    first = run_wtr("run", repo.write_plan(conflicting_plan(rec)), cwd=repo.path)
    assert first.returncode == 1, first.stderr
    assert stream_of(status(repo), "extra")["failure"]["kind"] == "ownership"
    accepted = run_wtr("accept", "extra", "--reason", "NOTES.md change reviewed",
                       cwd=repo.path)
    assert accepted.returncode == 0, accepted.stderr
    resumed = run_wtr("resume", cwd=repo.path)
    return resumed, stream_of(status(repo), "report")


def test_conflicting_starting_points_halt_with_the_merge_left_in_the_worktree(
        repo: Repo, rec: Path) -> None:
    resumed, report = halted_report(repo, rec)
    assert resumed.returncode == 1, resumed.stderr
    assert report["status"] == "failed"
    failure = report["failure"]
    assert failure["files"] == ["NOTES.md"]
    for word in ("notes", "extra", "NOTES.md", "wtr retry report"):
        assert word in failure["message"], failure["message"]
    worktree = Path(report["worktree"])
    assert str(worktree) in failure["message"]
    assert str(worktree) in resumed.stdout + resumed.stderr
    assert git(worktree, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")
    assert "<<<<<<<" in (worktree / "NOTES.md").read_text()
    assert git(worktree, "diff", "--name-only", "--diff-filter=U") == "NOTES.md"
    assert report["base_commit"] is None
    assert report["start_conflict"] == {"streams": ["notes", "extra"], "files": ["NOTES.md"]}
    text = run_wtr("status", cwd=repo.path).stdout
    attention = text.split("Needs attention", 1)[1]
    assert "report cannot start" in attention and "'wtr retry report'" in attention
    assert "wtr accept report" not in attention
    assert records(rec, "report") == []  # no agent ran
    logs = run_wtr("logs", "report", cwd=repo.path)
    assert logs.returncode == 0
    assert "NOTES.md" in logs.stdout and str(worktree) in logs.stdout


def test_retry_before_resolving_says_so_and_changes_nothing(repo: Repo, rec: Path) -> None:
    _, report = halted_report(repo, rec)
    worktree = Path(report["worktree"])
    again = run_wtr("retry", "report", cwd=repo.path)
    assert again.returncode == 1
    report = stream_of(status(repo), "report")
    assert report["status"] == "failed"
    assert "not resolved" in report["failure"]["message"]
    assert git(worktree, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")
    assert records(rec, "report") == []
    refused = run_wtr("accept", "report", cwd=repo.path)
    line = refused.one_line_error(2)
    assert "wtr retry report" in line and str(worktree) in line


def test_retry_after_resolving_starts_the_agent_from_the_resolution(repo: Repo,
                                                                    rec: Path) -> None:
    _, report = halted_report(repo, rec)
    worktree = Path(report["worktree"])
    (worktree / "NOTES.md").write_text("from notes\nfrom extra\n")
    git(worktree, "add", "NOTES.md")
    git(worktree, "commit", "-q", "--no-edit")
    resolved = git(worktree, "rev-parse", "HEAD")
    retried = run_wtr("retry", "report", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    report = stream_of(status(repo), "report")
    assert report["status"] == "succeeded"
    assert report["start_conflict"] is None
    assert report["base_commit"] == resolved
    assert report["changed_files"] == ["report/r.txt"]
    [seen] = records(rec, "report")
    assert seen["env"]["WTR_BASE_COMMIT"] == resolved
    branch = report["branch"]
    assert repo.git("show", f"{branch}:NOTES.md") == "from notes\nfrom extra"
    assert repo.git("rev-parse", f"{branch}~1") == resolved


def test_three_starting_points_are_merged_one_conflict_at_a_time(repo: Repo,
                                                                 rec: Path) -> None:
    plan = agent_plan({
        "notes": {"files": ["NOTES.md"], "env": {"AGENT_WRITE": "NOTES.md=from notes"}},
        "one": {"files": ["one/**"], "env": {"AGENT_WRITE": "one/x=1;NOTES.md=from one"}},
        "two": {"files": ["two/**"], "env": {"AGENT_WRITE": "two/x=2;NOTES.md=from two"}},
        "report": {"files": ["report/**"], "depends_on": ["notes", "one", "two"],
                   "env": {"AGENT_WRITE": "report/r.txt=r", "AGENT_RECORD": str(rec)}},
    })
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    for name in ("one", "two"):
        assert run_wtr("accept", name, cwd=repo.path).returncode == 0
    assert run_wtr("resume", cwd=repo.path).returncode == 1
    report = stream_of(status(repo), "report")
    assert report["start_conflict"]["streams"] == ["notes", "one"]
    worktree = Path(report["worktree"])
    (worktree / "NOTES.md").write_text("from notes and one\n")
    git(worktree, "commit", "-qam", "notes and one")
    assert run_wtr("retry", "report", cwd=repo.path).returncode == 1
    report = stream_of(status(repo), "report")
    assert report["start_conflict"] == {"streams": ["notes", "one", "two"],
                                        "files": ["NOTES.md"]}
    assert git(worktree, "rev-parse", "--verify", "--quiet", "MERGE_HEAD")
    (worktree / "NOTES.md").write_text("all three\n")
    git(worktree, "commit", "-qam", "all three")
    resolved = git(worktree, "rev-parse", "HEAD")
    assert run_wtr("retry", "report", cwd=repo.path).returncode == 0
    report = stream_of(status(repo), "report")
    assert (report["status"], report["base_commit"]) == ("succeeded", resolved)
    assert report["changed_files"] == ["report/r.txt"]
    assert len(records(rec, "report")) == 1
