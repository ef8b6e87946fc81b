"""The worktree pool: clean keeps clean worktrees, the next run reuses them; nothing carried
over, nothing lost, nothing leaked (real git, real runs, real kill -9)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of
from worktree_runner.errors import PlanInvalid
from worktree_runner.plan.load import parse_plan

# The second run's agent writes down what its worktree holds when it starts.
LOOK = ('find . -path ./.git -prune -o -type f -print | sort > "$SEEN/$WTR_STREAM.files"; '
        'git status --porcelain --ignored=matching > "$SEEN/$WTR_STREAM.status"; '
        'git rev-parse --git-dir > "$SEEN/$WTR_STREAM.gitdir"')


@pytest.fixture
def ignoring(repo: Repo) -> Repo:
    repo.commit({".gitignore": "build/\nnode_modules/\n*.log\n"}, "ignore build output")
    return repo


def writer(**top: object) -> dict:
    return agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 1;"
                                                              "src/db/elsewhere.py=ONLY = 1"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 1"}},
    }, keep_ignored=["node_modules/"], **top)


def looker(seen: Path, **top: object) -> dict:
    return agent_plan({"db": {"files": ["src/db/**"]}, "ui": {"files": ["src/ui/**"]}},
                      agent={"command": LOOK, "env": {"SEEN": str(seen)}},
                      keep_ignored=["node_modules/"], **top)


def run(repo: Repo, plan: dict, name: str = "plan.yaml", **env: str):
    result = run_wtr("run", repo.write_plan(plan, name), cwd=repo.path, env=env)
    return result


def worktrees(repo: Repo) -> list[Path]:
    listed = repo.git("worktree", "list", "--porcelain").splitlines()
    return [Path(line.split(" ", 1)[1]) for line in listed if line.startswith("worktree ")]


def pooled(repo: Repo) -> list[Path]:
    return [p for p in worktrees(repo) if p.parent.name == ".pool"]


def assert_no_leak(repo: Repo) -> None:
    """Every worktree git knows exists; every folder holding a checkout is one git knows."""
    known = set(worktrees(repo))
    assert all(p.exists() for p in known), known
    root = repo.path.parent / "repo.worktrees"
    on_disk = {p.parent for p in root.rglob(".git")} if root.exists() else set()
    assert on_disk <= known, on_disk - known


def events(repo: Repo, run_id: str) -> list[dict]:
    path = repo.path / ".git/worktree-runner/runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_reused_worktree_carries_nothing_from_its_previous_stream(
        ignoring: Repo, seen: Path) -> None:
    repo = ignoring
    assert run(repo, writer()).returncode == 0
    first = status(repo)
    db = Path(stream_of(first, "db")["worktree"])
    (db / "src/db/untracked.py").write_text("LEFT = 1\n")
    (db / "build").mkdir()
    (db / "build/out.o").write_text("object\n")
    (db / "debug.log").write_text("log\n")
    (db / "node_modules/pkg").mkdir(parents=True)
    (db / "node_modules/pkg/index.js").write_text("cache\n")
    (db / "README.md").write_text("staged edit\n")
    repo.git("-C", str(db), "add", "README.md")
    gitdir = repo.git("-C", str(db), "rev-parse", "--git-dir")
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert "in the pool" in cleaned.stdout and not db.exists()
    assert len(pooled(repo)) == 2
    rescue = f"refs/worktree-runner/rescue/{first['run']}/db"
    assert repo.git("show", f"{rescue}:src/db/untracked.py") == "LEFT = 1"
    assert repo.git("show", f"{rescue}:README.md") == "staged edit"

    result = run(repo, looker(seen), "second.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    assert pooled(repo) == []
    second = status(repo)
    reused = [e for e in events(repo, second["run"]) if e["kind"] == "stream.worktree_reused"]
    assert sorted(e["stream"] for e in reused) == ["db", "ui"]
    # db got the very worktree db had (its git dir, its kept cache), and nothing else of it
    db_gitdir = (seen / "db.gitdir").read_text().strip()
    ui_gitdir = (seen / "ui.gitdir").read_text().strip()
    assert gitdir in (db_gitdir, ui_gitdir)
    holder = "db" if db_gitdir == gitdir else "ui"
    files = (seen / f"{holder}.files").read_text().split()
    assert "./node_modules/pkg/index.js" in files
    for gone in ("./src/db/untracked.py", "./build/out.o", "./debug.log",
                 "./src/db/elsewhere.py"):
        assert gone not in files
    tracked = sorted(f"./{p}" for p in repo.git("ls-files").split())
    assert sorted(f for f in files if not f.startswith("./node_modules/")) == tracked
    assert (seen / f"{holder}.status").read_text().splitlines() == ["!! node_modules/"]
    worktree = Path(stream_of(second, holder)["worktree"])
    assert (worktree / "README.md").read_text() == "# sample\n"
    assert stream_of(second, holder)["branch"] == repo.git(
        "-C", str(worktree), "symbolic-ref", "--short", "HEAD")
    assert_no_leak(repo)


@pytest.mark.parametrize("dirt", ["untracked", "modified", "on a branch", "a hidden commit",
                                  "ignored"])
def test_a_dirty_pooled_worktree_is_discarded_not_reused(
        ignoring: Repo, seen: Path, dirt: str) -> None:
    """Work found in a pooled worktree is saved and the worktree removed; an ignored file
    outside keep_ignored is no one's work: it is removed and the worktree reused."""
    repo = ignoring
    assert run(repo, writer(pool=1)).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    [slot] = pooled(repo)
    if dirt == "untracked":
        (slot / "src/db/stray.py").write_text("STRAY = 1\n")
    elif dirt == "modified":
        (slot / "README.md").write_text("edited in the pool\n")
    elif dirt == "ignored":
        (slot / "build").mkdir()
        (slot / "build/stale.o").write_text("stale\n")
        (slot / "node_modules").mkdir()
        (slot / "node_modules/kept.js").write_text("kept\n")
    else:
        repo.git("-C", str(slot), "switch", "-q", "-c", "someone-else")
    if dirt == "a hidden commit":  # known to the worktree's HEAD reflog alone
        (slot / "src/db/hidden.py").write_text("HIDDEN = 1\n")
        repo.git("-C", str(slot), "add", "-A")
        repo.git("-C", str(slot), "commit", "-q", "-m", "hidden in the pool")
        repo.git("-C", str(slot), "reset", "-q", "--hard", "HEAD~1")
    result = run(repo, looker(seen), "second.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    assert not slot.exists()
    reused = any(e["kind"] == "stream.worktree_reused" for e in events(repo, doc["run"]))
    assert reused == (dirt == "ignored")
    for name in ("db", "ui"):
        files = (seen / f"{name}.files").read_text().split()
        assert "./src/db/stray.py" not in files and "./build/stale.o" not in files
        assert "./README.md" in files
        kept = ["!! node_modules/"] if "./node_modules/kept.js" in files else []
        assert (seen / f"{name}.status").read_text().splitlines() == kept
    if dirt == "ignored":
        assert any("./node_modules/kept.js" in (seen / f"{n}.files").read_text().split()
                   for n in ("db", "ui"))
    rescued = repo.git("for-each-ref", "--format=%(refname)", "refs/worktree-runner/rescue/pool/")
    if dirt in ("untracked", "modified"):
        [ref] = rescued.split()
        saved = "src/db/stray.py" if dirt == "untracked" else "README.md"
        assert repo.git("show", f"{ref}:{saved}") in ("STRAY = 1", "edited in the pool")
    elif dirt == "a hidden commit":
        [ref] = rescued.split()
        assert "@commit-" in ref
        assert repo.git("show", f"{ref}:src/db/hidden.py") == "HIDDEN = 1"
    else:
        assert rescued == ""
    assert_no_leak(repo)


def test_pool_size_zero_disables_and_the_pool_never_outgrows_its_size(repo: Repo) -> None:
    assert run(repo, writer(pool=0)).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert pooled(repo) == [] and worktrees(repo) == [repo.path]
    assert run(repo, writer(pool=1), "one.yaml").returncode == 0
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0
    assert len(pooled(repo)) == 1 and len(worktrees(repo)) == 2
    assert "removed worktree" in result.stdout and "in the pool" in result.stdout


def test_clean_pool_empties_the_pool_and_nothing_else(repo: Repo) -> None:
    assert run(repo, writer()).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    slots = pooled(repo)
    assert len(slots) == 2
    refs = repo.refs()
    dry = run_wtr("clean", "--pool", "--dry-run", cwd=repo.path)
    assert dry.returncode == 0 and dry.stdout.count("would remove pooled worktree") == 2
    assert pooled(repo) == slots
    done = run_wtr("clean", "--pool", cwd=repo.path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("removed pooled worktree") == 2
    assert worktrees(repo) == [repo.path] and not any(p.exists() for p in slots)
    assert repo.refs() == refs
    again = run_wtr("clean", "--pool", cwd=repo.path)
    assert again.returncode == 0 and "the worktree pool is empty" in again.stdout


def test_kill_9_while_taking_a_pooled_worktree_loses_nothing_and_leaks_nothing(
        repo: Repo, seen: Path) -> None:
    assert run(repo, writer()).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    before = set(pooled(repo))
    crashed = run(repo, looker(seen), "second.yaml", WTR_FAULT="pool_claimed:db")
    assert crashed.returncode == -signal.SIGKILL
    db = repo.path.parent / "repo.worktrees" / status(repo)["run"] / "db"
    # db holds its pooled worktree (ui, running beside it, may hold the other one)
    assert db in worktrees(repo) and len(pooled(repo)) <= len(before) - 1
    assert_no_leak(repo)
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = status(repo)
    assert doc["counts"]["succeeded"] == 2
    assert repo.git("-C", str(db), "symbolic-ref", "--short", "HEAD") == stream_of(
        doc, "db")["branch"]
    assert (seen / "db.status").read_text() == ""
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert len(pooled(repo)) == 2 and len(worktrees(repo)) == 3
    assert_no_leak(repo)


def test_kill_9_while_giving_a_worktree_back_loses_nothing_and_leaks_nothing(
        repo: Repo) -> None:
    assert run(repo, writer()).returncode == 0
    doc = status(repo)
    db = Path(stream_of(doc, "db")["worktree"])
    (db / "src/db/unsaved.py").write_text("UNSAVED = 1\n")
    crashed = run_wtr("clean", cwd=repo.path, env={"WTR_FAULT": "pool_returning:db"})
    assert crashed.returncode == -signal.SIGKILL
    rescue = f"refs/worktree-runner/rescue/{doc['run']}/db"
    assert repo.git("show", f"{rescue}:src/db/unsaved.py") == "UNSAVED = 1"
    assert_no_leak(repo)
    again = run_wtr("clean", cwd=repo.path)
    assert again.returncode == 0, again.stderr
    assert repo.git("show", f"{rescue}:src/db/unsaved.py") == "UNSAVED = 1"
    assert len(pooled(repo)) == 2 and not db.exists()
    assert_no_leak(repo)


def test_two_runs_taking_from_the_pool_at_once_never_share_a_worktree(
        repo: Repo, seen: Path) -> None:
    assert run(repo, writer()).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert len(pooled(repo)) == 2
    for name in ("left", "right"):
        (seen / name).mkdir()
    runners = [
        subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                          str(repo.write_plan(looker(seen / name, name=name), f"{name}.yaml"))],
                         cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in ("left", "right")
    ]
    deadline = time.monotonic() + 120
    for runner in runners:
        out, err = runner.communicate(timeout=max(1, deadline - time.monotonic()))
        assert runner.returncode == 0, out + err
    gitdirs = [(seen / side / f"{s}.gitdir").read_text() for side in ("left", "right")
               for s in ("db", "ui")]
    assert len(set(gitdirs)) == 4
    assert pooled(repo) == []
    assert_no_leak(repo)


PLAN = 'version: 1\nagent: {command: "true"}\n%sstreams:\n  db: {files: ["src/db/**"]%s}\n'


def parsed(top: str = "", stream: str = ""):
    return parse_plan(PLAN % (top, stream), Path("plan.yaml"))


def problem(top: str = "", stream: str = "") -> str:
    with pytest.raises(PlanInvalid) as caught:
        parsed(top, stream)
    [found] = caught.value.problems
    return found.render("plan.yaml")


def test_pool_keys_in_the_plan() -> None:
    assert parsed().pool_size() == 16 and parsed("max_parallel: 2\n").pool_size() == 8
    assert parsed("max_parallel: 2\n").pool_size(max_parallel=5) == 20
    assert parsed("pool: 0\n").pool_size() == 0 and parsed("pool: 3\n").pool_size(9) == 3
    assert parsed('keep_ignored: [node_modules/, .venv/]\n').keep_ignored == (
        "node_modules/", ".venv/")
    assert "pool: must be a whole number of at least 0" in problem("pool: -1\n")
    assert "pool: must be a whole number of at least 0" in problem("pool: many\n")
    assert "keep_ignored" in problem("keep_ignored: [/abs/path]\n")
    assert "keep_ignored" in problem("keep_ignored: node_modules/\n")


def test_the_quick_look_before_clean_still_finds_work_in_every_worktree(ignoring: Repo) -> None:
    """The untracked cache and the status that warms it must never hide work from clean."""
    repo = ignoring
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 1"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 1"}},
        "api": {"files": ["src/api/**"], "env": {"AGENT_WRITE": "src/api/orders.py=API = 1"}},
    }, keep_ignored=["node_modules/"])
    assert run(repo, plan).returncode == 0
    doc = status(repo)
    path = {s["name"]: Path(s["worktree"]) for s in doc["streams"]}
    for name, where in path.items():  # looked at once: the cache is warm
        assert repo.git("-C", str(where), "status", "--porcelain") == "", name
    (path["db"] / "src/db/later.py").write_text("LATER = 1\n")
    (path["db"] / "src/db/deep/er").mkdir(parents=True)
    (path["db"] / "src/db/deep/er/file.py").write_text("DEEP = 1\n")
    (path["ui"] / "src/ui/view.py").write_text("UI = 'staged'\n")
    repo.git("-C", str(path["ui"]), "add", "src/ui/view.py")
    for where in path.values():
        (where / "node_modules").mkdir()
        (where / "node_modules/cache.js").write_text(f"{where.name}\n")
    result = run_wtr("clean", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    rescue = f"refs/worktree-runner/rescue/{doc['run']}"
    assert repo.git("show", f"{rescue}/db:src/db/later.py") == "LATER = 1"
    assert repo.git("show", f"{rescue}/db:src/db/deep/er/file.py") == "DEEP = 1"
    assert repo.git("show", f"{rescue}/ui:src/ui/view.py") == "UI = 'staged'"
    assert repo.git("for-each-ref", f"{rescue}/api") == ""
    caches = sorted((slot / "node_modules/cache.js").read_text() for slot in pooled(repo))
    assert caches == ["api\n", "db\n", "ui\n"]


def test_status_shows_the_disk_the_run_uses(repo: Repo) -> None:
    assert run(repo, writer()).returncode == 0
    doc = status(repo)
    db = Path(stream_of(doc, "db")["worktree"])
    before = stream_of(doc, "db")["disk_bytes"]
    assert before > 0 and doc["disk_bytes"] >= before + stream_of(doc, "ui")["disk_bytes"]
    (db / "big.bin").write_bytes(b"x" * 1_000_000)
    after = status(repo)
    assert stream_of(after, "db")["disk_bytes"] >= before + 1_000_000
    assert stream_of(after, "ui")["disk_bytes"] == stream_of(doc, "ui")["disk_bytes"]
    text = run_wtr("status", cwd=repo.path)
    assert "MiB in the run's worktrees" in text.stdout
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert status(repo)["disk_bytes"] == 0


def test_a_kept_cache_no_longer_ignored_is_removed_not_committed(ignoring: Repo,
                                                                  seen: Path) -> None:
    repo = ignoring
    assert run(repo, writer()).returncode == 0
    db = Path(stream_of(status(repo), "db")["worktree"])
    (db / "node_modules").mkdir()
    (db / "node_modules/cache.js").write_text("cache\n")
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    [slot] = [p for p in pooled(repo) if p.name.startswith("db.")]
    assert (slot / "node_modules/cache.js").exists()
    repo.commit({".gitignore": "build/\n*.log\n"}, "node_modules is no longer ignored")
    result = run(repo, looker(seen), "second.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    assert any(e["kind"] == "stream.worktree_reused" for e in events(repo, doc["run"]))
    for name in ("db", "ui"):
        assert (seen / f"{name}.status").read_text() == ""
        assert not any("node_modules" in f for f in (seen / f"{name}.files").read_text().split())


def test_streams_taking_from_the_pool_and_adding_worktrees_at_once_do_not_race(
        repo: Repo) -> None:
    """Half of a run's streams take pooled worktrees while the rest add new ones: git's
    worktree listing must never see a worktree half added."""
    def streams(count: int) -> dict:
        return {f"s{i:02d}": {"files": [f"area/s{i:02d}/**"],
                              "env": {"AGENT_WRITE": f"area/s{i:02d}/f.txt=x"}}
                for i in range(count)}

    assert run(repo, agent_plan(streams(6), max_parallel=6)).returncode == 0
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert len(pooled(repo)) == 6
    result = run(repo, agent_plan(streams(12), max_parallel=12), "twelve.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    doc = status(repo)
    reused = [e for e in events(repo, doc["run"]) if e["kind"] == "stream.worktree_reused"]
    assert len(reused) == 6 and doc["counts"]["succeeded"] == 12
    assert_no_leak(repo)


def test_clean_leaves_pooled_worktrees_at_the_targets_tip_for_the_next_run(
        repo: Repo, seen: Path) -> None:
    assert run(repo, writer()).returncode == 0
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    main = repo.git("rev-parse", "main")
    assert len(pooled(repo)) == 2
    for slot in pooled(repo):
        # detached at main's tip, its files main's: both streams' work, nothing else
        assert repo.git("-C", str(slot), "rev-parse", "HEAD") == main
        assert repo.git("-C", str(slot), "symbolic-ref", "-q", "HEAD", check=False) == ""
        assert repo.git("-C", str(slot), "status", "--porcelain", "--ignored") == ""
        assert (slot / "src/ui/view.py").read_text() == "UI = 1\n"
        assert (slot / "src/db/elsewhere.py").read_text() == "ONLY = 1\n"

    result = run(repo, looker(seen), "second.yaml")
    assert result.returncode == 0, result.stderr + result.stdout
    second = status(repo)
    assert sorted(e["stream"] for e in events(repo, second["run"])
                  if e["kind"] == "stream.worktree_reused") == ["db", "ui"]
    for name in ("db", "ui"):
        assert (seen / f"{name}.status").read_text() == ""
        assert "./src/db/elsewhere.py" in (seen / f"{name}.files").read_text().split()


def test_kill_9_between_a_pooled_worktrees_rename_and_git_being_told_is_mended(
        repo: Repo, seen: Path) -> None:
    assert run(repo, writer()).returncode == 0
    # giving back: killed after the first rename into the pool
    crashed = run_wtr("clean", cwd=repo.path, env={"WTR_FAULT": "worktree_renamed"})
    assert crashed.returncode == -signal.SIGKILL
    again = run_wtr("clean", cwd=repo.path)
    assert again.returncode == 0, again.stderr
    assert len(pooled(repo)) == 2
    assert_no_leak(repo)
    # taking: killed after db's folder left the pool, before git knew
    crashed = run(repo, looker(seen), "second.yaml", WTR_FAULT="worktree_renamed:db")
    assert crashed.returncode == -signal.SIGKILL
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = status(repo)
    assert doc["counts"]["succeeded"] == 2
    db = Path(stream_of(doc, "db")["worktree"])
    assert repo.git("-C", str(db), "symbolic-ref", "--short", "HEAD") == stream_of(
        doc, "db")["branch"]
    assert (seen / "db.status").read_text() == ""
    assert run_wtr("clean", cwd=repo.path).returncode == 0
    assert len(pooled(repo)) == 2 and len(worktrees(repo)) == 3
    assert_no_leak(repo)
