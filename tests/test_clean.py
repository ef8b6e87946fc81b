"""wtr clean on real repositories: what it may remove, what it must save, and how it
behaves after a clean that was killed, beside another repository or another wtr."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of, wait_for

FILES = {"README.md": "# sample\n", "src/db/models.py": "MODELS = []\n",
         "src/ui/view.py": "VIEW = None\n"}


def run_ok(repo: Repo, plan: dict, code: int = 0) -> dict:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == code, result.stderr + result.stdout
    return status(repo)



def rescue_refs(repo: Repo, run: str) -> dict[str, str]:
    out = repo.git("for-each-ref", "--format=%(refname) %(objectname)",
                   f"refs/worktree-runner/rescue/{run}/")
    return dict(line.split() for line in out.splitlines())


def db_plan(**top: object) -> dict:
    return agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 1"}}}, **top)


# -- 16.3: never another repository's worktree --------------------------------------------


def test_two_repositories_sharing_a_worktrees_dir_never_touch_each_other(tmp_path: Path) -> None:
    first, second = make_repo(tmp_path / "a", FILES), make_repo(tmp_path / "b", FILES)
    plan = db_plan(worktrees_dir="../shared.wt")  # same plan name, same folder
    a_db = stream_of(run_ok(first, plan), "db")
    (Path(a_db["worktree"]) / "notes.txt").write_text("A's own notes\n")
    b_doc = run_ok(second, plan)
    b_db = stream_of(b_doc, "db")
    assert b_doc["run"] != status(first)["run"]  # ids are safe in the shared folder
    assert b_db["worktree"] != a_db["worktree"]
    cleaned = run_wtr("clean", cwd=second.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert (Path(a_db["worktree"]) / "notes.txt").read_text() == "A's own notes\n"
    assert a_db["worktree"] in first.git("worktree", "list")
    assert not Path(b_db["worktree"]).exists()


def test_clean_leaves_alone_a_folder_that_is_not_its_worktree(repo: Repo) -> None:
    db = stream_of(run_ok(repo, db_plan()), "db")
    path = Path(db["worktree"])
    repo.git("worktree", "remove", "--force", str(path))
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("not yours\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert (path / "precious.txt").read_text() == "not yours\n"
    assert f"left {path} alone" in result.stdout


def test_a_worktree_is_never_created_over_an_existing_folder(repo: Repo, tmp_path: Path) -> None:
    from worktree_runner import git
    from worktree_runner.errors import WtrError

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine\n")
    with pytest.raises(WtrError, match="something is already there"):
        git.add_worktree(git.open_repository(repo.path), occupied, "feature", repo.head())
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]
    assert "feature" not in repo.git("branch", "--list")


# -- 16.4: a rescue is never overwritten; a second clean after a killed one succeeds -------


@pytest.mark.parametrize("cut_short", [False, True])
def test_clean_after_a_killed_clean_keeps_the_first_rescue(repo: Repo, cut_short: bool) -> None:
    db = stream_of(run_ok(repo, db_plan()), "db")
    worktree = Path(db["worktree"])
    (worktree / "src/db/models.py").write_text("DB = 'hand edit'\n")
    killed = run_wtr("clean", cwd=repo.path, env={"WTR_FAULT": "clean_rescued"})
    assert killed.returncode == -signal.SIGKILL
    run = status(repo)["run"]
    first = rescue_refs(repo, run)
    assert list(first) == [f"refs/worktree-runner/rescue/{run}/db"]
    if cut_short:  # as a removal killed half way would leave it
        (worktree / "README.md").unlink()
    again = run_wtr("clean", cwd=repo.path)
    assert again.returncode == 0, again.stderr
    after = rescue_refs(repo, run)
    ref = f"refs/worktree-runner/rescue/{run}/db"
    assert after[ref] == first[ref]
    if not cut_short:  # the same changes again: the first rescue is named, nothing new
        assert f"already saved uncommitted changes of db (1 file) to {ref};" in again.stdout
        assert list(after) == [ref]
    assert repo.git("show", f"{ref}:src/db/models.py") == "DB = 'hand edit'"
    assert repo.git("show", f"{ref}:README.md") == "# sample"
    assert not worktree.exists()


def test_clean_removes_stale_git_locks_and_waits_for_live_ones(repo: Repo,
                                                                tmp_path: Path) -> None:
    run_ok(repo, db_plan())
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    doc = status(repo)
    branch = stream_of(doc, "db")["branch"]
    stale = repo.path / ".git" / "refs" / "heads" / f"{branch}.lock"
    stale.write_text("")
    os.utime(stale, (time.time() - 60, time.time() - 60))
    live = repo.path / ".git" / "packed-refs.lock"
    seen = tmp_path / "seen"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        f"f = open({str(live)!r}, 'w')\n"
        f"open({str(seen)!r}, 'w').write('open')\n"
        "time.sleep(4)\n"
        f"open({str(seen)!r}, 'w').write('still there' if os.path.exists({str(live)!r}) "
        "else 'gone')\n"
        f"os.unlink({str(live)!r})\n")])
    wait_for(seen.exists)
    result = run_wtr("clean", cwd=repo.path)
    holder.wait(timeout=60)
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "still there"  # the live holder's lock was not taken away
    assert branch not in repo.git("branch", "--list", "wtr/*")
    assert not stale.exists()


# -- 16.5: files brought in by copy are never committed ------------------------------------


def test_copied_files_are_never_committed_nor_rescued(repo: Repo) -> None:
    (repo.path / ".env").write_text("SECRET=1\n")
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 5;.env=SECRET=2",
                                      "AGENT_COMMIT": "0"}}}, copy=[".env"])
    db = stream_of(run_ok(repo, plan), "db")
    assert ".env" not in repo.git("ls-tree", "-r", "--name-only", db["branch"])
    (Path(db["worktree"]) / "src/db/models.py").write_text("DB = 'hand edit'\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    ref = f"refs/worktree-runner/rescue/{db['branch'].split('/')[1]}/db"
    assert repo.git("show", f"{ref}:src/db/models.py") == "DB = 'hand edit'"
    assert ".env" not in repo.git("ls-tree", "-r", "--name-only", ref)


def test_a_worktree_holding_only_copied_files_needs_no_rescue(repo: Repo) -> None:
    (repo.path / ".env").write_text("SECRET=1\n")
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 5",
                                      "AGENT_COMMIT": "0"}}}, copy=[".env"])
    db = stream_of(run_ok(repo, plan), "db")
    (Path(db["worktree"]) / ".env").write_text("SECRET=changed\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert rescue_refs(repo, status(repo)["run"]) == {}


# -- 10.1: the recovery hint restores exactly the rescued changes --------------------------


def test_following_the_rescue_hint_changes_only_the_rescued_files(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}},
    })
    db = stream_of(run_ok(repo, plan), "db")
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    (Path(db["worktree"]) / "src/db/models.py").write_text("DB = 'hand edit'\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    ref = f"refs/worktree-runner/rescue/{status(repo)['run']}/db"
    assert f"  saved uncommitted changes of db (1 file) to {ref};" in result.stdout
    hint = re.search(r"get exactly those changes back in a checkout with: (.+)$",
                     result.stdout, re.MULTILINE)
    assert hint, result.stdout
    subprocess.run(hint.group(1), shell=True, cwd=repo.path, check=True, capture_output=True)
    changed = repo.git("status", "--porcelain").splitlines()
    assert [line[3:] for line in changed] == ["src/db/models.py"]
    assert (repo.path / "src/db/models.py").read_text() == "DB = 'hand edit'\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"  # merged work kept


# -- 16.1 (clean's half): "its work is in the target" is proven on content ----------------


def test_a_branch_whose_work_left_the_target_is_kept(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 3"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 3"}},
    })
    ui = stream_of(run_ok(repo, plan), "ui")
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    landed_as_copy = subprocess.run(["git", "merge-base", "--is-ancestor", ui["branch"], "main"],
                                    cwd=repo.path, check=False).returncode
    assert landed_as_copy == 1
    repo.git("revert", "--no-edit", "HEAD")  # ui's landed work is no longer in main
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert (f"kept branch {ui['branch']} (merged, but main does not hold its exact changes"
            in result.stdout)
    assert "deleted branch wtr/plan-1/db (its work is in main)" in result.stdout


def test_a_merged_branch_is_deleted_once_its_content_is_proven(repo: Repo) -> None:
    db = stream_of(run_ok(repo, db_plan()), "db")
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    repo.commit({"README.md": "later work\n"}, "later")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert f"deleted branch {db['branch']} (its work is in main)" in result.stdout



def test_the_commits_of_a_branch_landed_as_a_copy_stay_reachable_after_clean(repo: Repo) -> None:
    """The target holds a rebased copy; the agent's own commits (author, message, parents)
    exist nowhere else, so clean pins them before it deletes the branch."""
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 3"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 3"}},
    })
    doc = run_ok(repo, plan)
    heads = {s["name"]: s["head_commit"] for s in doc["streams"]}
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    copied = [name for name, head in heads.items()
              if subprocess.run(["git", "merge-base", "--is-ancestor", head, "main"],
                                cwd=repo.path, check=False).returncode == 1]
    assert copied, "one of the two streams lands rebased onto the other"
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    for name in copied:
        archive = f"refs/worktree-runner/archive/{doc['run']}/{name}"
        assert repo.git("rev-parse", archive) == heads[name]
        assert f"its original commits pinned at {archive}" in result.stdout
    unreachable = repo.git("rev-list", *heads.values(), "--not", "--branches", "--tags",
                           "--glob=refs/worktree-runner/archive")
    assert unreachable == ""
    assert run_wtr("runs", "--prune", cwd=repo.path).returncode == 0
    assert repo.git("rev-list", *heads.values(), "--not", "--branches",
                    "--glob=refs/worktree-runner/archive") == ""


def test_clean_force_drops_a_halted_merge_without_a_traceback(repo: Repo) -> None:
    """Found by the chaos harness: the landing being dropped was looked up again after it
    had stopped being the open one."""
    run_ok(repo, db_plan())
    repo.commit({"src/db/models.py": "MAIN = 1\n"}, "main changes the same lines")
    halted = run_wtr("merge", cwd=repo.path)
    assert halted.returncode == 3, halted.stderr + halted.stdout
    cleaned = run_wtr("clean", "--force", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "Traceback" not in cleaned.stderr
    merge = status(repo)["merge"]
    assert merge["active"] is False and merge["worktree"] is None


def test_a_branch_of_a_stream_that_never_started_is_kept(repo: Repo) -> None:
    """ui was blocked (db failed), so it has no base commit; a branch of its name that
    someone made by hand holds work nowhere else: clean cannot prove anything and keeps it
    (mutation testing: `if not base: return False` made `True` deleted it)."""
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_EXIT": "1"}},
        "ui": {"files": ["src/ui/**"], "depends_on": ["db"]},
    })
    doc = run_ok(repo, plan, code=1)
    ui = stream_of(doc, "ui")
    assert ui["status"] == "blocked" and not ui["base_commit"], ui
    repo.git("checkout", "-q", "-b", ui["branch"])
    repo.commit({"src/ui/view.py": "BY HAND = 1\n"}, "work made by hand")
    tip = repo.head(ui["branch"])
    repo.git("checkout", "-q", "main")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert f"kept branch {ui['branch']}" in result.stdout
    assert repo.head(ui["branch"]) == tip

# -- 10 (should fix): no work, empty folders -----------------------------------------------


def test_a_failed_stream_without_commits_is_reported_as_no_work(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_EXIT": "1"}}})
    db = stream_of(run_ok(repo, plan, code=1), "db")
    dry = run_wtr("clean", "--dry-run", cwd=repo.path)
    assert f"would delete branch {db['branch']} (no work" in dry.stdout, dry.stdout
    assert repo.git("branch", "--list", db["branch"]) != ""  # a dry run deletes nothing
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert f"deleted branch {db['branch']} (no work" in result.stdout
    assert "its work is in" not in result.stdout
    assert repo.git("branch", "--list", db["branch"]) == ""


def test_clean_all_removes_the_empty_run_folders(repo: Repo) -> None:
    for _ in range(2):
        run_ok(repo, db_plan())
    folder = repo.path.parent / "repo.worktrees"
    assert sorted(p.name for p in folder.iterdir()) == ["plan-1", "plan-2"]
    result = run_wtr("clean", "--all", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    # the run folders are gone; the pool keeps the emptied worktrees for the next run
    assert [p.name for p in folder.iterdir()] == [".pool"]


# -- 16.8: a command that writes a run's state holds the run's lock ------------------------


@pytest.mark.parametrize("second", [("accept", "ui"), ("retry", "ui")])
def test_clean_holds_the_run_lock_against_retry_and_accept(repo: Repo, tmp_path: Path,
                                                           second: tuple[str, str]) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 8"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 8",
                                                "AGENT_EXIT": "1"}},
    })
    run_ok(repo, plan, code=1)
    pause = tmp_path / "pause"
    pause.write_text("")
    cleaning = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "clean"], cwd=repo.path, text=True,
        env={**os.environ, "WTR_PAUSE": "clean_branches", "WTR_PAUSE_FILE": str(pause)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(Path(f"{pause}.reached").exists)
        racing = run_wtr(*second, cwd=repo.path)
        assert racing.returncode == 1, racing.stdout + racing.stderr
        assert "being worked on by another wtr" in racing.stderr
    finally:
        pause.unlink()
        _, err = cleaning.communicate(timeout=120)
    assert cleaning.returncode == 0, err
    doc = status(repo)
    assert doc["counts"]["failed"] == 1  # nothing changed behind clean's back
    assert stream_of(doc, "ui")["status"] == "failed"


# -- 10 (should fix): wtr runs --prune ----------------------------------------------------


def test_runs_prune_forgets_finished_cleaned_runs_and_keeps_their_rescues(repo: Repo) -> None:
    first = stream_of(run_ok(repo, db_plan()), "db")
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    (Path(first["worktree"]) / "src/db/models.py").write_text("DB = 'hand edit'\n")
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    run_ok(repo, db_plan())  # plan-2: finished, not cleaned
    state = repo.path / ".git" / "worktree-runner" / "runs"
    assert repo.git("for-each-ref", "refs/worktree-runner/merge/plan-1")
    young = run_wtr("runs", "--prune", "--older-than", "30d", cwd=repo.path)
    assert young.returncode == 0 and "no finished, cleaned run to prune" in young.stdout
    assert (state / "plan-1").exists()
    pruned = run_wtr("runs", "--prune", "--json", cwd=repo.path)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.json() == {"pruned": ["plan-1"]}
    assert not (state / "plan-1").exists() and (state / "plan-2").exists()
    assert repo.git("for-each-ref", "refs/worktree-runner/merge/plan-1") == ""
    rescue = repo.git("for-each-ref", "--format=%(refname)", "refs/worktree-runner/rescue/")
    assert rescue == "refs/worktree-runner/rescue/plan-1/db"
    assert [r["run"] for r in run_wtr("runs", "--json", cwd=repo.path).json()["runs"]] == [
        "plan-2"]
    assert run_wtr("clean", "--run", "plan-2", cwd=repo.path).returncode == 0
    everything = run_wtr("runs", "--prune", "--include-rescue", cwd=repo.path)
    assert everything.returncode == 0 and "pruned run plan-2" in everything.stdout
    # plan-1 was pruned without --include-rescue: its rescue ref stays
    assert rescue in repo.git("for-each-ref", "--format=%(refname)")
    alone = run_wtr("runs", "--older-than", "1d", cwd=repo.path)
    assert alone.returncode == 2 and "go with --prune" in alone.stderr


# -- archive refs are never overwritten ------------------------------------------------------


@pytest.mark.parametrize("earlier", ["same tip", "another commit"])
def test_clean_force_never_moves_an_archive_ref(repo: Repo, earlier: str) -> None:
    """A clean killed after pinning (same tip) reuses its archive ref; an archive ref at
    another commit is kept as it is and the tip goes to the next free name."""
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 5",
                                      "AGENT_EXIT": "1"}}})
    doc = run_ok(repo, plan, code=1)
    db, archive = stream_of(doc, "db"), f"refs/worktree-runner/archive/{doc['run']}/db"
    tip = repo.head(db["branch"])
    assert tip != repo.head("main")
    old = tip if earlier == "same tip" else repo.head("main")
    repo.git("update-ref", archive, old)
    dry = run_wtr("clean", "--force", "--dry-run", cwd=repo.path)
    assert f"would delete unmerged branch {db['branch']}, its tip pinned at {archive}" in dry.stdout
    result = run_wtr("clean", "--force", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    pinned = archive if earlier == "same tip" else f"{archive}@2"
    assert f"deleted unmerged branch {db['branch']}, its tip pinned at {pinned}" in result.stdout
    assert repo.git("rev-parse", archive) == old
    assert repo.git("rev-parse", pinned) == tip
    assert repo.git("for-each-ref", "--format=%(refname)",
                    "refs/worktree-runner/archive/").split() == sorted({archive, pinned})
    assert repo.git("branch", "--list", db["branch"]) == ""


def test_clean_force_keeps_the_branch_when_every_archive_name_is_taken(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 6",
                                      "AGENT_EXIT": "1"}}})
    doc = run_ok(repo, plan, code=1)
    db, archive = stream_of(doc, "db"), f"refs/worktree-runner/archive/{doc['run']}/db"
    tip, other = repo.head(db["branch"]), repo.head("main")
    names = [archive, *(f"{archive}@{n}" for n in range(2, 100))]
    subprocess.run(["git", "update-ref", "--stdin"], cwd=repo.path, check=True, text=True,
                   input="".join(f"create {name} {other}\n" for name in names))
    result = run_wtr("clean", "--force", cwd=repo.path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "could not pin the tip of db" in result.stderr and "Traceback" not in result.stderr
    assert repo.head(db["branch"]) == tip
    refs = repo.git("for-each-ref", "--format=%(refname) %(objectname)",
                    "refs/worktree-runner/archive/").splitlines()
    assert sorted(refs) == sorted(f"{name} {other}" for name in names)


def test_each_new_rescue_of_a_worktree_gets_the_next_free_name(repo: Repo) -> None:
    """Two cleans killed after saving different edits, then a third edit: every save keeps
    its own ref (db, db@2, db@3), none is overwritten, a hidden commit's ref aside."""
    db = stream_of(run_ok(repo, db_plan()), "db")
    worktree, run = Path(db["worktree"]), status(repo)["run"]
    ref = f"refs/worktree-runner/rescue/{run}/db"
    repo.git("update-ref", f"{ref}@commit-{'0' * 12}", repo.head("main"))  # not a save
    for edit in ("A", "B"):
        (worktree / "src/db/models.py").write_text(f"DB = '{edit}'\n")
        killed = run_wtr("clean", cwd=repo.path, env={"WTR_FAULT": "clean_rescued"})
        assert killed.returncode == -signal.SIGKILL
    (worktree / "src/db/models.py").write_text("DB = 'C'\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert f"saved uncommitted changes of db (1 file) to {ref}@3;" in result.stdout
    saved = {name: repo.git("show", f"{name}:src/db/models.py")
             for name in rescue_refs(repo, run) if "@commit-" not in name}
    assert saved == {ref: "DB = 'A'", f"{ref}@2": "DB = 'B'", f"{ref}@3": "DB = 'C'"}
    assert not worktree.exists()


def test_two_worktrees_with_the_same_edits_each_get_their_own_rescue(repo: Repo) -> None:
    plan = agent_plan({name: {"files": [f"src/{name}/**"], "agent": {"command": "true"}}
                       for name in ("db", "ui")})
    doc = run_ok(repo, plan)
    for stream in doc["streams"]:
        (Path(stream["worktree"]) / "README.md").write_text("the same hand edit\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    prefix = f"refs/worktree-runner/rescue/{doc['run']}"
    for name in ("db", "ui"):
        assert f"saved uncommitted changes of {name} (1 file) to {prefix}/{name};" in result.stdout
        assert repo.git("show", f"{prefix}/{name}:README.md") == "the same hand edit"
    assert sorted(rescue_refs(repo, doc["run"])) == [f"{prefix}/db", f"{prefix}/ui"]
