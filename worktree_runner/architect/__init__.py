"""``wtr plan GOAL``: an agent drafts the plan, ``wtr check`` holds it to the rules.

1. Check the request (goal, agent, output file) before anything is made.
2. Gather the evidence from the base (``evidence.py``) into a temporary folder, beside a
   scratch detached checkout of the base where the agent runs: it reads the repository
   there and writes its draft into its own folder, never into the repository.
3. Each round: the agent writes or fixes the draft; the draft is reviewed as ``wtr check``
   reviews a plan (``review.py``); its problems are the next round's feedback, in the same
   session when the agent's CLI can continue one (``session.py``).
4. A clean draft is written to the output file (the only file written for the user); the
   scratch checkout is removed either way, and the temporary folder too unless the
   drafts never came clean (then it holds every draft, prompt and log). The user's
   branches, HEAD and checkout are compared before and after: a change is reported.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git
from worktree_runner.architect import prompt
from worktree_runner.architect.evidence import gather
from worktree_runner.architect.review import Problem, Review, review
from worktree_runner.architect.session import TIMED_OUT, Place, Session, Watch, Watching
from worktree_runner.doctor import install_hint
from worktree_runner.errors import BadInput
from worktree_runner.plan.analysis import Analysis
from worktree_runner.plan.starter import checked_out
from worktree_runner.presets import PRESETS

DEFAULT_PRESET = "claude"
DEFAULT_ROUNDS = 3
DEFAULT_TIMEOUT = 1800.0

__all__ = ["Outcome", "Request", "Round", "Watching", "draft_plan"]


@dataclass(frozen=True)
class Request:
    goal: str
    output: Path
    preset: str | None = None  # one of PRESETS, or None with a command
    command: str | None = None  # shell text; placeholders as in a plan's agent command
    rounds: int = DEFAULT_ROUNDS
    force: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def agent(self) -> str:
        return self.command if self.command is not None else self.preset or DEFAULT_PRESET


@dataclass
class Round:
    number: int
    exit_code: int
    resumed: bool
    problems: list[Problem]
    notes: list[str]
    final_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"round": self.number, "exit_code": self.exit_code, "resumed": self.resumed,
                "problems": [p.to_json() for p in self.problems], "notes": self.notes,
                "agent_said": self.final_message}


@dataclass
class Outcome:
    request: Request
    rounds: list[Round] = field(default_factory=list)
    analysis: Analysis | None = None  # of the clean draft
    written: Path | None = None
    kept: Path | None = None  # the temporary folder, kept when no draft came clean
    changed: list[str] = field(default_factory=list)  # what the agent changed of the user's
    stopped: str | None = None  # why the rounds stopped early
    draft: str | None = None  # the last draft, as the agent wrote it

    @property
    def ok(self) -> bool:
        return self.written is not None

    @property
    def problems(self) -> list[Problem]:
        return self.rounds[-1].problems if self.rounds else []

    def to_json(self) -> dict[str, Any]:
        analysis = self.analysis.to_json() if self.analysis else None
        if analysis is not None:
            analysis["plan"] = str(self.request.output)
        return {"goal": self.request.goal, "plan": str(self.request.output),
                "written": self.ok, "agent": self.request.agent, "rounds_allowed":
                self.request.rounds, "rounds": [r.to_json() for r in self.rounds],
                "problems": [p.to_json() for p in self.problems], "stopped": self.stopped,
                "analysis": analysis, "reasons": reasons(self.analysis),
                "draft": self.draft, "drafts_kept_in": str(self.kept) if self.kept else None,
                "repository_changed": self.changed}


def reasons(analysis: Analysis | None) -> dict[str, str]:
    """Each stream's one-line reason (its description)."""
    if analysis is None:
        return {}
    return {s.name: s.description for s in analysis.plan.streams}


def check_request(request: Request, repo: git.Repository) -> tuple[str, str]:
    """Refuse what cannot work before anything is made; the base branch and commit."""
    if not request.goal.strip():
        raise BadInput("the goal is empty", hint='say what the plan is for: wtr plan "Add '
                                                 'an /orders API with its tests and docs"')
    if request.preset is not None and request.preset not in PRESETS:
        raise BadInput(f"unknown preset '{request.preset}'",
                       hint=f"use one of {', '.join(PRESETS)}, or --command")
    preset = PRESETS.get(request.agent) if request.command is None else None
    if preset is not None and shutil.which(preset.program) is None:
        raise BadInput(f"the {preset.name} preset runs '{preset.program}', which is not on "
                       f"PATH", hint=f"install it ({install_hint(preset)}), or pick another "
                                     "with --agent or --command")
    if request.command is not None and not request.command.strip():
        raise BadInput("--command is empty", hint="give the command that runs your agent")
    if request.rounds < 1:
        raise BadInput("--rounds must be at least 1")
    if request.output.exists() and not request.force:
        raise BadInput(f"{request.output} already exists",
                       hint="pass another -o FILE, or --force to replace it")
    if request.output.is_dir():
        raise BadInput(f"{request.output} is a folder", hint="give -o a file name")
    branch, _ = checked_out(repo)
    return branch, git.resolve_commit(repo, branch)  # (the user's worktree may be a linked one)


def draft_plan(repo: git.Repository, request: Request, watch: Watch) -> Outcome:
    branch, commit = check_request(request, repo)
    before = snapshot(repo)
    place = Place(Path(tempfile.mkdtemp(prefix="wtr-plan-")), request.output.name)
    outcome = Outcome(request)
    try:
        git.add_detached_worktree(repo, place.worktree, commit)
        try:
            last = _rounds(repo, request, place, branch, commit, watch, outcome)
        finally:
            git.remove_worktree(repo, place.worktree)
        outcome.changed = changes(before, snapshot(repo))
        outcome.draft = last.text if last else None
        if last is not None and last.clean and last.text is not None:
            outcome.analysis = last.analysis
            outcome.written = write_plan(request, last.text)  # (as reviewed, not re-read)
    finally:
        if outcome.ok:
            shutil.rmtree(place.root, ignore_errors=True)
        else:
            outcome.kept = place.root
    return outcome


def _rounds(repo: git.Repository, request: Request, place: Place, branch: str, commit: str,
            watch: Watch, outcome: Outcome) -> Review | None:
    evidence = gather(repo, branch, commit)
    evidence_text = prompt.evidence_text(evidence)
    place.evidence.write_text(evidence_text, encoding="utf-8")
    place.agent_dir.mkdir(mode=0o700)
    first = prompt.first_prompt(request.goal, evidence_text, place.evidence, place.draft,
                                place.worktree, repo.toplevel, request.preset or DEFAULT_PRESET)
    session = Session(repo, place, None if request.command else request.agent,
                      request.command, request.timeout, watch)
    history: list[str] = []
    feedback = ""
    found: Review | None = None
    for number in range(1, request.rounds + 1):
        fresh = prompt.fresh_start(first, history) if history else first
        turn = session.turn(number, fresh, feedback)
        watch(Watching(number, 0.0, place.log(number), "checking"))
        found = review(place.draft, repo, needs_verify=bool(evidence.commands))
        outcome.rounds.append(Round(number, turn.exit_code, turn.resumed, found.problems,
                                    found.notes, turn.final_message))
        watch(Watching(number, 0.0, place.log(number), "checked", len(found.problems)))
        if found.clean:
            return found
        if turn.exit_code != 0 and found.text is None:
            how = (f"ran past the timeout ({request.timeout:g}s)" if turn.exit_code == TIMED_OUT
                   else f"exited with code {turn.exit_code}")
            outcome.stopped = (f"the agent {how} without writing a draft; its output: "
                               f"{place.log(number)}")
            return found
        feedback = prompt.feedback(found.problems, place.draft, number, request.rounds)
        history.append(feedback)
    return found


def write_plan(request: Request, draft: str) -> Path:
    """The clean draft, headed by the goal, at the output path: a new file, or (with
    --force) one put in place by rename, never half-written."""
    goal = "\n".join(f"#   {line}" for line in request.goal.strip().splitlines())
    text = f"# Drafted by 'wtr plan' and checked clean by 'wtr check'. The goal:\n{goal}\n" \
           + draft
    path = request.output
    path.parent.mkdir(parents=True, exist_ok=True)
    if not request.force:
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            raise BadInput(f"{path} was created meanwhile",
                           hint="pass another -o FILE, or --force to replace it") from None
        return path
    temporary = path.with_name(f".{path.name}.wtr-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
    return path


def snapshot(repo: git.Repository) -> dict[str, str]:
    """What the user has that the agent must leave alone: branches and tags, the HEAD
    of the user's checkout, and its uncommitted changes (staged or not)."""
    found = {f"ref {ref}": value for ref, value in git.user_refs(repo).items()}
    head = repo.git("rev-parse", "--symbolic-full-name", "HEAD", check=False,
                    cwd=repo.toplevel).stdout.strip()
    found["HEAD"] = f"{head} {repo.git('rev-parse', 'HEAD', cwd=repo.toplevel).stdout.strip()}"
    for code, path in git.status_entries(repo.toplevel):
        found[f"path {path}"] = f"{code} {_digest(repo.toplevel / path)}"
    return found


def _digest(path: Path) -> str:
    if path.is_symlink() or not path.is_file():
        return ""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    found = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            found.append(f"{key}: {before.get(key) or 'absent'} -> {after.get(key) or 'absent'}")
    return found
