"""Recorded conflict resolutions (git rerere) seen from the object database.

The merge replays with rerere on, so a conflict resolved once is resolved again. For
``merge --check`` to agree, it looks a conflict up as rerere does: the conflict's hunks
are normalised (both sides, in sorted order, labels dropped) and hashed into the name
of a folder of ``rr-cache``; a ``postimage`` there is the recorded resolution, applied to
the conflict by a three-way merge (recorded conflict -> its resolution, onto this one).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from worktree_runner import git

MARKER = 7


@dataclass
class Normalised:
    text: bytes = b""
    conflict_id: str | None = None


@dataclass
class Resolution:
    tree: str | None                  # the merged tree with every conflict resolved, or None
    resolved: list[str] = field(default_factory=list)


def _is_marker(line: bytes, char: bytes) -> bool:
    if not line.startswith(char * MARKER):
        return False
    rest = line[MARKER:]
    return not rest or rest[:1].isspace()


def normalise(data: bytes) -> Normalised:
    """rerere's normal form of a conflicted file and its conflict id (None: no conflict)."""
    lines = iter(data.splitlines(keepends=True))
    out: list[bytes] = []
    digest = hashlib.sha1(usedforsecurity=False)
    found = False
    for line in lines:
        if _is_marker(line, b"<"):
            one, two = _hunk(lines)
            if one is None or two is None:
                return Normalised(data, None)
            found = True
            one, two = sorted((one, two))
            out += [b"<" * MARKER + b"\n", one, b"=" * MARKER + b"\n", two,
                    b">" * MARKER + b"\n"]
            digest.update(one + b"\0")
            digest.update(two + b"\0")
        else:
            out.append(line)
    return Normalised(b"".join(out), digest.hexdigest() if found else None)


def _hunk(lines: object) -> tuple[bytes | None, bytes | None]:
    sides: list[list[bytes]] = [[], []]
    side = 0  # 0: ours, 1: theirs, 2: the common ancestor's lines (diff3), dropped
    for line in lines:  # type: ignore[attr-defined]
        if _is_marker(line, b"|") and side == 0:
            side = 2
        elif _is_marker(line, b"=") and side in (0, 2):
            side = 1
        elif _is_marker(line, b">") and side == 1:
            return b"".join(sides[0]), b"".join(sides[1])
        elif _is_marker(line, b"<"):
            return None, None  # nested conflicts: left to a real rerere
        elif side != 2:
            sides[side].append(line)
    return None, None


def recorded(repo: git.Repository, data: bytes) -> bytes | None:
    """The recorded resolution of the conflicted file ``data``, applied to it, if any."""
    normal = normalise(data)
    if normal.conflict_id is None:
        return None
    folder = git.rerere_dir(repo) / normal.conflict_id
    if not folder.is_dir():
        return None
    for post in sorted(folder.glob("postimage*")):
        pre = folder / post.name.replace("postimage", "preimage")
        if not pre.exists():
            continue
        merged = git.merge_file(normal.text, pre.read_bytes(), post.read_bytes())
        if merged is not None:
            return merged
    return None


def resolve(repo: git.Repository, result: git.TreeMerge) -> Resolution:
    """The merge ``result`` with its conflicts resolved from recorded resolutions; the tree
    is None unless every conflicted file has one."""
    if result.written is None or not result.conflicts:
        return Resolution(None)
    contents: dict[str, bytes] = {}
    for path in result.conflicts:
        data = git.blob_at(repo, result.written, path)
        resolved = recorded(repo, data) if data is not None else None
        if resolved is None:
            return Resolution(None)
        contents[path] = resolved
    return Resolution(git.replace_files(repo, result.written, contents), sorted(contents))
