"""Real git repositories for tests: pinned identity and dates, no user configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.com",
    "GIT_AUTHOR_DATE": "2026-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.com",
    "GIT_COMMITTER_DATE": "2026-01-01T00:00:00+00:00",
}


def isolated_git_env(home: Path) -> dict[str, str]:
    """Variables that cut git off from the user's and the system's configuration."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    return {
        **IDENTITY,
        "HOME": str(home),
        "GIT_CONFIG_GLOBAL": str(config),
        "GIT_CONFIG_NOSYSTEM": "1",
        "XDG_CONFIG_HOME": str(home / ".config"),
    }


def git(cwd: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout.strip()


@dataclass
class Repo:
    path: Path
    commits: int = field(default=0)

    def git(self, *args: str, check: bool = True) -> str:
        return git(self.path, *args, check=check)

    def write(self, files: Mapping[str, str]) -> None:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)

    def commit(self, files: Mapping[str, str], message: str = "change") -> str:
        """Write ``files`` and commit them; returns the new commit id."""
        self.write(files)
        self.git("add", "--", *files)
        self.git("commit", "-q", "-m", message)
        self.commits += 1
        return self.head()

    def head(self, ref: str = "HEAD") -> str:
        return self.git("rev-parse", ref)

    def write_plan(self, plan: Mapping[str, Any] | str, name: str = "plan.yaml") -> Path:
        """Write a plan (a mapping, dumped as YAML, or raw text) beside the repository."""
        path = self.path.parent / name
        # sort_keys=False: the order of streams is meaningful (later ones wait on conflicts).
        text = plan if isinstance(plan, str) else yaml.safe_dump(dict(plan), sort_keys=False)
        path.write_text(text)
        return path

    def refs(self) -> str:
        return self.git("for-each-ref", "--format=%(refname) %(objectname)")


def make_repo(path: Path, files: Mapping[str, str] | None = None) -> Repo:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    repo = Repo(path)
    repo.commit(files or {"README.md": "hello\n"}, "initial")
    return repo


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_lines(self, code: int = 2) -> list[str]:
        """stderr, once checked to be a user error as the CLI prints one: exit ``code``,
        a first line ``wtr: ...`` and no traceback."""
        assert self.returncode == code, (self.returncode, self.stdout, self.stderr)
        assert "Traceback" not in self.stderr, self.stderr
        lines = self.stderr.splitlines()
        assert lines and lines[0].startswith("wtr: "), self.stderr
        return lines

    def one_line_error(self, code: int = 2) -> str:
        """The single ``wtr: ...`` line of a user error that is not a list of plan problems."""
        lines = self.error_lines(code)
        assert len(lines) == 1, self.stderr
        return lines[0]


def run_wtr(*args: str | Path, cwd: Path, env: Mapping[str, str] | None = None,
            timeout: float = 120) -> Result:
    """Run the real command line in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    completed = subprocess.run(
        [sys.executable, "-m", "worktree_runner", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, env=full_env, timeout=timeout, check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr)
