"""Synthetic history for real repositories, written in one `git fast-import` (fast even for
thousands of commits): each commit changes the listed paths (their content becomes the
commit's number, so every listed path really changes)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from tests.gitrepo import Repo

START = 1_767_225_600  # 2026-01-01, as the fixtures' pinned dates


def add_history(repo: Repo, commits: Sequence[Sequence[str]], start: int = START) -> None:
    """Commit ``commits`` (oldest first, each the paths it changes) on top of HEAD's branch,
    one minute apart from ``start``."""
    branch = repo.git("symbolic-ref", "HEAD")
    parts: list[bytes] = []
    parent = repo.head()
    for number, paths in enumerate(commits, 1):
        parts.append(_commit(branch, f"change {number}", start + number * 60, parent, paths,
                             number))
        parent = f":{number}"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=repo.path, input=b"".join(parts),
                   check=True)
    repo.git("reset", "-q", "--hard")
    repo.commits += len(commits)


def _commit(ref: str, message: str, when: int, parent: str, paths: Sequence[str],
            mark: int) -> bytes:
    text = message.encode()
    lines = [f"commit {ref}", f"mark :{mark}",
             f"committer Test Committer <committer@example.com> {when} +0000",
             f"data {len(text)}"]
    out = "\n".join(lines).encode() + b"\n" + text + b"\n" + f"from {parent}\n".encode()
    for path in paths:
        content = f"{mark}\n".encode()
        out += f"M 100644 inline {path}\ndata {len(content)}\n".encode() + content + b"\n"
    return out + b"\n"
