"""A fresh worktree's index is settled: its files are older than the index, so git does not
hash them all again at every command; and an edit made at once, even one that keeps the
file's size, is still seen and committed (real runs, real git)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of

# Record the index's view of a file, then at once rewrite it in place with the same size
# (the change git's timestamps alone could miss), and commit everything.
AGENT = ('git ls-files --debug src/db/models.py > "$SEEN/debug"; '
         'stat -c %Y "$(git rev-parse --git-path index)" > "$SEEN/index_mtime"; '
         "printf 'MODELS = {}\\n' > src/db/models.py && git add -A && git commit -q -m edit")


def test_a_fresh_worktree_is_settled_and_an_instant_same_size_edit_is_committed(
        repo: Repo, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    before = repo.path.joinpath("src/db/models.py").read_text()
    assert len(before) == len("MODELS = {}\n")  # the edit keeps the size
    plan = agent_plan({"db": {"files": ["src/db/**"]}},
                      agent={"command": AGENT, "env": {"SEEN": str(seen)}}, pool=0)
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr

    # The agent's first look: the file's recorded mtime is two seconds before the index's
    # (not in the same second, where git would hash it again at every command).
    found = re.search(r"mtime:\s*(\d+):", (seen / "debug").read_text())
    assert found is not None
    recorded = int(found.group(1))
    assert recorded < int((seen / "index_mtime").read_text()) - 1

    # The same-size edit made at once is in the stream's commit.
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    branch = stream_of(doc, "db")["branch"]
    assert repo.git("show", f"{branch}:src/db/models.py") == "MODELS = {}"
