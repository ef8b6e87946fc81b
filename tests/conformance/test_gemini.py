"""The gemini preset against the real, pinned Gemini CLI, through ``wtr run``.

Gemini is pointed at the scripted server as a user points it at a gateway:
``GOOGLE_GEMINI_BASE_URL`` and a key, with API-key auth chosen in ``~/.gemini/settings.json``
(0.61.0 refuses the "gateway" auth it would pick from the URL alone in headless mode) and
its usage statistics to Google off there. Checked beyond the standard scenario: the usage
its ``result`` line gives (every model request counted, cost and turns unknown), the report
from its final message, its session records kept in ``~/.gemini`` (under the sandbox: in
the stream's own gemini home, a real HOME being read-only there) and nothing left in the
worktree; and that the old argv stops at the folder-trust check in a fresh worktree.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conformance.harness import VARIANTS, Outcome, cli_bin_dir, git, run_conformance
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.gitrepo import IDENTITY
from worktree_runner.presets import StreamFacts
from worktree_runner.presets.gemini import GEMINI

SAMPLES = Path(__file__).parent / "samples"
OLD_ARGV = ("gemini", "--yolo", "-p", "{prompt}")  # before the preset knew gemini
NOT_TRUSTED = 55


def gateway(url: str, home: Path) -> dict[str, str]:
    """A user's gateway set-up: its URL and key; API-key auth and no usage statistics."""
    (home / ".gemini").mkdir(exist_ok=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False}}))
    return {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": "sk-test"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_gemini_conformance(variant: str) -> None:
    outcome = run_conformance("gemini", variant, gateway)
    outcome.assert_standard()
    _assert_usage(outcome)
    for name in ("alpha", "beta"):
        _assert_gemini_stream(outcome, name)


def _model_requests(outcome: Outcome) -> int:
    return sum(1 for entry in outcome.server.requests
               if entry["protocol"] == "gemini"
               and entry["path"].lower().endswith("generatecontent"))


def _assert_usage(outcome: Outcome) -> None:
    """Each answer of the server says INPUT_TOKENS/OUTPUT_TOKENS: the streams' usage adds
    up to every model request, the routing ones included; cost and turns unknown."""
    usages = [outcome.stream(name)["usage"] for name in ("alpha", "beta")]
    requests = _model_requests(outcome)
    assert sum(u["input_tokens"] for u in usages) == requests * INPUT_TOKENS, usages
    assert sum(u["output_tokens"] for u in usages) == requests * OUTPUT_TOKENS, usages
    assert all(u["cost_usd"] is None and u["turns"] is None for u in usages), usages
    assert {e["protocol"] for e in outcome.server.requests} == {"gemini"}, outcome.describe()


def _assert_gemini_stream(outcome: Outcome, name: str) -> None:
    stream = outcome.stream(name)
    assert stream["usage"]["input_tokens"] >= 6 * INPUT_TOKENS, stream["usage"]
    tip = f"wtr/{outcome.status['run']}/{name}"
    assert set(outcome.git("ls-tree", "-r", "--name-only", tip).split()) == {
        "README.md", "run_tests.py", "src/common.py", f"src/{name}/feature.py"}
    home = outcome.ws.home
    if outcome.variant == "sandbox":  # HOME is read-only: its own, in the stream's folder
        assert not (home / ".gemini" / "projects.json").exists()
        home = next(outcome.ws.repo.glob(f".git/worktree-runner/runs/*/streams/{name}"))
        home = home / "gemini-home"
    chats = list((home / ".gemini" / "tmp").glob(f"*{name}*/chats/session-*"))
    assert chats, f"no session record of {name} in {home}/.gemini/tmp"


def test_a_sandboxed_agent_gets_its_own_home_with_the_users_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, state = tmp_path / "home", tmp_path / "state"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text('{"model": {"name": "x"}}')
    (home / ".gemini" / "oauth_creds.json").write_text("{}")
    monkeypatch.setenv("HOME", str(home))
    plain = GEMINI.launch(_facts(tmp_path, state))
    assert plain.env == {} and plain.files == {}
    launch = GEMINI.launch(replace(_facts(tmp_path, state), sandbox=True))
    assert launch.argv == GEMINI.argv
    assert launch.env == {"GEMINI_CLI_HOME": str(state / "gemini-home")}
    assert launch.files == {"gemini-home/.gemini/settings.json": '{"model": {"name": "x"}}'}


def test_usage_and_final_message_from_captured_output() -> None:
    output = (SAMPLES / "gemini-stream-json.log").read_text()
    assert GEMINI.usage(output) == {"input_tokens": 6000, "output_tokens": 170,
                                    "cost_usd": None, "turns": None}
    assert GEMINI.final_message(output) == (
        "REPORT alpha: added src/alpha/feature.py; run_tests.py passed.")


def test_final_message_joins_its_chunks_after_the_last_tool_call() -> None:
    lines = [{"type": "message", "role": "assistant", "content": "I will run it.",
              "delta": True},
             {"type": "tool_use", "tool_name": "run_shell_command", "tool_id": "1",
              "parameters": {"command": "true"}},
             {"type": "tool_result", "tool_id": "1", "status": "success", "output": ""},
             {"type": "message", "role": "assistant", "content": "All ", "delta": True},
             {"type": "message", "role": "assistant", "content": "done.", "delta": True},
             {"type": "result", "status": "success", "stats": {"tool_calls": 1}}]
    output = "\n".join(json.dumps(line) for line in lines)
    assert GEMINI.final_message(output) == "All done."
    assert GEMINI.usage(output) == {"input_tokens": None, "output_tokens": None,
                                    "cost_usd": None, "turns": None}


def test_nothing_said_is_none() -> None:
    assert GEMINI.usage("Error: quota exceeded\n") is None
    assert GEMINI.final_message("Error: quota exceeded\n") is None
    tool_last = json.dumps({"type": "tool_use", "tool_name": "x", "parameters": {}})
    assert GEMINI.final_message(tool_last) is None


@pytest.mark.parametrize("argv", [
    pytest.param(OLD_ARGV, marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                              reason="folder not trusted")),
    None], ids=["old-argv", "preset"])
def test_a_fresh_worktree_is_not_refused(tmp_path: Path, argv: tuple[str, ...] | None
                                         ) -> None:
    """The old argv exits 55 in a folder gemini has not seen ("not running in a trusted
    directory"); the preset's runs the agent there and its shell command."""
    bin_dir = cli_bin_dir("gemini")
    repo, state, home = tmp_path / "repo", tmp_path / "state", tmp_path / "home"
    for folder in (repo, state, home):
        folder.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "initial")
    turns = [{"shell": "echo ran > made.txt"}, {"text": "REPORT x: done."}]
    with ModelServer(Script(turns)) as server:
        launch = GEMINI.launch(_facts(repo, state))
        template = argv or (*launch.argv,)
        prompt = f"You work in the git worktree {repo}, on branch main."
        command = [str(bin_dir / "gemini"), *(a.replace("{prompt}", prompt)
                                              for a in template[1:])]
        env = {**IDENTITY, "HOME": str(home), "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
               "PWD": str(repo), "TMPDIR": "/tmp", **gateway(server.url, home),
               **launch.env}
        done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)
    assert done.returncode != NOT_TRUSTED, done.stderr
    assert done.returncode == 0, done.stderr
    assert (repo / "made.txt").read_text() == "ran\n"
    assert git(repo, "status", "--porcelain") == "?? made.txt"
    assert GEMINI.final_message(done.stdout) == "REPORT x: done."


def _facts(repo: Path, state: Path) -> StreamFacts:
    return StreamFacts(stream="x", worktree=repo, state_dir=state, git_dir=repo / ".git",
                       git_common_dir=repo / ".git", scope=("**",), wtr_bin=Path("/usr/bin"),
                       run_state_dir=state, locks_dir=state / "locks",
                       as_root=os.geteuid() == 0)
