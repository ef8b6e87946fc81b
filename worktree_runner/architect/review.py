"""A draft under ``wtr check``: every error and every warning an agent can act on.

The draft is loaded and analysed as ``wtr check`` does it (history included), and what
would make a run collide is a problem the agent must fix: the check's errors, its
coupling warnings (coupled files in streams that may run together, hot files not
shared), patterns of concurrent streams reaching the same paths, predecessors that
overlap, patterns matching nothing. Two rules are the architect's own: each stream
says why it exists (``description``) and, when the repository has test or lint
commands, how its work is proved (``verify``). A preset that is not installed here is
a note, not a problem: no draft can fix that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git, statefs
from worktree_runner.errors import BadInput, PlanInvalid
from worktree_runner.plan.analysis import Analysis, analyze
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.starter import PLACEHOLDER_PROMPT
from worktree_runner.plan.yamlsource import MAX_PLAN_BYTES, too_big


@dataclass(frozen=True)
class Problem:
    # "error": the check refuses the plan; "warning": the check warns that a run would
    # collide; "rule": a rule of wtr plan's own (a reason, a prompt, a verify per stream)
    kind: str
    where: str
    message: str

    def line(self) -> str:
        where = f"{self.where}: " if self.where else ""
        return f"{self.kind}: {where}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "where": self.where, "message": self.message}


@dataclass
class Review:
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    analysis: Analysis | None = None
    text: str | None = None  # the draft as reviewed: what is written when it is clean

    @property
    def clean(self) -> bool:
        return self.analysis is not None and not self.problems


def review(draft: Path, repo: git.Repository, needs_verify: bool) -> Review:
    text = read_draft(draft)
    if not text or not text.strip():
        return Review([Problem("error", "", f"no draft was written to {draft}; write the "
                                            "whole plan there as YAML, as a regular file")],
                      text=text)
    try:
        if len(text.encode()) > MAX_PLAN_BYTES:
            raise PlanInvalid(str(draft), [too_big()])
        analysis = analyze(parse_plan(text, draft), repo, history=True)
    except PlanInvalid as exc:
        return Review([Problem("error", p.where, _with_line(p.message, p.line))
                       for p in exc.problems], text=text)
    except BadInput as exc:
        return Review([Problem("error", "", exc.message)], text=text)
    notes = [p.message for p in analysis.agents]
    return Review(_problems(analysis, needs_verify), notes, analysis, text)


def read_draft(draft: Path) -> str | None:
    """The draft's text, if the agent left a regular file there (never a symlink's
    target: the agent chose what lies there)."""
    try:
        return statefs.read_text(draft)
    except OSError:
        return None


def _with_line(message: str, line: int | None) -> str:
    return f"{message} (line {line})" if line else message


def _problems(analysis: Analysis, needs_verify: bool) -> list[Problem]:
    plan = analysis.plan
    found = [Problem("error", p.where, p.message) for p in analysis.problems
             if p not in analysis.agents]
    warnings = [*plan.warnings,
                *(f"pattern '{pattern}' matches no tracked file ({where})"
                  for where, pattern in analysis.unmatched),
                *(analysis.coupling.warnings() if analysis.coupling else []),
                *(o.message() for o in analysis.pattern_overlaps),
                *(c.message() for c in analysis.start_conflicts)]
    found += [Problem("warning", "", w) for w in warnings]
    for stream in plan.streams:
        where = f"streams.{stream.name}"
        if not stream.description.strip():
            found.append(Problem("rule", f"{where}.description",
                                 "say in one line why these files and why these "
                                 "dependencies"))
        if not stream.prompt.strip() or stream.prompt.strip().startswith(PLACEHOLDER_PROMPT):
            found.append(Problem("rule", f"{where}.prompt",
                                 "write what this stream's agent must do"))
        if needs_verify and not stream.verify:
            found.append(Problem("rule", f"{where}.verify",
                                 "give the commands that prove this stream's work (the "
                                 "repository's own test or lint commands, narrowed to its "
                                 "files where they can be)"))
    return found
