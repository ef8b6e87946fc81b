"""Feedback rounds with a real CLI: a scripted model that answers each round of a session.

wtr tells a failure to the agent's session in a message holding "feedback round K of N".
``RoundScript`` answers the first prompt with round 0's turns and, from the request that
carries "feedback round K" on, with round K's; inside a round the turn is chosen by the
tool results since the round's first request (a CLI may repeat an earlier result when it
restores a session: gemini does). Whether the session was continued is seen in the
requests (``resumed_request``): the round's message beside the earlier rounds' work.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conformance.harness import cli_bin_dir, linked_stream
from tests.conformance.modelserver import ModelServer, Script, fill, placeholders
from tests.gitrepo import IDENTITY
from worktree_runner.presets import Launch, Preset
from worktree_runner.run.prompt import render_command

ROUND = re.compile(r"feedback round (\d+) of \d+")


class RoundScript(Script):
    """``starts``, when given, are the texts that begin rounds 1, 2, ... instead."""

    def __init__(self, rounds: list[list[dict[str, Any]]],
                 starts: tuple[str, ...] = ()) -> None:
        super().__init__([turn for turns in rounds for turn in turns])
        self.rounds = rounds
        self.starts = starts
        self._began: dict[tuple[str, int], int] = {}  # (stream, round) -> its tool results
        self._lock = threading.Lock()

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        found = placeholders(request_text)
        if self.starts:
            number = max((k for k, text in enumerate(self.starts, 1) if text in request_text),
                         default=0)
        else:
            number = max((int(n) for n in ROUND.findall(request_text)), default=0)
        number = min(number, len(self.rounds) - 1)
        with self._lock:
            began = self._began.setdefault((found.get("stream", ""), number), tool_results)
        turns, index = self.rounds[number], tool_results - began
        if 0 <= index < len(turns):
            chosen = turns[index]
        else:
            chosen = next((t for t in reversed(turns) if "text" in t), {"text": "Done."})
        return fill(chosen, found)


VERIFY_ROUNDS = [
    [{"shell": "mkdir -p src/{stream} && printf 'def other():\\n    return 1\\n' "
               "> src/{stream}/feature.py && echo ROUND ONE {stream}"},
     {"shell": 'git add src/{stream} && git commit -q -m "{stream}: first try"'},
     {"text": "Done, I think."}],
    [{"shell": "printf 'def value():\\n    return 42\\n' > src/{stream}/feature.py "
               "&& python3 run_tests.py {stream}"},
     {"shell": 'git commit -q -am "{stream}: add value()"'},
     {"text": "REPORT {stream}: value() added after the failed tests."}],
]

OWNERSHIP_ROUNDS = [
    [{"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
               "> src/{stream}/feature.py && echo '{stream} was here' >> README.md "
               "&& echo ROUND ONE {stream}"},
     {"shell": 'git add -A && git commit -q -m "{stream}: add feature"'},
     {"text": "Done."}],
    [{"shell": 'git checkout "$WTR_BASE_COMMIT" -- README.md '
               '&& git commit -q -m "{stream}: put README.md back"'},
     {"text": "REPORT {stream}: README.md put back."}],
]


def resumed_request(sent: list[dict[str, Any]], name: str, failure: str) -> dict[str, Any]:
    """The model request in which stream ``name``'s session goes on after ``failure`` was
    told: it carries the stream's prompt, its first round's tool output and the failure."""
    for entry in sent:
        body = entry["body"]
        if (failure in body and f"ROUND ONE {name}" in body
                and f"# Task: stream '{name}'" in body):
            return entry
    raise AssertionError(f"no request continued {name}'s session with {failure!r}")


@dataclass
class TwoRounds:
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str] | None
    session: str | None
    sent: list[dict[str, Any]]


TOLD = ("## Your work did not pass its checks (feedback round 1 of 1)\n\n"
        "verify: verify command failed (exit 1): python3 run_tests.py alpha\n")
DIRECT_ROUNDS = [[{"shell": "echo ROUND ONE {stream}"}, {"text": "First round done."}],
                 [{"shell": "echo ROUND TWO {stream}"}, {"text": "Second round done."}]]


def two_rounds(tmp_path: Path, preset: Preset,
               gateway: Callable[[str, Path], Mapping[str, str]],
               rounds: list[list[dict[str, Any]]] | None = None,
               args: tuple[str, ...] = ()) -> TwoRounds:
    """``preset``'s CLI started as the runner starts it, in a linked worktree of a fresh
    repository; then its ``resume()`` of the session the first run printed, told ``TOLD``."""
    facts = linked_stream(tmp_path, {"README.md": "# two rounds\n"})
    worktree, state, home = facts.worktree, facts.state_dir, tmp_path / "home"
    home.mkdir()
    prompt = (f"# Task: stream 'alpha' of plan 'p'\n\nSay hello.\n\n## Rules\n"
              f"- You work in the git worktree {worktree}, on branch wtr/p-1/alpha.\n")
    bin_dir = cli_bin_dir(preset.name)
    with ModelServer(RoundScript(rounds or DIRECT_ROUNDS)) as server:
        env = {"PATH": f"{bin_dir}:{Path(shutil.which('node') or '/usr/bin/node').parent}"
                       ":/usr/bin:/bin",
               "HOME": str(home), "PWD": str(worktree), **IDENTITY,
               **gateway(server.url, home)}
        first = _start(preset.launch(facts), args, state, worktree, prompt, env)
        session = preset.session(first.stdout + first.stderr)
        resumed = preset.resume(facts, session) if session else None
        second = _start(resumed, args, state, worktree, TOLD, env) if resumed else None
        with server._lock:
            sent = list(server.requests)
    return TwoRounds(first, second, session, sent)


def _start(launch: Launch, args: tuple[str, ...], state: Path, worktree: Path, prompt: str,
           env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    for name, text in launch.files.items():
        (state / name).parent.mkdir(parents=True, exist_ok=True)
        (state / name).write_text(text)
    (state / "prompt.md").write_text(prompt)
    values = {"prompt": prompt, "prompt_file": str(state / "prompt.md"), "stream": "alpha",
              "worktree": str(worktree), "branch": "wtr/p-1/alpha"}
    argv = render_command([*launch.argv, *args], values)
    return subprocess.run(argv, cwd=worktree, env={**env, **launch.env}, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=180, check=False)
