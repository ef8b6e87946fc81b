"""The in-memory replay makes exactly what the rebase in a worktree makes.

Random histories (edits, new and deleted files, commits that start or become empty,
odd messages, many authors and dates) on a moved target: wherever the rebase goes
through, the replay gives the same commit ids (so the same trees, authors, dates,
messages and committer); wherever the rebase stops on a conflict, the replay declines.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.gitrepo import Repo, git, make_repo, run_wtr
from tests.runhelp import agent_plan
from tests.test_merge import CHAIN, merge, run_plan, status
from worktree_runner import git as wgit
from worktree_runner.merge.replay import MemoryReplay

FILES = ["a.txt", "b.txt", "d/c.txt"]
LINES = 6

edit = st.tuples(
    st.sampled_from(["line", "line", "add", "delete", "empty", "revert"]),
    st.sampled_from([*FILES, "d/new.txt"]),
    st.integers(0, LINES - 1),
    st.sampled_from(["x", "y", "z", ""]),
)
message = st.sampled_from(["work", "fix: thing\n\nbody line\n", "  spaced  \n\n\n",
                           "unicode é ✓", "trailing\n\n"])
commit = st.tuples(st.lists(edit, min_size=1, max_size=3), message,
                   st.sampled_from(["Ann", "Bo"]), st.integers(1_600_000_000, 1_700_000_000))
history = st.lists(commit, min_size=1, max_size=5)


def apply(repo: Repo, edits: list, note: str, author: str, when: int) -> None:
    for kind, name, line, text in edits:
        path = repo.path / name
        if kind == "empty":
            continue
        if kind == "delete":
            if path.exists():
                path.unlink()
            continue
        if kind == "revert" and path.exists():
            subprocess.run(["git", "checkout", "HEAD~1", "--", name], cwd=repo.path,
                           capture_output=True, check=False)
            continue
        lines = path.read_text().splitlines() if path.exists() else [""] * LINES
        lines += [""] * (LINES - len(lines))
        lines[line] = f"{text}{line}" if kind == "line" else f"{lines[line]}+{text}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    repo.git("add", "-A")
    env = {**os.environ, "GIT_AUTHOR_NAME": author, "GIT_AUTHOR_DATE": f"{when} +0200"}
    with tempfile.NamedTemporaryFile("w", delete=False) as handle:
        handle.write(note)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "--cleanup=verbatim", "-F",
                    handle.name], cwd=repo.path, env=env, check=True, capture_output=True)
    os.unlink(handle.name)


def build(root: Path, target: list, stream: list) -> tuple[Repo, str, str, str]:
    repo = make_repo(root / "repo", {f: "".join(f"{i}\n" for i in range(LINES)) for f in FILES})
    base = repo.head()
    for item in stream:
        apply(repo, *item)
    head = repo.head()
    repo.git("checkout", "-q", "--detach", base)
    for item in target:
        apply(repo, *item)
    return repo, base, head, repo.head()


def rebased(repo: Repo, onto: str, base: str, head: str) -> str | None:
    work = repo.path.parent / "work"
    repo.git("worktree", "add", "-q", "--detach", str(work), onto)
    result = wgit.rebase_onto(wgit.open_repository(repo.path), work, onto, base, head)
    tip = git(work, "rev-parse", "HEAD") if result.ok else None
    if not result.ok:
        git(work, "rebase", "--abort", check=False)
    return tip


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(target=st.lists(commit, max_size=3), stream=history)
def test_the_replay_makes_what_the_rebase_makes(target: list, stream: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo, base, head, onto = build(Path(tmp), target, stream)
        expected = rebased(repo, onto, base, head)
        memory = MemoryReplay(wgit.open_repository(repo.path))
        try:
            got = memory.replay(onto, base, head)
        finally:
            memory.close()
        event("conflict" if expected is None else "same as onto" if expected == onto
              else "fast-forward" if expected == head else "replayed")
        if expected is None:
            assert got.tip is None and got.conflicts
        else:
            assert got.tip == expected, repo.git("log", "--format=%H %an %ad %s", f"{onto}..")


def test_a_landing_in_memory_equals_the_landing_by_rebase(tmp_path: Path) -> None:
    tips = []
    for mode in ("rebase", "memory"):
        repo = make_repo(tmp_path / mode / "repo", {
            "README.md": "# sample\n", "src/api/orders.py": "ORDERS = []\n",
            "src/db/models.py": "MODELS = []\n", "src/ui/view.py": "VIEW = None\n"})
        run_plan(repo, agent_plan(CHAIN))
        repo.commit({"README.md": "moved on\n"}, "the target moves")
        env = {"WTR_MERGE_REPLAY": mode}
        result = run_wtr("merge", cwd=repo.path, env=env)
        assert result.returncode == 0, result.stderr
        doc = status(repo)["merge"]
        assert doc["landings"][-1]["in_memory"] == ([] if mode == "rebase" else
                                                    ["db", "api", "ui"])
        assert "/_merge" not in repo.git("worktree", "list") or mode == "rebase"
        tips.append(repo.head("main"))
    assert tips[0] == tips[1]


def test_a_conflict_in_memory_falls_back_to_the_worktree(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    result = merge(repo)
    assert result.returncode == 3
    doc = status(repo)["merge"]
    assert doc["landings"][-1]["in_memory"] == ["db"] and doc["stream"] == "api"
    integration = Path(doc["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    assert merge(repo, "--continue").returncode == 0
    assert status(repo)["merge"]["landings"][-1]["in_memory"] == ["db", "ui"]
