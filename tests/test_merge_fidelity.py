"""What lands is the stream's net change, and the target moves only by compare-and-swap.

Agents that make merge commits (an edit inside the merge, a conflict resolved in it) must
not lose that edit to a replay that drops merge commits. The landing guards are each
defended by a test that fails when the guard is removed.
"""

from __future__ import annotations

from pathlib import Path

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan
from tests.test_merge import CHAIN, merge, run_plan, status

# A shell agent: commit a.py, commit b.py on a side line from the base, merge the side
# line with --no-commit, add an edit (c.py) inside the merge commit.
EVIL_MERGE = """set -e
echo A > src/api/a.py; git add -A; git commit -qm 'api: a'
git checkout -q --detach "$WTR_BASE_COMMIT"
echo B > src/api/b.py; git add -A; git commit -qm 'api: side b'
side=$(git rev-parse HEAD); git checkout -q "$WTR_BRANCH"
git merge -q --no-ff --no-commit "$side"
echo C > src/api/c.py; git add -A; git commit -qm 'api: merge side, with an edit'
"""

# The side line edits the same file; the agent resolves the conflict in the merge commit.
RESOLVED_IN_MERGE = """set -e
echo A > src/api/orders.py; git add -A; git commit -qm 'api: A'
git checkout -q --detach "$WTR_BASE_COMMIT"
echo B > src/api/orders.py; git add -A; git commit -qm 'api: side B'
side=$(git rev-parse HEAD); git checkout -q "$WTR_BRANCH"
git merge -q --no-ff "$side" || true
echo RESOLVED > src/api/orders.py; git add -A; git commit -q --no-edit
"""


def shell_stream(script: str) -> dict:
    return {"files": ["src/api/**"], "agent": {"command": script}}


def test_an_edit_inside_an_agents_merge_commit_reaches_the_target(repo: Repo) -> None:
    doc = run_plan(repo, agent_plan({"api": shell_stream(EVIL_MERGE)}))
    assert doc["streams"][0]["status"] == "succeeded", doc["streams"][0]
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    for name, text in (("a", "A"), ("b", "B"), ("c", "C")):
        assert (repo.path / f"src/api/{name}.py").read_text() == f"{text}\n"
    tip = repo.head("main")
    branch_tree = repo.git("rev-parse", f"wtr/{doc['run']}/api^{{tree}}")
    assert repo.git("rev-parse", f"{tip}^{{tree}}") == branch_tree
    assert "net change" in result.stdout and "api" in result.stdout
    assert status(repo)["merge"]["squashed"] == ["api"]


def test_a_conflict_resolved_inside_a_merge_commit_lands_as_resolved(repo: Repo) -> None:
    run_plan(repo, agent_plan({"api": shell_stream(RESOLVED_IN_MERGE),
                               "ui": CHAIN["ui"]}))
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "RESOLVED\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"


def test_a_merge_commit_stream_whose_net_change_conflicts_halts(repo: Repo) -> None:
    run_plan(repo, agent_plan({"api": shell_stream(EVIL_MERGE)}))
    repo.commit({"src/api/c.py": "MAIN\n"}, "main adds c.py too")
    main_before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 3, result.stderr
    assert "src/api/c.py" in result.stderr
    assert repo.head("main") == main_before
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/c.py").write_text("MAIN\nC\n")
    git(integration, "add", "src/api/c.py")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/b.py").read_text() == "B\n"
    assert (repo.path / "src/api/c.py").read_text() == "MAIN\nC\n"


def sneaky_commit(repo: Repo, branch: str) -> str:
    """A shell line that moves ``branch`` to a new commit without checking it out."""
    where = f"git -C {repo.path}"
    return (f"{where} update-ref refs/heads/{branch} "
            f"$({where} commit-tree -p {branch} -m sneaky {branch}^{{tree}})")


def test_a_target_not_checked_out_moved_during_the_merge_is_not_overwritten(repo: Repo) -> None:
    repo.git("branch", "release")
    run_plan(repo, agent_plan(CHAIN, target="release", verify=[sneaky_commit(repo, "release")]))
    result = merge(repo)
    assert result.returncode == 1, result.stderr
    assert "moved during the merge" in result.stderr
    assert repo.git("log", "-1", "--format=%s", "release") == "sneaky"
    assert repo.git("show", "release:src/ui/view.py") == "VIEW = None"
    assert status(repo)["merge"]["state"] == "aborted"


def test_a_checked_out_target_made_dirty_during_the_merge_is_not_touched(repo: Repo) -> None:
    dirty = f"echo 'my edit' > {repo.path}/README.md"
    run_plan(repo, agent_plan(CHAIN, verify=[dirty]))
    main_before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 3, result.stderr
    assert "uncommitted changes" in result.stderr and "README.md" in result.stderr
    assert repo.head("main") == main_before
    assert (repo.path / "README.md").read_text() == "my edit\n"
    assert (repo.path / "src/ui/view.py").read_text() == "VIEW = None\n"
    assert status(repo)["merge"]["state"] == "halted"
    repo.git("stash", "-q")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    repo.git("stash", "pop", "-q")
    assert (repo.path / "README.md").read_text() == "my edit\n"



def merge_json(repo: Repo, *args: str) -> tuple[int, dict]:
    result = merge(repo, *args, "--json")
    return result.returncode, result.json()


def test_every_merge_action_prints_the_merge_section_with_json(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    code, doc = merge_json(repo)
    assert code == 3
    assert doc == status(repo)["merge"]
    assert doc["state"] == "halted" and doc["conflicted_files"] == ["src/api/orders.py"]
    code, doc = merge_json(repo, "--abort")
    assert code == 0 and doc["state"] == "aborted" and doc == status(repo)["merge"]
    repo.git("reset", "-q", "--hard", "HEAD~1")
    code, doc = merge_json(repo)
    assert code == 0 and doc["state"] == "landed" and doc["merged"] == ["db", "api", "ui"]
    code, doc = merge_json(repo, "--undo")
    assert code == 0 and doc["state"] == "undone"


def test_check_and_merge_agree_on_a_recorded_resolution(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    assert merge(repo).returncode == 3
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    assert merge(repo, "--continue").returncode == 0
    assert status(repo)["merge"]["resolved_by_rerere"] == {}
    assert merge(repo, "--undo").returncode == 0
    check = merge(repo, "--check")
    assert check.returncode == 0, check.stdout
    assert "api: conflict, resolved by a recorded resolution in src/api/orders.py" in check.stdout
    doc = merge(repo, "--check", "--json").json()
    assert doc["clean"] is True
    api = next(s for s in doc["streams"] if s["stream"] == "api")
    assert api["resolved_by_rerere"] == ["src/api/orders.py"] and api["conflicts"] == []
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert "recorded resolution" in result.stdout and "src/api/orders.py" in result.stdout
    assert status(repo)["merge"]["resolved_by_rerere"] == {"api": ["src/api/orders.py"]}
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"
    text = run_wtr("status", cwd=repo.path).stdout
    assert "resolved from a recorded resolution: src/api/orders.py" in text
