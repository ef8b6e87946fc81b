"""A person in a stream's session (``wtr attach``): the note the runner reads, and the record
of every session.

``attach.json`` in the stream's folder says who is in it: the ``wtr attach`` process (pid
and start time, so a reused pid is not mistaken for it) and whether it took over the
running agent. The runner that sees its agent end under such a note does not count the
end as a failure: it waits for the person to leave, then checks the work as after any
attempt. ``attached.jsonl`` keeps one line per session, written when it ends.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from worktree_runner import procs, statefs

NOTE_FILE = "attach.json"
RECORD_FILE = "attached.jsonl"
POLL_SECONDS = 0.2


def note_path(stream_dir: Path) -> Path:
    return stream_dir / NOTE_FILE


def write_note(stream_dir: Path, took_over: bool, attempt: int,
               session: str | None = None) -> None:
    """Say that this process has the stream's session from now on."""
    note = {"pid": os.getpid(), "started": procs.process_start_time(os.getpid()),
            "took_over": took_over, "attempt": attempt, "session": session}
    statefs.write_text(note_path(stream_dir), json.dumps(note) + "\n", 0o600)


def clear_note(stream_dir: Path) -> None:
    note_path(stream_dir).unlink(missing_ok=True)


def present(stream_dir: Path) -> dict[str, Any] | None:
    """The note of a person still in the stream's session (its process alive), or None."""
    try:
        note = json.loads(statefs.read_text(note_path(stream_dir)))
    except (OSError, ValueError):
        return None
    if not isinstance(note, dict) or not isinstance(note.get("pid"), int):
        return None
    alive = note.get("started") is not None and (
        procs.process_start_time(note["pid"]) == note.get("started"))
    return note if alive else None


def taken_over(stream_dir: Path) -> bool:
    """Whether a person took this stream's running agent over (and is still in it)."""
    note = present(stream_dir)
    return bool(note and note.get("took_over"))


def wait_for_person(stream_dir: Path, stop: threading.Event) -> bool:
    """Wait while a person works in the session; False when ``stop`` came first."""
    while present(stream_dir) is not None:
        if stop.wait(POLL_SECONDS):
            return False
    return True


def record(stream_dir: Path, session: dict[str, Any]) -> None:
    """Add one ended session to the stream's record."""
    statefs.append_text(stream_dir / RECORD_FILE, json.dumps(session, sort_keys=True) + "\n")


def sessions(stream_dir: Path) -> list[dict[str, Any]]:
    """Every recorded session of the stream, oldest first (damaged lines skipped)."""
    try:
        text = statefs.read_text(stream_dir / RECORD_FILE)
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found
