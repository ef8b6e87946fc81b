"""The aider preset against the real, pinned aider, through ``wtr run``.

Aider runs no shell commands (``--yes-always`` never runs the model's), so its script is
text: whole-file edit blocks. The first writes ``feature.py`` without ``value()``; aider
commits it, runs the plan's test command (``--test-cmd``), which fails, and feeds the
failure back; the second reply fixes the file and ends with the report. Checked: its own
commits on its branch and nothing else anywhere (no ``.gitignore``, no ``.aider*``), the
failed test output back at the model and the passing one in its log, the report from its
last reply, and the usage from its analytics lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance import harness
from tests.conformance.harness import VARIANTS, Outcome, cli_bin_dir, git, run_conformance
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.gitrepo import IDENTITY
from worktree_runner.presets import StreamFacts
from worktree_runner.presets.aider import AIDER

SAMPLES = Path(__file__).parent / "samples"
MODEL = "openai/scripted"
INPUT_COST, OUTPUT_COST = 3e-06, 1.5e-05  # per token, as the gateway's user declares them
ARGS = ["--model", MODEL, "--test-cmd", "python3 run_tests.py {stream}", "--auto-test"]
OLD_ARGV = ("aider", "--yes-always", "--message", "{prompt}")  # before the preset knew aider

WRONG = "src/{stream}/feature.py\n```python\nVALUE = 41\n```\n"
RIGHT = "src/{stream}/feature.py\n```python\ndef value():\n    return 42\n```\n"
REPORT = "REPORT {stream}: added src/{stream}/feature.py; run_tests.py passed."


def aider_turns() -> list[dict[str, Any]]:
    return [
        {"text": f"I add the feature.\n\n{WRONG}", "commit": "{stream}: add feature"},
        {"text": f"The test wants value(); fixed.\n\n{RIGHT}\n{REPORT}"},
    ]


def gateway(url: str, home: Path) -> dict[str, str]:
    """As a user points aider at an OpenAI-compatible gateway: its URL and key, and the
    model's window and prices (which also spares aider fetching litellm's price list)."""
    (home / ".aider.model.metadata.json").write_text(json.dumps({MODEL: {
        "max_input_tokens": 128000, "max_output_tokens": 4096, "litellm_provider": "openai",
        "mode": "chat", "input_cost_per_token": INPUT_COST,
        "output_cost_per_token": OUTPUT_COST}}))
    return {"OPENAI_API_BASE": f"{url}/v1", "OPENAI_API_KEY": "sk-test"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_aider_conformance(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if variant == "sandbox":
        # With HOME under /tmp, bubblewrap's private /tmp hides it: no git identity, and
        # aider's attempt to write one into the repository's config is refused (exit 1).
        # A real HOME stays visible (read-only) in the sandbox.
        monkeypatch.setattr(harness, "_in_tmp", harness._outside_tmp)
    outcome = run_conformance("aider", variant, gateway, turns=aider_turns(),
                              agent={"args": ARGS})
    outcome.assert_standard(shell=False)
    for name in ("alpha", "beta"):
        _assert_aider_stream(outcome, name)


def _assert_aider_stream(outcome: Outcome, name: str) -> None:
    stream = outcome.stream(name)
    assert f"TESTS FAILED: {name}" in outcome.server.sent_back(), outcome.describe()
    assert f"TESTS PASSED: {name}" in outcome.log(name), outcome.describe()
    cost = 2 * (INPUT_TOKENS * INPUT_COST + OUTPUT_TOKENS * OUTPUT_COST)
    assert stream["usage"]["input_tokens"] == 2 * INPUT_TOKENS, stream["usage"]
    assert stream["usage"]["output_tokens"] == 2 * OUTPUT_TOKENS, stream["usage"]
    assert stream["usage"]["turns"] == 2, stream["usage"]
    assert stream["usage"]["cost_usd"] == pytest.approx(cost), stream["usage"]
    tip = f"wtr/{outcome.status['run']}/{name}"
    assert set(outcome.git("ls-tree", "-r", "--name-only", tip).split()) == {
        "README.md", "run_tests.py", "src/common.py", f"src/{name}/feature.py"}
    assert "Your Name" not in (outcome.ws.repo / ".git" / "config").read_text()
    state = next(outcome.ws.repo.glob(f".git/worktree-runner/runs/*/streams/{name}"))
    assert (state / "aider.chat.history.md").is_file()


def test_usage_and_final_message_from_captured_output() -> None:
    output = (SAMPLES / "aider-two-replies.log").read_text()
    assert AIDER.usage(output) == {"input_tokens": 2400, "output_tokens": 68,
                                   "cost_usd": pytest.approx(0.00822), "turns": 2}
    message = AIDER.final_message(output)
    assert message is not None
    assert message.startswith("The test wants value(); fixed.")
    assert message.endswith("REPORT alpha: added src/alpha/feature.py; run_tests.py passed.")


def test_without_analytics_lines_the_tokens_lines_and_reply_are_read() -> None:
    output = "".join(line for line in (SAMPLES / "aider-two-replies.log").open()
                     if not line.startswith("{"))
    assert AIDER.usage(output) == {"input_tokens": 2400, "output_tokens": 68,
                                   "cost_usd": pytest.approx(0.0082), "turns": 2}
    message = AIDER.final_message(output)
    assert message is not None
    assert message.startswith("The test wants value(); fixed.")


def test_usage_from_the_tokens_lines_is_rounded_and_cost_unknown_without_prices() -> None:
    output = "Tokens: 1.2k sent, 34 received.\nok\nTokens: 15k sent, 2.0k received.\n"
    assert AIDER.usage(output) == {"input_tokens": 16200, "output_tokens": 2034,
                                   "cost_usd": None, "turns": 2}
    priced = "Tokens: 812 sent, 34 received. Cost: $0.0029 message, $0.0029 session.\n"
    assert AIDER.usage(priced) == {"input_tokens": 812, "output_tokens": 34,
                                   "cost_usd": pytest.approx(0.0029), "turns": 1}
    assert AIDER.usage("aider crashed\n") is None
    assert AIDER.final_message("aider crashed\n") is None


def test_unpriced_analytics_cost_is_unknown_not_zero() -> None:
    event = {"event": "message_send", "properties": {
        "prompt_tokens": 1200, "completion_tokens": 34, "cost": 0, "total_cost": 0.0}}
    output = f"{json.dumps(event)}\nTokens: 1.2k sent, 34 received.\n"
    assert AIDER.usage(output) == {"input_tokens": 1200, "output_tokens": 34,
                                   "cost_usd": None, "turns": 1}


@pytest.mark.parametrize("argv", [
    pytest.param(OLD_ARGV, marks=pytest.mark.xfail(strict=True, reason="the old argv's leftovers")),
    None], ids=["old-argv", "preset"])
def test_nothing_left_in_the_worktree(tmp_path: Path, argv: tuple[str, ...] | None) -> None:
    """The old argv left .gitignore and .aider* files in the worktree (an ownership
    failure under wtr); the preset's leaves only its edit and its commit."""
    bin_dir = cli_bin_dir("aider")
    repo, state, home = tmp_path / "repo", tmp_path / "state", tmp_path / "home"
    for folder in (repo, state, home):
        folder.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    prompt = state / "prompt.md"
    prompt.write_text("# Task: stream 'alpha' of plan 'p'\n\nAdd src/alpha/feature.py.\n")
    launch = AIDER.launch(_facts(repo, state))
    words = {"{prompt_file}": str(prompt), "{prompt}": prompt.read_text()}
    command = [words.get(a, a) for a in (argv or launch.argv)] + ["--model", MODEL]
    with ModelServer(Script(aider_turns()[1:])) as server:
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(home), "PWD": str(repo),
               **IDENTITY, **gateway(server.url, home), **launch.env}
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    left = git(repo, "status", "--porcelain", "--ignored", "--untracked-files=all")
    assert left == "", f"left in the worktree:\n{left}\n{done.stdout}"
    assert git(repo, "ls-tree", "-r", "--name-only", "HEAD").split() == [
        "README.md", "src/alpha/feature.py"]


def _facts(repo: Path, state: Path) -> StreamFacts:
    git_dir = repo / ".git"
    return StreamFacts(stream="alpha", worktree=repo, state_dir=state, git_dir=git_dir,
                       git_common_dir=git_dir, scope=("src/alpha/**",),
                       wtr_bin=state, run_state_dir=state, locks_dir=state,
                       as_root=os.geteuid() == 0)
