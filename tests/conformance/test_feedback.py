"""Feedback rounds with the real claude and codex CLIs, through ``wtr run``.

Each stream's agent first fails a check (its tests, or a file outside its scope); wtr
tells the failure to the same session (claude ``--resume``, ``codex exec resume``) and the
scripted model fixes it in the second round. The server sees the failure arrive in a
request that carries the first round's conversation: a continued session, not a new one.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance import test_claude, test_codex
from tests.conformance.harness import STREAMS, Outcome, run_conformance
from tests.conformance.rounds import (
    OWNERSHIP_ROUNDS,
    VERIFY_ROUNDS,
    RoundScript,
    resumed_request,
)

GATEWAYS = {"claude": test_claude.gateway, "codex": test_codex.gateway}


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
