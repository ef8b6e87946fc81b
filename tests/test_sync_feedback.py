"""A sync that conflicts with a target that moved under a running stream, fed back to the
agent (tests/agents/feedback_agent.py): it merges the target and resolves, never does, or
"resolves" outside its files; and ``wtr sync`` merging where a replay would conflict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, stream_of, wait_for
from tests.test_feedback import AGENT, kinds
from tests.test_merge import CHAIN

# The agent's first round: its own change, then (once the test has moved main) a sync,
# which conflicts; it goes on and exits 0, as its prompt allows.
FIRST = """set -e
echo 'API = 2' > src/api/orders.py; git commit -qam 'api: work'
touch "$MARK"
for i in $(seq 1 600); do
  [ "$(git rev-parse main)" != "$WTR_BASE_COMMIT" ] && break; sleep 0.05
done
wtr sync || true
"""
# What a feedback round tells it to run, as an agent would: the merge (which stops on the
# conflict), then its resolution of the file.
MERGE = "printf '%s\\n' \"$WTR_FEEDBACK\" | grep '^    git merge' | sh || true"
RESOLVE = (f"{MERGE}; printf 'MAIN = 1\\nAPI = 2\\n' > src/api/orders.py; "
           "git add src/api/orders.py; git commit -q --no-edit")
MAIN_MOVES = {"src/api/orders.py": "MAIN = 1\n", "docs/index.md": "moved on main\n"}
VERIFY = "grep -q 'API = 2' src/api/orders.py"


def plan(tmp_path: Path, fix: str, rounds: int = 1) -> dict[str, Any]:
    records = tmp_path / "records"
    records.mkdir(exist_ok=True)
    api = {"files": ["src/api/**"], "feedback": rounds, "verify": [VERIFY],
           "agent": {"command": [sys.executable, str(AGENT), "{prompt_file}"]},
           "env": {"FB_RECORD": str(records), "FB_FIRST": FIRST, "FB_FIX": fix,
                   "MARK": str(tmp_path / "synced-soon")}}
    # ui runs beside api: the guard, which cannot tell the test's commit to main from an
    # agent's, then reports that move on the run instead of failing api for it
    return agent_plan({"api": api, "ui": CHAIN["ui"]})


def run_while_main_moves(repo: Repo, tmp_path: Path, document: dict[str, Any]
                         ) -> tuple[int, dict[str, Any]]:
    """Run the plan; once the agent has committed, the test commits to main."""
    runner = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(document))],
        cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "synced-soon").exists() or runner.poll() is not None,
                 timeout=60)
        repo.commit(MAIN_MOVES, "main moves under the stream")
        runner.wait(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    return runner.returncode, doc


def test_the_agent_merges_the_target_on_feedback_and_its_resolution_lands(
        repo: Repo, tmp_path: Path) -> None:
    code, doc = run_while_main_moves(repo, tmp_path, plan(tmp_path, RESOLVE))
    moved = repo.head("main")
    api = stream_of(doc, "api")
    assert code == 0 and api["status"] == "succeeded", api
    assert kinds(api) == ["agent", "feedback"]
    first = api["attempt_log"][0]["failure"]
    assert first["kind"] == "sync" and first["files"] == ["src/api/orders.py"]
    assert f"conflicts with main's tip ({moved[:12]}) in src/api/orders.py" in first["message"]
    told = json.loads((tmp_path / "records" / "api.2.json").read_text())["feedback"]
    assert "sync: its branch conflicts with main's tip" in told
    assert f"    git merge --no-edit {moved}" in told
    assert ("<<<<<<< your branch\nAPI = 2\n=======\nMAIN = 1\n>>>>>>> main" in told), told
    # the merge is accepted: its base is main's tip it merged, and only its own file counts
    assert api["base_commit"] == moved
    assert api["changed_files"] == ["src/api/orders.py"]
    assert api["sync"]["base_commit"] == moved and "conflicted_files" not in api["sync"]
    assert api["progress"]["blocked"] is False
    branch = api["branch"]
    assert git(repo.path, "rev-list", "--parents", "-1", branch).count(" ") == 2  # a merge
    assert "api: work" in repo.git("log", "--format=%s", branch)  # its commit, kept as it was
    # the merge predicts it clean and lands the resolution with main's own change
    assert run_wtr("merge", "--check", cwd=repo.path).returncode == 0
    landed = run_wtr("merge", cwd=repo.path)
    assert landed.returncode == 0, landed.stderr
    assert repo.git("show", "main:src/api/orders.py") == "MAIN = 1\nAPI = 2"
    assert repo.git("show", "main:docs/index.md") == "moved on main"


def test_an_agent_that_never_resolves_fails_with_the_conflict_named(
        repo: Repo, tmp_path: Path) -> None:
    code, doc = run_while_main_moves(repo, tmp_path, plan(tmp_path, "true"))
    api = stream_of(doc, "api")
    assert code == 1 and api["status"] == "failed"
    assert kinds(api) == ["agent", "feedback"]
    failure = api["failure"]
    assert failure["kind"] == "sync" and failure["files"] == ["src/api/orders.py"]
    assert "conflicts with main's tip" in failure["message"]
    assert ">>>>>>> main" in failure["output"]
    assert api["sync"]["conflicted_files"] == ["src/api/orders.py"]
    # nothing lost, nothing rewritten: the branch is the agent's commit on its old base
    assert repo.git("log", "--format=%s", api["branch"]).splitlines()[0] == "api: work"
    assert api["base_commit"] == repo.head("main~1")
    report = Path(doc["repo"]) / ".git/worktree-runner/runs" / doc["run"] / "report.html"
    assert "&lt;&lt;&lt;&lt;&lt;&lt;&lt; your branch\nAPI = 2" in report.read_text()


def test_a_resolution_outside_the_streams_files_is_an_ownership_failure(
        repo: Repo, tmp_path: Path) -> None:
    slip = f"{RESOLVE}; echo 'resolved' >> README.md; git commit -qam 'api: note'"
    code, doc = run_while_main_moves(repo, tmp_path, plan(tmp_path, slip))
    api = stream_of(doc, "api")
    assert code == 1 and api["status"] == "failed"
    assert [e["failure"]["kind"] for e in api["attempt_log"]] == ["sync", "ownership"]
    # measured from main's tip it merged: main's own docs/index.md is not the stream's
    assert api["failure"]["files"] == ["README.md"]
    assert api["base_commit"] == repo.head("main")


def test_sync_merges_when_a_later_commit_cleared_an_earlier_ones_conflict(
        repo: Repo, tmp_path: Path) -> None:
    """Replayed one by one, the first commit conflicts with main; the second took it back:
    merged as a whole it does not, so sync merges main in and rewrites nothing."""
    work = ("echo 'API = 2' > src/api/orders.py; git commit -qam 'api: try'; "
            "git checkout -q HEAD~1 -- src/api/orders.py; echo 'NEW = 1' > src/api/new.py; "
            "git add -A; git commit -qm 'api: other way'")
    done = run_wtr("run", repo.write_plan(agent_plan(
        {"api": {"files": ["src/api/**"], "agent": {"command": work}}})), cwd=repo.path)
    assert done.returncode == 0, done.stderr
    repo.commit(MAIN_MOVES, "main moves")
    old_head = repo.git("for-each-ref", "--format=%(objectname)", "refs/heads/wtr/*/api")
    synced = run_wtr("sync", "api", "--json", cwd=repo.path)
    assert synced.returncode == 0, synced.stderr
    assert synced.json()["how"] == "merged"
    api = stream_of(status_of(repo), "api")
    head = api["head_commit"]
    assert git(repo.path, "rev-parse", f"{head}^1", f"{head}^2").split() == [
        old_head, repo.head("main")]
    assert api["base_commit"] == repo.head("main")
    assert api["changed_files"] == ["src/api/new.py"]
    worktree = Path(api["worktree"])
    assert (worktree / "src/api/orders.py").read_text() == "MAIN = 1\n"
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    assert repo.git("show", "main:src/api/new.py") == "NEW = 1"


def status_of(repo: Repo) -> dict[str, Any]:
    doc: dict[str, Any] = run_wtr("status", "--json", cwd=repo.path).json()
    return doc
