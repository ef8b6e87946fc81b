"""Disk used by a run's worktrees (what ``du`` reports), for ``wtr status``.

Walks every file of every worktree, so only ``wtr status`` asks for it, not the runner; a
shared checkout under overlay worktrees is walked once and its size kept.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from worktree_runner.checkout import BASE_DIR, LAYERS_DIR
from worktree_runner.files import write_text_atomic
from worktree_runner.merge.stage import INTEGRATION_DIR
from worktree_runner.run.state import RunRecord

SIZE_NOTE = "disk-bytes"  # (in a shared checkout's folder: its size, counted once)


def used_bytes(path: Path, seen: set[tuple[int, int]] | None = None) -> int:
    """Bytes of disk blocks under ``path`` (links not followed; a hard link counted once)."""
    seen = set() if seen is None else seen
    total, folders = 0, [str(path)]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:  # gone or unreadable meanwhile: not ours to count
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if info.st_nlink > 1 and not entry.is_dir(follow_symlinks=False):
                if (info.st_dev, info.st_ino) in seen:
                    continue
                seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
    return total


def run_disk(record: RunRecord) -> dict[str, Any]:
    """``disk_bytes`` of the run and of each stream's worktree (0 when it has none); an
    overlay worktree counts its own layer, and the run the shared checkout under them."""
    seen: set[tuple[int, int]] = set()
    streams = {name: used_bytes(_own_files(record, name), seen) if s.worktree else 0
               for name, s in record.streams.items()}
    root = Path(record.worktrees_root)
    integration = root / record.run / INTEGRATION_DIR
    merge = used_bytes(integration, seen) if integration.exists() else 0
    shared = root / BASE_DIR / record.base_commit
    if any(s.checkout == "overlay" for s in record.streams.values()) and shared.is_dir():
        merge += shared_bytes(shared)
    return {"disk_bytes": sum(streams.values()) + merge, "streams": streams}


def shared_bytes(shared: Path) -> int:
    """The disk of a shared checkout, counted once and kept beside it: it never changes
    (at a million files the walk takes a minute, and every ``status --json`` asked)."""
    note = shared / SIZE_NOTE
    with contextlib.suppress(OSError, ValueError):
        return int(note.read_text(encoding="utf-8"))
    total = used_bytes(shared)
    with contextlib.suppress(OSError):
        write_text_atomic(note, f"{total}\n")
    return total


def _own_files(record: RunRecord, name: str) -> Path:
    stream = record.streams[name]
    layer = Path(record.worktrees_root) / LAYERS_DIR / record.run / name / "upper"
    return layer if stream.checkout == "overlay" and layer.is_dir() else Path(str(stream.worktree))
