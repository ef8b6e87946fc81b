"""Commits an agent made and then hid, history it rewrote, and work it never did: each is
noticed by the stream's check and saved under refs/worktree-runner/rescue/."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of, wait_for


def rescue_refs(repo: Repo, run: str) -> dict[str, str]:
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)",
                   f"refs/worktree-runner/rescue/{run}/")
    return dict(line.split() for line in out.splitlines())


def run_db(repo: Repo, shell: str, code: int, **top: object) -> dict:
    env = {"AGENT_WRITE": "src/db/models.py=DB = 1", "AGENT_SHELL": shell}
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": env}}, **top)
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == code, result.stderr + result.stdout
    return stream_of(status(repo), "db")


def saved_commits(repo: Repo) -> list[str]:
    """The subjects of the commits saved as hidden under the run's rescue refs."""
    refs = rescue_refs(repo, status(repo)["run"])
    return sorted(repo.git("log", "-1", "--format=%s", ref) for ref in refs)


def test_commits_dropped_by_a_reset_fail_the_stream_and_are_saved(repo: Repo) -> None:
    db = run_db(repo, 'git reset -q --hard "$WTR_BASE_COMMIT"', 1)
    assert db["failure"]["kind"] == "history"
    assert db["failure"]["files"] == ["src/db/models.py"]
    assert saved_commits(repo) == ["db: work"]
    ref = next(iter(rescue_refs(repo, status(repo)["run"])))
    assert ref in db["failure"]["message"]
    assert repo.git("show", f"{ref}:src/db/models.py") == "DB = 1"


def test_an_amend_is_a_warning_and_the_commit_before_it_is_saved(repo: Repo) -> None:
    db = run_db(repo, "git commit -q --amend -m reworded", 0)
    assert db["status"] == "succeeded"
    assert [w["kind"] for w in db["warnings"]] == ["history"]
    assert saved_commits(repo) == ["db: work"]
    assert repo.git("log", "-1", "--format=%s", db["branch"]) == "reworded"


@pytest.mark.parametrize("shell", [
    'git checkout -q --detach && echo X > src/db/extra.py && git add -A && '
    'git commit -qm hidden && git checkout -q "$WTR_BRANCH"',
    'git checkout -q -b side && echo X > src/db/extra.py && git add -A && '
    'git commit -qm hidden && git checkout -q "$WTR_BRANCH" && git branch -q -D side',
], ids=["detached", "deleted-side-branch"])
def test_commits_made_off_the_branch_are_saved_with_a_warning(repo: Repo, shell: str) -> None:
    db = run_db(repo, shell, 0)
    assert db["status"] == "succeeded"
    assert [w["kind"] for w in db["warnings"]] == ["history"]
    assert saved_commits(repo) == ["hidden"]


def test_a_deleted_stream_branch_fails_the_stream_and_its_commits_are_saved(repo: Repo) -> None:
    db = run_db(repo, 'git checkout -q --detach && git branch -q -D "$WTR_BRANCH"', 1)
    assert db["failure"]["kind"] == "history"
    assert "deleted its branch" in db["failure"]["message"]
    assert saved_commits(repo) == ["db: work"]


def test_clean_saves_commits_hidden_in_a_worktree_before_removing_it(repo: Repo) -> None:
    db = run_db(repo, "true", 0)
    worktree = Path(db["worktree"])
    for args in (["checkout", "-q", "--detach"], ["commit", "-q", "--allow-empty", "-m", "late"],
                 ["checkout", "-q", db["branch"]]):
        subprocess.run(["git", *args], cwd=worktree, check=True)
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert not worktree.exists()
    assert saved_commits(repo) == ["late"]
    assert "which no branch holds any more" in result.stdout


def test_clean_saves_a_commit_only_the_stream_branch_once_held(repo: Repo) -> None:
    """Made with plumbing while HEAD was detached, then dropped from the branch: no HEAD
    reflog names it, only the branch's own reflog does."""
    db = run_db(repo, "true", 0)
    worktree = Path(db["worktree"])
    branch, tip = f"refs/heads/{db['branch']}", repo.head(db["branch"])
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=worktree, check=True)
    hidden = subprocess.run(["git", "commit-tree", "-p", tip, "-m", "branch only",
                             f"{tip}^{{tree}}"], cwd=worktree, check=True, capture_output=True,
                            text=True).stdout.strip()
    for target in (hidden, tip):
        subprocess.run(["git", "update-ref", branch, target], cwd=worktree, check=True)
    subprocess.run(["git", "checkout", "-q", db["branch"]], cwd=worktree, check=True)
    assert hidden not in subprocess.run(["git", "reflog", "--format=%H", "HEAD"], cwd=worktree,
                                        check=True, capture_output=True, text=True).stdout
    dry = run_wtr("clean", "--dry-run", cwd=repo.path)
    assert f"would save commit {hidden[:12]} of db, which no branch holds" in dry.stdout
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert saved_commits(repo) == ["branch only"]
    run = status(repo)["run"]
    ref = f"refs/worktree-runner/rescue/{run}/db"
    assert list(rescue_refs(repo, run)) == [f"{ref}@commit-{hidden[:12]}"]
    assert f"to {ref}@commit-{hidden[:12]}; see it with" in result.stdout


def test_an_agent_that_changed_nothing_is_a_warning(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded"
    assert [w["kind"] for w in db["warnings"]] == ["no_changes"]
    assert "no_changes" in run_wtr("status", "--markdown", cwd=repo.path).stdout


def test_allow_empty_false_makes_no_changes_a_failure(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]},
                       "ui": {"files": ["src/ui/**"], "allow_empty": True}}, allow_empty=False)
    assert run_wtr("check", repo.write_plan(plan), cwd=repo.path).returncode == 0
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    doc = status(repo)
    assert stream_of(doc, "db")["failure"]["kind"] == "no_changes"
    assert stream_of(doc, "ui")["status"] == "succeeded"


def test_a_careless_git_add_all_does_not_commit_a_copied_file(repo: Repo) -> None:
    (repo.path / ".env").write_text("SECRET=1\n")
    plan = agent_plan({"db": {"files": ["**"], "env": {"AGENT_WRITE": "src/db/models.py=DB"}}},
                      copy=[".env"])  # the test agent commits with 'git add -A'
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    db = stream_of(status(repo), "db")
    assert db["changed_files"] == ["src/db/models.py"]
    assert (Path(db["worktree"]) / ".env").read_text() == "SECRET=1\n"


def test_an_agent_that_forces_a_copied_file_into_a_commit_fails(repo: Repo) -> None:
    (repo.path / ".env").write_text("SECRET=1\n")
    plan = agent_plan({"db": {"files": ["**"], "env": {
        "AGENT_WRITE": "src/db/models.py=DB",
        "AGENT_SHELL": "git add -f .env && git commit -qm secret"}}}, copy=[".env"])
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 1
    db = stream_of(status(repo), "db")
    assert db["failure"]["kind"] == "ownership" and db["failure"]["files"] == [".env"]
    assert "copy" in db["failure"]["message"]


# The agent leaves its stream branch for one of its own, deletes the stream branch and
# resets its own: the commit it made is known to the worktree's HEAD reflog (and to that
# branch's, which nobody reads) and to nothing else.
LEAVE_AND_HIDE = ('git checkout -q -b side && git branch -q -D "$WTR_BRANCH" && '
                  'git reset -q --hard "$WTR_BASE_COMMIT"')


@pytest.mark.parametrize("step", ["agent_running", "agent_ended"])
def test_commits_hidden_before_the_runner_was_killed_are_saved_on_resume(
        repo: Repo, step: str) -> None:
    env = {"AGENT_WRITE": "src/db/models.py=DB = 1", "AGENT_SHELL": LEAVE_AND_HIDE}
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": env}})
    killed = run_wtr("run", repo.write_plan(plan), cwd=repo.path, env={"WTR_FAULT": f"{step}:db"})
    assert killed.returncode == -signal.SIGKILL
    run = status(repo)["run"]
    exit_file = repo.path / ".git/worktree-runner/runs" / run / "streams/db/exit-1.json"
    wait_for(exit_file.exists, timeout=30)  # the agent has done all it will do
    worktree = Path(stream_of(status(repo), "db")["worktree"])
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 1, result.stderr + result.stdout
    db = stream_of(status(repo), "db")
    assert db["failure"]["kind"] == "history"
    assert "deleted its branch" in db["failure"]["message"]
    assert saved_commits(repo) == ["db: work"]
    # the worktree is the one the agent left, not a new one at the base
    assert repo.git("-C", str(worktree), "symbolic-ref", "--short", "HEAD") == "side"


def test_an_agent_that_left_its_branch_before_the_runner_was_killed_is_judged_on_resume(
        repo: Repo) -> None:
    env = {"AGENT_WRITE": "src/db/models.py=DB = 1", "AGENT_SHELL": "git checkout -q --detach"}
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": env}})
    killed = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                     env={"WTR_FAULT": "agent_ended:db"})
    assert killed.returncode == -signal.SIGKILL
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 1, result.stderr + result.stdout
    db = stream_of(status(repo), "db")
    assert db["failure"]["kind"] == "history"
    assert "left its branch" in db["failure"]["message"]
    assert repo.git("log", "-1", "--format=%s", db["branch"]) == "db: work"
