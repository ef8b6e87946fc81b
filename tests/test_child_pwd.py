"""Every child of a stream runs with cwd and PWD = its worktree: an agent that takes its
folder from $PWD (as some agent CLIs do) writes in its worktree, never in the caller's."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.runhelp import agent_plan, stream_of

# Writes where $PWD says, as an agent CLI that trusts $PWD would, and commits there.
PWD_AGENT = """
import os, pathlib, subprocess
here = pathlib.Path(os.environ["PWD"])
(here / "src/db").mkdir(parents=True, exist_ok=True)
(here / "src/db/by-pwd.txt").write_text("written where PWD pointed\\n")
subprocess.run(["git", "add", "src/db/by-pwd.txt"], cwd=here, check=True)
subprocess.run(["git", "commit", "-q", "-m", "db: by pwd"], cwd=here, check=True)
"""


def test_an_agent_that_trusts_pwd_writes_in_its_worktree_not_the_callers(
        repo: Repo, tmp_path: Path) -> None:
    caller = make_repo(tmp_path / "caller", {"README.md": "the user's other checkout\n"})
    seen = tmp_path / "seen.txt"
    plan = agent_plan(
        {"db": {"files": ["src/db/**"], "verify": [f'echo "verify $PWD" >> {seen}']}},
        agent={"command": [sys.executable, "-c", PWD_AGENT]},
        setup=[f'echo "setup $PWD" >> {seen}'])
    for cwd in (caller.path, repo.path):
        before = (caller.head(), repo.head())
        result = run_wtr("run", repo.write_plan(plan), "--repo", repo.path, cwd=cwd,
                         env={"PWD": str(cwd), "OLDPWD": str(caller.path)})
        doc = run_wtr("status", "--json", cwd=repo.path).json()
        db = stream_of(doc, "db")
        assert result.returncode == 0, (result.stderr, db["failure"])
        assert db["changed_files"] == ["src/db/by-pwd.txt"]
        assert (caller.head(), repo.head()) == before
        assert caller.git("status", "--porcelain") == repo.git("status", "--porcelain") == ""
        assert seen.read_text().splitlines()[-2:] == [f"setup {db['worktree']}",
                                                     f"verify {db['worktree']}"]
