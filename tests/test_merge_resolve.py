"""wtr merge --resolve-with: a resolver's proposal is kept only when the checks pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import Repo, git
from tests.runhelp import agent_plan
from tests.test_merge import CHAIN, merge, run_plan, status

RESOLVED = "printf 'MAIN = 1\\nAPI = 2\\n' > src/api/orders.py"
VERIFY = ["! grep -q BROKEN src/api/orders.py"]


def conflicting(repo: Repo) -> str:
    run_plan(repo, agent_plan(CHAIN, verify=VERIFY))
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    return repo.head("main")


def test_a_correct_proposal_is_kept_and_recorded(repo: Repo) -> None:
    conflicting(repo)
    result = merge(repo, "--resolve-with", RESOLVED)
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    doc = status(repo)["merge"]
    [made] = doc["agent_resolutions"]
    assert made["stream"] == "api" and made["files"] == ["src/api/orders.py"]
    assert "+API = 2" in made["diff"] and made["resolver"] == RESOLVED
    assert doc["resolver_attempts"] == []


@pytest.mark.parametrize("resolver,why", [
    ("true", "conflict markers remain in src/api/orders.py"),
    (f"{RESOLVED}; echo mine >> README.md", "changed other files: README.md"),
    ("echo BROKEN > src/api/orders.py", "verify failed on the proposal"),
])
def test_a_proposal_that_fails_a_check_halts_for_a_human(repo: Repo, resolver: str,
                                                         why: str) -> None:
    before = conflicting(repo)
    result = merge(repo, "--resolve-with", resolver)
    assert result.returncode == 3, result.stderr
    assert why in result.stderr and "src/api/orders.py" in result.stderr
    assert repo.head("main") == before
    doc = status(repo)["merge"]
    assert doc["state"] == "halted" and doc["stream"] == "api"
    [attempt] = doc["resolver_attempts"]
    assert why in attempt["reason"]
    # the attempt is kept for reference; the worktree is back at the conflict
    assert repo.git("rev-parse", "--verify", attempt["ref"])
    integration = Path(doc["worktree"])
    assert git(integration, "diff", "--name-only", "--diff-filter=U") == "src/api/orders.py"
    assert "<<<<<<<" in (integration / "src/api/orders.py").read_text()
    assert git(integration, "status", "--porcelain", "--", "README.md") == ""
    # a human takes over as usual
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    done = merge(repo, "--continue")
    assert done.returncode == 0, done.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"
    assert (repo.path / "README.md").read_text() == "# sample\n"
