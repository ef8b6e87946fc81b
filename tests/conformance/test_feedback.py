"""Feedback rounds with the real claude and codex CLIs, through ``wtr run``.

Each stream's agent first fails a check (its tests, a file outside its scope, or a sync
with a target that moved under it); wtr tells the failure to the same session (claude
``--resume``, ``codex exec resume``) and the scripted model fixes it in the second round.
The server sees the failure arrive in a request that carries the first round's
conversation: a continued session, not a new one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance import test_claude, test_codex
from tests.conformance.harness import (
    STREAMS,
    Outcome,
    _environment,
    cli_bin_dir,
    git,
    plan_for,
    run_conformance,
    workspace,
    wtr_in,
)
from tests.conformance.modelserver import ModelServer, placeholders
from tests.conformance.rounds import (
    OWNERSHIP_ROUNDS,
    VERIFY_ROUNDS,
    RoundScript,
    resumed_request,
)

GATEWAYS = {"claude": test_claude.gateway, "codex": test_codex.gateway}
PERSON = "The tests want a function value() that returns 42; please add it."


def _assert_round_two(outcome: Outcome, name: str, failure: str) -> dict[str, Any]:
    stream = outcome.stream(name)
    assert stream["status"] == "succeeded", (stream["failure"], outcome.describe())
    log = stream["attempt_log"]
    assert [entry["kind"] for entry in log] == ["agent", "feedback"], log
    assert stream["session"] and log[1]["resumed"] == stream["session"], log
    with outcome.server._lock:
        sent = list(outcome.server.requests)
    resumed_request(sent, name, failure)
    return stream


@pytest.mark.parametrize("preset", sorted(GATEWAYS))
def test_a_failed_verify_is_fixed_in_the_same_session(preset: str) -> None:
    outcome = run_conformance(preset, "checkout", GATEWAYS[preset],
                              script=RoundScript(VERIFY_ROUNDS))
    assert outcome.exit_code == 0, outcome.describe()
    for name in STREAMS:
        stream = _assert_round_two(
            outcome, name, f"verify command failed (exit 1): python3 run_tests.py {name}")
        first = stream["attempt_log"][0]["failure"]
        assert first["kind"] == "verify" and f"TESTS FAILED: {name}" in first["output"]
        assert "def value" in outcome.git("show", f"{stream['branch']}:src/{name}/feature.py")


@pytest.mark.parametrize("preset", sorted(GATEWAYS))
def test_an_ownership_slip_is_corrected_in_the_same_session(preset: str) -> None:
    outcome = run_conformance(preset, "checkout", GATEWAYS[preset],
                              script=RoundScript(OWNERSHIP_ROUNDS))
    assert outcome.exit_code == 0, outcome.describe()
    for name in STREAMS:
        stream = _assert_round_two(outcome, name, "outside its files: README.md")
        assert stream["attempt_log"][0]["failure"]["files"] == ["README.md"]
        assert stream["changed_files"] == [f"src/{name}/feature.py"], outcome.describe()
        subjects = outcome.git("log", "--format=%s",
                               f"{stream['base_commit']}..{stream['branch']}").splitlines()
        assert f"{name}: put README.md back" in subjects  # the slip stays in history


@pytest.mark.parametrize("preset", sorted(GATEWAYS))
def test_retry_with_a_message_continues_the_session(preset: str) -> None:
    """``feedback: 0``: the verify failure fails the streams; ``wtr retry --message`` then
    continues each one's session with a person's words, which fix it."""
    ws = workspace("checkout")
    plan_path = ws.root / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_for(preset, plan_extra={"feedback": 0}),
                                        sort_keys=False))
    with ModelServer(RoundScript(VERIFY_ROUNDS, starts=(PERSON,))) as server:
        env = _environment(ws, cli_bin_dir(preset), GATEWAYS[preset](server.url, ws.home))
        wtr = wtr_in(ws, env, timeout=600)

        ran = wtr("run", str(plan_path))
        assert ran.returncode == 1, ran.stdout + ran.stderr
        retried = wtr("retry", *STREAMS, "--message", PERSON)
        status = json.loads(wtr("status", "--json").stdout)
        with server._lock:
            sent = list(server.requests)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "no agent session to continue" not in retried.stderr
    for name in STREAMS:
        stream = next(s for s in status["streams"] if s["name"] == name)
        assert stream["status"] == "succeeded", stream
        log = stream["attempt_log"]
        assert [entry["kind"] for entry in log] == ["agent", "message"], log
        assert log[1]["resumed"] == stream["session"] and stream["session"], log
        resumed_request(sent, name, PERSON)
        assert "def value" in git(ws.repo, "show", f"{stream['branch']}:src/{name}/feature.py")


MAIN_SIDE = "def main_side():\n    return 1\n"
SYNC_ROUNDS = [
    [{"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
               "> src/{stream}/feature.py && git add src/{stream} "
               '&& git commit -q -m "{stream}: add feature" && echo ROUND ONE {stream}'},
     {"shell": "wtr sync"},
     {"text": "Done; the sync conflicted, so I leave it."}],
    [{"shell": "git merge --no-edit main || true"},
     {"shell": "printf 'def value():\\n    return 42\\n\\n\\ndef main_side():\\n    return 1\\n'"
               " > src/{stream}/feature.py && git add src/{stream}/feature.py "
               "&& git commit -q --no-edit && echo RESOLVED {stream}"},
     {"text": "REPORT {stream}: merged main and kept both functions."}],
]


class TargetMovesAtFirstRequest(RoundScript):
    """The test's own commit to main (the target), made when the first model request
    arrives: the streams have started from the main before it, and have not synced yet."""

    def __init__(self) -> None:
        super().__init__(SYNC_ROUNDS)
        self.moved: str | None = None

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        with self._lock:
            worktree = placeholders(request_text).get("worktree")
            if self.moved is None and worktree:
                self.moved = _commit_on_main(Path(worktree))
        return super().turn(request_text, tool_results)


def _commit_on_main(worktree: Path) -> str:
    repo = Path(git(worktree, "rev-parse", "--path-format=absolute",
                    "--git-common-dir")).parent
    for name in STREAMS:
        (repo / "src" / name).mkdir(parents=True, exist_ok=True)
        (repo / "src" / name / "feature.py").write_text(MAIN_SIDE)
    git(repo, "add", "src")
    git(repo, "commit", "-q", "-m", "main: main_side() for every stream")
    return git(repo, "rev-parse", "HEAD")


def test_a_sync_conflict_is_resolved_in_the_same_session() -> None:
    """main moves under both streams with a conflicting file; each agent's ``wtr sync``
    conflicts, the conflict is told to its claude session, which merges main in and
    resolves it; the merge commit is accepted (its base is main's new tip)."""
    script = TargetMovesAtFirstRequest()
    outcome = run_conformance("claude", "checkout", GATEWAYS["claude"], script=script)
    assert outcome.exit_code == 0, outcome.describe()
    assert script.moved == outcome.git("rev-parse", "main")
    for name in STREAMS:
        stream = _assert_round_two(outcome, name, "sync: its branch conflicts with main's tip")
        with outcome.server._lock:
            sent = list(outcome.server.requests)
        resumed_request(sent, name, ">>>>>>> main")  # the hunks, both sides, arrived too
        assert stream["attempt_log"][0]["failure"]["files"] == [f"src/{name}/feature.py"]
        assert stream["base_commit"] == script.moved
        assert stream["changed_files"] == [f"src/{name}/feature.py"]
        merged = outcome.git("show", f"{stream['branch']}:src/{name}/feature.py")
        assert "def value" in merged and "def main_side" in merged
