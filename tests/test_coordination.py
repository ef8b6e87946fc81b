"""Change requests routed to a file's owner, with real runs of a command agent
(tests/agents/coord_agent.py) that calls ``wtr request`` on real repositories."""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of, wait_for
from worktree_runner.coordinate import Caller, Request, RequestBook, request_change
from worktree_runner.coordinate.routing import cycle_closed, waits_graph
from worktree_runner.errors import BadInput
from worktree_runner.run.state import RunRecord, RunStore, StreamRecord

AGENT = Path(__file__).resolve().parent / "agents" / "coord_agent.py"
PY = sys.executable
ASK_DB = ("wtr request src/db/models.py --what 'add PAID to the models' "
          "--why 'the API returns it'")


def until_request(number: int = 1) -> str:
    """Shell: wait until the run holds request r<number>."""
    return (f"until grep -q '\"r{number}\"' \"$WTR_STATE_DIR/coordination/requests.json\" "
            "2>/dev/null; do sleep 0.05; done; ")


def until_done(stream: str) -> str:
    """Shell: wait until ``stream`` has succeeded (or landed) in the run's state."""
    check = (f"import json,os,sys; d=json.load(open(os.environ['WTR_STATE_DIR']+"
             f"'/state.json')); sys.exit(d['streams']['{stream}']['status'] not in "
             "('succeeded','merged'))")
    return f'until {PY} -c "{check}"; do sleep 0.2; done; '


def plan(records: Path, streams: dict[str, dict[str, Any]], **top: Any) -> dict[str, Any]:
    specs = {}
    for name, spec in streams.items():
        spec = dict(spec)
        env = {"CO_RECORD": str(records), "CO_FIRST": spec.pop("first", ""),
               "CO_ON_REQUEST": spec.pop("on_request", "")}
        specs[name] = {**spec, "env": env}
    return agent_plan(specs, agent={"command": [PY, str(AGENT)], "timeout": 60}, **top)


def seen(records: Path, stream: str) -> list[dict[str, Any]]:
    files = sorted(records.glob(f"{stream}.*.json"), key=lambda f: int(f.name.split(".")[-2]))
    return [json.loads(f.read_text()) for f in files]


def requests(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["requests"]}


def state_dir(doc: dict[str, Any]) -> Path:
    return Path(doc["repo"]) / ".git" / "worktree-runner" / "runs" / doc["run"]


def events(doc: dict[str, Any], kind_prefix: str = "request.") -> list[dict[str, Any]]:
    lines = (state_dir(doc) / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"].startswith(kind_prefix)]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    return folder


def test_a_request_to_a_stream_not_started_lands_in_its_prompt(repo: Repo,
                                                               records: Path) -> None:
    doc = plan(records, {
        "api": {"files": ["src/api/**"], "first": f"{ASK_DB}; echo API > src/api/orders.py"},
        "db": {"files": ["src/db/**"], "depends_on": ["api"],
               "first": "echo PAID > src/db/models.py"},
    })
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    said = seen(records, "api")[0]["output"]
    assert "went to 'db': it has not started; its prompt carries your request" in said
    prompt = seen(records, "db")[0]["prompt"]
    assert "## Change requests from other streams" in prompt
    assert "Stream 'api' asks (request r1) for a change in src/db/models.py" in prompt
    assert "What: add PAID to the models" in prompt and "Why: the API returns it" in prompt
    # every agent is told how to ask
    assert "wtr request PATH --what" in seen(records, "api")[0]["prompt"]
    final = status(repo)
    r1 = requests(final)["r1"]
    assert (r1["from"], r1["route"], r1["target"], r1["state"]) == (
        "api", "prompt", "db", "answered")
    assert [e["kind"] for e in events(final)] == [
        "request.created", "request.delivered", "request.answered"]
    assert_bad_requests_refused(repo, final)


def assert_bad_requests_refused(repo: Repo, doc: dict[str, Any]) -> None:
    """After the run: api asks as its agent would, with what it may not ask."""
    api = stream_of(doc, "api")
    env = {"WTR_STREAM": "api", "WTR_RUN": doc["run"], "WTR_STATE_DIR": str(state_dir(doc)),
           "WTR_WORKTREE": api["worktree"]}
    refused = run_wtr("request", "src/api/orders.py", "--what", "x", "--why", "y",
                      cwd=repo.path, env=env).one_line_error()
    assert refused == ("wtr: src/api/orders.py is yours: stream 'api' may change it itself; "
                       "change it in your worktree and commit")
    caller = Caller(RunStore(state_dir(doc)), "api", Path(api["worktree"]))
    for path, said in [
        ("../outside.txt", "../outside.txt is outside the repository"),
        ("/etc/passwd", "/etc/passwd is outside the repository"),
        (os.path.join(api["worktree"], "src/api/new.py"), "src/api/new.py is yours"),
        (".git/config", "is git's own folder"),
    ]:
        with pytest.raises(BadInput, match=re.escape(said)):
            request_change(caller, path, "x", "y")
    with pytest.raises(BadInput, match="--what is empty"):
        request_change(caller, "docs/index.md", " ", "y")
    assert len(RequestBook(state_dir(doc)).read()) == 1  # nothing refused was recorded
    unowned = run_wtr("request", "docs/index.md", "--what", "a line", "--why", "y", "--json",
                      cwd=repo.path, env=env)
    assert unowned.returncode == 0, unowned.stderr
    assert {k: unowned.json()[k] for k in ("id", "route", "target", "owner", "state")} == {
        "id": "r2", "route": "person", "target": None, "owner": None, "state": "escalated"}
    assert "went to a person (docs/index.md is owned by no stream)" in unowned.json()["message"]
    bare = run_wtr("request", "docs/index.md", "--what", "x", "--why", "y", cwd=repo.path,
                   env={k: "" for k in env}).one_line_error()
    assert "WTR_STREAM and WTR_RUN are not set" in bare
    unknown = run_wtr("answer", "r9", "text", cwd=repo.path).one_line_error()
    assert "has no request 'r9' (requests: r1, r2)" in unknown


def test_a_running_owner_gets_the_request_after_its_turn_and_the_waiter_hears(
        repo: Repo, records: Path) -> None:
    doc = plan(records, {
        "api": {"files": ["src/api/**"],
                "first": f"{ASK_DB} --wait --timeout 30; echo API > src/api/orders.py"},
        "db": {"files": ["src/db/**"], "first": until_request() + "echo DB > src/db/notes.py",
               "on_request": "echo PAID > src/db/models.py"},
    })
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    final = status(repo)
    db = stream_of(final, "db")
    assert [e["kind"] for e in db["attempt_log"]] == ["agent", "request"]
    told = seen(records, "db")[1]["request"]
    assert "Stream 'api' asks (request r1) for a change in src/db/models.py" in told
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "PAID"
    r1 = requests(final)["r1"]
    assert (r1["route"], r1["target"], r1["state"], r1["answered_by"]) == (
        "feedback", "db", "answered", "db")
    said = seen(records, "api")[0]["output"]
    assert "request r1 (src/db/models.py) answered: 'db' made its work with your request" \
        in said
    progress = [e["message"] for e in events(final, "stream.progressed")]
    assert progress[0] == "waiting for the answer to request r1 (db)"  # (renewed: a long
    assert progress[-1] == "request r1 answered"  # wait is no stall) and how it ended
    assert set(progress) == {progress[0], progress[-1]}


def test_a_finished_owner_gets_a_follow_up_that_the_requester_builds_on(
        repo: Repo, records: Path) -> None:
    follow_up = 'case "$WTR_STREAM" in *+req-*) echo PAID >> src/db/models.py;; ' \
                '*) echo DB > src/db/models.py;; esac'
    doc = plan(records, {
        "db": {"files": ["src/db/**"], "first": follow_up,
               "verify": ["test -s src/db/models.py"]},
        "api": {"files": ["src/api/**"],
                "first": until_done("db") + f"{ASK_DB} --wait --timeout 30; "
                         "cp src/db/models.py src/api/seen.txt"},
    }, max_parallel=2)
    ran = run_wtr("run", repo.write_plan(doc), "--merge", cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    final = status(repo)
    names = [s["name"] for s in final["streams"]]
    assert names == ["db", "api", "db+req-1"]
    extra, api = stream_of(final, "db+req-1"), stream_of(final, "api")
    assert extra["status"] == "merged" and extra["depends_on"] == ["db"]
    assert api["depends_on"] == ["db+req-1"]
    assert "for a change in src/db/models.py" in seen(records, "db+req-1")[0]["prompt"]
    said = seen(records, "api")[0]["output"]
    assert "answered: follow-up 'db+req-1' made the change" in said
    assert "the result of 'db+req-1' is now in your branch" in said
    # the requester built on it: it saw the follow-up's change in its own worktree
    assert repo.git("show", f"{api['branch']}:src/api/seen.txt") == "DB\nPAID"
    assert api["changed_files"] == ["src/api/seen.txt"]  # its own work, nothing of db's
    # landed as each succeeded (run --merge), the follow-up before the stream that asked
    assert final["merge"]["merged"] == ["db", "db+req-1", "api"]
    assert repo.git("show", "main:src/db/models.py") == "DB\nPAID"
    assert repo.git("show", "main:src/api/seen.txt") == "DB\nPAID"
    by_file = {path: repo.git("log", "--format=%s", "main", "--", path).splitlines()
               for path in ("src/db/models.py", "src/api/seen.txt")}
    assert by_file["src/db/models.py"][:2] == ["work of db+req-1", "work of db"]
    assert by_file["src/api/seen.txt"] == ["work of api"]
    report = repo.path.parent / "report.html"
    assert run_wtr("report", "-o", report, cwd=repo.path).returncode == 0
    page = report.read_text()
    assert "<h2>Coordination needed</h2>" in page
    assert ('<td class="mono">api</td><td class="mono">src/db/models.py</td>'
            "<td>add PAID to the models</td>") in page
    assert 'follow-up <span class="mono">db+req-1</span>' in page


def test_follow_ups_go_through_the_gates_and_askers_that_did_not_wait_build_on_them(
        repo: Repo, records: Path) -> None:
    # a follow-up asked to go OUTSIDE its files fails its ownership check; the other works
    follow_up = ('case "$WTR_STREAM" in *+req-*) if grep -q OUTSIDE "$WTR_PROMPT_FILE"; '
                 'then echo SLIP > src/api/orders.py; else echo PAID >> {path}; fi;; '
                 '*) echo FIRST > {path};; esac')
    ask = ("{wait}wtr request {path} --what '{what}' --why w; ")
    doc = plan(records, {
        "db": {"files": ["src/db/**"], "first": follow_up.format(path="src/db/models.py")},
        "doc": {"files": ["docs/**"], "first": follow_up.format(path="docs/index.md")},
        "api": {"files": ["src/api/**"], "first": ask.format(
            wait=until_done("db"), path="src/db/models.py", what="OUTSIDE the models")
            + "echo A > src/api/a.py"},
        "ui": {"files": ["src/ui/**"], "first": ask.format(
            wait=until_done("doc"), path="docs/index.md", what="add PAID")
            + "echo U > src/ui/u.py"},
    })
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path)
    assert ran.returncode == 1  # the follow-up that went outside its files failed
    final = status(repo)
    asked = {r["from"]: r for r in final["requests"]}
    assert (asked["api"]["target"], asked["ui"]["target"]) == ("db+req-1", "doc+req-1")
    bad, good, ui = (stream_of(final, n) for n in ("db+req-1", "doc+req-1", "ui"))
    assert bad["failure"]["kind"] == "ownership" and bad["failure"]["files"] == [
        "src/api/orders.py"]
    assert asked["api"]["state"] == "escalated" and "took the request but failed: changed " \
        "1 file outside its files: src/api/orders.py" in asked["api"]["answer"]
    assert good["status"] == "succeeded" and asked["ui"]["state"] == "answered"
    # ui did not wait: its branch moved onto the follow-up's result when its attempt ended
    assert repo.git("merge-base", good["head_commit"], ui["head_commit"]) == \
        good["head_commit"]
    assert ui["base_commit"] == good["head_commit"] and ui["changed_files"] == ["src/ui/u.py"]
    merged = run_wtr("merge", cwd=repo.path)
    assert merged.returncode == 0, merged.stderr
    landing = status(repo)["merge"]
    assert landing["merged"] == ["db", "doc", "doc+req-1", "ui"]
    assert set(landing["left_out"]) == {"api", "db+req-1"}  # api depends on the failed one
    assert repo.git("show", "main:docs/index.md") == "FIRST\nPAID"


def test_a_shared_path_goes_to_a_person_who_answers(repo: Repo, records: Path,
                                                    tmp_path: Path) -> None:
    told = tmp_path / "told.jsonl"
    ask = ("wtr request README.md --what 'mention the API' --why 'users ask' --wait "
           "--timeout 30; echo API > src/api/orders.py")
    doc = plan(records, {"api": {"files": ["src/api/**"], "first": ask}},
               shared=["README.md"],
               notify=[{"command": f"cat >> '{told}'; echo >> '{told}'", "on": ["attention"]}])
    answered = threading.Event()

    def person() -> None:
        def escalated() -> bool:
            found = run_wtr("status", "--json", cwd=repo.path)
            return found.returncode == 0 and any(
                r["state"] == "escalated" for r in found.json()["requests"])
        wait_for(escalated, timeout=30, poll=0.1)
        text = run_wtr("status", cwd=repo.path).stdout
        assert "request r1 of api about README.md needs a person" in text
        assert ("  r1 from api about README.md: mention the API -> person, escalated: "
                "README.md is shared") in text.splitlines()
        assert "'wtr answer r1 TEXT'" in text
        result = run_wtr("answer", "r1", "a line at the end, please", cwd=repo.path)
        assert result.returncode == 0, result.stderr
        answered.set()

    helper = threading.Thread(target=person)
    helper.start()
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path)
    helper.join(30)
    assert answered.is_set() and ran.returncode == 0, ran.stderr
    r1 = requests(status(repo))["r1"]
    assert (r1["route"], r1["target"], r1["state"], r1["answered_by"]) == (
        "person", None, "answered", "person")
    assert "answered: a line at the end, please" in seen(records, "api")[0]["output"]
    note = [json.loads(line) for line in told.read_text().splitlines() if line]
    escalation = next(n for n in note if n["kind"] == "request.escalated")
    assert escalation["topic"] == "attention" and escalation["request"] == "r1"
    assert "needs a person (README.md is shared)" in escalation["message"]


def test_two_waiting_requests_in_a_cycle_halt_the_one_closing_it(repo: Repo,
                                                                 records: Path) -> None:
    ask_api = ("wtr request src/api/orders.py --what 'an ORDERS type' --why 'models' "
               "--wait --timeout 60")
    doc = plan(records, {
        "api": {"files": ["src/api/**"],
                "first": f"{ASK_DB} --wait --timeout 60; echo API > src/api/orders.py"},
        "db": {"files": ["src/db/**"], "first": until_request() + ask_api + "; sleep 120"},
    })

    def person() -> None:  # once db has halted, a person answers what api waits for
        def halted() -> bool:
            found = run_wtr("status", "--json", cwd=repo.path)
            return found.returncode == 0 and any(
                s["name"] == "db" and s["status"] == "failed" for s in found.json()["streams"])
        wait_for(halted, timeout=60, poll=0.2)
        run_wtr("answer", "r1", "db halted; go on without it", cwd=repo.path)

    helper = threading.Thread(target=person)
    helper.start()
    started = time.monotonic()
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path, timeout=100)
    helper.join(60)
    # db halted (not 60 s of waiting, nor its 120 s of sleep): escalated, not deadlocked
    assert time.monotonic() - started < 50
    assert ran.returncode == 1
    final = status(repo)
    db, api = stream_of(final, "db"), stream_of(final, "api")
    assert db["status"] == "failed" and api["status"] == "succeeded"
    assert "would close a cycle of streams waiting on each other (db -> api -> db)" \
        in db["failure"]["message"]
    assert "exit code 3 means stop" in (state_dir(final) / "streams/db/prompt.md").read_text()
    both = requests(final)
    assert both["r2"]["state"] == "escalated" and both["r2"]["cycle"] == ["db", "api", "db"]
    assert (both["r1"]["state"], both["r1"]["answered_by"]) == ("answered", "person")
    assert "answered: db halted; go on without it" in seen(records, "api")[0]["output"]
    assert "wtr answer r2 TEXT" in run_wtr("status", cwd=repo.path).stdout


def test_an_unanswered_request_times_out_into_an_escalation(repo: Repo, records: Path,
                                                            tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    doc = plan(records, {
        "api": {"files": ["src/api/**"],
                "first": f"{ASK_DB} --wait --timeout 0.5; echo \"exit $?\"; touch '{gate}'; "
                         "echo API > src/api/orders.py"},
        "db": {"files": ["src/db/**"],
               "first": f"until [ -e '{gate}' ]; do sleep 0.05; done; echo DB > "
                        "src/db/models.py"},
    })
    ran = run_wtr("run", repo.write_plan(doc), cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    said = seen(records, "api")[0]["output"]
    assert "no answer within 0.5s; a person decides" in said and "exit 1" in said
    r1 = requests(status(repo))["r1"]
    assert r1["state"] == "timed_out"
    final = status(repo)
    assert [e["attempt_kind"] for e in events(final, "stream.attempt_started")
            if e["stream"] == "db"] == ["agent"]  # never delivered once timed out
    assert "request.timed_out" in [e["kind"] for e in events(final)]


def test_concurrent_requests_are_all_kept(repo: Repo, records: Path) -> None:
    ask = "for i in 1 2 3; do wtr request docs/index.md --what \"line $i\" --why w; done; "
    streams = {name: {"files": [f"src/{name}/**"], "first": ask + f"echo X > src/{name}/x.py"}
               for name in ("api", "db", "ui")}
    ran = run_wtr("run", repo.write_plan(plan(records, streams)), cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    found = status(repo)["requests"]
    assert sorted(r["id"] for r in found) == sorted(f"r{i}" for i in range(1, 10))
    assert sorted((r["from"], r["what"]) for r in found) == sorted(
        (name, f"line {i}") for name in streams for i in range(1, 4))
    assert {(r["route"], r["state"]) for r in found} == {("person", "escalated")}


def _record(statuses: dict[str, str], depends: dict[str, list[str]]) -> RunRecord:
    streams = {name: StreamRecord(name=name, branch=f"wtr/r/{name}", worktree=None,
                                  depends_on=depends.get(name, []), status=status)
               for name, status in statuses.items()}
    return RunRecord(run="r", plan="p", repo="/r", base="main", base_commit="0" * 40,
                     target="main", worktrees_root="/w", max_parallel=2, streams=streams)


def test_a_wait_for_a_stream_that_waits_on_the_asker_is_a_cycle() -> None:
    # api runs; db has not started and depends on api: api waiting for db never ends
    record = _record({"api": "running", "db": "pending", "ui": "running"}, {"db": ["api"]})
    graph = waits_graph(record, [])
    assert cycle_closed(graph, "api", "db") == ["api", "db", "api"]
    assert cycle_closed(graph, "ui", "db") == []
    # ui waits for api (a request), api then waiting for ui closes a cycle through it
    asked = Request("r1", "ui", "src/api/x.py", "w", "y", True, "feedback", "api", "api",
                    state="delivered")
    graph = waits_graph(record, [asked])
    assert cycle_closed(graph, "api", "ui") == ["api", "ui", "api"]
    # a request that does not wait, or is answered, holds nobody
    for done in (replace(asked, wait=False), replace(asked, state="answered")):
        assert cycle_closed(waits_graph(record, [done]), "api", "ui") == []
    # nor does one whose stream stopped while it waited (its agent, or its MCP server, was
    # ended by a signal and could not say so)
    stopped = _record({"api": "running", "db": "pending", "ui": "failed"}, {"db": ["api"]})
    assert cycle_closed(waits_graph(stopped, [asked]), "api", "ui") == []
