"""wtr merge on real repositories: clean merges, real conflicts, halts, abort, undo, --check."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, status


def write_env(*pairs: str) -> dict[str, str]:
    return {"AGENT_WRITE": ";".join(pairs)}


def run_plan(repo: Repo, plan: dict) -> dict:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode in (0, 1), result.stderr
    return status(repo)


def merge(repo: Repo, *args: str):
    return run_wtr("merge", *args, cwd=repo.path)


def snapshot(repo: Repo) -> tuple[str, str, str, str]:
    """All refs, all worktrees, and the user's working tree and index."""
    return (
        repo.refs(),
        repo.git("worktree", "list", "--porcelain"),
        repo.git("status", "--porcelain", "--untracked-files=all"),
        repo.git("diff", "HEAD"),
    )


CHAIN = {
    "db": {"files": ["src/db/**"], "env": write_env("src/db/models.py=DB = 2")},
    "api": {"files": ["src/api/**"], "depends_on": ["db"],
            "env": write_env("src/api/orders.py=API = 2")},
    "ui": {"files": ["src/ui/**"], "env": write_env("src/ui/view.py=UI = 2")},
}


def test_clean_merge_lands_every_stream_in_dependency_order(repo: Repo) -> None:
    doc = run_plan(repo, agent_plan(CHAIN))
    branches_before = {s["name"]: repo.head(s["branch"]) for s in doc["streams"]}
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert "merged 3 streams onto main" in result.stdout
    log = repo.git("log", "--format=%s", "main").splitlines()
    assert log[:3] == ["ui: work", "api: work", "db: work"]
    # the checked-out target's files and index followed; nothing left over
    assert (repo.path / "src/api/orders.py").read_text() == "API = 2\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    assert repo.git("status", "--porcelain") == ""
    # stream branches never move
    assert {s: repo.head(f"wtr/{doc['run']}/{s}") for s in branches_before} == branches_before
    after = status(repo)
    assert after["counts"]["merged"] == 3
    assert after["merge"]["state"] == "landed"
    assert after["merge"]["merged"] == ["db", "api", "ui"]
    assert after["merge"]["worktree"] is None
    assert "/_merge" not in repo.git("worktree", "list")
    # a second merge has nothing new to do
    again = merge(repo)
    assert again.returncode == 1 and "nothing new to merge" in again.stderr


def conflicting_run(repo: Repo) -> dict:
    doc = run_plan(repo, agent_plan(CHAIN))
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    return doc


def test_conflict_halts_then_continue_lands_everything(repo: Repo) -> None:
    conflicting_run(repo)
    main_before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 3
    assert "api" in result.stderr and "src/api/orders.py" in result.stderr
    assert "wtr merge --continue" in result.stderr
    assert repo.head("main") == main_before
    merge_doc = status(repo)["merge"]
    assert merge_doc["state"] == "halted" and merge_doc["stream"] == "api"
    assert merge_doc["conflicted_files"] == ["src/api/orders.py"]
    assert merge_doc["merged"] == ["db"]
    integration = Path(merge_doc["worktree"])
    # refused while the file is unmerged
    refused = merge(repo, "--continue")
    assert refused.returncode == 3 and "src/api/orders.py" in refused.stderr
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    assert repo.git("merge-base", "--is-ancestor", main_before, "main", check=False) == ""
    assert repo.git("status", "--porcelain") == ""
    assert not integration.exists()


def test_abort_restores_every_ref_worktree_and_the_checkout(repo: Repo) -> None:
    conflicting_run(repo)
    (repo.path / "notes.txt").write_text("untracked, mine\n")
    before = snapshot(repo)
    assert merge(repo).returncode == 3
    assert snapshot(repo) != before
    result = merge(repo, "--abort")
    assert result.returncode == 0, result.stderr
    assert snapshot(repo) == before
    assert status(repo)["merge"]["state"] == "aborted"
    # twice is fine
    again = merge(repo, "--abort")
    assert again.returncode == 0 and "nothing to abort" in again.stdout
    assert snapshot(repo) == before


def test_check_predicts_the_conflict_and_changes_nothing(repo: Repo) -> None:
    conflicting_run(repo)
    before = snapshot(repo)
    result = merge(repo, "--check")
    assert result.returncode == 3
    assert "api: CONFLICT" in result.stdout and "src/api/orders.py" in result.stdout
    assert "db: clean" in result.stdout and "ui: clean" in result.stdout
    assert snapshot(repo) == before
    doc = run_wtr("merge", "--check", "--json", cwd=repo.path).json()
    conflicts = {s["stream"]: s["conflicts"] for s in doc["streams"]}
    assert conflicts == {"db": [], "api": ["src/api/orders.py"], "ui": []}
    # the real merge agrees
    real = merge(repo)
    assert real.returncode == 3
    assert status(repo)["merge"]["conflicted_files"] == conflicts["api"]


def test_check_on_a_clean_case_exits_zero(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    before = snapshot(repo)
    result = merge(repo, "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(repo) == before


def test_failing_verify_halts_with_target_unchanged(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN, verify=["test -f src/never-there"]))
    main_before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 3
    assert "verify" in result.stderr
    assert repo.head("main") == main_before
    assert status(repo)["merge"]["state"] == "halted"
    # fixing the result in the integration worktree and continuing lands it
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/never-there").write_text("now it is\n")
    git(integration, "add", "-A")
    git(integration, "commit", "-q", "-m", "fix for verify")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/never-there").exists()


def test_target_moving_during_the_merge_changes_nothing(repo: Repo) -> None:
    # the verify command commits to the target while the merge is under way
    sneaky = f"git -C {repo.path} commit -q --allow-empty -m sneaky"
    run_plan(repo, agent_plan(CHAIN, verify=[sneaky]))
    result = merge(repo)
    assert result.returncode == 1
    assert "moved during the merge" in result.stderr and "merge' again" in result.stderr
    assert repo.git("log", "-1", "--format=%s", "main") == "sneaky"
    assert status(repo)["merge"]["state"] == "aborted"
    assert "/_merge" not in repo.git("worktree", "list")


def test_dirty_checked_out_target_is_refused_before_anything(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    (repo.path / "README.md").write_text("my unsaved edit\n")
    before = snapshot(repo)
    result = merge(repo)
    assert result.returncode == 1
    assert "uncommitted changes" in result.stderr and "README.md" in result.stderr
    assert snapshot(repo) == before
    assert (repo.path / "README.md").read_text() == "my unsaved edit\n"


def test_undo_restores_the_target_and_refuses_after_it_moved(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    main_before = repo.head("main")
    assert merge(repo).returncode == 0
    landed = repo.head("main")
    result = merge(repo, "--undo")
    assert result.returncode == 0, result.stderr
    assert repo.head("main") == main_before
    assert (repo.path / "src/api/orders.py").read_text() == "ORDERS = []\n"
    assert repo.git("status", "--porcelain") == ""
    assert status(repo)["merge"]["state"] == "undone"
    assert status(repo)["counts"]["succeeded"] == 3
    # the undone result is still reachable
    assert landed in repo.refs()
    # land again, then move the target: undo refuses
    assert merge(repo).returncode == 0
    repo.commit({"later.txt": "x\n"}, "later work")
    refused = merge(repo, "--undo")
    assert refused.returncode == 1 and "moved since the merge landed" in refused.stderr
    assert repo.git("log", "-1", "--format=%s", "main") == "later work"


def test_failed_stream_and_its_dependents_are_left_out(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_EXIT": "1"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
        "ui": {"files": ["src/ui/**"], "env": write_env("src/ui/view.py=UI = 2")},
    })
    run_plan(repo, plan)
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert "left out: db (failed), api (waits for db)" in result.stdout
    merge_doc = status(repo)["merge"]
    assert merge_doc["merged"] == ["ui"] and merge_doc["left_out"] == ["db", "api"]


def test_target_not_checked_out_moves_by_compare_and_swap(repo: Repo) -> None:
    repo.git("branch", "release")
    plan = agent_plan(CHAIN, target="release")
    run_plan(repo, plan)
    main_before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert repo.head("main") == main_before
    assert repo.git("show", "release:src/ui/view.py") == "UI = 2"


@pytest.mark.parametrize("by_hand", ["continue", "abort"])
def test_continue_copes_with_a_rebase_finished_or_aborted_by_hand(repo: Repo,
                                                                  by_hand: str) -> None:
    conflicting_run(repo)
    assert merge(repo).returncode == 3
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/orders.py").write_text("RESOLVED = 1\n")
    git(integration, "add", "src/api/orders.py")
    if by_hand == "continue":
        subprocess_env_continue(integration)
        result = merge(repo, "--continue")
        assert result.returncode == 0, result.stderr
        assert (repo.path / "src/api/orders.py").read_text() == "RESOLVED = 1\n"
    else:
        git(integration, "rebase", "--abort")
        # the stream is replayed again; rerere remembers nothing yet, so it halts again
        result = merge(repo, "--continue")
        assert result.returncode == 3
        assert status(repo)["merge"]["stream"] == "api"


def subprocess_env_continue(worktree: Path) -> None:
    git(worktree, "-c", "core.editor=true", "rebase", "--continue")


def test_a_remembered_resolution_is_reused(repo: Repo) -> None:
    conflicting_run(repo)
    assert merge(repo).returncode == 3
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    assert merge(repo, "--continue").returncode == 0
    assert merge(repo, "--undo").returncode == 0
    # the same conflict again: rerere answers it, no halt
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"


def test_merge_flags_are_exclusive_and_continue_needs_a_halt(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    both = merge(repo, "--abort", "--undo")
    assert both.returncode == 2 and both.stderr.startswith("wtr: ")
    nothing = merge(repo, "--continue")
    assert nothing.returncode == 2 and "no merge" in nothing.stderr
    undo = merge(repo, "--undo")
    assert undo.returncode == 2 and "no landed merge" in undo.stderr
