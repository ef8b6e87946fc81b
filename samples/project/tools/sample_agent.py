"""An offline sample agent: makes the edits its prompt spells out, reports progress, commits.

It lets worktree_runner be seen at work without any AI service (python3 standard library
only). The runner starts it with its git worktree as the current directory and these
environment variables: WTR_RUN, WTR_STREAM, WTR_WORKTREE, WTR_BRANCH, WTR_BASE_COMMIT,
WTR_PROMPT_FILE (a text file holding the prompt), WTR_FILES (the stream's gitignore-style
patterns, one per line) and WTR_STATE_DIR.

Directives. A prompt line ``@append PATH`` or ``@create PATH`` is followed by the text to
write, indented further than the directive; that text is dedented, and blank lines at its
start and end are dropped. ``@append`` adds it to the end of PATH, after a blank line (two
for a .py file, as PEP 8 wants between top-level definitions); ``@create`` writes PATH
anew. Everything else in the prompt is ignored. Example (in a plan, under ``prompt: |``):

    @append shop/pricing.py
        def half(price):
            return price / 2

A prompt without directives makes the agent append ``# touched by STREAM`` to the first
tracked file matching the first pattern of WTR_FILES, or create ``DIR/STREAM.txt`` in that
pattern's directory.

Knobs (environment variables):
    SAMPLE_AGENT_SECONDS=1.5      how long it takes in all, spread between its steps
    SAMPLE_AGENT_NO_COMMIT=1      leave the edits uncommitted
    SAMPLE_AGENT_FAIL=1           print an error and exit 1 before committing
    SAMPLE_AGENT_OUTSIDE=PATH     also write PATH (outside the stream's files) and commit it
    SAMPLE_AGENT_HANG=1           sleep forever once started (to see a timeout)
    SAMPLE_AGENT_BLOCKED=REASON   report ``wtr progress REASON --blocked`` and exit 1

Progress goes to ``wtr progress MESSAGE --percent N``; if that fails the agent warns on
stderr and goes on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_SECONDS = 1.5
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)@(?P<action>append|create)[ \t]+(?P<path>\S+)[ \t]*$")


class AgentError(Exception):
    """Something that stops the agent; printed as one line, exit status 1."""


@dataclass(frozen=True)
class Edit:
    action: str  # "append" or "create"
    path: str
    text: str


# -- reading the prompt ------------------------------------------------------------------


def parse_directives(prompt: str) -> list[Edit]:
    """The @append/@create edits in ``prompt``, in order."""
    lines = prompt.splitlines()
    edits: list[Edit] = []
    for index, line in enumerate(lines):
        match = DIRECTIVE.match(line)
        if match:
            body = directive_body(lines[index + 1 :], indentation(match["indent"]))
            edits.append(Edit(match["action"], match["path"], body))
    return edits


def directive_body(lines: list[str], indent: int) -> str:
    """The lines indented more than ``indent`` (and blank ones between them), dedented."""
    body: list[str] = []
    for line in lines:
        if line.strip() and indentation(line) <= indent:
            break
        body.append(line)
    text = textwrap.dedent("\n".join(body)).strip("\n")
    return text + "\n" if text else ""


def indentation(line: str) -> int:
    expanded = line.expandtabs()
    return len(expanded) - len(expanded.lstrip())


# -- choosing a file when the prompt has no directive --------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a gitignore-style pattern: ``**`` spans folders, ``*`` and ``?`` do not.

    Like git, a pattern with no inner slash matches at any depth, and a pattern that
    matches a folder matches everything in it. Good enough for a sample.
    """
    body = pattern.strip("/")
    anchored = "/" in body or pattern.startswith("/")
    parts = re.split(r"(\*\*/|/\*\*|\*\*|\*|\?)", body)
    wildcards = {"**/": "(?:.*/)?", "/**": "(?:/.*)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    regex = "".join(wildcards.get(part, re.escape(part)) for part in parts)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"{prefix}{regex}(?:/.*)?")


def matches(path: str, pattern: str) -> bool:
    return pattern_regex(pattern).fullmatch(path) is not None


def pattern_directory(pattern: str) -> str:
    """The folder a pattern points into: its leading segments that hold no wildcard."""
    segments = pattern.strip("/").split("/")
    if not pattern.endswith("/"):
        segments = segments[:-1]
    plain = []
    for segment in segments:
        if any(char in segment for char in "*?["):
            break
        plain.append(segment)
    return "/".join(plain) or "."


def default_edit(stream: str, patterns: list[str]) -> Edit:
    """The edit to make when the prompt names none: touch the stream's first file."""
    if not patterns:
        raise AgentError("the prompt has no @append/@create directive and WTR_FILES is empty")
    first = patterns[0]
    tracked = git("ls-files").splitlines()
    owned = next((path for path in tracked if matches(path, first)), None)
    if owned is not None:
        return Edit("append", owned, f"# touched by {stream}\n")
    created = PurePosixPath(pattern_directory(first)) / f"{stream}.txt"
    return Edit("create", str(created), f"# touched by {stream}\n")


# -- making the edits -------------------------------------------------------------------------


def inside_worktree(path: str) -> Path:
    """``path`` under the current directory; refuses absolute paths and '..' segments."""
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise AgentError(f"refusing to write {path}: not a path inside the worktree")
    return Path.cwd() / relative


def apply(edit: Edit) -> None:
    target = inside_worktree(edit.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if edit.action == "create" or not target.exists():
        target.write_text(edit.text, encoding="utf-8")
        return
    existing = target.read_text(encoding="utf-8")
    target.write_text(existing + separator(existing, edit.path) + edit.text, encoding="utf-8")


def separator(existing: str, path: str) -> str:
    """What goes between a file's text and appended text: end the line, then blank lines."""
    if not existing.strip():
        return ""
    blank_lines = 2 if path.endswith(".py") else 1
    return "\n" * (blank_lines + 1 - trailing_newlines(existing))


def trailing_newlines(text: str) -> int:
    return min(len(text) - len(text.rstrip("\n")), 3)


def write_outside(path: str, stream: str) -> None:
    target = inside_worktree(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as file:
        file.write(f"written by {stream}, outside its files\n")


# -- git, progress, pacing -------------------------------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise AgentError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def commit(stream: str, summary: str) -> str | None:
    """Commit everything in the worktree; the new commit's short id, or None if no change."""
    git("add", "-A")
    if not git("status", "--porcelain").strip():
        return None
    git("commit", "-q", "-m", f"{stream}: {summary}")
    return git("rev-parse", "--short", "HEAD").strip()


def progress(message: str, *options: str) -> None:
    """Report to ``wtr progress``; a missing or failing wtr is only a warning."""
    command = ["wtr", "progress", message, *options]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        warn(f"could not report progress ({exc})")
        return
    if done.returncode != 0:
        last_line = (done.stderr.strip().splitlines() or ["no message"])[-1]
        warn(f"'wtr progress' exited {done.returncode}: {last_line}")


def warn(message: str) -> None:
    print(f"sample agent: warning: {message}", file=sys.stderr, flush=True)


class Pacer:
    """Spreads the agent's total time evenly between its steps."""

    def __init__(self, total_seconds: float, steps: int) -> None:
        self.pause = max(total_seconds, 0.0) / max(steps, 1)

    def step(self, message: str, percent: int) -> None:
        print(f"[{percent:3d}%] {message}", flush=True)
        progress(message, "--percent", str(percent))
        time.sleep(self.pause)


def seconds_knob() -> float:
    raw = os.environ.get("SAMPLE_AGENT_SECONDS", "")
    try:
        return float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        warn(f"SAMPLE_AGENT_SECONDS={raw!r} is not a number; using {DEFAULT_SECONDS}")
        return DEFAULT_SECONDS


# -- the agent ------------------------------------------------------------------------------


def read_prompt() -> str:
    prompt_file = os.environ.get("WTR_PROMPT_FILE")
    if not prompt_file:
        warn("WTR_PROMPT_FILE is not set; working from an empty prompt")
        return ""
    try:
        return Path(prompt_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise AgentError(f"cannot read the prompt file {prompt_file}: {exc.strerror}") from None


def stop_if_asked(stream: str) -> None:
    """The knobs that end the agent before it edits anything."""
    if reason := os.environ.get("SAMPLE_AGENT_BLOCKED"):
        print(f"blocked: {reason}", flush=True)
        progress(reason, "--blocked")
        raise SystemExit(1)
    if os.environ.get("SAMPLE_AGENT_HANG") == "1":
        print(f"{stream}: hanging as asked (SAMPLE_AGENT_HANG=1)", flush=True)
        while True:
            time.sleep(3600)


def run_agent() -> str:
    """Do the stream's work; returns the summary line."""
    stream = os.environ.get("WTR_STREAM", "sample")
    print(f"sample agent for stream {stream} in {Path.cwd()}", flush=True)
    stop_if_asked(stream)
    prompt = read_prompt()
    edits = parse_directives(prompt) or [default_edit(stream, scope_patterns())]
    pacer = Pacer(seconds_knob(), steps=len(edits) + 2)
    pacer.step("reading prompt", 10)
    for number, edit in enumerate(edits, start=1):
        pacer.step(f"editing {edit.path}", 20 + 60 * number // (len(edits) + 1))
        apply(edit)
    if outside := os.environ.get("SAMPLE_AGENT_OUTSIDE"):
        print(f"also writing {outside}, outside this stream's files (SAMPLE_AGENT_OUTSIDE)")
        write_outside(outside, stream)
    if os.environ.get("SAMPLE_AGENT_FAIL") == "1":
        raise AgentError("failing as asked (SAMPLE_AGENT_FAIL=1); nothing committed")
    return f"{stream}: {finish(stream, describe(edits), pacer)}"


def scope_patterns() -> list[str]:
    """WTR_FILES without blank lines and without negations ('!pattern')."""
    lines = os.environ.get("WTR_FILES", "").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("!")]


def finish(stream: str, summary: str, pacer: Pacer) -> str:
    """Commit the work unless told not to; says what became of it."""
    if os.environ.get("SAMPLE_AGENT_NO_COMMIT") == "1":
        outcome = "left uncommitted (SAMPLE_AGENT_NO_COMMIT=1)"
    else:
        pacer.step("committing", 90)
        commit_id = commit(stream, summary)
        outcome = f"committed {commit_id}" if commit_id else "nothing changed, nothing committed"
    progress("done", "--percent", "100")
    write_report(stream, summary, outcome)
    return f"{summary}; {outcome}"


def write_report(stream: str, summary: str, outcome: str) -> None:
    """The Markdown report wtr asks for in WTR_REPORT (when run by wtr)."""
    path = os.environ.get("WTR_REPORT")
    if not path:
        return
    Path(path).write_text(
        f"## {stream}\n\n- done: {summary}\n- {outcome}\n"
        "- blockers: none\n- tests: left to the stream's verify commands\n",
        encoding="utf-8",
    )


def describe(edits: list[Edit]) -> str:
    """A commit summary such as 'append to shop/a.py, create docs/b.md'."""
    return ", ".join(
        f"{edit.action} {'to ' if edit.action == 'append' else ''}{edit.path}" for edit in edits
    )


def main() -> int:
    try:
        summary = run_agent()
    except AgentError as exc:
        print(f"sample agent: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"sample agent done: {summary}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
