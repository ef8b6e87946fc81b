"""clean after a merge whose conflict a human resolved: the branch is kept, and said why."""

from __future__ import annotations

import json
from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan


def test_a_hand_resolved_stream_is_kept_with_the_true_reason(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    repo.commit({"src/db/models.py": "DB = 3\n"}, "a colleague's change")
    halted = run_wtr("merge", cwd=repo.path)
    assert halted.returncode == 3, halted.stderr
    doc = json.loads(run_wtr("status", "--json", cwd=repo.path).stdout)
    integration = Path(doc["merge"]["worktree"])
    (integration / "src/db/models.py").write_text("DB = 3  # and 2, as agreed\n")
    repo.git("-C", str(integration), "add", "src/db/models.py")
    landed = run_wtr("merge", "--continue", cwd=repo.path)
    assert landed.returncode == 0, landed.stderr
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    branch = doc["streams"][0]["branch"]
    assert (f"kept branch {branch} (merged, but main does not hold its exact changes: a "
            "conflict was resolved by hand") in cleaned.stdout
    assert repo.git("branch", "--list", branch) != ""
