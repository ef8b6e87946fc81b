"""Sparse streams on real git: only files, shared and context on disk; ownership unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan

LOOK = ('find . -path ./.git -prune -o -type f -print | sort > "$SEEN/$WTR_STREAM.files"; '
        'sh -c "${AGENT_THEN:-true}"')


def plan(seen: Path, streams: dict, **top: object) -> dict:
    return agent_plan(streams, agent={"command": LOOK, "env": {"SEEN": str(seen)}}, **top)


def files(seen: Path, stream: str) -> list[str]:
    return [line.removeprefix("./") for line in (seen / f"{stream}.files").read_text().split()]


def wtr_run(repo: Repo, the_plan: dict):
    return run_wtr("run", repo.write_plan(the_plan), cwd=repo.path)


def config(repo: Repo, worktree: str, key: str) -> str:
    return repo.git("-C", worktree, "config", "--get", key, check=False)


def test_a_sparse_stream_holds_only_its_files_shared_and_context(repo: Repo, seen: Path) -> None:
    repo.commit({"package.json": "{}\n", "src/db/sub/deep.py": "DEEP = 1\n"})
    result = wtr_run(repo, plan(seen, {
        "db": {"files": ["src/db/**"], "context": ["docs/**"], "sparse": True,
               "env": {"AGENT_THEN": "echo 'DB = 2' > src/db/models.py"}},
        "ui": {"files": ["src/ui/**"]},
    }))
    assert result.returncode == 0, result.stderr + result.stdout
    # cone mode: the folders, plus the files at the top of the repository
    assert files(seen, "db") == ["README.md", "docs/index.md", "package.json",
                                 "src/db/models.py", "src/db/sub/deep.py"]
    assert files(seen, "ui") == sorted(repo.git("ls-files").split())
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    db, ui = stream_of(doc, "db"), stream_of(doc, "ui")
    assert config(repo, db["worktree"], "core.sparseCheckoutCone") == "true"
    assert config(repo, ui["worktree"], "core.sparseCheckout") == ""
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 2"
    # the branch holds the whole tree: only the one change differs from main
    assert repo.git("diff", "--name-only", "main", db["branch"]) == "src/db/models.py"
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr + merged.stdout
    assert repo.git("show", "main:src/api/orders.py") == "ORDERS = []"


def test_globs_and_single_files_use_non_cone_mode_and_match_exactly(
        repo: Repo, seen: Path) -> None:
    repo.commit({"src/db/notes.txt": "notes\n", "package.json": "{}\n"})
    result = wtr_run(repo, plan(seen, {"db": {"files": ["src/db/*.py"],
                                              "shared": ["package.json"]}},
                                sparse=True, shared=["package.json"]))
    assert result.returncode == 0, result.stderr + result.stdout
    assert files(seen, "db") == ["package.json", "src/db/models.py"]
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert config(repo, stream_of(doc, "db")["worktree"], "core.sparseCheckoutCone") == "false"


def test_a_change_outside_the_sparse_set_is_still_refused(repo: Repo, seen: Path) -> None:
    the_plan = plan(seen, {"db": {"files": ["src/db/**"], "sparse": True, "env": {
        "AGENT_THEN": "mkdir -p src/api src/ui && echo HACK > src/api/hack.py && "
                      "echo CHANGED > src/ui/view.py"}}})
    result = wtr_run(repo, the_plan)
    assert result.returncode == 1
    db = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "db")
    assert db["failure"]["kind"] == "ownership"
    assert sorted(db["failure"]["files"]) == ["src/api/hack.py", "src/ui/view.py"]


def test_clean_rescues_a_sparse_worktree_without_inventing_deletions(
        repo: Repo, seen: Path) -> None:
    assert wtr_run(repo, plan(seen, {"db": {"files": ["src/db/**"], "sparse": True}})
                   ).returncode == 0
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    worktree = Path(stream_of(doc, "db")["worktree"])
    (worktree / "src/db/unsaved.py").write_text("UNSAVED = 1\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    rescue = f"refs/worktree-runner/rescue/{doc['run']}/db"
    assert repo.git("diff", "--name-status", "main", rescue) == "A\tsrc/db/unsaved.py"
    assert not worktree.exists()
    assert ".pool" not in repo.git("worktree", "list")  # sparse worktrees are not pooled


def test_sparse_keys_in_the_plan() -> None:
    text = 'version: 1\nagent: {command: "true"}\n%sstreams:\n  db: {files: ["a/**"]%s}\n'

    def parsed(top: str = "", stream: str = ""):
        return parse_plan(text % (top, stream), Path("plan.yaml"))

    p = parsed("sparse: true\n", ", sparse: false")
    assert p.is_sparse(p.streams[0]) is False
    p = parsed("sparse: true\n", ', context: ["lib/**"]')
    assert p.is_sparse(p.streams[0]) and p.streams[0].context == ("lib/**",)
    assert not parsed().is_sparse(parsed().streams[0])
    warned = parsed("", ', context: ["lib/**"]').warnings
    assert any("'context' but is not sparse" in w for w in warned)
    with pytest.raises(PlanInvalid) as caught:
        parsed("sparse: yes please\n")
    assert "sparse: must be true or false" in caught.value.problems[0].render("plan.yaml")
    with pytest.raises(PlanInvalid) as caught:
        parsed("", ', context: ["../outside"]')
    assert "context" in caught.value.problems[0].render("plan.yaml")
