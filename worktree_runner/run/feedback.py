"""What an agent is told when its work fails a check it can fix, and what a person adds.

A failed verify or ownership check, or a sync that conflicts with the target, is told to
the same agent session (``feedback:`` rounds, docs/agents.md): the exact failure, what to
do about it, and that the checks run again when it exits. ``wtr retry STREAM --message``
continues the session the same way with a person's words. Only the text lives here;
``run/stream.py`` starts the round.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from worktree_runner.plan.model import Stream
from worktree_runner.plan.patterns import compile_patterns
from worktree_runner.run.state import Failure

FED_BACK = ("verify", "ownership", "sync")
TAIL_LINES = 40
TAIL_CHARS = 6000


@dataclass(frozen=True)
class Undo:
    """How one out-of-scope file goes back to the stream's base commit."""

    path: str
    at_base: bool  # the file exists at the base commit (restore it), else remove it

    def command(self, base: str) -> str:
        quoted = _quoted(self.path)
        if self.at_base:
            return f"git checkout {base} -- {quoted}"
        return f"git rm -q --cached --ignore-unmatch -- {quoted}; rm -f -- {quoted}"


def fixable(failure: Failure | None, stream: Stream) -> bool:
    """A failure the agent can fix itself: a failed verify, or files changed outside its
    scope (not a file brought in by ``copy``, which is in scope and never the agent's)."""
    if failure is None or failure.kind not in FED_BACK:
        return False
    if failure.kind == "ownership":
        return bool(outside_scope(failure.files, stream))
    return True


def outside_scope(paths: Sequence[str], stream: Stream) -> list[str]:
    scope = compile_patterns(stream.scope)
    return [path for path in paths if not scope.match_file(path)]


def tail(output: str) -> str:
    """The last lines of a command's output, as an agent is shown them."""
    lines = output.rstrip("\n").splitlines()[-TAIL_LINES:]
    text = "\n".join(lines)
    return text[-TAIL_CHARS:]


@dataclass(frozen=True)
class Target:
    """The target's tip a sync conflicted with: what the agent is asked to merge."""

    name: str
    commit: str


def feedback_message(failure: Failure, stream: Stream, base: str, undo: Sequence[Undo],
                     round_number: int, rounds: int, target: Target | None = None) -> str:
    """The message of feedback round ``round_number`` of ``rounds``."""
    parts = [f"## Your work did not pass its checks (feedback round {round_number} of "
             f"{rounds})", "", f"{failure.kind}: {failure.message}"]
    if failure.kind == "verify":
        parts += _verify_part(failure)
    elif failure.kind == "sync":
        parts += _sync_part(failure, stream, target or Target("the target", "<target>"))
    else:
        parts += _ownership_part(stream, base, undo)
    parts += ["", "Fix this in your worktree, commit, and exit with code 0: the checks run "
                  "again then. Keep the work you have already committed."]
    return "\n".join(parts) + "\n"


def _verify_part(failure: Failure) -> list[str]:
    shown = failure.output or "(it printed nothing)"
    return ["", "The last lines of its output:", "```", shown, "```"]


def _ownership_part(stream: Stream, base: str, undo: Sequence[Undo]) -> list[str]:
    lines = ["", "You may change only files matching these patterns (gitignore syntax):",
             *(f"    {pattern}" for pattern in stream.scope),
             "", "Put each file outside them back as it was at your base commit "
                 f"{base[:12]}, then commit:"]
    lines += [f"    {item.command(base)}" for item in undo]
    return lines


def _sync_part(failure: Failure, stream: Stream, target: Target) -> list[str]:
    return ["", f"{target.name} has moved since your work started, and its changes meet "
                "yours. Bring your branch up to date by merging it in, here in your "
                "worktree:", "", f"    git merge --no-edit {target.commit}",
            "", "then edit each conflicted file to keep what both sides meant, git add it and "
                "git commit --no-edit. Do not rebase, reset or amend: your commits stay as "
                f"they are. The merge brings {target.name}'s own changes, which are not "
                "yours; your own changes must still stay within these patterns:",
            *(f"    {pattern}" for pattern in stream.scope),
            "", f"The conflicts ({failure.files and ', '.join(failure.files)}), as the merge "
                f"leaves them (<<<<<<< your branch, >>>>>>> {target.name}):",
            "```", failure.output or "(none shown)", "```"]


def person_message(text: str) -> str:
    return f"## A message from the person running this work\n\n{text.strip()}\n"


def fresh_start(prompt: str, message: str) -> str:
    """A new agent's prompt when the earlier session cannot be continued: the stream's
    prompt, then what it is told."""
    return (f"{prompt.rstrip()}\n\n## What happened before\n\nAn earlier agent worked on this "
            f"task in this worktree; its commits are on your branch.\n\n{message}")


def _quoted(path: str) -> str:
    return shlex.quote(path)
