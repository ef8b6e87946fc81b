"""Landing while a run goes on: wtr merge during a run, wtr run --merge, wtr sync."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, stream_of
from tests.test_merge import CHAIN, merge, run_plan, status, write_env

WAIT = 180.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def start_run(repo: Repo, plan: dict, *args: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan)), *args],
        cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})})


def stream_status(repo: Repo, name: str) -> str:
    result = run_wtr("status", "--json", cwd=repo.path)
    if result.returncode != 0 or not result.stdout.strip():
        return "?"
    return str(stream_of(result.json(), name)["status"])


# api waits until db's work is on main, syncs onto it, checks it sees it, and finishes.
SYNCING_API = """set -e
echo 'API = 2' > src/api/orders.py; git add -A; git commit -qm 'api: work'
for i in $(seq 1 600); do
  git show main:src/db/models.py | grep -q 'DB = 2' && break; sleep 0.2
done
wtr sync
grep -q 'DB = 2' src/db/models.py
"""


def test_a_stream_lands_while_another_runs_which_then_syncs_and_lands(repo: Repo) -> None:
    plan = agent_plan({"db": CHAIN["db"],
                       "api": {"files": ["src/api/**"], "agent": {"command": SYNCING_API}}})
    runner = start_run(repo, plan)
    wait_for(lambda: stream_status(repo, "db") == "succeeded", "db to succeed")
    assert stream_status(repo, "api") == "running"
    landed = merge(repo)
    assert landed.returncode == 0, landed.stderr
    assert "its runner does this merge" in landed.stderr
    assert "in order: db" in landed.stdout and "api (not finished)" in landed.stdout
    after_db = repo.head("main")
    assert runner.wait(timeout=WAIT) == 0, runner.stderr.read() if runner.stderr else ""
    doc = status(repo)
    api = stream_of(doc, "api")
    assert api["status"] == "succeeded" and api["base_commit"] == after_db
    assert api["changed_files"] == ["src/api/orders.py"]
    assert stream_of(doc, "db")["status"] == "merged"
    result = merge(repo)
    assert result.returncode == 0, result.stderr
    assert "in order: api" in result.stdout
    assert repo.git("log", "--format=%s", "-3", "main").splitlines()[:2] == [
        "api: work", "db: work"]
    assert (repo.path / "src/api/orders.py").read_text() == "API = 2\n"
    assert [ld["merged"] for ld in status(repo)["merge"]["landings"]] == [["db"], ["api"]]
    # the last landing is undone, the first stays
    assert merge(repo, "--undo").returncode == 0
    assert repo.head("main") == after_db


def test_run_with_merge_holds_only_the_conflicting_stream(repo: Repo, tmp_path: Path) -> None:
    flag, landed = tmp_path / "go", tmp_path / "landed"
    waiting = {"AGENT_WAIT_FOR": str(flag)}
    plan = agent_plan({
        "db": {**CHAIN["db"], "env": {**CHAIN["db"]["env"], **waiting}},
        "api": {**CHAIN["api"], "env": {**CHAIN["api"]["env"], **waiting}},
        "ui": {**CHAIN["ui"], "env": {**CHAIN["ui"]["env"], **waiting}},
        "docs": {"files": ["docs/**"],  # it goes on once a stream has landed
                 "env": {**write_env("docs/index.md=DOCS"), "AGENT_WAIT_FOR": str(landed)}},
    })
    runner = start_run(repo, plan, "--merge")
    wait_for(lambda: stream_status(repo, "docs") == "running", "the agents to start")
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders meanwhile")
    flag.write_text("go\n")
    wait_for(lambda: any(s["status"] == "merged" for s in status(repo)["streams"]),
             "a first landing")
    landed.touch()
    assert runner.wait(timeout=WAIT) == 0, runner.stderr.read() if runner.stderr else ""
    doc = status(repo)
    assert {s["name"]: s["status"] for s in doc["streams"]} == {
        "db": "merged", "api": "succeeded", "ui": "merged", "docs": "merged"}
    assert doc["merge"]["left_out_reasons"]["api"] == (
        "conflicts with the target in src/api/orders.py")
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    assert (repo.path / "docs/index.md").read_text() == "DOCS\n"
    # ui landed while docs was still running
    events = [line for line in (Path(doc["repo"]) / ".git/worktree-runner/runs" / doc["run"]
                                / "events.jsonl").read_text().splitlines()]
    first_landing = next(i for i, e in enumerate(events) if '"landing.landed"' in e)
    docs_done = next(i for i, e in enumerate(events)
                     if '"stream.succeeded"' in e and '"docs"' in e)
    assert first_landing < docs_done
    # the held stream halts for a human, then continues
    halted = merge(repo)
    assert halted.returncode == 3 and "src/api/orders.py" in halted.stderr
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    assert (repo.path / "src/api/orders.py").read_text() == "MAIN = 1\nAPI = 2\n"
    assert status(repo)["counts"]["merged"] == 4


def test_a_stream_that_succeeds_while_a_landing_is_checked_waits_for_the_next_pass(
        repo: Repo, tmp_path: Path) -> None:
    """api (which conflicts) and ui succeed after the live landing has checked db and before
    that landing starts: it lands db alone; the next pass holds api and lands ui. (Taken in
    unchecked, api halted the landing, and every automatic landing after it.)"""
    pause, go, late = tmp_path / "pause", tmp_path / "go", tmp_path / "late"
    pause.write_text("")
    plan = agent_plan({
        "db": {**CHAIN["db"], "env": {**CHAIN["db"]["env"], "AGENT_WAIT_FOR": str(go)}},
        "api": CHAIN["api"],
        "ui": {**CHAIN["ui"], "env": {**CHAIN["ui"]["env"], "AGENT_WAIT_FOR": str(late)}},
    })
    runner = start_run(repo, plan, "--merge", env={"WTR_PAUSE": "auto_merge_checked",
                                                   "WTR_PAUSE_FILE": str(pause)})
    try:
        wait_for(lambda: stream_status(repo, "ui") == "running", "the agents to start")
        repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders meanwhile")
        go.write_text("go\n")
        wait_for(Path(f"{pause}.reached").exists, "the landing of db to be checked")
        late.write_text("go\n")
        wait_for(lambda: [stream_status(repo, n) for n in ("api", "ui")] == ["succeeded"] * 2,
                 "api and ui to succeed")
    finally:
        pause.unlink(missing_ok=True)
    assert runner.wait(timeout=WAIT) == 0, runner.stderr.read() if runner.stderr else ""
    doc = status(repo)
    assert {s["name"]: s["status"] for s in doc["streams"]} == {
        "db": "merged", "api": "succeeded", "ui": "merged"}
    landings = doc["merge"]["landings"]
    assert [(ld["state"], ld["merged"]) for ld in landings] == [
        ("landed", ["db"]), ("landed", ["ui"])]
    assert landings[0]["reasons"] == {"api": "not finished", "ui": "not finished"}
    assert doc["merge"]["left_out_reasons"] == {
        "api": "conflicts with the target in src/api/orders.py"}
    assert repo.git("log", "--format=%s", "-3", "main").splitlines() == [
        "ui: work", "db: work", "main changes orders meanwhile"]
    # the held stream halts for a human, then lands
    halted = merge(repo)
    assert halted.returncode == 3 and "src/api/orders.py" in halted.stderr
    integration = Path(status(repo)["merge"]["worktree"])
    (integration / "src/api/orders.py").write_text("MAIN = 1\nAPI = 2\n")
    git(integration, "add", "src/api/orders.py")
    assert merge(repo, "--continue").returncode == 0
    assert status(repo)["counts"]["merged"] == 3


def test_a_stream_held_by_a_pass_with_nothing_to_land_shows_why_in_status(repo: Repo,
                                                                          tmp_path: Path) -> None:
    """db lands (api, which starts after it, is "not finished" then); api succeeds and
    conflicts while ui still runs: that pass holds api and has nothing to land. Status
    says why, not the first landing's "not finished"."""
    go, late = tmp_path / "go", tmp_path / "late"
    plan = agent_plan({
        "db": {**CHAIN["db"], "env": {**CHAIN["db"]["env"], "AGENT_WAIT_FOR": str(go)}},
        "api": CHAIN["api"],
        "ui": {**CHAIN["ui"], "env": {**CHAIN["ui"]["env"], "AGENT_WAIT_FOR": str(late)}},
    })
    runner = start_run(repo, plan, "--merge")
    try:
        wait_for(lambda: stream_status(repo, "ui") == "running", "the agents to start")
        repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders meanwhile")
        go.write_text("go\n")
        wait_for(lambda: stream_status(repo, "api") == "succeeded", "api to succeed")
        wait_for(lambda: status(repo)["merge"]["left_out_reasons"].get("api")
                 == "conflicts with the target in src/api/orders.py", "api to be held")
        doc = status(repo)
        assert [ld["merged"] for ld in doc["merge"]["landings"]] == [["db"]]
        assert doc["merge"]["landings"][0]["reasons"]["api"] == "not finished"
        assert "api" in doc["merge"]["left_out"]
        assert stream_status(repo, "ui") == "running"
    finally:
        late.write_text("go\n")
    assert runner.wait(timeout=WAIT) == 0, runner.stderr.read() if runner.stderr else ""
    doc = status(repo)
    assert {s["name"]: s["status"] for s in doc["streams"]} == {
        "db": "merged", "api": "succeeded", "ui": "merged"}
    assert doc["merge"]["left_out_reasons"] == {
        "api": "conflicts with the target in src/api/orders.py"}
    # a human's merge takes it (and halts on it): it is no longer shown as held
    assert merge(repo).returncode == 3
    merging = status(repo)["merge"]
    assert merging["stream"] == "api" and "api" not in merging["left_out_reasons"]
    assert merge(repo, "--abort").returncode == 0


def test_sync_with_a_conflict_changes_nothing_and_blocks_the_stream(repo: Repo) -> None:
    run_plan(repo, agent_plan({"api": {"files": ["src/api/**"],
                                       "env": write_env("src/api/orders.py=API = 2")},
                               "ui": CHAIN["ui"]}))
    repo.commit({"src/api/orders.py": "MAIN = 1\n", "README.md": "moved\n"}, "main moves")
    worktree = Path(stream_of(status(repo), "api")["worktree"])
    before = (git(worktree, "rev-parse", "HEAD"), git(worktree, "status", "--porcelain"),
              (worktree / "src/api/orders.py").read_text())
    result = run_wtr("sync", "api", cwd=repo.path)
    assert result.returncode == 3, result.stderr
    assert "src/api/orders.py" in result.stderr and "nothing was changed" in result.stderr
    assert (git(worktree, "rev-parse", "HEAD"), git(worktree, "status", "--porcelain"),
            (worktree / "src/api/orders.py").read_text()) == before
    api = stream_of(status(repo), "api")
    assert api["sync"]["conflicted_files"] == ["src/api/orders.py"]
    assert api["progress"]["blocked"] is True
    # uncommitted changes: refused, nothing touched
    ui_tree = Path(stream_of(status(repo), "ui")["worktree"])
    (ui_tree / "src/ui/view.py").write_text("half done\n")
    refused = run_wtr("sync", "ui", cwd=repo.path)
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    git(ui_tree, "checkout", "--", "src/ui/view.py")
    # a clean sync moves the stream onto the target; the merge then lands it
    old_head = git(ui_tree, "rev-parse", "HEAD")
    synced = run_wtr("sync", "ui", cwd=repo.path)
    assert synced.returncode == 0, synced.stderr
    ui = stream_of(status(repo), "ui")
    assert ui["base_commit"] == repo.head("main") and ui["head_commit"] != old_head
    assert (ui_tree / "README.md").read_text() == "moved\n"
    assert old_head in repo.refs()
    assert merge(repo).returncode == 3  # api still conflicts: a human decides
    assert merge(repo, "--abort").returncode == 0


def test_sync_refuses_while_what_a_stream_starts_from_has_not_landed(repo: Repo) -> None:
    run_plan(repo, agent_plan(CHAIN))
    refused = run_wtr("sync", "api", cwd=repo.path)
    assert refused.returncode == 1 and "db" in refused.stderr and "land" in refused.stderr


def eight_streams(bad: str, depends: dict[str, list[str]] | None = None) -> dict:
    streams = {}
    for i in range(8):
        name = f"s{i}"
        text = "bad" if name == bad else f"ok {i}"
        streams[name] = {"files": [f"src/{name}/**"],
                         "env": write_env(f"src/{name}/f.txt={text}")}
        if depends and name in depends:
            streams[name]["depends_on"] = depends[name]
    return streams


def bisect_plan(repo: Repo, tmp_path: Path, streams: dict) -> dict:
    counter = tmp_path / "verify-runs"
    # verify fails only when a stream's "bad" meets the target's strict config
    verify = (f"echo run >> {counter}; ! grep -rqx bad src/ || "
              "! grep -qx strict config.txt 2>/dev/null")
    return agent_plan(streams, verify=[verify])


def test_verify_bisect_names_the_stream_and_skip_lands_the_rest(repo: Repo,
                                                                 tmp_path: Path) -> None:
    run_plan(repo, bisect_plan(repo, tmp_path, eight_streams("s5")))
    repo.commit({"config.txt": "strict\n"}, "the target gets strict")
    before = repo.head("main")
    result = merge(repo)
    assert result.returncode == 3, result.stderr
    assert "verify fails once stream 's5' is added" in result.stderr
    assert "wtr merge --skip s5" in result.stderr
    runs = len((tmp_path / "verify-runs").read_text().splitlines())
    assert runs <= 4
    doc = status(repo)["merge"]
    assert doc["broke_verify"] == "s5" and doc["landings"][-1]["verify_runs"] == runs
    assert repo.head("main") == before
    skipped = merge(repo, "--skip", "s5")
    assert skipped.returncode == 0, skipped.stderr
    result = merge(repo, "--continue")
    assert result.returncode == 0, result.stderr
    doc = status(repo)
    assert doc["merge"]["merged"] == [f"s{i}" for i in range(8) if i != 5]
    assert doc["merge"]["left_out_reasons"] == {"s5": "broke verify"}
    assert not (repo.path / "src/s5/f.txt").exists()
    assert (repo.path / "src/s7/f.txt").read_text() == "ok 7\n"
    assert stream_of(doc, "s5")["status"] == "succeeded"


def test_skip_leaves_out_what_depends_on_the_stream(repo: Repo, tmp_path: Path) -> None:
    streams = eight_streams("s2", {"s6": ["s2"]})
    run_plan(repo, bisect_plan(repo, tmp_path, streams))
    repo.commit({"config.txt": "strict\n"}, "the target gets strict")
    assert merge(repo).returncode == 3
    assert status(repo)["merge"]["broke_verify"] == "s2"
    refused = merge(repo, "--skip", "nope")
    assert refused.returncode == 2
    assert "s6" in merge(repo, "--skip", "s2").stdout
    assert merge(repo, "--continue").returncode == 0
    reasons = status(repo)["merge"]["left_out_reasons"]
    assert reasons == {"s2": "broke verify", "s6": "waits for s2"}
    assert len(status(repo)["merge"]["merged"]) == 6


# ui finishes only once db has landed (its status reads "merged")
DB_MERGED = ('import json, sys; streams = json.load(sys.stdin)["streams"]; '
             'sys.exit(all(s["status"] != "merged" for s in streams if s["name"] == "db"))')
WAIT_FOR_DB_MERGED = f"""for i in $(seq 1 600); do
  wtr status --json | "{sys.executable}" -c '{DB_MERGED}' && break
  sleep 0.2
done"""


def test_a_dependency_landed_before_its_dependent_starts_is_still_in_its_base(
        repo: Repo) -> None:
    """Under run --merge, db lands before api (depends on db and ui) starts: api starts from
    a merge of db's and ui's results all the same, not from ui's alone."""
    plan = agent_plan({
        "db": CHAIN["db"],
        "ui": {**CHAIN["ui"], "env": {**CHAIN["ui"]["env"], "AGENT_SHELL": WAIT_FOR_DB_MERGED}},
        "api": {"files": ["src/api/**"], "depends_on": ["db", "ui"],
                "env": {**write_env("src/api/orders.py=API = 2"),
                        "AGENT_SHELL": "grep -qx 'DB = 2' src/db/models.py"}},
    })
    runner = start_run(repo, plan, "--merge")
    assert runner.wait(timeout=WAIT) == 0, runner.stderr.read() if runner.stderr else ""
    doc = status(repo)
    assert {s["name"]: s["status"] for s in doc["streams"]} == {
        "db": "merged", "ui": "merged", "api": "merged"}
    api_base = stream_of(doc, "api")["base_commit"]
    for name in ("db", "ui"):
        head = stream_of(doc, name)["head_commit"]
        repo.git("merge-base", "--is-ancestor", head, api_base)  # (raises if not)


def test_a_resumed_run_starts_a_stream_whose_dependency_already_landed(
        repo: Repo, tmp_path: Path) -> None:
    """Under run --merge, db lands while api (depends on db) is kept waiting by ui, which it
    may not run beside; the runner is killed. The resumed run must start api: a landed
    dependency succeeded (the scheduler once saw only 'succeeded', and the run finished with
    api pending and nothing said)."""
    go = tmp_path / "ui-may-finish"
    plan = agent_plan({
        "db": CHAIN["db"],
        "ui": {**CHAIN["ui"], "env": {**CHAIN["ui"]["env"], "AGENT_WAIT_FOR": str(go)}},
        "api": {**CHAIN["api"], "conflicts_with": ["ui"]},
    })
    runner = start_run(repo, plan, "--merge")
    wait_for(lambda: stream_status(repo, "db") == "merged", "db to land")
    runner.kill()
    runner.wait()
    assert stream_status(repo, "api") == "pending"
    go.touch()
    resumed = run_wtr("resume", "--merge", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr
    doc = status(repo)
    assert {s["name"]: s["status"] for s in doc["streams"]} == {
        "db": "merged", "ui": "merged", "api": "merged"}
    assert repo.git("show", "main:src/api/orders.py").strip() == "API = 2"
