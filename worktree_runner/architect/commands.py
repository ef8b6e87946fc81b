"""The repository's own test and lint commands, read from its files at the base commit:
pyproject.toml, package.json, Makefile, tox.ini and CI configuration (GitHub Actions,
GitLab CI). What the drafting agent builds each stream's ``verify`` from."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from worktree_runner import git

_TASK_WORDS = re.compile(r"(?i)\b(test|tests|check|lint|typecheck|type-check|mypy|ruff|flake8|"
                         r"pytest|tox|nox|eslint|tsc|vet|clippy|fmt|format)\b")
_MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+):(?!=)", re.MULTILINE)
MAX_COMMANDS = 40
MAX_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class RepoCommand:
    command: str
    source: str  # the file it was read from


def repo_commands(repo: git.Repository, commit: str, tracked: set[str]) -> list[RepoCommand]:
    found: dict[str, RepoCommand] = {}
    for path, reader in _readers(tracked):
        text = _show(repo, commit, path)
        if text is None:
            continue
        for command in reader(text):
            found.setdefault(command, RepoCommand(command, path))
    return list(found.values())[:MAX_COMMANDS]


def _readers(tracked: set[str]) -> Iterator[tuple[str, Callable[[str], list[str]]]]:
    fixed: dict[str, Callable[[str], list[str]]] = {
        "pyproject.toml": _pyproject, "package.json": _package_json, "Makefile": _makefile,
        "makefile": _makefile, "tox.ini": _tox, "Cargo.toml": lambda _: ["cargo test"],
        "go.mod": lambda _: ["go test ./...", "go vet ./..."],
        ".gitlab-ci.yml": _gitlab_ci, "noxfile.py": lambda _: ["nox"],
    }
    for path in sorted(tracked):
        if path in fixed:
            yield path, fixed[path]
        elif re.fullmatch(r"\.github/workflows/[^/]+\.ya?ml", path):
            yield path, _github_workflow


def _show(repo: git.Repository, commit: str, path: str) -> str | None:
    result = repo.git("cat-file", "blob", f"{commit}:{path}", check=False)
    if not result.ok or len(result.stdout) > MAX_FILE_BYTES:
        return None
    return result.stdout


def _pyproject(text: str) -> list[str]:
    try:
        tool = tomllib.loads(text).get("tool", {})
    except tomllib.TOMLDecodeError:
        return []
    known = {"pytest": "pytest", "ruff": "ruff check .", "mypy": "mypy", "black": "black --check .",
             "isort": "isort --check .", "pyright": "pyright", "tox": "tox"}
    found = [command for key, command in known.items() if key in tool]
    scripts = _mapping(_mapping(_mapping(tool.get("hatch")).get("envs")).get("default"))
    found += [f"hatch run {name}" for name in _mapping(scripts.get("scripts"))
              if _TASK_WORDS.search(name)]
    found += [f"poe {name}" for name in _mapping(_mapping(tool.get("poe")).get("tasks"))
              if _TASK_WORDS.search(name)]
    return found


def _package_json(text: str) -> list[str]:
    try:
        scripts = _mapping(_mapping(json.loads(text)).get("scripts"))
    except ValueError:
        return []
    return [("npm test" if name == "test" else f"npm run {name}") for name in scripts
            if _TASK_WORDS.search(name)]


def _makefile(text: str) -> list[str]:
    targets = dict.fromkeys(_MAKE_TARGET.findall(text))
    return [f"make {t}" for t in targets if _TASK_WORDS.fullmatch(t)]


def _tox(text: str) -> list[str]:
    envs = re.search(r"(?m)^envlist\s*=\s*(.+)$", text)
    return [f"tox -e {envs.group(1).split(',')[0].strip()}" if envs else "tox"]


def _github_workflow(text: str) -> list[str]:
    doc = _yaml(text)
    steps = (step for job in _mapping(doc.get("jobs")).values()
             for step in _list(_mapping(job).get("steps")))
    return _task_lines(str(_mapping(s).get("run") or "") for s in steps)


def _gitlab_ci(text: str) -> list[str]:
    doc = _yaml(text)
    scripts = (line for job in doc.values() for line in _list(_mapping(job).get("script")))
    return _task_lines(str(s) for s in scripts)


def _task_lines(blocks: Iterator[str]) -> list[str]:
    lines = (line.strip() for block in blocks for line in block.splitlines())
    return [line for line in lines if line and not line.startswith("#")
            and _TASK_WORDS.search(line) and "${{" not in line]


def _yaml(text: str) -> dict[str, Any]:
    try:
        return _mapping(yaml.safe_load(text))
    except yaml.YAMLError:
        return {}


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
