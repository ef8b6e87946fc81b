"""The opencode preset against the real opencode (pinned) and a scripted Chat Completions
server, configured as a user configures a gateway: a provider in ~/.config/opencode.

Through ``wtr run`` in every variant (``harness.VARIANTS``); then the CLI alone, started
the way the preset starts it and the way the old preset did, for what the issue found
broken: opencode works in ``$PWD``, not in its cwd, so with the caller's ``PWD`` it wrote
(and committed) outside the stream's worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harness import (
    STREAMS,
    VARIANTS,
    cli_bin_dir,
    git,
    run_conformance,
    standard_turns,
)
from tests.conformance.modelserver import INPUT_TOKENS, OUTPUT_TOKENS, ModelServer, Script
from tests.conformance.protocols.chat import PROTOCOL
from tests.gitrepo import isolated_git_env
from worktree_runner.presets import PRESETS, StreamFacts
from worktree_runner.presets.opencode import CONFIG_FILE, DATA_DIR, DATABASE
from worktree_runner.sandbox import Layout, wrap

OPENCODE = PRESETS["opencode"]
SAMPLES = Path(__file__).parent / "samples"
PROVIDER = "gateway"
MODEL = "scripted"
CONFIG_GITIGNORE = "node_modules\npackage.json\npackage-lock.json\nbun.lock\n.gitignore"
OLD_ARGV = ("opencode", "run", "{prompt}")  # the preset before it was a table of facts


def gateway_config(url: str) -> dict[str, Any]:
    provider = {"npm": "@ai-sdk/openai-compatible", "name": "Gateway",
                "options": {"baseURL": f"{url}/v1", "apiKey": "sk-test"},
                "models": {MODEL: {"name": "Scripted"}}}
    return {"$schema": "https://opencode.ai/config.json", "provider": {PROVIDER: provider},
            "model": f"{PROVIDER}/{MODEL}", "small_model": f"{PROVIDER}/{MODEL}"}


def gateway(url: str, home: Path) -> dict[str, str]:
    """opencode pointed at a gateway as a user does it: an OpenAI-compatible provider and
    its model in the user's config. The config folder holds what opencode writes there on
    its first start (``.gitignore``; ``@opencode-ai/plugin`` from npm), as for a user who
    ran it once."""
    folder = home / ".config" / "opencode"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "opencode.json").write_text(json.dumps(gateway_config(url), indent=1))
    (folder / "node_modules").mkdir(exist_ok=True)
    lock = {"packages": {"": {"dependencies": {"@opencode-ai/plugin": OPENCODE.pinned}}}}
    (folder / "package-lock.json").write_text(json.dumps(lock))
    (folder / ".gitignore").write_text(CONFIG_GITIGNORE)
    return {}


# -- through wtr run ---------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_opencode_does_the_standard_work_through_wtr_run(variant: str) -> None:
    outcome = run_conformance("opencode", variant, gateway)
    outcome.assert_standard()
    replies = len(standard_turns())  # one model reply a turn: 5 tool calls, 1 final text
    for name in STREAMS:
        usage = outcome.stream(name)["usage"]
        assert usage == {"input_tokens": replies * INPUT_TOKENS,
                         "output_tokens": replies * OUTPUT_TOKENS,
                         "cost_usd": None, "turns": replies}, usage
        assert OPENCODE.denials(outcome.log(name)) == []
    # its sessions, log and locks: in HOME, or in the streams' folders under the sandbox
    assert (outcome.ws.home / ".local" / "share" / "opencode").exists() == (
        variant != "sandbox")


# -- the CLI alone, started as the preset starts it ----------------------------------------

COMMIT_TURNS = [
    {"shell": "mkdir -p src/alpha && echo 'x = 1' > src/alpha/x.py && python3 -c 'print(6*7)'"},
    {"shell": "git add src/alpha && git commit -q -m 'alpha: x' && echo COMMITTED"},
    {"text": "Done: committed src/alpha/x.py."},
]


@dataclass
class Alone:
    done: subprocess.CompletedProcess[str]
    server: ModelServer
    facts: StreamFacts
    decoy: Path

    def subjects(self, repo: Path) -> list[str]:
        return git(repo, "log", "--format=%s").splitlines()


def _facts(tmp_path: Path, **more: Any) -> StreamFacts:
    worktree, state = tmp_path / "wt", tmp_path / "state"
    state.mkdir(parents=True)
    wtr_bin = Path(sys.executable).parent
    return StreamFacts("alpha", worktree, state, worktree / ".git", worktree / ".git",
                       ("src/alpha/**",), wtr_bin, state, state / "locks", **more)


def _repo(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "initial")):
        git(path, *args)


def _opencode(tmp_path: Path, argv: tuple[str, ...], env: dict[str, str], facts: StreamFacts,
              turns: list[dict[str, Any]], pwd: str = "worktree", wrap: Any = None,
              home: Path | None = None, files: dict[str, str] | None = None) -> Alone:
    """opencode run from the worktree (cwd) with ``PWD`` = the worktree or a decoy checkout."""
    home = home or tmp_path / "home"
    base = {**os.environ, **isolated_git_env(home)}
    base = {k: v for k, v in base.items() if not k.startswith(("XDG_", "OPENCODE_"))}
    base["XDG_CONFIG_HOME"] = str(home / ".config")
    _repo(facts.worktree, {"README.md": "# repo\n", **(files or {})})
    decoy = tmp_path / "decoy"
    _repo(decoy, {"README.md": "the user's other checkout\n"})
    prompt = (f"# Task: stream 'alpha' of plan 'p'\n\n- You work in the git worktree "
              f"{facts.worktree}, on branch main. Stay in it.\n")
    bin_dir = cli_bin_dir("opencode")
    argv = tuple(a.replace("{prompt}", prompt).replace("{worktree}", str(facts.worktree))
                 .replace("{stream}", facts.stream) for a in argv)
    with ModelServer(Script(turns), [PROTOCOL]) as server:
        gateway(server.url, home)
        run_env = {**base, **env, "PATH": os.pathsep.join(
                       [str(bin_dir), str(facts.wtr_bin), os.environ["PATH"]]),
                   "PWD": str(facts.worktree if pwd == "worktree" else decoy)}
        done = subprocess.run(wrap(argv) if wrap else argv, cwd=facts.worktree, env=run_env,
                              capture_output=True, text=True, timeout=240,
                              stdin=subprocess.DEVNULL, check=False)
    return Alone(done, server, facts, decoy)


def _launched(tmp_path: Path, turns: list[dict[str, Any]], **kw: Any) -> Alone:
    facts = _facts(tmp_path)
    launch = OPENCODE.launch(facts)
    for name, text in launch.files.items():
        (facts.state_dir / name).write_text(text)
    return _opencode(tmp_path, launch.argv, dict(launch.env), facts, turns, **kw)


def test_with_the_callers_pwd_elsewhere_the_preset_works_in_the_worktree(
        tmp_path: Path) -> None:
    # The old preset (`opencode run {prompt}`) followed PWD: see the next test.
    alone = _launched(tmp_path, COMMIT_TURNS, pwd="decoy")
    assert alone.done.returncode == 0, alone.done.stderr
    assert "COMMITTED" in alone.server.sent_back() and "42" in alone.server.sent_back()
    assert alone.subjects(alone.facts.worktree)[0] == "alpha: x"
    assert alone.subjects(alone.decoy) == ["initial"]
    assert git(alone.decoy, "status", "--porcelain", "--ignored") == ""


def test_the_old_argv_followed_pwd_and_committed_in_the_callers_checkout(
        tmp_path: Path) -> None:
    # What an agent the runner started with the caller's PWD did (wtr now gives every
    # child PWD = its worktree, and the preset names the worktree with --dir as well).
    alone = _opencode(tmp_path, OLD_ARGV, {}, _facts(tmp_path), COMMIT_TURNS, pwd="decoy")
    assert alone.done.returncode == 0, alone.done.stderr
    assert alone.subjects(alone.decoy)[0] == "alpha: x"
    assert alone.subjects(alone.facts.worktree) == ["initial"]


def test_nothing_is_left_in_the_worktree_even_beside_a_dot_opencode_folder(
        tmp_path: Path) -> None:
    # Loading a .opencode/ folder, opencode writes .opencode/.gitignore (which ignores
    # itself) and installs @opencode-ai/plugin there; the preset does not load it.
    files = {".opencode/command/hi.md": "hello\n", "AGENTS.md": "Run make check first.\n"}
    alone = _launched(tmp_path, COMMIT_TURNS, files=files)
    assert alone.done.returncode == 0, alone.done.stderr
    assert "Run make check first." in alone.server.sent_back()  # the instructions still are
    worktree = alone.facts.worktree
    assert git(worktree, "status", "--porcelain", "--ignored") == ""
    found = sorted(str(p.relative_to(worktree)) for p in (worktree / ".opencode").rglob("*"))
    assert found == [".opencode/command", ".opencode/command/hi.md"]
    assert {p.name for p in alone.facts.state_dir.iterdir()} <= {
        CONFIG_FILE, DATABASE, f"{DATABASE}-wal", f"{DATABASE}-shm"}


def test_under_wtrs_sandbox_its_data_goes_to_the_streams_folder() -> None:
    # HOME is read-only there: opencode, which writes its log, database and locks under
    # ~/.local, stopped at once ("FileSystem.open (.../opencode/log/opencode.log)").
    root = Path(tempfile.mkdtemp(prefix="wtr-opencode-", dir="/var/tmp"))  # /tmp is hidden
    try:
        facts = replace(_facts(root), sandbox=True)
        launch = OPENCODE.launch(facts)
        for name, text in launch.files.items():
            (facts.state_dir / name).write_text(text)
        layout = Layout(facts.worktree, facts.worktree / ".git", facts.worktree / ".git",
                        "refs/heads/main", facts.state_dir, facts.locks_dir, (), ())
        alone = _opencode(root, launch.argv, dict(launch.env), facts, COMMIT_TURNS,
                          wrap=lambda argv: wrap(list(argv), layout))
        assert alone.done.returncode == 0, alone.done.stderr
        assert alone.subjects(facts.worktree)[0] == "alpha: x"
        assert (facts.state_dir / DATA_DIR / "opencode" / "log").is_dir()
        assert not (root / "home" / ".local").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the preset's facts and parsers ---------------------------------------------------------


def test_the_run_config_goes_to_the_streams_folder_and_the_worktree_is_named(
        tmp_path: Path) -> None:
    facts = _facts(tmp_path)
    launch = OPENCODE.launch(facts)
    argv = launch.argv
    assert argv[:2] == ("opencode", "run") and argv[-1] == "{prompt}"
    assert argv[argv.index("--dir") + 1] == "{worktree}"
    assert argv[argv.index("--format") + 1] == "json"
    assert launch.env["OPENCODE_CONFIG"] == str(facts.state_dir / CONFIG_FILE)
    assert launch.env["OPENCODE_DB"] == str(facts.state_dir / DATABASE)
    assert set(launch.files) == {CONFIG_FILE}
    config = json.loads(launch.files[CONFIG_FILE])
    assert config["permission"] == {"edit": "allow", "bash": "allow",
                                    "external_directory": "allow"}
    assert config["share"] == "disabled" and config["autoupdate"] is False
    for name in ("OPENCODE_DISABLE_AUTOUPDATE", "OPENCODE_DISABLE_MODELS_FETCH",
                 "OPENCODE_DISABLE_PROJECT_CONFIG"):
        assert launch.env[name] == "1"
    assert not any(name.startswith("XDG_") for name in launch.env)  # only under sandbox


def test_usage_final_message_and_denials_from_captured_output() -> None:
    run = (SAMPLES / "opencode-run.jsonl").read_text()
    # opencode's cost is 0 for a model it has no price for: unknown, not free
    assert OPENCODE.usage(run) == {"input_tokens": 3 * INPUT_TOKENS,
                                   "output_tokens": 3 * OUTPUT_TOKENS,
                                   "cost_usd": None, "turns": 3}
    assert OPENCODE.final_message(run) == "Done: committed src/alpha/x.py."
    assert OPENCODE.denials(run) == []
    priced = (SAMPLES / "opencode-run-priced.jsonl").read_text()  # $3 / $15 a million
    assert (OPENCODE.usage(priced) or {})["cost_usd"] == pytest.approx(3 * 0.00411)
    denied = (SAMPLES / "opencode-denied.jsonl").read_text()
    assert OPENCODE.denials(denied) == [
        "bash: git add src/alpha && git commit -q -m 'alpha: x' && echo COMMITTED"]
    assert OPENCODE.final_message(denied) == "Done: committed src/alpha/x.py."


def test_output_without_replies_says_nothing() -> None:
    unreachable = (SAMPLES / "opencode-unreachable.jsonl").read_text()
    for output in ("", "not json\n", unreachable):
        assert OPENCODE.usage(output) is None and OPENCODE.final_message(output) is None
    partial = json.dumps({"type": "step_finish", "part": {"tokens": {"output": 5}}})
    assert OPENCODE.usage(partial) == {"input_tokens": None, "output_tokens": 5,
                                       "cost_usd": None, "turns": 1}
