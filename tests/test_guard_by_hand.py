"""A person's own commits and switches in their checkout while agents run are told from an
agent's: reported on the run, never a stream's failure; an agent that moves the user's
branch, from its worktree or from inside the user's checkout, is still blamed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of, wait_for

MAIN = '"$(git rev-parse --path-format=absolute --git-common-dir)/.."'


def _events(repo: Repo, run_id: str, kind: str) -> list[dict[str, Any]]:
    path = repo.path / ".git" / "worktree-runner" / "runs" / run_id / "events.jsonl"
    return [e for e in map(json.loads, path.read_text().splitlines()) if e["kind"] == kind]


def test_a_person_committing_and_switching_in_their_checkout_fails_no_stream(
        repo: Repo, tmp_path: Path) -> None:
    repo.git("switch", "-q", "-c", "topic")
    repo.commit({"docs/topic.md": "topic\n"}, "topic work")
    repo.git("switch", "-q", "main")
    (repo.path / "README.md").write_text("# sample, being edited\n")  # dirty when it starts
    go, started = tmp_path / "go", tmp_path / "record"
    started.mkdir()
    plan = agent_plan({"api": {"files": ["src/api/**"],
                               "env": {"AGENT_WRITE": "src/api/orders.py=A = 1",
                                       "AGENT_WAIT_FOR": str(go),
                                       "AGENT_RECORD": str(started)}}})
    run = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                            str(repo.write_plan(plan))], cwd=repo.path, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    try:
        wait_for(lambda: list(started.glob("api.*.start")), timeout=60)
        before = repo.head("main")
        repo.git("commit", "-qam", "my own work on main, meanwhile")  # README.md with it
        repo.git("rebase", "-q", "topic")  # (its end is told in other words in HEAD's log)
        repo.git("switch", "-q", "topic")
        go.write_text("")
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, out + err
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "api")["status"] == "succeeded"
    [note] = doc["isolation"]
    assert note["stream"] is None and note["by_hand"] == [str(repo.path)]
    assert note["changes"] == [
        f"branch main moved from {before[:12]} to {repo.head('main')[:12]}",
        "the main checkout's HEAD changed from refs/heads/main to refs/heads/topic"]
    assert _events(repo, doc["run"], "run.moved_by_hand")
    assert not _events(repo, doc["run"], "run.isolation_breach")
    text = run_wtr("status", cwd=repo.path).stdout
    assert f"by hand in {repo.path} (no agent's doing)" in text, text


def _blamed(doc: dict[str, Any], name: str) -> str:
    stream = stream_of(doc, name)
    assert stream["status"] == "failed", stream
    assert stream["failure"]["kind"] == "error"
    message: str = stream["failure"]["message"]
    assert "branch main moved" in message, message
    return message


def test_an_agent_moving_main_from_inside_the_users_checkout_is_still_blamed(
        repo: Repo) -> None:
    """Its commit there carries its stream's mark in the checkout's reflog; an update-ref
    there says nothing of who made it: both are the only running stream's doing."""
    commit = f"cd {MAIN} && echo sneaky >> README.md && git commit -qam 'from main'"
    update = (f"git -C {MAIN} update-ref refs/heads/main "
              f"$(git -C {MAIN} commit-tree -m x 'HEAD^{{tree}}' -p HEAD)")
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "env": {"AGENT_WRITE": "src/api/orders.py=A = 1",
                                                 "AGENT_SHELL": commit}},
        "ui": {"files": ["src/ui/**"], "conflicts_with": ["api"],
               "env": {"AGENT_WRITE": "src/ui/view.py=U = 1", "AGENT_SHELL": update}},
    })
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 1, result.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    _blamed(doc, "api")
    _blamed(doc, "ui")
    assert [b["stream"] for b in doc["isolation"]] == ["api", "ui"]
    assert not any(b.get("by_hand") for b in doc["isolation"])
    # the agent's commit in the user's checkout is marked as its own there
    assert f"wtr-agent {doc['run']}/api: from main" in repo.git("reflog", "show", "HEAD")
