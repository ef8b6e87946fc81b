"""Best-of-N streams (``attempts: N``, ``choose:``, ``agents:``) on real repositories with
real agent processes (tests/agents/agent.py): the candidates, the choice, the archive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, alive, records, resume_adopting, stream_of, wait_for

ARCHIVE = "refs/worktree-runner/archive"


def candidate(**env: str) -> dict[str, Any]:
    """An entry of ``agents:``: the test agent with these AGENT_* variables."""
    return {"env": env}


def best_of(agents: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A plan of one best-of-N stream ``api`` (owning src/api/**), checked by a verify that
    passes only when src/api/ok holds 'yes'. One agent per candidate (``feedback: 0``):
    a candidate that fails its gates is not told so and started again."""
    return agent_plan({"api": {
        "files": ["src/api/**"], "attempts": len(agents), "agents": agents,
        "verify": ["grep -qx yes src/api/ok"], "feedback": 0, **spec}})


def run(repo: Repo, plan: dict[str, Any], *args: str) -> tuple[Any, dict[str, Any]]:
    result = run_wtr("run", repo.write_plan(plan), *args, cwd=repo.path)
    return result, run_wtr("status", "--json", cwd=repo.path).json()


def candidates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = stream_of(doc, "api")["candidates"]
    return found


def test_only_the_candidate_that_passes_its_gates_lands(repo: Repo, tmp_path: Path) -> None:
    plan = best_of([
        candidate(AGENT_WRITE="src/api/ok=no"),                      # verify fails
        candidate(AGENT_WRITE="src/api/ok=yes;README.md=mine"),      # out of its files
        candidate(AGENT_WRITE="src/api/ok=yes;src/api/orders.py=ORDERS = [1]"),  # passes
    ])
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    run_id, api = doc["run"], stream_of(doc, "api")
    assert api["status"] == "succeeded"
    assert [(c["attempt"], c["status"], (c["failure"] or {}).get("kind"), c["chosen"])
            for c in candidates(doc)] == [(1, "failed", "verify", False),
                                          (2, "failed", "ownership", False),
                                          (3, "succeeded", None, True)]
    assert candidates(doc)[2]["diff_stat"] == {"files": 2, "insertions": 2, "deletions": 1}
    # the winner's branch and worktree are the stream's
    assert api["branch"] == f"wtr/{run_id}/api"
    assert Path(api["worktree"]) == repo.path.parent / "repo.worktrees" / run_id / "api"
    assert repo.git("show", f"wtr/{run_id}/api:src/api/ok") == "yes"
    assert api["head_commit"] == repo.head(f"wtr/{run_id}/api")
    assert api["attempts"] == 3 and [c["attempts"] for c in candidates(doc)] == [1, 1, 1]
    assert sorted(api["changed_files"]) == ["src/api/ok", "src/api/orders.py"]
    # the others are pinned under the archive refs, their branches still there
    losers = {c["attempt"]: c for c in candidates(doc)[:2]}
    for attempt, entry in losers.items():
        assert entry["archive"] == f"{ARCHIVE}/{run_id}/api+attempt-{attempt}"
        assert repo.head(entry["archive"]) == repo.head(entry["branch"])
    assert repo.git("show", f"{ARCHIVE}/{run_id}/api+attempt-2:README.md") == "mine"
    # each candidate's diff, the kept one's too; status and the report list them all
    shown = run_wtr("diff", "api", "--attempt", "2", "--stat", cwd=repo.path)
    assert shown.returncode == 0 and "README.md" in shown.stdout, shown.stderr
    shown = run_wtr("diff", "api", "--attempt", "3", cwd=repo.path)
    assert "+ORDERS = [1]" in shown.stdout and "README" not in shown.stdout
    assert run_wtr("diff", "api", "--attempt", "4", cwd=repo.path).one_line_error() == (
        "wtr: stream 'api' has candidates 1 to 3, not 4")
    # the stream's log says how each ended; --attempt K shows that candidate's agent
    log = run_wtr("logs", "api", cwd=repo.path).stdout
    assert "--- candidate 1 ended: verify: verify command failed" in log
    assert "--- candidate 3 ended: passed its gates" in log
    own = run_wtr("logs", "api", "--attempt", "2", cwd=repo.path).stdout
    assert "--- attempt 1 ended: exit code 0; ownership: changed 1 file outside" in own
    text = run_wtr("status", cwd=repo.path, env={"COLUMNS": "300"}).stdout
    assert "api 1 (" in text and "verify: verify command failed" in text
    assert "api 2 (" in text and f"{ARCHIVE}/{run_id}/api+attempt-2" in text
    assert "api 3 (" in text and "+2 -1; kept" in text
    report = run_wtr("report", "-o", str(tmp_path / "r.html"), cwd=repo.path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert "Candidates (best of 3)" in page and 'data-candidate="3" class="chosen"' in page

    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    assert repo.git("show", "main:src/api/ok") == "yes"
    assert repo.git("show", "main:README.md") == "# sample"

    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert repo.git("branch", "--list", f"wtr/{run_id}/*") == ""
    for attempt in (1, 2):
        ref = f"{ARCHIVE}/{run_id}/api+attempt-{attempt}"
        assert repo.git("show", f"{ref}:src/api/ok") == ("no" if attempt == 1 else "yes")
    assert not (repo.path.parent / "repo.worktrees" / run_id).exists()


def test_smallest_keeps_the_smallest_passing_diff(repo: Repo) -> None:
    plan = best_of([
        candidate(AGENT_WRITE="src/api/ok=yes;src/api/a.py=1\n2\n3"),
        candidate(AGENT_WRITE="src/api/ok=yes"),
        candidate(AGENT_WRITE="src/api/ok=no"),  # the smallest, but it fails its verify
    ], choose="smallest")
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert [c["chosen"] for c in candidates(doc)] == [False, True, False]
    assert stream_of(doc, "api")["changed_files"] == ["src/api/ok"]


def test_first_keeps_the_first_to_pass_and_stops_the_others(
        repo: Repo, tmp_path: Path) -> None:
    """Candidate 1 commits, then works on for a minute; candidate 2 passes at once;
    candidate 3 waits for a place: 1 is stopped, its commit archived; 3 never starts."""
    folders = [tmp_path / f"rec{k}" for k in (1, 2, 3)]
    for folder in folders:
        folder.mkdir()
    plan = best_of([
        candidate(AGENT_RECORD=str(folders[0]), AGENT_WRITE="src/api/ok=yes;src/api/a=A",
                  AGENT_SLEEP="60"),
        candidate(AGENT_RECORD=str(folders[1]), AGENT_WRITE="src/api/ok=yes;src/api/b.py=B"),
        candidate(AGENT_RECORD=str(folders[2]), AGENT_WRITE="src/api/ok=yes"),
    ], choose="first")
    result, doc = run(repo, plan, "--max-parallel", "2")
    assert result.returncode == 0, result.stderr
    run_id, found = doc["run"], candidates(doc)
    assert [c["chosen"] for c in found] == [False, True, False]
    stopped = "stopped: candidate 2 passed its gates first (choose: first)"
    for entry in (found[0], found[2]):
        assert entry["status"] == "failed" and entry["stopped"] is True
        assert entry["failure"]["kind"] == "interrupted"
        assert entry["failure"]["message"] == stopped
    assert not records(folders[0], "api", "end")  # stopped while it worked
    assert not alive(records(folders[0], "api")[0]["pid"])
    assert not records(folders[2], "api")  # never started
    # what the stopped one made is archived, as any candidate not kept
    assert found[0]["archive"] == f"{ARCHIVE}/{run_id}/api+attempt-1"
    assert repo.git("show", f"{found[0]['archive']}:src/api/a") == "A"
    assert found[2]["archive"] is None
    assert repo.git("show", f"wtr/{run_id}/api:src/api/b.py") == "B"
    log = run_wtr("logs", "api", cwd=repo.path).stdout
    assert "--- candidate 3 ended: not started: candidate 2 passed its gates first" in log
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert repo.git("show", f"{ARCHIVE}/{run_id}/api+attempt-1:src/api/a") == "A"


def judge_script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "judge.py"
    script.write_text("import json, pathlib, sys\n" + body)
    return [sys.executable, str(script)]


def test_a_judge_command_sees_every_candidate_and_names_the_winner(
        repo: Repo, tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    judge = judge_script(tmp_path, f"""
given = json.load(sys.stdin)
pathlib.Path({str(seen)!r}).write_text(json.dumps(given))
diffs = {{c["attempt"]: pathlib.Path(c["diff_file"]).read_text()
         for c in given["candidates"] if c["diff_file"]}}
print("thinking...")
print(next(k for k, d in diffs.items() if "pick me" in d))
""")
    plan = best_of([
        candidate(AGENT_WRITE="src/api/ok=yes"),
        candidate(AGENT_WRITE="src/api/ok=yes;src/api/note=pick me"),
        candidate(AGENT_WRITE="src/api/ok=maybe"),
    ], choose={"command": judge})
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert [c["chosen"] for c in candidates(doc)] == [False, True, False]
    given = json.loads(seen.read_text())
    assert given["stream"] == "api" and given["run"] == doc["run"]
    assert [(c["attempt"], c["passed"]) for c in given["candidates"]] == [
        (1, True), (2, True), (3, False)]
    assert given["candidates"][2]["failure"]["kind"] == "verify"
    assert repo.git("show", f"wtr/{doc['run']}/api:src/api/note") == "pick me"


def test_a_judge_that_crashes_or_talks_nonsense_fails_the_stream_and_keeps_everything(
        repo: Repo, tmp_path: Path) -> None:
    agents = [candidate(AGENT_WRITE="src/api/ok=yes"),
              candidate(AGENT_WRITE="src/api/ok=yes;src/api/x=2")]
    for body, said in (("sys.exit(4)", "exited with code 4"),
                       ("print('candidate two')", "printed 'candidate two'"),
                       ("print(3)", "printed '3'")):
        judge = judge_script(tmp_path, body)
        result, doc = run(repo, best_of(agents, choose={"command": judge}))
        assert result.returncode == 1
        api = stream_of(doc, "api")
        assert api["status"] == "failed" and said in api["failure"]["message"], api["failure"]
        assert "every candidate is kept on its branch" in api["failure"]["message"]
        assert [c["status"] for c in api["candidates"]] == ["succeeded", "succeeded"]
        for entry in api["candidates"]:
            assert repo.head(entry["branch"]) == entry["head_commit"]
        assert run_wtr("diff", "api", "--attempt", "2", "--stat", cwd=repo.path).returncode == 0

    # the judge fixed (the run's plan names the same file), a retry chooses again
    # without running the candidates again
    heads = [c["head_commit"] for c in candidates(doc)]
    judge_script(tmp_path, "print(2)")
    retried = run_wtr("retry", "api", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert [c["chosen"] for c in candidates(doc)] == [False, True]
    assert [c["head_commit"] for c in candidates(doc)] == heads
    assert stream_of(doc, "api")["head_commit"] == heads[1]


def test_resume_after_the_runner_is_killed_adopts_the_living_candidates(
        repo: Repo, tmp_path: Path) -> None:
    folders = [tmp_path / f"rec{k}" for k in (1, 2, 3)]
    for folder in folders:
        folder.mkdir()
    gate = tmp_path / "gate"  # the last two wait there until the resume has started
    plan = best_of([
        candidate(AGENT_RECORD=str(folders[0]), AGENT_WRITE="src/api/ok=no"),
        candidate(AGENT_RECORD=str(folders[1]), AGENT_WAIT_FOR=str(gate),
                  AGENT_WRITE="src/api/ok=yes;src/api/big=1\n2\n3"),
        candidate(AGENT_RECORD=str(folders[2]), AGENT_WAIT_FOR=str(gate),
                  AGENT_WRITE="src/api/ok=yes"),
    ], choose="smallest")
    runner = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan))],
        cwd=repo.path, env=os.environ.copy(), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: all(records(f, "api") for f in folders), timeout=60)
        wait_for(lambda: bool(records(folders[0], "api", "end")), timeout=60)
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=30)
    sleepers = [records(f, "api")[0]["pid"] for f in folders[1:]]
    assert any(alive(pid) for pid in sleepers)  # (killed mid-way: they still work)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert doc["state"] == "interrupted"
    assert stream_of(doc, "api")["status"] == "running"

    resumed = resume_adopting(repo, gate, ("api",), until="started")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "api")["status"] == "succeeded"
    # every agent ran once: the living ones adopted, the ended one kept as it ended
    assert [len(records(f, "api")) for f in folders] == [1, 1, 1]
    assert [(c["status"], c["chosen"]) for c in candidates(doc)] == [
        ("failed", False), ("succeeded", False), ("succeeded", True)]
    assert repo.git("show", f"wtr/{doc['run']}/api:src/api/ok") == "yes"


def test_streams_of_one_attempt_have_no_candidates(repo: Repo) -> None:
    result, doc = run(repo, agent_plan({"api": {
        "files": ["src/api/**"], "env": {"AGENT_WRITE": "src/api/ok=yes"}}}))
    assert result.returncode == 0, result.stderr
    assert stream_of(doc, "api")["candidates"] == []
    assert run_wtr("diff", "api", "--attempt", "1", cwd=repo.path).one_line_error() == (
        "wtr: stream 'api' has no candidates (it runs one attempt); leave out --attempt")
    assert run_wtr("logs", "api", "--attempt", "1", cwd=repo.path).one_line_error() == (
        "wtr: stream 'api' has no candidates (it runs one attempt); leave out --attempt")


def test_wtr_check_reports_the_candidates_and_rejects_bad_values(repo: Repo) -> None:
    good = agent_plan({"api": {"files": ["src/api/**"], "attempts": 3,
                               "agents": ["claude", {"preset": "codex"}],
                               "choose": "smallest"}})
    checked = run_wtr("check", repo.write_plan(good), cwd=repo.path)
    assert checked.returncode == 0, checked.stderr
    assert ("api: 3 candidates, kept: smallest; agents: claude, codex, claude"
            in checked.stdout)
    as_json = run_wtr("check", repo.write_plan(good), "--json", cwd=repo.path).json()
    assert as_json["streams"]["api"]["attempts"] == 3
    assert as_json["streams"]["api"]["agents"] == ["claude", "codex", "claude"]

    bad = agent_plan({
        "a": {"files": ["src/a/**"], "attempts": 0},
        "b": {"files": ["src/b/**"], "attempts": "3"},
        "c": {"files": ["src/c/**"], "attempts": 2, "choose": "best"},
        "d": {"files": ["src/d/**"], "choose": "first"},
        "e": {"files": ["src/e/**"], "attempts": 2, "agents": ["claude", "codex", "gemini"]},
        "f": {"files": ["src/f/**"], "attempts": 2, "agents": ["nope"]},
        "g": {"files": ["src/g/**"], "attempts": 2, "choose": {"command": []}},
        "h": {"files": ["src/h/**"], "attempts": 2, "agents": "claude"},
        "i": {"files": ["src/i/**"], "attempts": 17},
        "j": {"files": ["src/j/**"], "attempts": 2, "agents": [{"tiemout": 3}]},
    })
    result = run_wtr("check", repo.write_plan(bad), cwd=repo.path)
    assert result.returncode == 2
    errors = "\n".join(result.error_lines())
    for expected in (
        "streams.a.attempts: must be a whole number from 1 to 16",
        "streams.b.attempts: must be a whole number from 1 to 16",
        "streams.c.choose: must be first, smallest, or {command: ...}",
        "streams.d.choose: picks among candidates: set 'attempts' to 2 or more",
        "streams.e.agents: lists 3 agents for 2 attempts",
        "streams.f.agents.0.preset: unknown preset 'nope'",
        "streams.g.choose: 'command' must be a command",
        "streams.h.agents: must be a list of presets or agent mappings",
        "streams.i.attempts: must be a whole number from 1 to 16",
        "streams.j.agents.0.tiemout: unknown key (did you mean 'timeout'?)",
    ):
        assert expected in errors, errors

    # each candidate needs a port of its own: 1 + 3 here, and the range holds 3
    tight = {**good, "port_range": "5000-5002"}
    result = run_wtr("check", repo.write_plan(tight), cwd=repo.path)
    assert result.returncode == 2
    assert result.error_lines()[-1].endswith(
        "port_range: gives 3 ports where 4 are needed: each stream, and each candidate "
        "of a best-of-N stream, needs its own"), result.stderr


def test_none_passing_fails_the_stream_with_each_failure_and_a_retry_runs_them_again(
        repo: Repo, tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    fixable = f"test -e {flag} && echo yes > src/api/ok || echo no > src/api/ok"
    plan = best_of([candidate(AGENT_SHELL=fixable), candidate(AGENT_WRITE="src/api/ok=no")],
                   choose="smallest")
    result, doc = run(repo, plan)
    assert result.returncode == 1
    api = stream_of(doc, "api")
    assert api["status"] == "failed" and api["failure"]["kind"] == "verify"
    message = api["failure"]["message"]
    assert message.startswith("none of its 2 candidates passed its gates (candidate 1: verify")
    assert "; candidate 2: verify: verify command failed" in message
    assert "none of its 2 candidates passed" in run_wtr("status", cwd=repo.path).stdout
    first = [c["head_commit"] for c in api["candidates"]]

    flag.write_text("")
    retried = run_wtr("retry", "api", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    api = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "api")
    assert [(c["status"], c["chosen"]) for c in api["candidates"]] == [
        ("succeeded", True), ("failed", False)]
    # a new attempt in the same worktree: the first attempt's commit is kept below
    assert repo.git("merge-base", "--is-ancestor", first[0], api["head_commit"]) == ""


def test_candidates_take_their_places_in_max_parallel(repo: Repo, tmp_path: Path) -> None:
    folders = {name: tmp_path / name for name in ("c1", "c2", "ui")}
    for folder in folders.values():
        folder.mkdir()
    plan = best_of([candidate(AGENT_RECORD=str(folders["c1"]), AGENT_SLEEP="1",
                              AGENT_WRITE="src/api/ok=yes"),
                    candidate(AGENT_RECORD=str(folders["c2"]), AGENT_SLEEP="1",
                              AGENT_WRITE="src/api/ok=yes")], choose="smallest")
    plan["max_parallel"] = 2
    plan["streams"]["ui"] = {"files": ["src/ui/**"], "prompt": "ui", "agent": {"env": {
        "AGENT_RECORD": str(folders["ui"]), "AGENT_WRITE": "src/ui/view.py=UI = 2"}}}
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert doc["counts"]["succeeded"] == 2
    ui_started = records(folders["ui"], "ui")[0]["time"]
    ended = [records(folders[c], "api", "end")[0]["time"] for c in ("c1", "c2")]
    assert ui_started > max(ended)  # the two candidates held both places
    # every stream, and every candidate, has a port and a Compose project of its own
    seen = [records(folders[c], name)[0]["env"] for c, name in
            (("c1", "api"), ("c2", "api"), ("ui", "ui"))]
    assert [env["WTR_PORT"] for env in seen] == ["41999", "41998", "41001"]
    assert len({env["COMPOSE_PROJECT_NAME"] for env in seen}) == 3


def test_ctrl_c_stops_every_candidate_and_resume_finishes(repo: Repo, tmp_path: Path) -> None:
    folders = [tmp_path / f"rec{k}" for k in (1, 2)]
    for folder in folders:
        folder.mkdir()
    plan = best_of([candidate(AGENT_RECORD=str(f), AGENT_HANG="1", AGENT_HANG_ATTEMPTS="1",
                              AGENT_WRITE="src/api/ok=yes") for f in folders])
    runner = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run", str(repo.write_plan(plan))],
        cwd=repo.path, env={**os.environ, "WTR_KILL_GRACE": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: all(records(f, "api", "child") for f in folders), timeout=60)
    children = [records(f, "api", "child")[0] for f in folders]
    runner.send_signal(signal.SIGINT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr
    for child in children:
        assert not alive(child["pid"]) and not alive(child["child_pid"])
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "api")["failure"]["kind"] == "interrupted"
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "api")["status"] == "succeeded"
    assert [len(records(f, "api")) for f in folders] == [2, 2]


def test_a_runner_killed_once_one_passed_first_stops_the_others_on_resume(
        repo: Repo, tmp_path: Path) -> None:
    """The runner dies after candidate 2 passed, before candidate 1 was stopped: the
    resume keeps 2 and stops 1's agent, still at work, rather than waiting for it."""
    folders = [tmp_path / f"rec{k}" for k in (1, 2)]
    for folder in folders:
        folder.mkdir()
    plan = best_of([candidate(AGENT_RECORD=str(folders[0]), AGENT_WRITE="src/api/ok=yes",
                              AGENT_SLEEP="120"),
                    candidate(AGENT_RECORD=str(folders[1]), AGENT_WRITE="src/api/ok=yes")],
                   choose="first")
    killed = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                     env={"WTR_FAULT": "candidate_passed:api"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    working = records(folders[0], "api")[0]["pid"]
    assert alive(working)
    resumed = run_wtr("resume", cwd=repo.path, timeout=60)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    wait_for(lambda: not alive(working), timeout=10)
    found = candidates(run_wtr("status", "--json", cwd=repo.path).json())
    assert [(c["chosen"], c["stopped"]) for c in found] == [(False, True), (True, False)]
    assert [len(records(f, "api")) for f in folders] == [1, 1]


@pytest.mark.parametrize("point", ["candidates_planned", "agent_started", "ownership_check",
                                   "candidate_chosen", "candidate_branch"])
def test_a_runner_killed_at_any_step_is_resumed_without_losing_or_redoing_anything(
        repo: Repo, tmp_path: Path, point: str) -> None:
    folders = [tmp_path / f"rec{k}" for k in (1, 2)]
    for folder in folders:
        folder.mkdir()
    plan = best_of([candidate(AGENT_RECORD=str(folders[0]), AGENT_WRITE="src/api/ok=no"),
                    candidate(AGENT_RECORD=str(folders[1]), AGENT_WRITE="src/api/ok=yes")])
    killed = run_wtr("run", repo.write_plan(plan), cwd=repo.path,
                     env={"WTR_FAULT": f"{point}:api"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    run_id, api = doc["run"], stream_of(doc, "api")
    assert api["status"] == "succeeded"
    assert [(c["status"], c["chosen"]) for c in api["candidates"]] == [
        ("failed", False), ("succeeded", True)]
    assert [len(records(f, "api")) for f in folders] == [1, 1]  # no agent started twice
    assert repo.git("show", f"wtr/{run_id}/api:src/api/ok") == "yes"
    assert Path(api["worktree"]) == repo.path.parent / "repo.worktrees" / run_id / "api"
    assert repo.git("show", f"{ARCHIVE}/{run_id}/api+attempt-1:src/api/ok") == "no"
    assert repo.git("for-each-ref", "--format=%(refname:short)",
                    f"refs/heads/wtr/{run_id}/").split() == [
        f"wtr/{run_id}/api", f"wtr/{run_id}/api+attempt-1"]


def test_a_dependent_starts_from_the_kept_candidate(repo: Repo) -> None:
    plan = best_of([candidate(AGENT_WRITE="src/api/ok=yes;src/api/v=1"),
                    candidate(AGENT_WRITE="src/api/ok=yes;src/api/v=2")], choose="first")
    plan["streams"]["api"]["agents"][0]["env"]["AGENT_SLEEP"] = "2"
    plan["streams"]["ui"] = {"files": ["src/ui/**"], "prompt": "ui", "depends_on": ["api"],
                             "verify": ["test -e src/api/v"],
                             "agent": {"env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}}}
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    api, ui = stream_of(doc, "api"), stream_of(doc, "ui")
    assert ui["base_commit"] == api["head_commit"]
    assert repo.git("show", f"wtr/{doc['run']}/ui:src/api/v") == "2"
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    assert repo.git("show", "main:src/api/v") == "2"
    assert repo.git("show", "main:src/ui/view.py") == "UI = 2"


def test_clean_keeps_the_candidates_of_a_stream_that_kept_none_unless_forced(
        repo: Repo) -> None:
    plan = best_of([candidate(AGENT_WRITE="src/api/ok=no"),
                    candidate(AGENT_WRITE="src/api/ok=nope", AGENT_COMMIT="0")])
    result, doc = run(repo, plan)
    assert result.returncode == 1
    run_id = doc["run"]
    # an uncommitted change left in a candidate's worktree is saved before it goes
    worktree = Path(candidates(doc)[0]["worktree"])
    (worktree / "src" / "api" / "draft.py").write_text("draft\n")
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not worktree.exists()
    assert "uncommitted changes of api" in cleaned.stdout
    for attempt in (1, 2):
        assert f"kept branch wtr/{run_id}/api+attempt-{attempt} (candidate {attempt} of api; " \
               "no candidate was kept" in cleaned.stdout
    forced = run_wtr("clean", "--force", cwd=repo.path)
    assert forced.returncode == 0, forced.stderr
    assert repo.git("for-each-ref", f"refs/heads/wtr/{run_id}/") == ""
    assert repo.git("show", f"{ARCHIVE}/{run_id}/api+attempt-1:src/api/ok") == "no"
    assert repo.git("show", f"{ARCHIVE}/{run_id}/api+attempt-2:src/api/ok") == "nope"


def test_more_candidates_than_max_parallel_run_that_many_at_a_time(
        repo: Repo, tmp_path: Path) -> None:
    folders = [tmp_path / f"rec{k}" for k in (1, 2, 3)]
    for folder in folders:
        folder.mkdir()
    plan = best_of([candidate(AGENT_RECORD=str(f), AGENT_SLEEP="1",
                              AGENT_WRITE=f"src/api/ok=yes;src/api/n={k}")
                    for k, f in enumerate(folders, 1)], choose="smallest")  # (not first: it
    result, doc = run(repo, plan, "--max-parallel", "2")  # stops the others once one passes)
    assert result.returncode == 0, result.stderr
    spans = sorted((records(f, "api")[0]["time"], records(f, "api", "end")[0]["time"])
                   for f in folders)
    assert spans[2][0] > min(spans[0][1], spans[1][1])  # the third waited for a place
    assert [c["status"] for c in candidates(doc)] == ["succeeded"] * 3


def test_run_merge_lands_the_kept_candidate_as_the_run_goes(repo: Repo) -> None:
    plan = best_of([candidate(AGENT_WRITE="src/api/ok=no"),
                    candidate(AGENT_WRITE="src/api/ok=yes")])
    result, doc = run(repo, plan, "--merge")
    assert result.returncode == 0, result.stderr
    assert stream_of(doc, "api")["status"] == "merged"
    assert repo.git("show", "main:src/api/ok") == "yes"
