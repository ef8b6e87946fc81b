"""The texts the drafting agent reads: the evidence (a Markdown file), the first prompt
(goal, plan format, rules) and each round's feedback (the problems ``wtr check`` found)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from worktree_runner.architect.evidence import Evidence
from worktree_runner.architect.review import Problem

SHOWN_FILES = 2000  # in the evidence file; beyond that, one line per folder
# Bytes of evidence put in the prompt itself: a preset passes the prompt as one argument,
# and Linux takes at most 128 KiB in one.
INLINE_EVIDENCE = 48_000
SHOWN_PROBLEMS = 60  # per round's feedback
REMEMBERED = 2  # rounds of feedback a fresh start is told about

FORMAT = """\
version: 1
name: NAME                    # a short name for the runs of this plan
agent: {preset: PRESET}       # the default agent of every stream
streams:                      # a mapping, in order: name -> stream
  STREAM:                     # 1-64 of A-Z a-z 0-9 . _ -
    description: ONE LINE: why these files, why these dependencies
    files: ["src/api/**", "tests/test_api.py"]   # gitignore patterns, from the repo root
    prompt: |
      What this stream's agent must do.
    depends_on: [OTHER]       # starts from OTHER's result, after it succeeded
    conflicts_with: [OTHER]   # never runs beside OTHER (no order implied)
    shared: ["CHANGES.rst"]   # shared paths (top-level `shared:`) this stream may change
    verify: ["pytest tests/test_api.py -q"]      # must pass in the stream's worktree
shared: ["CHANGES.rst"]       # files no one stream owns (changelogs, lockfiles, registries)
verify: ["pytest -q"]         # run on the merged result"""

RULES = """\
- Streams that may run at the same time (neither depends on the other, directly or not,
  and no conflicts_with between them) must own disjoint files: a tracked file matched by
  two such streams is an error. Patterns of such streams must not reach the same paths
  either (both listing docs/x.md; docs/** beside docs/x.md).
- Hot files (changelogs, lockfiles, registries every change touches; see the evidence)
  go under the top-level `shared`, and in `shared` of each stream that needs one; streams
  listing the same shared file never run together.
- Files the history changes together (the coupled pairs and groups of the evidence) are
  owned by one stream, or their streams are ordered with depends_on (or conflicts_with).
- A module goes with its tests in one stream.
- Every stream has a one-line `description` saying why these files and why this
  dependency, a `prompt` for its agent, and a `verify` built from the repository's own
  test and lint commands, narrowed to its files where possible.
- Use only paths that exist (the evidence lists them); patterns matching nothing are
  reported.
- When in doubt, propose fewer, safer streams: two streams that never collide are worth
  more than five that do."""


def evidence_text(evidence: Evidence) -> str:
    files = evidence.files
    lines = [f"# Evidence: the repository at {evidence.branch} ({evidence.commit[:12]})", "",
             f"{len(files)} tracked files, {sum(f.size for f in files)} bytes; "
             f"{evidence.commits_read} commits of history read.", "", "## Languages", ""]
    lines += [f"- {lang}: {n} files" for lang, n in evidence.languages().most_common()]
    lines += ["", "## The repository's own test and lint commands", ""]
    lines += [f"- `{c.command}` (from {c.source})" for c in evidence.commands] or ["(none found)"]
    lines += ["", "## Hot files (candidates for `shared`)", ""]
    lines += [f"- {path}: {why}" for path, why in evidence.hot] or ["(none)"]
    lines += ["", "## Modules and their tests", ""]
    lines += [f"- {module}: " + ", ".join(f"{test} ({why})" for test, why in tests)
              for module, tests in evidence.tests.items()] or ["(none found)"]
    lines += ["", "## Groups of files the history changes together (keep each in one "
                  "stream when you can)", ""]
    lines += [f"- {', '.join(group)}" for group in evidence.clusters] or ["(none)"]
    lines += ["", "## Coupled pairs wtr check warns about when their streams may run "
                  "together (changed together / changed either)", ""]
    lines += [f"- {a} + {b}: {p.together}/{p.either}" for p in evidence.pairs
              for a, b in [p.paths]] or ["(none)"]
    if evidence.suggestion:
        lines += ["", "## What `wtr init --suggest` proposes from the history alone", "",
                  "A starting point, not an answer: its prompts are placeholders, and it "
                  "knows nothing of the goal.", "", "```yaml", evidence.suggestion.rstrip(),
                  "```"]
    lines += ["", "## Tracked files (path, bytes, language)", ""]
    lines += [f"- {f.path} {f.size} {f.language}" for f in files[:SHOWN_FILES]]
    if len(files) > SHOWN_FILES:
        lines.append(f"- ... and {len(files) - SHOWN_FILES} more (git ls-files lists them)")
    return "\n".join(lines) + "\n"


def first_prompt(goal: str, evidence: str, evidence_file: Path, draft: Path, worktree: Path,
                 repo: Path, preset: str) -> str:
    data = evidence.encode()
    inline = evidence if len(data) <= INLINE_EVIDENCE else (
        data[:INLINE_EVIDENCE].decode(errors="ignore")
        + f"\n... (cut here: read the rest in {evidence_file})\n")
    return "\n".join([
        "# Draft a worktree_runner plan (wtr)",
        "",
        "The plan splits the goal below into streams of work that coding agents do at the "
        "same time, each in its own git worktree and branch, merged afterwards in "
        "dependency order. Your only job is the plan: do not do the work itself.",
        "",
        "## Goal",
        "",
        goal.strip(),
        "",
        "## Where you are",
        "",
        f"- {worktree} is a scratch checkout of the repository: read anything there, "
        "change nothing.",
        f"- Write the whole plan, as YAML, to this file and nowhere else: {draft}",
        f"- You may check it yourself as you go: wtr check {draft} --repo {repo}",
        "- When it is written, stop. wtr then checks it and tells you what to fix.",
        "",
        "## The plan format",
        "",
        "```yaml",
        FORMAT.replace("PRESET", preset),
        "```",
        "",
        "## The rules (wtr check enforces them)",
        "",
        RULES,
        "",
        f"## What wtr found in the repository (also in {evidence_file})",
        "",
        inline,
    ])


def feedback(problems: Sequence[Problem], draft: Path, round_number: int, rounds: int) -> str:
    more = len(problems) - SHOWN_PROBLEMS
    return "\n".join([
        f"wtr check found {len(problems)} problem{'s' if len(problems) != 1 else ''} in "
        f"your draft (round {round_number} of {rounds}):",
        *(f"- {p.line()}" for p in problems[:SHOWN_PROBLEMS]),
        *([f"- ... and {more} more of the same kinds: run wtr check to see them"]
          if more > 0 else []),
        "",
        f"Fix every one of them: rewrite the whole plan in {draft}, then stop. "
        "When in doubt, merge streams or order them with depends_on.",
    ])


def fresh_start(first: str, history: Sequence[str]) -> str:
    """The prompt of a new session that cannot continue the old one: the first prompt and
    the last rounds' feedback (the draft itself is still in its file)."""
    return "\n".join([first, "", "## Your earlier drafts and what wtr check found", "",
                      *history[-REMEMBERED:], ""])
