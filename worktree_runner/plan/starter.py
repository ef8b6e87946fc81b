"""The commented starter plan that ``wtr init`` writes for a repository."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from worktree_runner import git
from worktree_runner.errors import BadInput
from worktree_runner.plan.load import default_plan_name, name_problem, pattern_problem

DEFAULT_PLAN_FILE = "worktree-plan.yaml"
# Every prompt init writes starts so; check and run --dry-run warn while one is left.
PLACEHOLDER_PROMPT = "Describe what the agent should do"

_HEADER = """\
# worktree_runner plan: each stream gets its own branch and git worktree, and one agent.
# Check it with:  wtr check {file}
# Run it with:    wtr run {file}      (then: wtr status, wtr merge, wtr clean)
version: 1
name: {name}
base: {base}              # the streams start from this ref
target: {base}            # the merge stage lands on this branch
max_parallel: 4           # agents running at once
# worktrees_dir: ../{repo}.worktrees   # default: beside the repository

agent:                    # the default agent of every stream
  preset: claude          # or: codex | aider | gemini | opencode
  # command: ["python3", "my_agent.py", "{{prompt_file}}"]   # any program instead of a preset
  timeout: 1h             # killed after this long
  # stall_timeout: 10m    # killed after this long with no output and no 'wtr progress'
  retries: 0              # extra attempts after a failure
# feedback: 2             # a failed verify or ownership check is told to the agent this often
                          # (default: 2 for a preset, 0 for a command agent)

# setup: ["npm ci"]       # run in each new worktree before its agent
# copy: [".env"]          # untracked files copied into each new worktree
# verify: ["pytest -q"]   # run on the merged result before the target moves
# shared: ["package.json"]  # files no stream owns; a stream may touch one if it lists it

streams:                  # one per area of the code; a file belongs to one stream at a time
"""

_STREAM = """\
  {name}:
    description: {description}
    files: [{pattern}]
    prompt: |
      Describe what the agent should do in {folder}/.
    # depends_on: []      # streams that must succeed first (this one starts from their result)
    # conflicts_with: []  # streams never to run at the same time as this one
    # verify: []          # commands that must pass in this stream's worktree
"""

_LISTED = """\
  {name}:
    files: [{patterns}]
    prompt: |
      Describe what the agent should do with {listing}.
    # depends_on: []      # streams that must succeed first (this one starts from their result)
"""

_WHOLE_REPO = """\
  main:
    description: the whole repository
    files: ["**"]
    prompt: |
      Describe what the agent should do.
"""


def suggested_folders(repo: git.Repository, commit: str) -> list[str]:
    """Top-level tracked folders that look like source: not hidden."""
    out = repo.out("ls-tree", "-z", "--full-tree", commit).split("\0")
    folders = [entry.split("\t", 1)[1] for entry in out if entry and " tree " in entry]
    return [name for name in folders if not name.startswith(".")]


def stream_name(folder: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", folder).strip(".-_")
    return re.sub(r"\.{2,}", ".", cleaned)[:64].removesuffix(".lock").rstrip(".") or "part"


def parse_stream_list(text: str) -> list[tuple[str, list[str]]]:
    """``"api:src/api/**,ui:src/ui/**|tests/ui/**"`` as (name, patterns); a name given
    twice gathers its patterns. Raises BadInput for a malformed item."""
    streams: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, patterns = item.partition(":")
        listed = [p.strip() for p in patterns.split("|") if p.strip()]
        problem = name_problem(name.strip()) if sep else "each item is NAME:PATTERN"
        problem = problem or next(filter(None, map(pattern_problem, listed)), None)
        if problem or not listed:
            raise BadInput(f"--streams item '{item}': {problem or 'no pattern'}",
                           hint="write --streams 'api:src/api/**,ui:src/ui/**|tests/ui/**'")
        streams.setdefault(name.strip(), []).extend(listed)
    if not streams:
        raise BadInput("--streams lists no stream", hint="write --streams 'api:src/api/**'")
    return list(streams.items())


def _listed_text(streams: list[tuple[str, list[str]]]) -> str:
    return "".join(
        _LISTED.format(name=yaml_scalar(name),
                       patterns=", ".join(json.dumps(p, ensure_ascii=False) for p in patterns),
                       listing=", ".join(patterns))
        for name, patterns in streams
    )


def starter_plan(repo: git.Repository, plan_path: Path,
                 streams: list[tuple[str, list[str]]] | None = None) -> str:
    branch, commit = checked_out(repo)
    header = plan_header(repo, plan_path, branch)
    if streams:
        return header + _listed_text(streams)
    return header + _streams_text(suggested_folders(repo, commit))


def checked_out(repo: git.Repository) -> tuple[str, str]:
    """The checked-out branch (the plan's base) and its commit."""
    branch = git.current_branch(repo)
    if branch is None:
        raise BadInput(
            "HEAD is detached", hint="check out the branch the streams should start from"
        )
    # the branch's own commit: from a linked worktree, HEAD in the repository's root is
    # another worktree's
    commit = git.ref_commit(repo, f"refs/heads/{branch}")
    if not commit:
        raise BadInput(f"branch '{branch}' has no commits yet", hint="commit something first")
    return branch, commit


def plan_header(repo: git.Repository, plan_path: Path, branch: str) -> str:
    """The commented top of a starter plan, up to and including its ``streams:`` line."""
    return _HEADER.format(
        file=plan_path.name,
        name=yaml_scalar(default_plan_name(Path(repo.root.name))),
        base=json.dumps(branch),
        repo=repo.root.name,
    )


def _streams_text(folders: list[str]) -> str:
    seen: set[str] = set()
    parts: list[str] = []
    for folder in folders:
        name = stream_name(folder)
        if name in seen:
            continue
        seen.add(name)
        parts.append(_STREAM.format(
            name=yaml_scalar(name),
            description=yaml_scalar(f"work in {folder}/"),
            folder=folder,
            pattern=json.dumps(f"{literal_pattern(folder)}/**", ensure_ascii=False),
        ))
    return "".join(parts) or _WHOLE_REPO


def yaml_scalar(text: str) -> str:
    """``text`` as YAML that reads back as that text: plain if it can be, else quoted
    (a folder named 'null', '0x10' or 'a: b' would otherwise read as something else)."""
    try:
        plain = yaml.safe_load(text) == text and "\n" not in text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text, ensure_ascii=False)


def literal_pattern(folder: str) -> str:
    """``folder`` as a gitignore pattern matching only itself: wildcards and a leading
    '#' or '!' escaped, so a folder named '[x]' or '#notes' is owned, not globbed or ignored."""
    escaped = re.sub(r"([\\*?\[\]])", r"\\\1", folder)
    return "\\" + escaped if escaped.startswith(("#", "!")) else escaped


def write_starter_plan(repo: git.Repository, path: Path,
                       streams: list[tuple[str, list[str]]] | None = None) -> Path:
    refuse_existing(path)
    return write_plan_text(path, starter_plan(repo, path, streams))


def refuse_existing(path: Path) -> None:
    if path.exists():
        raise BadInput(
            f"{path} already exists", hint="pass another PATH to 'wtr init', or remove it first"
        )


def write_plan_text(path: Path, text: str) -> Path:
    """Write a new plan file; never overwrites one (not even one created meanwhile)."""
    refuse_existing(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        refuse_existing(path)
        raise
    return path
