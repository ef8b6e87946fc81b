"""Feedback rounds and ``wtr retry --message`` with a real command agent
(tests/agents/feedback_agent.py) on real repositories and worktrees."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of, wait_for

AGENT = Path(__file__).resolve().parent / "agents" / "feedback_agent.py"
VERIFY = "cat src/db/models.py; grep -q FIXED src/db/models.py"
# Runs the undo commands a feedback round lists (indented git lines), as an agent would.
UNDO = "printf '%s\\n' \"$WTR_FEEDBACK\" | grep '^    git ' | sh -e"


def plan(records: Path, first: str, fix: str, **top: Any) -> dict[str, Any]:
    """A command agent's plan; it reads WTR_FEEDBACK, so it asks for 2 rounds unless told."""
    top.setdefault("feedback", 2)
    stream = {"files": ["src/db/**"], "verify": [VERIFY],
              "env": {"FB_RECORD": str(records), "FB_FIRST": first, "FB_FIX": fix}}
    stream.update(top.pop("stream", {}))
    return agent_plan({"db": stream},
                      agent={"command": [sys.executable, str(AGENT), "{prompt_file}"]}, **top)


def run(repo: Repo, document: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    code, doc, _ = run_with_output(repo, document)
    return code, doc


def run_with_output(repo: Repo, document: dict[str, Any]) -> tuple[int, dict[str, Any], str]:
    result = run_wtr("run", repo.write_plan(document), cwd=repo.path)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    return result.returncode, doc, result.stdout + result.stderr


def seen(records: Path) -> list[dict[str, Any]]:
    files = sorted(records.glob("db.*.json"), key=lambda f: int(f.name.split(".")[1]))
    return [json.loads(f.read_text()) for f in files]


def kinds(stream: dict[str, Any]) -> list[str]:
    return [entry["kind"] for entry in stream["attempt_log"]]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    folder = tmp_path / "records"
    folder.mkdir()
    return folder


def test_a_failed_verify_is_fixed_in_the_second_round(repo: Repo, records: Path,
                                                       tmp_path: Path) -> None:
    code, doc, said = run_with_output(repo, plan(records, "echo BROKEN > src/db/models.py",
                                                 "echo FIXED > src/db/models.py"))
    db = stream_of(doc, "db")
    assert code == 0 and db["status"] == "succeeded", db
    assert db["attempts"] == 2 and kinds(db) == ["agent", "feedback"]
    first, second = db["attempt_log"]
    assert first["failure"]["kind"] == "verify" and second["failure"] is None
    assert first["failure"]["output"] == "BROKEN"
    told = seen(records)[1]
    # the failing command and the tail of its output, in WTR_FEEDBACK and the prompt file
    assert f"verify command failed (exit 1): {VERIFY}" in told["feedback"]
    assert "```\nBROKEN\n```" in told["feedback"]
    assert "feedback round 1 of 2" in told["feedback"]
    assert told["feedback"] in told["prompt"] and "do the db work" in told["prompt"]
    assert seen(records)[0]["feedback"] is None
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "FIXED"
    assert "db: attempt 2 (its failure told to the agent)" in said
    report = tmp_path / "report.html"
    assert run_wtr("report", "-o", report, cwd=repo.path).returncode == 0
    assert "<td>feedback</td>" in report.read_text()


def test_an_uncommitted_ownership_slip_is_undone_and_never_committed(repo: Repo,
                                                                     records: Path) -> None:
    first = ("echo DB > src/db/models.py; echo SLIP > src/api/orders.py; echo NEW > notes.txt; "
             "exit 3")
    code, doc = run(repo, plan(records, first, UNDO, stream={"verify": []}))
    db = stream_of(doc, "db")
    assert code == 0 and db["status"] == "succeeded", db
    assert kinds(db) == ["agent", "feedback"]
    slip = db["attempt_log"][0]["failure"]
    assert slip["kind"] == "ownership" and slip["files"] == ["notes.txt", "src/api/orders.py"]
    told = seen(records)[1]["feedback"]
    assert "src/db/**" in told  # the rule: what the stream may change
    assert f"git checkout {db['base_commit']} -- src/api/orders.py" in told
    assert "git rm -q --cached --ignore-unmatch -- notes.txt; rm -f -- notes.txt" in told
    assert db["changed_files"] == ["src/db/models.py"]
    # the slip never reached the branch, and is kept under a rescue ref all the same
    history = repo.git("log", "--format=%H", f"{db['base_commit']}..{db['branch']}", "--",
                       "src/api/orders.py", "notes.txt")
    assert history == ""
    rescued = f"refs/worktree-runner/rescue/{doc['run']}/db"
    assert repo.git("show", f"{rescued}:src/api/orders.py") == "SLIP"
    assert repo.git("show", f"{rescued}:notes.txt") == "NEW"
    assert repo.git("-C", db["worktree"], "status", "--porcelain") == ""


def test_a_committed_slip_is_reverted_by_a_commit_and_stays_in_history(repo: Repo,
                                                                       records: Path) -> None:
    first = "echo DB > src/db/models.py; echo SLIP > src/api/orders.py"
    code, doc = run(repo, plan(records, first, UNDO, stream={"verify": []}))
    db = stream_of(doc, "db")
    assert code == 0 and db["status"] == "succeeded", db
    assert db["changed_files"] == ["src/db/models.py"]
    assert repo.git("show", f"{db['branch']}:src/api/orders.py") == "ORDERS = []"
    commits = repo.git("log", "--format=%H", f"{db['base_commit']}..{db['branch']}", "--",
                       "src/api/orders.py").split()
    assert len(commits) == 2  # the slip and its undoing: nothing lost


def test_rounds_run_out_and_the_stream_fails_with_the_last_failure(repo: Repo,
                                                                   records: Path) -> None:
    code, doc = run(repo, plan(records, "echo BROKEN > src/db/models.py",
                               "echo STILL BROKEN > src/db/models.py", feedback=1))
    db = stream_of(doc, "db")
    assert code == 1 and db["status"] == "failed"
    assert kinds(db) == ["agent", "feedback"] and db["attempts"] == 2
    assert db["failure"]["kind"] == "verify" and db["failure"]["output"] == "STILL BROKEN"
    assert "feedback round 1 of 1" in seen(records)[1]["feedback"]
    shown = run_wtr("status", cwd=repo.path).stdout
    assert "(after 1 feedback round)" in shown


def test_an_unfixed_slip_is_committed_and_shown_when_rounds_run_out(repo: Repo,
                                                                    records: Path) -> None:
    first = "echo DB > src/db/models.py; echo SLIP > src/api/orders.py; exit 3"
    code, doc = run(repo, plan(records, first, "exit 3", stream={"verify": [], "feedback": 1}))
    db = stream_of(doc, "db")
    assert code == 1 and db["failure"]["kind"] == "ownership", db
    assert db["failure"]["files"] == ["src/api/orders.py"]
    # as without feedback: the work is on the branch, where a human can judge it
    assert repo.git("show", f"{db['branch']}:src/api/orders.py") == "SLIP"


def test_feedback_zero_fails_at_once(repo: Repo, records: Path) -> None:
    code, doc = run(repo, plan(records, "echo BROKEN > src/db/models.py",
                               "echo FIXED > src/db/models.py", feedback=0))
    db = stream_of(doc, "db")
    assert code == 1 and db["failure"]["kind"] == "verify"
    assert db["attempts"] == 1 and kinds(db) == ["agent"] and len(seen(records)) == 1


def test_a_command_agent_gets_no_feedback_unless_the_plan_asks(repo: Repo,
                                                               records: Path) -> None:
    """A script need not read WTR_FEEDBACK: without ``feedback:`` it fails at once, as a
    preset's agent (a CLI session to continue) would only after its 2 rounds."""
    document = plan(records, "echo BROKEN > src/db/models.py", "echo FIXED > src/db/models.py")
    del document["feedback"]
    code, doc = run(repo, document)
    db = stream_of(doc, "db")
    assert code == 1 and db["failure"]["kind"] == "verify"
    assert kinds(db) == ["agent"] and len(seen(records)) == 1


def test_other_failures_are_not_fed_back(repo: Repo, records: Path) -> None:
    code, doc = run(repo, plan(records, "exit 3", "echo FIXED > src/db/models.py",
                               stream={"verify": [], "allow_empty": False}))
    db = stream_of(doc, "db")
    assert code == 1 and db["failure"]["kind"] == "no_changes" and kinds(db) == ["agent"]


def test_retry_with_a_message_tells_the_agent(repo: Repo, records: Path) -> None:
    code, _ = run(repo, plan(records, "echo BROKEN > src/db/models.py",
                             "echo FIXED > src/db/models.py", feedback=0))
    assert code == 1
    retried = run_wtr("retry", "db", "--message", "Write FIXED, not BROKEN.", cwd=repo.path)
    assert retried.returncode == 0, retried.stderr
    assert "db: no agent session to continue" in retried.stderr
    db = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "db")
    assert db["status"] == "succeeded" and kinds(db) == ["agent", "message"]
    told = seen(records)[1]
    assert told["message"] == "Write FIXED, not BROKEN."
    assert "Write FIXED, not BROKEN." in told["prompt"] and "do the db work" in told["prompt"]
    assert told["feedback"] is None


def test_retry_with_an_empty_message_is_refused(repo: Repo, records: Path) -> None:
    code, _ = run(repo, plan(records, "echo BROKEN > src/db/models.py", "", feedback=0))
    assert code == 1
    refused = run_wtr("retry", "db", "--message", "  ", cwd=repo.path)
    assert refused.returncode == 2 and "--message is empty" in refused.one_line_error()


@pytest.mark.parametrize("value", [-1, "two", 21, True])
def test_feedback_must_be_a_small_count(repo: Repo, records: Path, value: Any) -> None:
    for where in ({"feedback": value}, {"stream": {"feedback": value}}):
        document = plan(records, "", "", **where)
        checked = run_wtr("check", repo.write_plan(document), cwd=repo.path)
        assert checked.returncode == 2 and "feedback" in checked.stderr, checked.stderr


def test_a_runner_killed_during_a_round_is_resumed_without_a_second_agent(
        repo: Repo, records: Path) -> None:
    """kill -9 of the runner while the feedback round's agent works: ``wtr resume`` adopts
    that agent, checks its work, and starts no other; the round counts as one."""
    fix = "sleep 2; echo FIXED > src/db/models.py"
    runner = subprocess.Popen(
        [sys.executable, "-m", "worktree_runner", "run",
         str(repo.write_plan(plan(records, "echo BROKEN > src/db/models.py", fix)))],
        cwd=repo.path, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(seen(records)) == 2)
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    resumed = run_wtr("resume", cwd=repo.path)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    db = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "db")
    assert db["status"] == "succeeded" and kinds(db) == ["agent", "feedback"], db
    assert len(seen(records)) == 2
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "FIXED"


def test_each_best_of_n_candidate_is_told_its_own_failure(repo: Repo, tmp_path: Path) -> None:
    folders = [tmp_path / "one", tmp_path / "two"]
    for folder in folders:
        folder.mkdir()
    told = {"env": {"FB_RECORD": str(folders[0]), "FB_FIRST": "echo BROKEN > src/db/models.py",
                    "FB_FIX": "echo FIXED > src/db/models.py"}}
    deaf = {"env": {"FB_RECORD": str(folders[1]), "FB_FIRST": "echo BROKEN > src/db/models.py",
                    "FB_FIX": "echo STILL BROKEN > src/db/models.py"}}
    document = plan(folders[0], "", "", feedback=1,
                    stream={"attempts": 2, "agents": [told, deaf]})
    code, doc = run(repo, document)
    db = stream_of(doc, "db")
    assert code == 0 and db["status"] == "succeeded", db
    found = [(c["attempt"], c["status"], c["attempts"], c["chosen"]) for c in db["candidates"]]
    assert found == [(1, "succeeded", 2, True), (2, "failed", 2, False)], found
    for folder in folders:
        assert "verify command failed" in seen(folder)[1]["feedback"]
    assert repo.git("show", f"{db['branch']}:src/db/models.py") == "FIXED"
