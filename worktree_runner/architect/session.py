"""The drafting agent's session: started once, then continued with each round's feedback.

A preset agent starts as the preset starts a stream's agent (its unattended flags; for
claude, the hook that refuses edits outside its scope: here nothing in the scratch
checkout, only its own folder, where the draft goes). From round 2 on, a preset that can
continue a session (``resume()``) gets the feedback in that same session; one that cannot
starts afresh with the first prompt and every earlier round's feedback. A ``--command``
agent is started anew each round with a new prompt file and the problems in
``WTR_FEEDBACK``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from worktree_runner import git, procs, statefs
from worktree_runner.presets import PRESETS, Launch, StreamFacts
from worktree_runner.run.prompt import render_command

STREAM = "architect"  # the name the agent is started under ({stream}, WTR_STREAM)
POLL_SECONDS = 0.5
TIMED_OUT = -9  # the exit code of a round stopped at the timeout


@dataclass(frozen=True)
class Place:
    """The temporary folder of one ``wtr plan``: the scratch checkout, the agent's own
    folder (its draft, its preset's files), prompts and logs."""

    root: Path
    draft_name: str

    @property
    def worktree(self) -> Path:
        return self.root / "checkout"

    @property
    def agent_dir(self) -> Path:
        return self.root / "agent"

    @property
    def draft(self) -> Path:
        return self.agent_dir / self.draft_name

    @property
    def evidence(self) -> Path:
        return self.root / "evidence.md"

    def log(self, round_number: int) -> Path:
        return self.root / f"round-{round_number}.log"

    def prompt(self, round_number: int) -> Path:
        return self.root / f"prompt-{round_number}.md"


@dataclass(frozen=True)
class Watching:
    """What the command line shows while the agent works."""

    round_number: int
    seconds: float
    log: Path
    phase: str = "drafting"  # then "checking", then "checked"
    problems: int = 0  # once checked


Watch = Callable[[Watching], None]


@dataclass(frozen=True)
class Turn:
    exit_code: int  # TIMED_OUT when it ran past the timeout
    resumed: bool  # continued the previous round's session
    final_message: str | None


class Session:
    def __init__(self, repo: git.Repository, place: Place, preset: str | None,
                 command: str | None, timeout: float, watch: Watch) -> None:
        self.repo, self.place, self.timeout, self.watch = repo, place, timeout, watch
        self.preset = PRESETS[preset] if preset else None
        self.command = command
        self.session_id: str | None = None
        self.bin_dir = procs.write_wtr_shim(place.root / "bin")  # (wtr check, on its PATH)

    def turn(self, round_number: int, fresh: str, feedback: str) -> Turn:
        """One round: ``feedback`` (the last round's problems) continues the session when
        it can; a new session reads ``fresh`` (the first prompt, and in later rounds what
        every earlier round found)."""
        launch, resumed = self._launch()
        text = feedback if resumed else fresh
        prompt_file = self.place.prompt(round_number)
        statefs.write_text(prompt_file, text, 0o600)
        values = {"prompt_file": str(prompt_file), "prompt": text, "stream": STREAM,
                  "worktree": str(self.place.worktree), "branch": ""}
        template: tuple[str, ...] | str = launch.argv if launch else self.command or ""
        env = procs.child_env({
            **(launch.env if launch else {}), "WTR_STREAM": STREAM,
            "WTR_WORKTREE": str(self.place.worktree), "WTR_PROMPT_FILE": str(prompt_file),
            "WTR_PLAN_DRAFT": str(self.place.draft), "WTR_EVIDENCE": str(self.place.evidence),
            "WTR_FEEDBACK": feedback, "WTR_ROUND": str(round_number)}, self.bin_dir)
        log = self.place.log(round_number)
        code = self._run(render_command(template, values), env, log, round_number)
        output = _read(log)
        final = None
        if self.preset is not None:
            self.session_id = self.preset.session(output) or self.session_id
            final = self.preset.final_message(output)
        return Turn(code, resumed, final)

    def _launch(self) -> tuple[Launch | None, bool]:
        if self.preset is None:
            return None, False
        facts = self._facts()
        resumed = self.preset.resume(facts, self.session_id) if self.session_id else None
        launch = resumed or self.preset.launch(facts)
        for name, text in launch.files.items():
            statefs.write_text(self.place.agent_dir / name, text, 0o600,
                               below=self.place.agent_dir)
        return launch, resumed is not None

    def _facts(self) -> StreamFacts:
        root = self.place.root
        return StreamFacts(
            stream=STREAM, worktree=self.place.worktree, state_dir=self.place.agent_dir,
            git_dir=git.git_dir_of(self.place.worktree), git_common_dir=self.repo.common_dir,
            scope=(), wtr_bin=self.bin_dir, run_state_dir=root,
            locks_dir=root / "locks", as_root=os.geteuid() == 0)

    def _run(self, argv: list[str] | str, env: dict[str, str], log: Path,
             round_number: int) -> int:
        process = procs.start(argv, self.place.worktree, env, log)
        started = time.monotonic()
        self.watch(Watching(round_number, 0.0, log))
        try:
            while True:
                try:
                    return process.wait(timeout=POLL_SECONDS)
                except subprocess.TimeoutExpired:
                    seconds = time.monotonic() - started
                    if seconds > self.timeout:
                        procs.stop_group(process.pid, process)
                        return TIMED_OUT
                    self.watch(Watching(round_number, seconds, log))
        finally:
            if process.poll() is None:  # (interrupted)
                procs.stop_group(process.pid, process)
            procs.reap_group(process.pid, process)


def _read(log: Path) -> str:
    try:
        return statefs.read_text(log)  # (in a folder the agent can write)
    except OSError:
        return ""
