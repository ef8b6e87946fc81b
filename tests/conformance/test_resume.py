"""Each preset's ``session()`` and ``resume()`` against its real, pinned CLI: the session
the first run printed is continued by the second, which the scripted server sees carry the
first run's conversation and the new message (tests/conformance/rounds.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conformance import test_aider, test_claude, test_codex, test_gemini, test_opencode
from tests.conformance.rounds import TOLD, resumed_request, two_rounds
from worktree_runner.presets import PRESETS

GATEWAYS = {"claude": test_claude.gateway, "codex": test_codex.gateway,
            "gemini": test_gemini.gateway, "opencode": test_opencode.gateway}
# Aider runs no tool: its rounds are replies, its session the chat history it restores.
AIDER_ROUNDS = [[{"text": "ROUND ONE {stream}: nothing to edit yet."}],
                [{"text": "ROUND TWO {stream}: told, and done."}]]


@pytest.mark.parametrize("name", sorted(GATEWAYS))
def test_resume_continues_the_session(tmp_path: Path, name: str) -> None:
    done = two_rounds(tmp_path, PRESETS[name], GATEWAYS[name])
    shown = f"{done.first.stdout[-3000:]}\n{done.first.stderr[-3000:]}"
    assert done.first.returncode == 0 and done.session, shown
    assert done.second is not None
    assert done.second.returncode == 0, done.second.stdout[-3000:] + done.second.stderr[-3000:]
    resumed_request(done.sent, "alpha", TOLD.splitlines()[0])
    # round two's tool call ran in the continued session
    assert any("ROUND TWO alpha" in entry["body"] for entry in done.sent)
    assert PRESETS[name].session(done.second.stdout + done.second.stderr) == done.session


def test_aider_restores_its_chat_history(tmp_path: Path) -> None:
    done = two_rounds(tmp_path, PRESETS["aider"], test_aider.gateway, AIDER_ROUNDS,
                      args=("--model", test_aider.MODEL))
    shown = f"{done.first.stdout[-3000:]}\n{done.first.stderr[-3000:]}"
    assert done.first.returncode == 0 and done.session == "aider.chat.history.md", shown
    assert done.second is not None
    assert done.second.returncode == 0, done.second.stdout[-3000:] + done.second.stderr[-3000:]
    resumed_request(done.sent, "alpha", TOLD.splitlines()[0])
    assert "ROUND TWO alpha: told, and done." in done.second.stdout


def test_session_ids_come_from_each_clis_own_output() -> None:
    samples = Path(__file__).parent / "samples"
    assert PRESETS["codex"].session((samples / "codex-exec.jsonl").read_text()) == (
        "01a242c5-b6fc-7441-b0bb-17b4335863f9")
    assert PRESETS["gemini"].session((samples / "gemini-stream-json.log").read_text()) == (
        "d103c1a9-12df-4fa9-9eff-e8aaef0b9b34")
    assert PRESETS["opencode"].session((samples / "opencode-run.jsonl").read_text()) == (
        "ses_dbd355a3dffedm1ZXzhql1YGUv")
    assert PRESETS["aider"].session((samples / "aider-two-replies.log").read_text()) == (
        "aider.chat.history.md")
    for name in PRESETS:
        assert PRESETS[name].session("the CLI crashed before it said anything\n") is None


@pytest.mark.parametrize("printed", ["--config=/tmp/evil", "../../x", "a b", "", "x" * 200])
def test_a_session_id_that_could_be_an_option_or_a_path_is_not_taken(printed: str) -> None:
    line = json.dumps({"type": "thread.started", "thread_id": printed})
    assert PRESETS["codex"].session(line) is None
    assert PRESETS["claude"].session(json.dumps({"session_id": printed})) is None
