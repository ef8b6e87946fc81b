"""``wtr plan GOAL`` with the real Claude Code and codex (pinned) against scripted servers.

The scripted model writes a draft with its shell tool each round and then stops. Round 1's
draft has an ownership overlap and a missing dependency; wtr's feedback must reach the
model in the *resumed* session (the request holds round 1's prompt and draft as earlier
turns), and the draft it writes then is clean. A model that keeps writing the bad draft
is stopped after --rounds, exit 1, its problems listed.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance.harness import cli_bin_dir
from tests.conformance.modelserver import ModelServer, Script
from tests.conformance.test_claude import gateway
from tests.conformance.test_codex import gateway as codex_gateway
from tests.gitrepo import Repo, run_wtr
from tests.test_architect import BAD, GOOD, coupled_project

GOAL = "Add orders to the API and the command line"
DRAFT_FILE = re.compile(r"Write the whole plan, as YAML, to this file and nowhere else: (\S+)")
FEEDBACK = re.compile(r"in your draft \(round (\d+) of \d+\)")
GATEWAYS = {"claude": gateway, "codex": codex_gateway}
WRITES = "<<'DRAFT'"  # in the scripted model's shell command, and nowhere else


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wtr plan's temporary folder (kept when no draft comes clean) inside the test's."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


class DraftingScript(Script):
    """Round r (the number of wtr's feedback messages in the conversation) writes
    ``drafts[r]`` (the last one past the end) with the shell tool, then says it is done
    (once a write follows the last feedback: in a resumed session or a fresh one alike).
    Every request is noted: which round, and what of the earlier rounds it carries."""

    def __init__(self, drafts: list[dict[str, Any]]) -> None:
        super().__init__([{"text": "Draft written."}])
        self.drafts = [yaml.safe_dump(d, sort_keys=False) for d in drafts]
        self.seen: list[dict[str, Any]] = []

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        rounds = len(set(FEEDBACK.findall(request_text)))
        self.seen.append({"round": rounds + 1, "goal": GOAL in request_text,
                          "round_1_draft": "the API module and its tests" in request_text,
                          "text": request_text})
        last_feedback = max((m.start() for m in FEEDBACK.finditer(request_text)), default=0)
        if request_text.rfind(WRITES) > last_feedback:  # (this round's draft is written)
            return {"text": f"Draft {rounds + 1} written."}
        match = DRAFT_FILE.search(request_text)
        assert match, "the first prompt names the draft file"
        draft = self.drafts[min(rounds, len(self.drafts) - 1)]
        return {"shell": f"cat > {shlex.quote(match.group(1))} {WRITES}\n{draft}DRAFT"}


def _plan(tmp_path: Path, script: DraftingScript, *args: str,
          preset: str = "claude") -> tuple[Repo, Any]:
    bin_dir = cli_bin_dir(preset)
    repo = coupled_project(tmp_path / "repo")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with ModelServer(script) as server:
        env = {**GATEWAYS[preset](server.url, home), "HOME": str(home),
               "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        result = run_wtr("plan", GOAL, "--agent", preset, "--json", *args, cwd=repo.path,
                         env=env, timeout=500)
    return repo, result


def test_claude_fixes_an_overlap_and_a_missing_dependency_in_the_resumed_session(
        tmp_path: Path) -> None:
    script = DraftingScript([BAD, GOOD])
    repo, result = _plan(tmp_path, script)
    assert result.returncode == 0, (result.stdout, result.stderr)
    doc = result.json()
    first, second = doc["rounds"]
    assert any("'README.md' is owned by both 'api' and 'cli'" in p["message"]
               for p in first["problems"])
    assert any("changed in the same commits as files of cli" in p["message"]
               for p in first["problems"])
    assert second["resumed"] is True and second["problems"] == []
    resumed = [s for s in script.seen if s["round"] == 2]
    assert resumed, "no request carried wtr's feedback"
    # The same session: the request that carries the feedback holds round 1's prompt (the
    # goal) and round 1's draft as earlier turns.
    assert all(s["goal"] and s["round_1_draft"] for s in resumed)
    assert "'README.md' is owned by both 'api' and 'cli'" in resumed[0]["text"]
    assert yaml.safe_load((repo.path / "worktree-plan.yaml").read_text()) == GOOD
    assert repo.git("status", "--porcelain") == "?? worktree-plan.yaml"
    assert repo.git("worktree", "list").count("\n") == 0
    assert doc["repository_changed"] == []


def test_claude_drafts_that_never_validate_stop_after_the_rounds(tmp_path: Path) -> None:
    script = DraftingScript([BAD])
    repo, result = _plan(tmp_path, script, "--rounds", "2")
    assert result.returncode == 1, (result.stdout, result.stderr)
    doc = result.json()
    assert [r["resumed"] for r in doc["rounds"]] == [False, True]
    assert any("'README.md' is owned by both 'api' and 'cli'" in p["message"]
               for p in doc["problems"])
    assert doc["written"] is False
    assert not (repo.path / "worktree-plan.yaml").exists()
    assert repo.git("status", "--porcelain") == ""
    assert {s["round"] for s in script.seen} == {1, 2}


def test_codex_fixes_its_draft_from_the_feedback(tmp_path: Path) -> None:
    # Whether codex continues its session or starts afresh with the earlier rounds in its
    # prompt is its preset's to say; either way round 2 reads the problems and comes clean.
    script = DraftingScript([BAD, GOOD])
    repo, result = _plan(tmp_path, script, preset="codex")
    assert result.returncode == 0, (result.stdout, result.stderr)
    first, second = result.json()["rounds"]
    assert any("'README.md' is owned by both 'api' and 'cli'" in p["message"]
               for p in first["problems"])
    assert second["problems"] == []
    carried = [s for s in script.seen if s["round"] == 2]
    assert carried and all(s["goal"] for s in carried)
    assert yaml.safe_load((repo.path / "worktree-plan.yaml").read_text()) == GOOD
    assert repo.git("status", "--porcelain") == "?? worktree-plan.yaml"
    assert repo.git("worktree", "list").count("\n") == 0
