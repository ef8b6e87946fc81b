"""The merge section as a queue of landings, and run states written before it existed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan
from tests.test_merge import CHAIN, conflicting_run, merge, run_plan, status
from worktree_runner.merge.queue import MergeQueue

DOCUMENTED = ("state", "target", "worktree", "stream", "conflicted_files", "merged", "left_out")


def state_file(repo: Repo) -> Path:
    run = status(repo)["run"]
    return repo.path / ".git" / "worktree-runner" / "runs" / run / "state.json"


def as_version_one(repo: Repo) -> None:
    """Rewrite the run's merge section as the flat, one-attempt form older versions wrote."""
    path = state_file(repo)
    data = json.loads(path.read_text())
    landing = data["merge"]["landings"][-1]
    data["merge"] = {
        "state": {"active": "none"}.get(landing["state"], landing["state"]),
        "target": data["target"], "worktree": landing["worktree"], "stream": landing["stream"],
        "conflicted_files": landing["conflicted_files"], "merged": landing["merged"],
        "left_out": landing["left_out"], "attempt": landing["id"],
        "active": landing["state"] in ("active", "halted"), "order": landing["streams"],
        "target_start": landing["target_start"], "halt": landing["halt"],
        "commit": landing["commit"], "onto": landing["onto"],
        "landed_from": landing["landed_from"], "landed_to": landing["landed_to"],
        "message": landing["message"], "updated_at": landing["updated_at"],
    }
    path.write_text(json.dumps(data))


def test_a_landed_merge_of_an_older_state_reads_the_same_and_undoes(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    before = repo.head("main")
    assert merge(repo).returncode == 0
    new_view = {k: status(repo)["merge"][k] for k in DOCUMENTED}
    as_version_one(repo)
    assert "landings" not in json.loads(state_file(repo).read_text())["merge"]
    assert {k: status(repo)["merge"][k] for k in DOCUMENTED} == new_view
    result = merge(repo, "--undo")
    assert result.returncode == 0, result.stderr
    assert repo.head("main") == before
    assert len(json.loads(state_file(repo).read_text())["merge"]["landings"]) == 1


def test_a_halted_merge_of_an_older_state_continues(repo: Repo) -> None:
    conflicting_run(repo)
    assert merge(repo).returncode == 3
    as_version_one(repo)
    doc = status(repo)["merge"]
    assert doc["state"] == "halted" and doc["stream"] == "api"
    integration = Path(doc["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert status(repo)["merge"]["merged"] == ["db", "api", "ui"]


def test_landings_queue_up_and_only_the_last_is_undone(repo: Repo) -> None:
    plan = agent_plan({**CHAIN, "ui": {**CHAIN["ui"], "env": {"AGENT_EXIT": "1"}}})
    run_plan(repo, plan)
    first = merge(repo)
    assert first.returncode == 0 and "ui (failed)" in first.stdout
    after_first = repo.head("main")
    # ui is fixed and accepted by a human: a second landing takes only it
    repo_ui = Path(status(repo)["streams"][2]["worktree"])
    (repo_ui / "src/ui/view.py").write_text("UI = 3\n")
    git(repo_ui, "commit", "-qam", "ui: fixed by hand")
    assert run_wtr("accept", "ui", "--reason", "fixed", cwd=repo.path).returncode == 0
    second = merge(repo)
    assert second.returncode == 0, second.stderr
    assert "in order: ui" in second.stdout
    doc = status(repo)["merge"]
    assert doc["merged"] == ["db", "api", "ui"] and doc["state"] == "landed"
    assert [ld["state"] for ld in doc["landings"]] == ["landed", "landed"]
    assert merge(repo, "--undo").returncode == 0
    assert repo.head("main") == after_first
    doc = status(repo)["merge"]
    assert doc["merged"] == ["db", "api"] and doc["state"] == "undone"
    assert [s["status"] for s in status(repo)["streams"]] == ["merged", "merged", "succeeded"]


def test_an_empty_or_missing_section_is_an_empty_queue() -> None:
    for raw in (None, {}, {"state": "none", "target": "main"}):
        queue = MergeQueue.from_json(raw, "main")
        assert queue.landings == [] and queue.view()["state"] == "none"
