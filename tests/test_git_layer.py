"""The git layer (``worktree_runner.git``) on real repositories, and the CLI's repository errors."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.gitrepo import Repo, make_repo, run_wtr
from worktree_runner import git
from worktree_runner.errors import EXIT_BAD_INPUT, GitFailed, NotARepository, UnknownRef

VALID_PLAN = "version: 1\nagent: {preset: claude}\nstreams:\n  all: {files: ['**']}\n"


# -- finding the repository ----------------------------------------------------------------


def test_open_repository_from_a_subdirectory(repo: Repo) -> None:
    found = git.open_repository(repo.path / "src" / "api")
    top = repo.path.resolve()
    assert found == git.Repository(
        root=top, toplevel=top, common_dir=top / ".git", git_dir=top / ".git"
    )
    assert found.state_dir == top / ".git" / "worktree-runner"


def test_open_repository_defaults_to_the_current_directory(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.path / "docs")
    assert git.open_repository().toplevel == repo.path.resolve()


def test_open_repository_from_a_linked_worktree(repo: Repo, tmp_path: Path) -> None:
    linked = tmp_path / "linked"
    repo.git("worktree", "add", "-q", "-b", "feature", str(linked))
    found = git.open_repository(linked / "src")
    top = repo.path.resolve()
    assert found.root == top
    assert found.common_dir == top / ".git"
    assert found.toplevel == linked.resolve()
    assert found.git_dir == top / ".git" / "worktrees" / "linked"
    assert git.current_branch(found) == "feature"


def test_open_repository_outside_any_repository(tmp_path: Path) -> None:
    with pytest.raises(NotARepository) as caught:
        git.open_repository(tmp_path)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(NotARepository, match="does not exist"):
        git.open_repository(tmp_path / "missing")


def test_cli_outside_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    plan = plain / "plan.yaml"
    plan.write_text(VALID_PLAN)
    result = run_wtr("check", plan, cwd=plain)
    assert result.one_line_error() == (
        f"wtr: {plain.resolve()} is not inside a git repository; "
        "run this inside a repository or pass --repo DIR"
    )
    missing = run_wtr("init", "--repo", plain / "missing", cwd=plain)
    assert "does not exist" in missing.one_line_error()


def test_cli_in_a_bare_repository(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    bare.mkdir()
    Repo(bare).git("init", "-q", "--bare")
    for args, cwd in ((("init",), bare), (("init", "--repo", bare), tmp_path)):
        result = run_wtr(*args, cwd=cwd)
        assert result.one_line_error().startswith(
            f"wtr: {bare.resolve()} is a bare repository"
        )
    assert not (bare / "worktree-plan.yaml").exists()


def test_cli_without_git_on_path(repo: Repo, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    plan = repo.write_plan(VALID_PLAN)
    result = run_wtr("check", plan, cwd=repo.path, env={"PATH": str(bin_dir)})
    line = result.one_line_error()
    assert "git" in line
    assert line == "wtr: git was not found on PATH; install git 2.38 or newer"


def test_open_repository_ignores_an_inherited_git_common_dir(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo(tmp_path / "other")
    monkeypatch.setenv("GIT_COMMON_DIR", str(other.path / ".git"))
    assert git.open_repository(repo.path).common_dir == repo.path.resolve() / ".git"


# -- worktrees -----------------------------------------------------------------------------


def test_list_worktrees_sees_branch_detached_and_locked_worktrees(
    repo: Repo, tmp_path: Path
) -> None:
    first = repo.head()
    second = repo.commit({"docs/more.md": "more\n"})
    on_branch = tmp_path.resolve() / "wt with space"
    detached = tmp_path.resolve() / "detached"
    locked = tmp_path.resolve() / "locked"
    repo.git("worktree", "add", "-q", "-b", "feature", str(on_branch), first)
    repo.git("worktree", "add", "-q", "--detach", str(detached), first)
    repo.git("worktree", "add", "-q", "-b", "held", str(locked))
    repo.git("worktree", "lock", "--reason", "on a usb stick", str(locked))

    found = git.list_worktrees(git.open_repository(repo.path))

    top = repo.path.resolve()
    assert found[0].path == top
    by_path = {w.path: w for w in found}
    assert set(by_path) == {top, on_branch, detached, locked}
    main, feature, loose, held = (by_path[p] for p in (top, on_branch, detached, locked))
    assert (main.branch, main.head, main.detached, main.locked) == ("main", second, False, False)
    assert (feature.branch, feature.head, feature.detached) == ("feature", first, False)
    assert (loose.branch, loose.head, loose.detached) == (None, first, True)
    assert (held.branch, held.locked, held.prunable) == ("held", True, False)
    assert not any(w.bare for w in found)
    assert git.worktree_of_branch(git.open_repository(repo.path), "feature") == feature
    assert git.worktree_of_branch(git.open_repository(repo.path), "nowhere") is None


def test_a_removed_worktree_directory_is_prunable(repo: Repo, tmp_path: Path) -> None:
    gone = tmp_path.resolve() / "gone"
    repo.git("worktree", "add", "-q", "--detach", str(gone))
    shutil.rmtree(gone)
    found = git.list_worktrees(git.open_repository(repo.path))
    assert [(w.path, w.prunable) for w in found] == [(repo.path.resolve(), False), (gone, True)]


def test_parse_worktree_porcelain_fields() -> None:
    text = (
        "worktree /srv/repo.git\nbare\n\n"
        "worktree /srv/main\nHEAD " + "a" * 40 + "\nbranch refs/heads/main\n\n"
        "worktree /srv/wt\nHEAD " + "b" * 40 + "\ndetached\nlocked reason here\n"
        "prunable gitdir file points to non-existent location\n\n"
    )
    bare, main, wt = git.parse_worktree_porcelain(text)
    assert bare == git.Worktree(path=Path("/srv/repo.git"), head=None, branch=None, bare=True)
    assert main == git.Worktree(path=Path("/srv/main"), head="a" * 40, branch="main")
    assert wt == git.Worktree(
        path=Path("/srv/wt"), head="b" * 40, branch=None, detached=True, locked=True,
        prunable=True,
    )
    assert git.parse_worktree_porcelain("") == []


# -- queries -------------------------------------------------------------------------------


def test_tracked_files(repo: Repo) -> None:
    repository = git.open_repository(repo.path)
    first = repo.head()
    repo.commit({"docs/naïve name.md": "x\n", "src/api/\"quoted\".py": "y\n"})
    (repo.path / "untracked.txt").write_text("not tracked\n")
    assert git.tracked_files(repository, first) == [
        "README.md", "docs/index.md", "src/api/orders.py", "src/db/models.py", "src/ui/view.py"
    ]
    now = git.tracked_files(repository, "HEAD")
    assert "docs/naïve name.md" in now
    assert 'src/api/"quoted".py' in now
    assert "untracked.txt" not in now
    # Asked from a subdirectory's worktree, paths stay relative to the repository root.
    sub = git.Repository(repository.root, repository.root / "src", repository.common_dir,
                         repository.git_dir)
    assert git.tracked_files(sub, first) == git.tracked_files(repository, first)


def _tree_listing(repo: Repo, commit: str) -> list[str]:
    return repo.git("ls-tree", "-r", "-z", "--name-only", commit).strip("\0").split("\0")


@pytest.mark.parametrize("staged", ["clean", "added", "intent", "removed", "unmerged"])
def test_tracked_files_read_from_the_index_are_the_trees_whatever_is_staged(
    repo: Repo, staged: str
) -> None:
    """The listing comes from the checkout's index only when that index is the commit's
    tree: a staged addition or removal, an entry added with intent (add -N) and an
    unmerged path all send it to the tree itself."""
    repository = git.open_repository(repo.path)
    head = repo.head()
    if staged == "added":
        repo.write({"src/new.py": "new\n"})
        repo.git("add", "src/new.py")
    elif staged == "intent":
        repo.write({"src/later.py": "later\n"})
        repo.git("add", "-N", "src/later.py")
    elif staged == "removed":
        repo.git("rm", "-q", "--cached", "docs/index.md")
    elif staged == "unmerged":
        repo.git("checkout", "-q", "-b", "side")
        repo.commit({"README.md": "side\n"})
        repo.git("checkout", "-q", "main")
        repo.commit({"README.md": "main\n"})
        head = repo.head()
        repo.git("merge", "-q", "side", check=False)
        assert "README.md" in repo.git("diff", "--name-only", "--diff-filter=U")
    assert git.tracked_files(repository, head) == _tree_listing(repo, head)
    assert git.tracked_files(repository, "HEAD~1" if staged == "unmerged" else head) == \
        _tree_listing(repo, "HEAD~1" if staged == "unmerged" else head)


def test_resolve_commit(repo: Repo) -> None:
    repository = git.open_repository(repo.path)
    head = repo.head()
    repo.git("tag", "-a", "-m", "annotated", "v1")
    assert git.resolve_commit(repository, "main") == head
    assert git.resolve_commit(repository, "v1") == head  # peeled to the commit
    assert git.resolve_commit(repository, head[:10]) == head


@pytest.mark.parametrize("ref", ["no-such-branch", "--output=/tmp/x", "HEAD~5", "main:README.md"])
def test_resolve_commit_of_an_unknown_ref(repo: Repo, ref: str) -> None:
    with pytest.raises(UnknownRef) as caught:
        git.resolve_commit(git.open_repository(repo.path), ref)
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert f"'{ref}' does not name a commit" in caught.value.message


def test_current_branch_and_branch_exists(repo: Repo) -> None:
    repository = git.open_repository(repo.path)
    assert git.current_branch(repository) == "main"
    assert git.branch_exists(repository, "main")
    repo.git("tag", "v1")
    assert not git.branch_exists(repository, "v1")
    repo.git("switch", "-q", "--detach")
    assert git.current_branch(repository) is None


def test_changed_paths(repo: Repo) -> None:
    first = repo.head()
    repo.git("mv", "docs/index.md", "docs/start.md")
    repo.git("commit", "-q", "-m", "rename")
    second = repo.commit({"src/api/orders.py": "ORDERS = [1]\n"})
    assert git.changed_paths(git.open_repository(repo.path), first, second) == [
        "docs/index.md", "docs/start.md", "src/api/orders.py"
    ]


# -- the environment of git commands -------------------------------------------------------


def test_clean_env_drops_redirecting_git_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY"):
        monkeypatch.setenv(key, "/elsewhere")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Someone")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='/x'")
    env = git.clean_env({"WTR_STREAM": "api"})
    for key in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY",
                "GIT_CONFIG_PARAMETERS"):
        assert key not in env
    assert env["GIT_AUTHOR_NAME"] == "Someone"
    assert env["GIT_CONFIG_GLOBAL"] == os.environ["GIT_CONFIG_GLOBAL"]
    assert env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["WTR_STREAM"] == "api"
    assert env["PATH"] == os.environ["PATH"]


def test_run_git_ignores_an_inherited_git_dir(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = make_repo(tmp_path / "other", {"other.txt": "elsewhere\n"})
    head = repo.head()
    assert other.head() != head
    redirecting = {"GIT_DIR": str(other.path / ".git"), "GIT_WORK_TREE": str(other.path),
                   "GIT_INDEX_FILE": str(other.path / ".git" / "index")}
    for key, value in redirecting.items():
        monkeypatch.setenv(key, value)
    assert git.run_git(["rev-parse", "HEAD"], repo.path).stdout.strip() == head
    top = git.run_git(["rev-parse", "--show-toplevel"], repo.path / "src").stdout.strip()
    assert Path(top) == repo.path.resolve()
    (repo.path / "new.txt").write_text("new\n")
    git.run_git(["add", "new.txt"], repo.path)
    for key in redirecting:  # the test's own git calls would obey them
        monkeypatch.delenv(key)
    assert repo.git("diff", "--cached", "--name-only") == "new.txt"
    assert other.git("status", "--porcelain") == ""


def test_run_git_failure_carries_the_command_and_its_output(repo: Repo) -> None:
    with pytest.raises(GitFailed) as caught:
        git.run_git(["rev-parse", "--verify", "nowhere"], repo.path)
    assert caught.value.args_ == ("rev-parse", "--verify", "nowhere")
    assert caught.value.returncode != 0
    assert caught.value.message.startswith("git rev-parse --verify nowhere failed: fatal:")
    result = git.run_git(["rev-parse", "--verify", "nowhere"], repo.path, check=False)
    assert not result.ok
    assert result.returncode == caught.value.returncode


def test_run_git_passes_stdin_and_extra_env(repo: Repo) -> None:
    result = git.run_git(["hash-object", "--stdin"], repo.path, stdin="hello\n")
    assert result.stdout.strip() == "ce013625030ba8dba906f756967f9e9ca394464a"
    ident = git.run_git(["var", "GIT_AUTHOR_IDENT"], repo.path,
                        env={"GIT_AUTHOR_NAME": "Agent Smith"}).stdout
    assert ident.startswith("Agent Smith <author@example.com>")


# -- reading objects, and waiting for a lock another git holds --------------------------------


@pytest.mark.parametrize("object_format", ["sha1", "sha256"])
def test_the_object_reader_reads_commits_in_either_object_format(
        tmp_path: Path, object_format: str) -> None:
    """SHA-1 repositories are read through GitPython's object database, SHA-256 ones (which
    its parser does not know) through a cat-file of our own: the same answers."""
    import subprocess

    path = tmp_path / object_format
    subprocess.run(["git", "init", "-q", f"--object-format={object_format}", "-b", "main",
                    str(path)], check=True)
    (path / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(path), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(path), "commit", "-q", "-m", "first words"], check=True)
    head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    with git.ObjectReader(git.open_repository(path)) as reader:
        kind, data = reader.read(head)
        assert kind == "commit"
        assert data.startswith(b"tree ") and data.endswith(b"first words\n")
        with pytest.raises(UnknownRef):
            reader.read("0" * len(head))


def test_a_ref_lock_held_by_another_git_is_waited_for(repo: Repo, tmp_path: Path) -> None:
    """A user's git command holds the lock of the branch a worktree is made on: the runner
    tries again until it is let go of, and fails with git's message if it never is."""
    import threading

    found = git.open_repository(repo.path)
    lock = repo.path / ".git" / "refs" / "heads" / "wtr" / "held.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    threading.Timer(0.3, lock.unlink).start()
    git.add_worktree(found, tmp_path / "held", "wtr/held", repo.head("main"))
    assert repo.head("wtr/held") == repo.head("main")

    lock2 = lock.with_name("stuck.lock")
    lock2.write_text("")
    with pytest.raises(GitFailed, match="remove the file manually"):
        git.add_worktree(found, tmp_path / "stuck", "wtr/stuck", repo.head("main"))
    assert not (tmp_path / "stuck").exists() or not any((tmp_path / "stuck").iterdir())
