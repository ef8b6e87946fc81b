"""A run's events: typed, numbered, appended one JSON object a line to ``events.jsonl``.

The runner, the merge stage and clean publish (``RunStore.event``); the report, the live
view, the lander of ``run --merge``, notifications and ``wtr events`` read or subscribe.
The state file stays the one truth for recovery: nothing here is needed to resume.

Each line holds ``seq`` (1, 2, 3... across every process that writes the log: they take
turns under a file lock), ``kind`` (``stream.started``), ``time`` (UTC, ISO 8601), ``run``,
``stream`` when the event has one, and the event's facts. A stream's life events are
published once each: a resumed runner that starts a stream the log already shows running
publishes ``stream.resumed``, and an end the log already has is not repeated.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from worktree_runner import statefs


class Kind(StrEnum):
    RUN_CREATED = "run.created"
    RUN_STARTED = "run.started"
    RUN_FINISHED = "run.finished"
    RUN_INTERRUPTED = "run.interrupted"
    STREAM_STARTED = "stream.started"
    STREAM_RESUMED = "stream.resumed"
    STREAM_PROGRESSED = "stream.progressed"
    ATTEMPT_STARTED = "stream.attempt_started"
    ATTEMPT_ENDED = "stream.attempt_ended"
    STREAM_SUCCEEDED = "stream.succeeded"
    STREAM_FAILED = "stream.failed"
    STREAM_BLOCKED = "stream.blocked"
    LANDING_STARTED = "landing.started"
    LANDED = "landing.landed"
    LANDING_HALTED = "landing.halted"
    LANDING_ABORTED = "landing.aborted"
    LANDING_UNDONE = "landing.undone"
    LANDING_TARGET_MOVED = "landing.target_moved"
    SYNCED = "sync.done"
    SYNC_CONFLICT = "sync.conflict"
    CLEAN_REMOVED = "clean.removed"
    CLEAN_RESCUED = "clean.rescued"
    CLEAN_FINISHED = "clean.finished"
    NOTIFICATION_SENT = "notification.sent"
    NOTIFICATION_FAILED = "notification.failed"
    REQUEST_CREATED = "request.created"
    REQUEST_ROUTED = "request.routed"
    REQUEST_DELIVERED = "request.delivered"
    REQUEST_ANSWERED = "request.answered"
    REQUEST_ESCALATED = "request.escalated"
    REQUEST_TIMED_OUT = "request.timed_out"


STREAM_ENDS = frozenset({Kind.STREAM_SUCCEEDED, Kind.STREAM_FAILED, Kind.STREAM_BLOCKED})
RUN_ENDS = frozenset({Kind.RUN_FINISHED, Kind.RUN_INTERRUPTED})
LANDING_ENDS = frozenset({Kind.LANDED, Kind.LANDING_HALTED, Kind.LANDING_ABORTED,
                          Kind.LANDING_UNDONE, Kind.LANDING_TARGET_MOVED})
_LIFE = frozenset({Kind.STREAM_STARTED, *STREAM_ENDS})
_RESERVED = ("seq", "kind", "time", "run", "stream")

# The names producers pass to RunStore.event, and the kinds they are published as.
_NAMED = {
    "progress": Kind.STREAM_PROGRESSED,
    "attempt_finished": Kind.ATTEMPT_ENDED,
    "run_cleaned": Kind.CLEAN_FINISHED,
    "stream_synced": Kind.SYNCED,
    "stream_sync_conflict": Kind.SYNC_CONFLICT,
    "merge_landed": Kind.LANDED,
    "streams_merged": "streams.merged",
    "streams_unmerged": "streams.unmerged",
    "remote_branch_deleted": "clean.remote_branch_deleted",
    "teardown_failed": "clean.teardown_failed",
    "report_failed": "report.failed",
    "pool": "run.pool",
    "isolation_breach": "run.isolation_breach",
}
_PREFIXES = (("auto_merge_", "lander."), ("merge_", "landing."), ("remote_", "remote."),
             ("run_", "run."), ("stream_", "stream."), ("candidate_", "candidate."),
             ("notification_", "notification."), ("request_", "request."))


def kind_of(name: str, facts: dict[str, Any], stream: str | None = None) -> str:
    """The kind an event named ``name`` by its producer is published as."""
    if "." in name:
        return name
    if name == "stream_finished":
        succeeded = facts.get("status") in ("succeeded", "merged")
        return Kind.STREAM_SUCCEEDED if succeeded else Kind.STREAM_FAILED
    if name in _NAMED:
        return _NAMED[name]
    for prefix, group in _PREFIXES:
        if name.startswith(prefix):
            return group + name.removeprefix(prefix)
    return ("stream." if stream else "run.") + name


def facts_of(data: dict[str, Any]) -> dict[str, Any]:
    """The facts an event carries: the merge state shrinks to the landing it is about."""
    facts = {(f"{k}_" if k in _RESERVED else k): v for k, v in data.items()}
    merge = facts.pop("merge", None)
    if isinstance(merge, dict):
        landings = merge.get("landings") or [{}]
        last = landings[-1] if isinstance(landings[-1], dict) else {}
        facts["merge_state"] = merge.get("state")
        facts["landing"] = {key: last.get(key) for key in (
            "id", "state", "stream", "conflicted_files", "merged", "left_out", "halt",
            "worktree", "landed_from", "landed_to", "message") if key in last}
    return facts


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    time: str
    run: str
    stream: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        head: dict[str, Any] = {"seq": self.seq, "kind": self.kind, "time": self.time,
                                "run": self.run}
        if self.stream is not None:
            head["stream"] = self.stream
        return head | {(f"{k}_" if k in _RESERVED else k): v for k, v in self.facts.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any], seq: int) -> Event:
        """An event from its line; lines written before events were numbered (``event``,
        ``at``) are read as the kind they would have today."""
        found = data.get("seq")
        if isinstance(found, int) and not isinstance(found, bool):
            seq = found
        stream = data.get("stream")
        stream = stream if isinstance(stream, str) else None
        if isinstance(data.get("event"), str) and found is None:
            return cls._older(data, seq, stream)
        facts = {k: v for k, v in data.items() if k not in _RESERVED}
        return cls(seq, str(data.get("kind") or "unknown"), str(data.get("time") or ""),
                   str(data.get("run") or ""), stream, facts)

    @classmethod
    def _older(cls, data: dict[str, Any], seq: int, stream: str | None) -> Event:
        facts = {k: v for k, v in data.items() if k not in (*_RESERVED, "event", "at")}
        if "kind" in data:  # an attempt's kind, before the event had one of its own
            facts["attempt_kind"] = data["kind"]
        return cls(seq, kind_of(str(data["event"]), facts, stream), str(data.get("at") or ""),
                   str(data.get("run") or ""), stream, facts)

    def get(self, key: str, default: Any = None) -> Any:
        return self.facts.get(key, default)


def _parse(line: bytes, seq: int) -> Event | None:
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):  # an agent can write to the log: anything goes
        return None
    return Event.from_json(data, seq) if isinstance(data, dict) else None


class _Scan:
    """What the log holds up to ``offset``: its last ``seq`` and each stream's last life
    event; fed with the lines that follow."""

    def __init__(self) -> None:
        self.offset = 0
        self.seq = 0
        self.life: dict[str, str] = {}

    def feed(self, chunk: bytes) -> list[Event]:
        """Take the complete lines of ``chunk`` (read from ``offset``); a partial last line
        waits for its end."""
        found = []
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            self.seq += 1
            event = _parse(line, self.seq)
            if event is None:
                continue
            self.seq = max(self.seq, event.seq)
            if event.stream and event.kind in _LIFE:
                self.life[event.stream] = event.kind
            found.append(event)
        self.offset += end
        return found


def read_since(path: Path, since: int = 0) -> list[Event]:
    """The events of the log at ``path`` numbered above ``since``."""
    try:
        with statefs.open_read(path) as source:
            chunk = source.read()
    except OSError:
        return []
    return [event for event in _Scan().feed(chunk) if event.seq > since]


def last_seq(path: Path) -> int:
    """The number of the last event in the log at ``path`` (0: none)."""
    scan = _Scan()
    with contextlib.suppress(OSError), statefs.open_read(path) as source:
        scan.feed(source.read())
    return scan.seq


def follow(path: Path, since: int = 0, done: Callable[[Event], bool] = lambda e: False,
           poll: float = 0.2, stop: threading.Event | None = None) -> Iterator[Event]:
    """The events above ``since`` and then new ones as they are written, until one for
    which ``done`` is true (it is yielded) or ``stop`` is set."""
    scan = _Scan()
    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            with statefs.open_read(path) as source:
                source.seek(scan.offset)
                chunk = source.read()
        except OSError:
            chunk = b""
        for event in scan.feed(chunk):
            if event.seq > since:
                yield event
                if done(event):
                    return
        if not chunk.endswith(b"\n") or not chunk:
            stop.wait(poll)


def _lock(fd: int, patience: float = 2.0) -> bool:
    """Take the log's lock (the writers of every process take turns); False when it stays
    held past ``patience``: an agent can open the file too, and holding the lock forever
    must not freeze the run. The event is then written unlocked, its number a guess."""
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


class EventLog:
    """The writer of one run's ``events.jsonl``; safe across threads and processes. The
    file stays open between events, as long as it is the file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._scan = _Scan()
        self._lock = threading.Lock()
        self._fd: int | None = None

    def append(self, kind: str, run: str, stream: str | None,
               facts: dict[str, Any]) -> Event | None:
        """Number, write and flush one event; None when the log already says it (a stream's
        end published twice, by a runner killed after saving its state and its successor)."""
        with self._lock:
            fd = self._open()
            locked = _lock(fd)
            try:
                self._catch_up(fd)
                once = self._once(kind, stream)
                if once is None:
                    return None
                event = Event(self._scan.seq + 1, once, utc_now(), run, stream, facts)
                line = json.dumps(event.to_json(), default=str, separators=(",", ":"))
                data = line.encode() + b"\n"
                os.write(fd, data)  # one write to a file opened for appending
                self._scan.offset += len(data)
                self._scan.seq = event.seq
                if stream and once in _LIFE:
                    self._scan.life[stream] = once
                return event
            finally:
                if locked:
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _open(self) -> int:
        """The open log; opened again (and read again from its start) when the file at
        ``path`` is not the one held open any more."""
        if self._fd is not None:
            try:
                here, held = os.lstat(self.path), os.fstat(self._fd)
                if (here.st_ino, here.st_dev) == (held.st_ino, held.st_dev) and (
                        statefs.what_is(here) is None):
                    return self._fd
            except OSError:
                pass
            os.close(self._fd)
            self._fd, self._scan = None, _Scan()
        self._fd = statefs.open_append(self.path)
        return self._fd

    def _catch_up(self, fd: int) -> None:
        """Read what others appended since this process last wrote; end a line cut short
        (a writer killed mid-line) so that it stays one damaged line of its own."""
        if os.fstat(fd).st_size == self._scan.offset:
            return
        with statefs.open_read(self.path) as source:
            source.seek(self._scan.offset)
            chunk = source.read()
        self._scan.feed(chunk)
        if chunk and not chunk.endswith(b"\n"):
            os.write(fd, b"\n")
            self._scan.feed(chunk[chunk.rfind(b"\n") + 1:] + b"\n")

    def _once(self, kind: str, stream: str | None) -> str | None:
        if not stream or kind not in _LIFE:
            return kind
        last = self._scan.life.get(stream)
        if kind == Kind.STREAM_STARTED and last == Kind.STREAM_STARTED:
            return Kind.STREAM_RESUMED
        return None if kind == last else kind

    def open_streams(self) -> set[str]:
        """Streams the log shows started and not ended."""
        with self._lock:
            with contextlib.suppress(OSError), statefs.open_read(self.path) as source:
                source.seek(self._scan.offset)
                self._scan.feed(source.read())
            return {name for name, kind in self._scan.life.items()
                    if kind == Kind.STREAM_STARTED}
