"""Thin worktrees on real filesystems: overlay mounts over a shared checkout (as root) and
reflink clones on loop-mounted btrfs and xfs images; the method falls back to a full
checkout where it does not work, and every promise of a full one still holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of
from worktree_runner import checkout
from worktree_runner import git as git_
from worktree_runner import overlay as layers
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan

ROOT = os.geteuid() == 0
SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
needs_root = pytest.mark.skipif(not ROOT, reason="!!! SKIPPED: overlay mounts need root")

# The agent records what it sees (every file, and git's view of its worktree), then acts.
LOOK = ('find . -path ./.git -prune -o ! -type d -print | sort > "$SEEN/$WTR_STREAM.files"; '
        'git status --porcelain > "$SEEN/$WTR_STREAM.status"; sh -c "${AGENT_THEN:-true}"')


def plan(seen: Path, streams: dict, **top: object) -> dict:
    return agent_plan(streams, agent={"command": LOOK, "env": {"SEEN": str(seen)}}, **top)


def run(repo: Repo, the_plan: dict, env: dict[str, str] | None = None):
    return run_wtr("run", repo.write_plan(the_plan), cwd=repo.path, env=env)


def mounts_under(folder: Path) -> list[str]:
    table = Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in table if line.split()[4].startswith(str(folder))]


@pytest.fixture
def seen(tmp_path: Path) -> Path:
    folder = tmp_path / "seen"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def no_mount_left(tmp_path: Path) -> Iterator[None]:
    """Every test leaves no mount behind (and a failed one does not leak its mounts)."""
    yield
    left = mounts_under(tmp_path)
    for where in sorted(left, reverse=True):
        layers.unmount(Path(where))
    assert not left, f"mounts left behind: {left}"


# -- the plan setting ----------------------------------------------------------------------


def test_the_checkout_setting_in_the_plan() -> None:
    text = 'version: 1\nagent: {command: "true"}\n%sstreams:\n  db: {files: ["a/**"]%s}\n'

    def parsed(top: str = "", stream: str = ""):
        return parse_plan(text % (top, stream), Path("plan.yaml"))

    assert parsed().streams[0].checkout == "auto"
    assert parsed("checkout: auto\n").streams[0].checkout == "auto"
    assert parsed("checkout: overlay\n", ", checkout: reflink").streams[0].checkout == "reflink"
    with pytest.raises(PlanInvalid) as caught:
        parsed("checkout: lazy\n")
    assert "checkout: must be one of auto, overlay, reflink, full" in (
        caught.value.problems[0].render("plan.yaml"))


# -- overlay -------------------------------------------------------------------------------


@needs_root
def test_overlay_streams_see_the_whole_base_and_git_sees_them_clean(
        repo: Repo, seen: Path) -> None:
    repo.commit({"src/db/deep/big.bin": "x" * 100_000})
    os.symlink("deep/big.bin", repo.path / "src/db/link")
    repo.git("add", "-A")
    repo.git("commit", "-qm", "a link")
    result = run(repo, plan(seen, {
        "db": {"env": {"AGENT_THEN": "echo 'DB = 2' > src/db/models.py"}, "files": ["src/db/**"]},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "env": {"AGENT_THEN": "echo 'API = 1' > src/api/new.py"}},
    }, checkout="overlay"))
    assert result.returncode == 0, result.stderr + result.stdout
    tracked = sorted(repo.git("ls-files").split())
    assert (seen / "db.files").read_text().split() == [f"./{p}" for p in tracked]
    assert (seen / "db.status").read_text() == ""  # git saw a clean worktree
    # api starts from db's result: the file db changed is there, git sees no change
    assert (seen / "api.status").read_text() == ""
    doc = status(repo)
    db, api = stream_of(doc, "db"), stream_of(doc, "api")
    assert db["checkout"] == api["checkout"] == "overlay"
    assert layers.is_mounted(Path(db["worktree"]))
    # the index's entries are shared: each worktree links them and has a small index of its
    # own (past a fifth of the entries changed, git writes the worktree a new entries file)
    for stream in (api, db):
        admin = Path(Repo(Path(stream["worktree"])).git("rev-parse", "--absolute-git-dir"))
        assert [e.stat().st_nlink for e in admin.glob("sharedindex.*")].count(3) == 1
    own = int.from_bytes((admin / "index").read_bytes()[8:12], "big")  # (db's entries)
    assert own == 1 < len(tracked)  # what the stream changed, not every file
    assert (Path(api["worktree"]) / "src/db/models.py").read_text() == "DB = 2\n"
    assert repo.git("diff", "--name-only", "main", api["branch"]).split() == [
        "src/api/new.py", "src/db/models.py"]
    # the shared checkout is untouched: every write went to the stream's own layer
    base = checkout.base_checkout(repo_obj(repo), worktrees(repo), doc["base_commit"])
    assert (base / "tree/src/db/models.py").read_text() == "MODELS = []\n"
    assert int((base / "disk-bytes").read_text()) > 0  # (status --json counted it once)
    assert run_wtr("merge", cwd=repo.path).returncode == 0
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not mounts_under(worktrees(repo))
    assert not (worktrees(repo) / checkout.LAYERS_DIR).exists()
    assert not (worktrees(repo) / checkout.BASE_DIR).exists()
    assert repo.git("worktree", "list").count("\n") == 0  # only the main worktree


def other_filesystem(than: Path) -> Path | None:
    """A writable folder on another filesystem than ``than`` (tmpfs or the disk)."""
    for candidate in (Path("/dev/shm"), Path("/var/tmp"), Path("/tmp")):
        if candidate.is_dir() and os.access(candidate, os.W_OK) \
                and candidate.stat().st_dev != than.stat().st_dev:
            return candidate
    return None


@needs_root
def test_worktrees_on_another_filesystem_copy_the_shared_index_entries(
        repo: Repo, seen: Path, tmp_path: Path) -> None:
    """The index's entries are hard-linked into each worktree's git folder; where that
    folder (in the repository) and the shared checkout (beside the worktrees) are on two
    filesystems, they are copied, and the run, the merge and the clean work the same."""
    elsewhere = other_filesystem(tmp_path)
    if elsewhere is None:
        pytest.skip("!!! SKIPPED: no second filesystem (tmpfs and disk) to put worktrees on")
    folder = Path(tempfile.mkdtemp(prefix="wtr-other-fs.", dir=elsewhere))
    try:
        result = run(repo, plan(seen, {
            "db": {"env": {"AGENT_THEN": "echo 'DB = 2' > src/db/models.py"},
                   "files": ["src/db/**"]},
        }, checkout="overlay", worktrees_dir=str(folder / "wt")))
        assert result.returncode == 0, result.stderr + result.stdout
        db = stream_of(status(repo), "db")
        assert db["checkout"] == "overlay" and Path(db["worktree"]).is_relative_to(folder)
        admin = Path(Repo(Path(db["worktree"])).git("rev-parse", "--absolute-git-dir"))
        copies = list(admin.glob("sharedindex.*"))
        assert copies and all(e.stat().st_nlink == 1 for e in copies)  # copied, not linked
        assert (seen / "db.status").read_text() == ""  # git reads the copy: a clean worktree
        assert run_wtr("merge", cwd=repo.path).returncode == 0
        assert repo.git("show", "main:src/db/models.py").strip() == "DB = 2"
        cleaned = run_wtr("clean", cwd=repo.path)
        assert cleaned.returncode == 0, cleaned.stderr
        assert not mounts_under(folder) and not list((folder / "wt").glob("*"))
    finally:
        for where in sorted(mounts_under(folder), reverse=True):
            layers.unmount(Path(where))
        shutil.rmtree(folder, ignore_errors=True)


@needs_root
def test_the_default_is_a_thin_worktree_from_ten_thousand_files(
        repo: Repo, seen: Path, tmp_path: Path) -> None:
    assert run(repo, plan(seen, {"db": {"files": ["src/db/**"]}})).returncode == 0
    assert stream_of(status(repo), "db")["checkout"] == "full"  # (a small repository)
    built = subprocess.run([sys.executable, str(SCRIPTS / "make-big-repo"), "10000",
                            "--commits", "0", "--out", str(tmp_path / "big.git")],
                           check=True, capture_output=True, text=True)
    # (its index is all the default reads: the 10,000 files are not written out here)
    subprocess.run(["git", "clone", "-q", "--no-checkout", built.stdout.strip(),
                    str(tmp_path / "big")], check=True)
    big = Repo(tmp_path / "big")
    big.git("read-tree", "HEAD")
    package = next(p for p in big.git("ls-files").split() if p.startswith("apps/"))
    folder = "/".join(package.split("/")[:2])
    assert run(big, plan(seen, {"app": {"files": [f"{folder}/**"]}})).returncode == 0
    assert stream_of(status(big), "app")["checkout"] == "overlay"
    assert (seen / "app.status").read_text() == ""
    assert run_wtr("clean", "--force", cwd=big.path).returncode == 0


def repo_obj(repo: Repo):
    from worktree_runner import git

    return git.open_repository(repo.path)


def worktrees(repo: Repo) -> Path:
    return repo.path.parent / f"{repo.path.name}.worktrees"


def assert_nothing_left(repo: Repo) -> None:
    """No mount, no layer, no shared checkout, no worktree but the main one."""
    assert not mounts_under(worktrees(repo))
    for folder in (checkout.LAYERS_DIR, checkout.BASE_DIR):
        assert not (worktrees(repo) / folder).exists()
    assert repo.git("worktree", "list").count("\n") == 0


@needs_root
def test_kill_9_while_making_an_overlay_worktree_is_finished_by_resume(
        repo: Repo, seen: Path) -> None:
    the_plan = plan(seen, {"db": {"files": ["src/db/**"],
                                  "env": {"AGENT_THEN": "echo 'DB = 2' > src/db/models.py"}}},
                    checkout="overlay")
    killed = run(repo, the_plan, env={"WTR_FAULT": "overlay_registered:db"})
    assert killed.returncode == -9
    path = worktrees(repo) / status(repo)["run"] / "db"
    assert not layers.is_mounted(path) and not (path / ".git").exists()
    # the resume that makes it again is killed too, once mounted, before its index
    killed = run_wtr("resume", cwd=repo.path, env={"WTR_FAULT": "overlay_mounted:db"})
    assert killed.returncode == -9
    assert layers.is_mounted(path)
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    db = stream_of(status(repo), "db")
    assert db["status"] == "succeeded" and db["checkout"] == "overlay"
    assert (seen / "db.status").read_text() == ""
    assert len((seen / "db.files").read_text().split()) == len(repo.git("ls-files").split())
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 2"
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert_nothing_left(repo)


@needs_root
def test_clean_rescues_an_overlay_worktree_and_a_kill_after_its_unmount_leaks_nothing(
        repo: Repo, seen: Path) -> None:
    assert run(repo, plan(seen, {"db": {"files": ["src/db/**"]}},
                          checkout="overlay")).returncode == 0
    doc = status(repo)
    path = Path(stream_of(doc, "db")["worktree"])
    (path / "src/db/unsaved.py").write_text("UNSAVED = 1\n")
    (path / "src/ui/view.py").unlink()
    killed = run_wtr("clean", cwd=repo.path, env={"WTR_FAULT": "overlay_unmounted:db"})
    assert killed.returncode == -9
    rescue = f"refs/worktree-runner/rescue/{doc['run']}/db"
    assert repo.git("diff", "--name-status", "main", rescue).splitlines() == [
        "A\tsrc/db/unsaved.py", "D\tsrc/ui/view.py"]
    assert not layers.is_mounted(path)
    again = run_wtr("clean", cwd=repo.path)
    assert again.returncode == 0, again.stderr
    assert repo.git("show", f"{rescue}:src/db/unsaved.py") == "UNSAVED = 1"
    assert_nothing_left(repo)


@needs_root
def test_the_look_for_uncommitted_work_reads_only_what_the_agent_changed(
        repo: Repo, seen: Path) -> None:
    """In an overlay worktree, the paths the look names (its upper layer, and what its
    commits and index changed) give exactly what a look at every file gives."""
    repo.commit({"src/db/old/a.py": "A\n", "src/db/old/b.py": "B\n", "src/db/gone.py": "G\n",
                 "src/db/hid.py": "H\n", "src/db/plumb.py": "P\n", "src/db/staged.py": "S\n"})
    assert run(repo, plan(seen, {"db": {"files": ["src/db/**"]}},
                          checkout="overlay")).returncode == 0
    path = Path(stream_of(status(repo), "db")["worktree"])
    wt = Repo(path)
    (path / "src/db/models.py").write_text("MODELS = [1]\n")  # modified
    (path / "src/db/fresh").mkdir()
    (path / "src/db/fresh/new.py").write_text("NEW\n")  # untracked, in a new folder
    (path / "src/db/gone.py").unlink()  # deleted: a whiteout
    (path / "src/db/old").rename(path / "src/db/moved")  # a folder renamed
    (path / "src/db/hid.py").write_text("H2\n")  # changed, then hidden from git
    wt.git("update-index", "--assume-unchanged", "src/db/hid.py")
    (seen / "plumb.py").write_text("P2\n")
    blob = wt.git("hash-object", "-w", str(seen / "plumb.py"))  # committed without
    wt.git("update-index", "--cacheinfo", f"100644,{blob},src/db/plumb.py")  # touching the file
    wt.git("commit", "-qm", "plumbing")
    wt.git("rm", "-q", "--cached", "src/db/staged.py")  # an index-only change
    repo_ = repo_obj(repo)
    named = checkout.suspects(repo_, path)
    assert named is not None and "src/api/orders.py" not in named
    assert {"src/db/gone.py", "src/db/plumb.py", "src/db/staged.py", "src/db/moved"} <= set(named)
    fast = git_.worktree_dirty(path, named)
    assert sorted(fast) == sorted(git_.worktree_dirty(path)) == [
        "src/db/fresh/new.py", "src/db/gone.py", "src/db/hid.py", "src/db/models.py",
        "src/db/moved/a.py", "src/db/moved/b.py", "src/db/old/a.py", "src/db/old/b.py",
        "src/db/plumb.py", "src/db/staged.py", "src/db/staged.py"]  # (deleted, untracked)
    assert checkout.suspects(repo_, repo.path) is None  # a full checkout: look at everything
    assert run_wtr("clean", "--force", cwd=repo.path).returncode == 0


@needs_root
def test_an_overlay_whose_mount_went_down_is_mounted_again_by_resume_and_clean(
        repo: Repo, seen: Path) -> None:
    """As after a reboot: the worktree folder is empty, the agent's work is in its layer."""
    the_plan = plan(seen, {"db": {"files": ["src/db/**"]},
                           "api": {"files": ["src/api/**"], "depends_on": ["db"]}},
                    checkout="overlay")
    killed = run(repo, the_plan, env={"WTR_FAULT": "after_worktree:api"})
    assert killed.returncode == -9
    doc = status(repo)
    db = Path(stream_of(doc, "db")["worktree"])
    api = worktrees(repo) / doc["run"] / "api"
    # api's worktree is made, its agent not started: git finds it clean from the stat data
    # alone (a status that had to read a file's content would write a refreshed index)
    index = Path(repo.git("-C", str(api), "rev-parse", "--absolute-git-dir")) / "index"
    before = index.read_bytes()
    assert repo.git("-C", str(api), "status", "--porcelain") == ""
    assert index.read_bytes() == before
    (db / "src/db/unsaved.py").write_text("UNSAVED = 1\n")
    for stream in ("db", "api"):
        layers.unmount(worktrees(repo) / doc["run"] / stream)
    assert list(db.iterdir()) == []
    assert repo.git("worktree", "prune") == "" and str(db) in repo.git("worktree", "list")
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert status(repo)["counts"]["succeeded"] == 2
    assert not layers.is_mounted(db)  # (db had finished: resume had no need of it)
    dry = run_wtr("clean", "--dry-run", cwd=repo.path)
    assert "would save uncommitted changes of db (1 file)" in dry.stdout, dry.stdout
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert repo.git("show", f"refs/worktree-runner/rescue/{doc['run']}/db:src/db/unsaved.py"
                    ) == "UNSAVED = 1"
    assert_nothing_left(repo)


@needs_root
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="!!! SKIPPED: bwrap not installed")
def test_a_sandboxed_agent_works_in_an_overlay_worktree(repo: Repo, seen: Path) -> None:
    result = run(repo, plan(seen, {"db": {"files": ["src/db/**"], "env": {
        "AGENT_THEN": "echo 'DB = 2' > src/db/models.py && git add -A && "
                      "git commit -qm db && (echo x > ../escape || true)"}}},
        checkout="overlay", sandbox=True, writable=[str(seen)]))
    assert result.returncode == 0, result.stderr + result.stdout
    db = stream_of(status(repo), "db")
    assert db["checkout"] == "overlay"
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "DB = 2"
    assert not (worktrees(repo) / status(repo)["run"] / "escape").exists()
    assert (seen / "db.status").read_text() == ""
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert_nothing_left(repo)


def test_a_method_that_does_not_work_here_falls_back_to_a_full_checkout(
        repo: Repo, seen: Path) -> None:
    """reflink on the test's own filesystem (ext4 or tmpfs: no shared blocks)."""
    if checkout.works("reflink", worktrees(repo)):
        pytest.skip("!!! SKIPPED: this filesystem has reflinks; the loop-image tests cover it")
    result = run(repo, plan(seen, {"db": {"files": ["src/db/**"]}}, checkout="reflink"))
    assert result.returncode == 0, result.stderr + result.stdout
    db = stream_of(status(repo), "db")
    assert db["checkout"] == "full"
    assert "checkout 'reflink' does not work here" in run_wtr(
        "logs", "db", cwd=repo.path).stdout
    assert (seen / "db.status").read_text() == ""


# -- reflink, on filesystems made for the test --------------------------------------------


@pytest.fixture(scope="module", params=["btrfs", "xfs"])
def reflink_fs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Path]:
    """A loop-mounted filesystem image of the kind named (300 MB, xfs's least)."""
    kind = request.param
    if not ROOT or shutil.which(f"mkfs.{kind}") is None:
        pytest.skip(f"!!! SKIPPED: needs root and mkfs.{kind} (scripts/test installs it)")
    folder = tmp_path_factory.mktemp(kind)
    image, where = folder / "image", folder / "mnt"
    where.mkdir()
    with image.open("wb") as file:
        file.truncate(300 << 20)
    subprocess.run([f"mkfs.{kind}", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def shared_extents(path: Path) -> bool:
    """Whether the file's data blocks are shared with another file (FIEMAP's flag)."""
    out = subprocess.run(["filefrag", "-v", str(path)], check=True, capture_output=True,
                         text=True).stdout
    return "shared" in out


def test_reflink_clones_share_every_block_and_git_sees_them_clean(
        reflink_fs: Path, tmp_path: Path) -> None:
    repo = make_repo(reflink_fs / tmp_path.name, {
        "README.md": "# sample\n", "src/db/models.py": "MODELS = []\n",
        "src/api/orders.py": "ORDERS = []\n", "data/big.bin": os.urandom(1 << 20).hex()})
    seen = tmp_path / "seen"
    seen.mkdir()
    # overlay works here too (as root); auto takes it only in a repository of 10,000 files
    assert checkout.method_for("overlay", worktrees(repo)) == "overlay"
    assert checkout.method_for("auto", worktrees(repo), repo_obj(repo)) == "full"
    killed = run(repo, plan(seen, {
        "db": {"files": ["src/db/**"], "env": {"AGENT_THEN": "echo 'DB = 3' > src/db/models.py"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
    }, checkout="reflink"), env={"WTR_FAULT": "reflink_cloned:db"})
    assert killed.returncode == -9  # (the clone made, its index not: resume makes it again)
    result = run_wtr("resume", cwd=repo.path)
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    db, api = stream_of(doc, "db"), stream_of(doc, "api")
    assert db["checkout"] == api["checkout"] == "reflink"
    assert (seen / "db.status").read_text() == (seen / "api.status").read_text() == ""
    assert shared_extents(Path(db["worktree"]) / "data/big.bin")
    assert (Path(api["worktree"]) / "src/db/models.py").read_text() == "DB = 3\n"
    assert repo.git("show", f"{api['branch']}:src/db/models.py") == "DB = 3"
    (Path(db["worktree"]) / "src/db/unsaved.py").write_text("UNSAVED = 1\n")
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert repo.git("show", f"refs/worktree-runner/rescue/{doc['run']}/db:src/db/unsaved.py"
                    ) == "UNSAVED = 1"
    assert not (worktrees(repo) / checkout.BASE_DIR).exists()
    assert not mounts_under(worktrees(repo))


@needs_root
def test_a_probe_mount_left_by_a_killed_runner_is_taken_down_by_the_next_probe(
        tmp_path: Path) -> None:
    dead = 4_000_000 + os.getpid() % 100_000  # (above any pid this machine hands out)
    assert not Path(f"/proc/{dead}").exists()
    left = tmp_path / f".probe-{dead}-x"
    lower, found = left / "lower", layers.Layers(left / "layers")
    for folder in (lower, left / "mnt", found.upper, found.work):
        folder.mkdir(parents=True)
    (found.folder / "lower").write_text(str(lower))
    layers.mount(left / "mnt", found)
    assert checkout._overlay_works(tmp_path)
    assert not left.exists() and not mounts_under(tmp_path)


@needs_root
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_dask_workers_make_overlay_worktrees_and_leave_no_mount(
        repo: Repo, tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="Dask is part of the test extra; install it")
    from tests.test_distributed import bare_remote, dask_plan

    remote = bare_remote(repo, tmp_path)
    streams = {"db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
               "api": {"files": ["src/api/**"], "depends_on": ["db"],
                       "env": {"AGENT_WRITE": "src/api/orders.py=API = 2"}}}
    result = run_wtr("run", repo.write_plan(dask_plan(streams, remote, checkout="overlay")),
                     cwd=repo.path, timeout=240)
    assert result.returncode == 0, result.stderr
    doc = status(repo)
    assert {(s["status"], s["checkout"]) for s in doc["streams"]} == {("succeeded", "overlay")}
    assert repo.git("show", f"{stream_of(doc, 'api')['branch']}:src/db/models.py") == "DB = 2"
    # each worker removed its overlay worktree once the branch was home (never pooled)
    table = Path("/proc/self/mountinfo").read_text()
    assert f"/{doc['run']}/" not in table
