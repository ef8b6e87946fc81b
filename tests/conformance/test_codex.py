"""The codex preset against the real, pinned Codex CLI, through ``wtr run``.

Codex talks the Responses API to a model provider the user defines in ``~/.codex/config.toml``
(here the scripted server); its shell tool runs each scripted command. Checked: the standard
scenario in every variant (its own commit, tests, ``wtr progress`` and ``wtr lock`` through
codex's shell), usage from its ``turn.completed`` events, the report from its last
``agent_message``, nothing left in the worktree; and the defects of the argv it had before.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harness import (
    VARIANTS,
    Outcome,
    cli_bin_dir,
    git,
    linked_stream,
    run_conformance,
    standard_turns,
)
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.gitrepo import IDENTITY
from worktree_runner.presets import StreamFacts
from worktree_runner.presets.base import PLACEHOLDERS
from worktree_runner.presets.codex import CODEX
from worktree_runner.run.prompt import render_command

SAMPLES = Path(__file__).parent / "samples"
OLD_ARGV = ("codex", "exec", "--full-auto", "{prompt}")  # before the preset knew codex
# Model requests of the standard scenario: one per tool result, and the final answer.
REQUESTS = len(standard_turns())

CONFIG = """\
model = "scripted-model"
model_provider = "gateway"
check_for_update_on_startup = false

[model_providers.gateway]
name = "Gateway"
base_url = "{url}/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"

[analytics]
enabled = false

[features]
plugins = false
"""


def gateway(url: str, home: Path) -> dict[str, str]:
    """As a user points codex at a gateway: a model provider in ~/.codex/config.toml (no
    plugin sync from GitHub, no analytics) and its key in the environment. CODEX_HOME names
    that folder, so a HOME changed on the way (runuser) cannot send codex to its default
    provider, the real service."""
    (home / ".codex").mkdir(exist_ok=True)
    (home / ".codex" / "config.toml").write_text(CONFIG.format(url=url))
    return {"OPENAI_API_KEY": "sk-test", "CODEX_HOME": str(home / ".codex")}


@pytest.mark.parametrize("variant", VARIANTS)
def test_codex_conformance(variant: str) -> None:
    outcome = run_conformance("codex", variant, gateway)
    outcome.assert_standard()
    for name in ("alpha", "beta"):
        _assert_codex_stream(outcome, name)


def _assert_codex_stream(outcome: Outcome, name: str) -> None:
    stream = outcome.stream(name)
    assert stream["usage"] == {"input_tokens": REQUESTS * INPUT_TOKENS,
                               "output_tokens": REQUESTS * OUTPUT_TOKENS,
                               "cost_usd": None, "turns": None}, stream["usage"]
    assert stream["report"]["filled"], stream["report"]  # from codex's last agent_message
    assert stream["report"]["text"].rstrip().endswith(
        f"REPORT {name}: added src/{name}/feature.py; run_tests.py passed."), stream["report"]
    tip = f"wtr/{outcome.status['run']}/{name}"
    assert set(outcome.git("ls-tree", "-r", "--name-only", tip).split()) == {
        "README.md", "run_tests.py", "src/common.py", f"src/{name}/feature.py"}
    state = next(outcome.ws.repo.glob(f".git/worktree-runner/runs/*/streams/{name}"))
    sandboxed = outcome.variant == "sandbox"  # its home in the stream's folder, HOME read-only
    assert (state / "codex-home" / "sessions").is_dir() == sandboxed, outcome.describe()
    worktree = Path(stream["worktree"]) if stream.get("worktree") else None
    if worktree is not None and worktree.is_dir():
        assert git(worktree, "status", "--porcelain", "--ignored") == "", outcome.describe()


def test_usage_and_final_message_from_captured_output() -> None:
    output = (SAMPLES / "codex-exec.jsonl").read_text()
    assert CODEX.usage(output) == {"input_tokens": 4 * INPUT_TOKENS,
                                   "output_tokens": 4 * OUTPUT_TOKENS,
                                   "cost_usd": None, "turns": None}
    assert CODEX.final_message(output) == (
        "REPORT alpha: added src/alpha/feature.py; run_tests.py passed.")


def test_usage_sums_turns_and_stays_unknown_when_not_said() -> None:
    turn = '{"type":"turn.completed","usage":{"input_tokens":%s,"output_tokens":%s}}'
    two = "\n".join([turn % (100, 5), "not json", turn % (50, 7)])
    assert CODEX.usage(two) == {"input_tokens": 150, "output_tokens": 12, "cost_usd": None,
                                "turns": None}
    assert CODEX.usage(turn % ('"many"', 5)) == {"input_tokens": None, "output_tokens": 5,
                                                 "cost_usd": None, "turns": None}
    failed = '{"type":"turn.failed","error":{"message":"stream disconnected"}}'
    assert CODEX.usage(failed) is None
    assert CODEX.final_message(failed) is None
    assert CODEX.usage("codex crashed\n") is None


def test_the_last_agent_message_is_the_final_one() -> None:
    said = '{"type":"item.completed","item":{"id":"i","type":"agent_message","text":"%s"}}'
    other = '{"type":"item.completed","item":{"id":"j","type":"reasoning","text":"hmm"}}'
    output = "\n".join([said % "I look first.", other, said % "Done: all green.", other])
    assert CODEX.final_message(output) == "Done: all green."


def test_under_the_sandbox_its_home_is_in_the_state_folder_without_the_login(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user_home = tmp_path / "user-codex"
    user_home.mkdir()
    (user_home / "config.toml").write_text('model_provider = "gateway"\n')
    (user_home / "auth.json").write_text('{"tokens": "secret"}')
    monkeypatch.setenv("CODEX_HOME", str(user_home))
    facts = StreamFacts(stream="alpha", worktree=tmp_path / "wt", state_dir=tmp_path / "st",
                        git_dir=tmp_path / "g", git_common_dir=tmp_path / "c", scope=(),
                        wtr_bin=tmp_path / "bin", run_state_dir=tmp_path,
                        locks_dir=tmp_path / "locks")
    plain = CODEX.launch(facts)
    assert (plain.argv, dict(plain.env), dict(plain.files)) == (CODEX.argv, {}, {})
    sandboxed = CODEX.launch(dataclasses.replace(facts, sandbox=True))
    assert sandboxed.env == {"CODEX_HOME": str(facts.state_dir / "codex-home")}
    assert sandboxed.files == {"codex-home/config.toml": 'model_provider = "gateway"\n'}


def test_a_command_codex_refuses_is_reported_from_its_log() -> None:
    output = (SAMPLES / "codex-refused.log").read_text()
    assert CODEX.denials(output) == [
        "codex refused `/bin/bash -c 'rm -f nothing.txt'`: rm -f style commands are not "
        "permitted. Use a safer approach"]
    assert CODEX.denials((SAMPLES / "codex-exec.jsonl").read_text()) == []


def test_the_real_cli_refuses_rm_f_and_the_preset_says_so(tmp_path: Path) -> None:
    """Codex refuses ``rm -f`` whatever the approvals, and its --json output shows no trace
    of it: the refusal is found in what it logs."""
    turns = [{"shell": "rm -f src/none.txt"}, {"text": "Removed it."}]
    done, server, _ = _run_codex(tmp_path, turns, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not permitted" in server.sent_back()
    assert "rm -f" not in done.stdout
    denied = CODEX.denials(done.stdout + done.stderr)  # the command in the user's shell
    assert len(denied) == 1 and "-c 'rm -f src/none.txt'`: rm -f style" in denied[0], denied


def test_removed_approval_flags_are_refused_before_the_run() -> None:
    for flag in ("--full-auto", "-a", "--ask-for-approval"):
        assert flag in CODEX.refused, flag


SHIM = "#!/bin/sh\necho \"WTR SHIM REACHED: $*\"\n"


@pytest.mark.parametrize("argv", [
    pytest.param(OLD_ARGV, marks=pytest.mark.xfail(strict=True, reason="--full-auto is gone")),
    None], ids=["old-argv", "preset"])
def test_commits_in_a_linked_worktree_with_wtr_on_path(tmp_path: Path,
                                                       argv: tuple[str, ...] | None) -> None:
    """The old argv exits 2 at once (``--full-auto`` no longer exists). The preset's runs
    the agent's commands in a linked worktree: ``wtr`` found (no login shell resetting
    PATH), its commit on the stream's branch, nothing left behind."""
    done, server, ws = _run_codex(tmp_path, CODEX_TURNS, argv)
    assert done.returncode == 0, done.stdout + done.stderr
    sent = server.sent_back()
    assert "WTR SHIM REACHED: progress starting alpha" in sent, sent[-2000:]
    assert "TESTS PASSED: alpha" in sent, sent[-2000:]
    assert git(ws["worktree"], "log", "-1", "--format=%s") == "alpha: add feature"
    assert git(ws["worktree"], "status", "--porcelain", "--ignored") == ""
    assert git(ws["repo"], "rev-parse", "HEAD") == ws["initial"]  # main untouched
    assert CODEX.final_message(done.stdout) == (
        "REPORT alpha: added src/alpha/feature.py; run_tests.py passed.")


CODEX_TURNS = [
    {"shell": 'wtr progress "starting {stream}" --percent 10'},
    {"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
              "> src/{stream}/feature.py && python3 run_tests.py {stream}"},
    {"shell": 'git add src/{stream} && git commit -q -m "{stream}: add feature"'},
    {"text": "REPORT {stream}: added src/{stream}/feature.py; run_tests.py passed."},
]
RUN_TESTS = ('import pathlib, sys\nname = sys.argv[1]\n'
             'ok = "def value" in (pathlib.Path("src") / name / "feature.py").read_text()\n'
             'print(("TESTS PASSED: " if ok else "TESTS FAILED: ") + name)\n')


def _run_codex(tmp_path: Path, turns: list[dict[str, Any]], argv: tuple[str, ...] | None
               ) -> tuple[subprocess.CompletedProcess[str], ModelServer, dict[str, Any]]:
    """codex started as the runner starts it, in a linked worktree of a fresh repository,
    against the scripted server; ``argv`` replaces the preset's."""
    bin_dir = cli_bin_dir("codex")
    home, shim = tmp_path / "home", tmp_path / "bin"
    for folder in (home, shim):
        folder.mkdir()
    (shim / "wtr").write_text(SHIM)
    (shim / "wtr").chmod(0o755)
    facts = linked_stream(tmp_path, {"run_tests.py": RUN_TESTS}, wtr_bin=shim)
    repo, worktree, state = tmp_path / "repo", facts.worktree, facts.state_dir
    launch = CODEX.launch(facts)
    prompt = (f"# Task: stream 'alpha' of plan 'p'\n\nAdd src/alpha/feature.py.\n\n## Rules\n"
              f"- You work in the git worktree {worktree}, on branch wtr/p-1/alpha.\n")
    values = {"prompt": prompt, "prompt_file": str(state / "prompt.md"), "stream": "alpha",
              "worktree": str(worktree), "branch": "wtr/p-1/alpha"}
    assert set(values) == set(PLACEHOLDERS)
    command = render_command(list(argv or launch.argv), values)
    initial = git(repo, "rev-parse", "main")
    with ModelServer(Script(turns)) as server:
        env = {"PATH": f"{shim}:{bin_dir}:/usr/bin:/bin", "HOME": str(home),
               "PWD": str(worktree), **IDENTITY, **gateway(server.url, home), **launch.env}
        done = subprocess.run(command, cwd=worktree, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
    return done, server, {"repo": repo, "worktree": worktree, "initial": initial}
