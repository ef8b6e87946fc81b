"""The prompt file an agent reads, and the command line that starts it."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from worktree_runner.plan.model import Plan, Stream
from worktree_runner.run.state import Failure

# "${stream}" is the shell's, not ours: the plan check reads placeholders the same way.
_TOKEN = re.compile(r"(?<!\$)\{(prompt_file|prompt|stream|worktree|branch)\}")


@dataclass(frozen=True)
class DependencyWork:
    """What a finished dependency changed, for the prompt of the streams that follow it."""

    stream: str
    changed_files: Sequence[str]
    subjects: Sequence[str]


def render_prompt(
    plan: Plan,
    stream: Stream,
    worktree: str,
    branch: str,
    dependencies: Sequence[DependencyWork] = (),
    previous_failure: Failure | None = None,
    report_file: str | None = None,
    requests: Sequence[str] = (),
    mcp: bool = False,
) -> str:
    parts = [f"# Task: stream '{stream.name}' of plan '{plan.name}'", "", stream.prompt.strip(), ""]
    parts += _rules(stream, worktree, branch, mcp)
    if report_file:
        parts += _report_rule(report_file)
    if mcp:
        parts += _mcp_tools()
    if requests:
        parts += ["", "## Change requests from other streams", "",
                  "Other streams need changes in files you own. Make each one that fits your "
                  "task, with your work, and commit; if one does not fit, say why in your "
                  "report.", "", *requests]
    if dependencies:
        parts += ["", "## What the streams before you changed (already in your branch)"]
        parts += [_dependency_line(dep) for dep in dependencies]
    if previous_failure is not None:
        parts += ["", "## Your previous attempt failed", f"{previous_failure.kind}: "
                  f"{previous_failure.message}"]
        if previous_failure.files:
            parts.append("Files outside your scope (revert them): "
                         + ", ".join(previous_failure.files))
        parts.append("Your earlier commits are still on the branch; fix the problem.")
    return "\n".join(parts).rstrip() + "\n"


def _rules(stream: Stream, worktree: str, branch: str, mcp: bool) -> list[str]:
    lines = [
        "## Rules",
        f"- You work in the git worktree {worktree}, on branch {branch}. Stay in it.",
        "- You own only the files matching these patterns (gitignore syntax):",
        *(f"    {pattern}" for pattern in stream.files),
    ]
    if stream.shared:
        lines += ["- You may also change these shared paths:",
                  *(f"    {pattern}" for pattern in stream.shared)]
    lines += [
        "- Touch nothing else: a change to any other file fails your work.",
        "- Commit your work on your branch (git add, git commit). Anything left uncommitted "
        "when you exit with code 0 is committed for you. Do not switch branches.",
        '- Report progress as you go: wtr progress "what you are doing" --percent 40',
        "- Before you finish, and whenever you need work other streams have landed since "
        "you started, commit and run: wtr sync (it replays your commits onto the target; "
        "on a conflict it changes nothing, prints the conflicting hunks and exits 3: "
        + ("merge the target into your branch as it says and resolve them, or go on: you "
           "will be told them again when you exit)" if stream.feedback_rounds
           else "go on, a human will decide)"),
        _ask_rule(mcp),
        '- If you cannot go on, say why: wtr progress "the reason" --blocked ; '
        "then exit with a non-zero code.",
        "- Exit with code 0 when the work is done.",
    ]
    if stream.verify:
        lines.append("- These commands must pass in your worktree afterwards: "
                     + "; ".join(stream.verify))
    return lines


def _ask_rule(mcp: bool) -> str:
    if mcp:
        return ("- If you need a change in a file you do not own, ask its owner (never change "
                "it yourself) with the tool request_change(path, what, why, wait) of the MCP "
                "server 'wtr' (see below), or, if you do not have it, with: wtr request PATH "
                '--what "the change" --why "what it is for" [--wait]. If it tells you to stop '
                "(a tool error, or exit code 3), report being blocked and exit non-zero")
    return ("- If you need a change in a file you do not own, ask its owner (never change it "
            'yourself): wtr request PATH --what "the change" --why "what it is for" '
            "(add --wait to wait for the answer; exit code 3 means stop: report being blocked "
            "and exit non-zero)")


def _report_rule(report_file: str) -> list[str]:
    return [
        "",
        "## Your report",
        f"When you are done (or stuck), write a short Markdown report to {report_file} "
        "(also in $WTR_REPORT; it is outside your worktree and is not committed): what you "
        "completed, what blocks you, the tests you ran and their results. If you run "
        "sub-agents, gather what they return there.",
    ]


def _mcp_tools() -> list[str]:
    return [
        "",
        "## Tools of this run (the MCP server 'wtr')",
        "You also have these tools; they do what the commands above do, and more:",
        "- progress(message, percent, blocked): report progress (as wtr progress)",
        "- report(markdown): save your report (as writing the report file)",
        "- lock(name, timeout) / unlock(name): a lock shared by every agent (as wtr lock)",
        "- owner(path): who owns a file and whether you may change it: ask before you "
        "change a file you are not sure about",
        "- request_change(path, what, why, wait, timeout): ask the owner of a file you may "
        "not change for a change (as wtr request); it says where the request went and, "
        "with wait=true, the answer",
        "- streams(): what the other streams are doing and which files they changed",
    ]


def _dependency_line(dep: DependencyWork) -> str:
    files = ", ".join(dep.changed_files[:20]) or "no files"
    more = f" (+{len(dep.changed_files) - 20} more)" if len(dep.changed_files) > 20 else ""
    commits = "; ".join(dep.subjects[:5])
    return f"- {dep.stream}: changed {files}{more}" + (f"; commits: {commits}" if commits else "")


def render_command(template: Sequence[str] | str, values: Mapping[str, str]) -> list[str] | str:
    """Fill placeholders: in a list each value stays one argument; in shell text it is quoted."""
    if isinstance(template, str):
        return _TOKEN.sub(lambda m: shlex.quote(values[m.group(1)]), template)
    return [_TOKEN.sub(lambda m: values[m.group(1)], arg) for arg in template]
