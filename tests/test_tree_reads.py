"""`wtr check` and `wtr merge` read the whole tree at most once per kind of read.

On a repository of a million files every git command that lists the tree, stats every
file of a checkout or walks two trees costs seconds, so these tests count them: each
command runs once under GIT_TRACE2_EVENT on a generated monorepo (scripts/make-big-repo)
and the git processes it started are sorted by what they read. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, git, run_wtr

ROOT = Path(__file__).resolve().parent.parent
AGENT = ('d=$(printf "%s\\n" "$WTR_FILES" | head -n 1); d=${d%/**}; '
         'echo x >> "$d/README.md" && git add -- "$d/README.md" && git commit -q -m work')
PACKAGES = ("apps/core-0", "libs/api-0", "services/net-0", "tools/util-0")


@pytest.fixture(scope="module")
def monorepo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare monorepo of 1,500 files and 40 commits (built once for the module)."""
    out = tmp_path_factory.mktemp("big") / "big.git"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-big-repo"), "1500",
                    "--commits", "40", "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture
def clone(monorepo: Path, tmp_path: Path) -> Repo:
    path = tmp_path / "repo"
    git(tmp_path, "clone", "-q", str(monorepo), str(path))
    return Repo(path)


def write_plan(repo: Repo, packages: tuple[str, ...] = PACKAGES, **top: Any) -> Path:
    streams = {p.replace("/", "-"): {"files": [f"{p}/**"], "prompt": "add a line"}
               for p in packages}
    return repo.write_plan({"version": 1, "agent": {"command": AGENT}, **top,
                            "streams": streams})


def traced(repo: Repo, tmp_path: Path, *args: str | Path) -> tuple[dict[str, Any], list[list[str]]]:
    """Run ``wtr args`` with git's event trace; its JSON output (or {}) and the argv (after
    the -c options) of every git process it started."""
    trace = tmp_path / f"trace-{args[0]}.json"
    trace.unlink(missing_ok=True)
    result = run_wtr(*args, cwd=repo.path, env={"GIT_TRACE2_EVENT": str(trace)})
    assert result.returncode == 0, result.stderr
    commands = []
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        if event["event"] == "start":
            argv = event["argv"][1:]
            while argv and argv[0] == "-c":
                argv = argv[2:]
            commands.append(argv)
    doc = json.loads(result.stdout) if "--json" in args else {}
    return doc, commands


def full_tree_reads(commands: list[list[str]], repo: Repo) -> dict[str, int]:
    """The git processes that read every path of a tree, an index or a checkout, by kind.
    The listing of the history's first commit is no such read: it stops after the 51st
    path, more than a commit may change to count (test_coupling.py)."""
    root = git(repo.path, "rev-list", "--max-parents=0", "HEAD").strip()
    assert [argv[0] for argv in commands if root in argv] in ([], ["ls-tree"])
    found: dict[str, int] = {}
    for argv in commands:
        if root in argv:
            continue
        kind = _read_kind(argv)
        if kind:
            found[kind] = found.get(kind, 0) + 1
    return found


def _read_kind(argv: list[str]) -> str | None:
    verb, rest = argv[0], argv[1:]
    paths = rest[rest.index("--") + 1:] if "--" in rest else []
    if verb == "ls-tree" and "-r" in rest and not paths:
        return "list the tree (ls-tree -r)"
    if verb == "ls-files" and not paths and not {"--others", "-o"} & set(rest):
        return "list the index (ls-files)"
    if verb in ("status", "read-tree", "checkout", "reset", "diff-files", "add"):
        return f"walk the checkout ({verb})"
    if verb == "worktree" and rest[:1] == ["add"]:
        return "check out a worktree"
    return None


def test_check_lists_the_tree_once_with_every_check_on(clone: Repo, tmp_path: Path) -> None:
    plan = write_plan(clone, shared=["CHANGELOG.md"])
    doc, commands = traced(clone, tmp_path, "check", plan, "--json")
    assert full_tree_reads(commands, clone) == {"list the index (ls-files)": 1}
    # every check ran on that one listing: ownership, unowned files, coupling from history
    assert doc["tracked_files"] == int(git(clone.path, "ls-files", "-c").count("\n")) + 1
    assert all(doc["streams"][s]["owned_files"] for s in doc["streams"])
    assert doc["unowned_files"] and doc["coupling"]["enabled"]
    assert doc["coupling"]["commits"] == 40
    # one pass over the history's changes; a second log only names its first commits
    assert [(c[0], "--name-only" in c) for c in commands if c[0] == "log"] == [
        ("log", True), ("log", False)]


def test_check_with_a_staged_change_lists_the_tree_itself_once(
    clone: Repo, tmp_path: Path
) -> None:
    clone.write({"apps/core-0/new.py": "x = 1\n"})
    clone.git("add", "apps/core-0/new.py")
    doc, commands = traced(clone, tmp_path, "check", write_plan(clone), "--json")
    assert full_tree_reads(commands, clone) == {"list the tree (ls-tree -r)": 1}
    assert "apps/core-0/new.py" not in doc["streams"]["apps-core-0"]["owned_files"]


def test_merge_replays_without_a_checkout_and_walks_the_target_checkout_once(
    clone: Repo, tmp_path: Path
) -> None:
    plan = write_plan(clone, PACKAGES[:2])
    assert run_wtr("run", plan, cwd=clone.path).returncode == 0
    clone.commit({"CHANGELOG.md": "the target moved\n"})
    _, commands = traced(clone, tmp_path, "merge")
    # one look for uncommitted changes in the target's checkout and one two-tree
    # read-tree bringing it to the merged tip; no integration worktree, no second status
    assert full_tree_reads(commands, clone) == {"walk the checkout (status)": 1,
                                         "walk the checkout (read-tree)": 1}
    landed = clone.git("log", "--format=%s", "-3").splitlines()
    assert landed == ["work", "work", "change"]


def test_a_merge_whose_verify_ran_looks_at_the_target_checkout_again(
    clone: Repo, tmp_path: Path
) -> None:
    plan = write_plan(clone, PACKAGES[:2], verify=["true"])
    assert run_wtr("run", plan, cwd=clone.path).returncode == 0
    _, commands = traced(clone, tmp_path, "merge")
    assert full_tree_reads(commands, clone)["walk the checkout (status)"] == 2


def test_the_generator_is_deterministic_and_shaped(monorepo: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.git"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-big-repo"), "1500",
                    "--commits", "40", "--out", str(again)], check=True, capture_output=True)
    assert git(again, "rev-parse", "main") == git(monorepo, "rev-parse", "main")
    listed = git(monorepo, "ls-tree", "-r", "-l", "main").splitlines()
    first = git(monorepo, "rev-list", "--max-parents=0", "main")
    assert len(git(monorepo, "ls-tree", "-r", "--name-only", first).splitlines()) == 1500
    sizes = {line.split()[-1]: int(line.split()[3]) for line in listed}
    assert max(sizes.values()) > 1_000_000  # a few large files
    assert any(p.endswith((".png", ".bin", ".gz")) for p in sizes)  # some binary
    assert max(p.count("/") for p in sizes) >= 7  # deep folders
