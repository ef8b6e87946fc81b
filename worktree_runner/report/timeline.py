"""What happened to each stream, and when: read back from the run's event log.

Each stream becomes a row of segments: waiting for its dependencies, waiting for a free
slot (``max_parallel``), preparing its worktree, and each attempt with its phases (agent
running, checks, verify), separated by the retry back-off. Times are epoch seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worktree_runner.events import Event, Kind
from worktree_runner.plan import graph


@dataclass
class Attempt:
    number: int
    start: float
    agent_end: float | None = None
    verify_start: float | None = None
    end: float | None = None
    outcome: str = "running"  # ok | running | a failure kind
    message: str = ""
    kind: str = "agent"  # agent | retry | feedback | message (the attempt's log entry)


@dataclass
class Segment:
    kind: str  # wait | queue | prepare | backoff | blocked
    start: float
    end: float
    note: str = ""


@dataclass
class Row:
    name: str
    segments: list[Segment] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    first_start: float | None = None
    finish: float | None = None
    outcome: str | None = None
    progress: list[tuple[float, str]] = field(default_factory=list)
    verify_offset: int | None = None


@dataclass
class MergeSpan:
    start: float
    end: float | None = None
    outcome: str = "running"  # landed | halted | aborted | undone | running


@dataclass
class Timeline:
    start: float
    end: float
    rows: dict[str, Row]
    critical: list[str]
    merges: list[MergeSpan] = field(default_factory=list)


_MERGE_ENDS: dict[str, str] = {Kind.LANDED: "landed", Kind.LANDING_HALTED: "halted",
               Kind.LANDING_ABORTED: "aborted", Kind.LANDING_TARGET_MOVED: "aborted",
               Kind.LANDING_UNDONE: "undone"}
_HANDLERS: dict[str, str] = {
    Kind.STREAM_STARTED: "_on_stream_started", Kind.STREAM_RESUMED: "_on_stream_started",
    Kind.ATTEMPT_STARTED: "_on_attempt_started", "stream.agent_exited": "_on_agent_exited",
    "stream.verify_started": "_on_verify_started", Kind.ATTEMPT_ENDED: "_on_attempt_finished",
    Kind.STREAM_SUCCEEDED: "_on_stream_finished", Kind.STREAM_FAILED: "_on_stream_finished",
    Kind.STREAM_BLOCKED: "_on_stream_blocked", Kind.STREAM_PROGRESSED: "_on_progress"}


def stamp(at: str) -> float:
    return datetime.fromisoformat(at).timestamp()


def _stamp_or_none(event: Event) -> float | None:
    try:
        return stamp(event.time)
    except ValueError:
        return None


class _Reader:
    """Folds the event log into rows, one event at a time, in the order they were written."""

    def __init__(self, names: Iterable[str], ordering: Mapping[str, Iterable[str]]) -> None:
        self.rows = {name: Row(name) for name in names}
        self.ordering = ordering
        self.run_start: float | None = None
        self.preparing: dict[str, float] = {}
        self.merges: list[MergeSpan] = []

    def read(self, event: Event) -> None:
        try:
            t = stamp(event.time)
        except ValueError:
            return
        if event.kind in (Kind.RUN_CREATED, Kind.RUN_STARTED):
            self.run_start = t
            return
        if event.kind.startswith("landing."):
            self._merge(event.kind, t)
            return
        row = self.rows.get(event.stream or "")
        handler = getattr(self, _HANDLERS.get(event.kind, ""), None)
        if row is not None and handler is not None:
            handler(row, t, event)

    def _merge(self, name: str, t: float) -> None:
        """A merge runs from its first event to landing, a halt, an abort; ``--continue``
        after a halt is a new span. An undo is a moment of its own."""
        if not self.merges or self.merges[-1].end is not None:
            self.merges.append(MergeSpan(t))
        if name in _MERGE_ENDS:
            self.merges[-1].end, self.merges[-1].outcome = t, _MERGE_ENDS[name]

    def _on_stream_started(self, row: Row, t: float, event: Event) -> None:
        since = self.run_start
        if since is not None and t > since:
            self._wait(row, since, t)
        if row.first_start is None:
            row.first_start = t
        row.finish, row.outcome = None, None
        self.preparing[row.name] = t

    def _wait(self, row: Row, since: float, until: float) -> None:
        """Waiting for dependencies until the last of them finished, then for a free slot."""
        finishes = [self.rows[p].finish for p in self.ordering.get(row.name, ())]
        if None in finishes:  # still waiting on one: the whole span was for dependencies
            ready = until
        else:
            ready = min(max(max((f for f in finishes if f is not None), default=since),
                            since), until)
        if ready > since:
            row.segments.append(Segment("wait", since, ready, "waiting for dependencies"))
        if until > ready:
            row.segments.append(Segment("queue", ready, until, "waiting for a free slot"))

    def _on_attempt_started(self, row: Row, t: float, event: Event) -> None:
        prepared = self.preparing.pop(row.name, None)
        if prepared is not None and t > prepared:
            row.segments.append(Segment("prepare", prepared, t, "worktree and setup"))
        last = row.attempts[-1] if row.attempts else None
        if last is not None and last.end is not None and t > last.end:
            row.segments.append(Segment("backoff", last.end, t, "retry back-off"))
        row.attempts.append(Attempt(int(event.get("attempt") or len(row.attempts) + 1), t,
                                    kind=str(event.get("attempt_kind") or "agent")))

    def _current(self, row: Row, t: float, event: Event) -> Attempt:
        number = int(event.get("attempt") or 0)
        if row.attempts and row.attempts[-1].end is None:
            return row.attempts[-1]
        # An agent adopted after a crash: its attempt began before this runner's log.
        row.attempts.append(Attempt(number or len(row.attempts) + 1,
                                    self.preparing.pop(row.name, t)))
        return row.attempts[-1]

    def _on_agent_exited(self, row: Row, t: float, event: Event) -> None:
        self._current(row, t, event).agent_end = t

    def _on_verify_started(self, row: Row, t: float, event: Event) -> None:
        if row.attempts and row.attempts[-1].end is None:
            row.attempts[-1].verify_start = t
        row.verify_offset = event.get("log_offset")

    def _on_attempt_finished(self, row: Row, t: float, event: Event) -> None:
        if row.attempts and row.attempts[-1].end is None:
            _end(row.attempts[-1], t, event.get("failure"))

    def _on_stream_finished(self, row: Row, t: float, event: Event) -> None:
        failure = event.get("failure")
        prepared = self.preparing.pop(row.name, None)
        if prepared is not None:  # failed before any attempt: setup, a missing program
            row.segments.append(Segment("prepare", prepared, t, "worktree and setup"))
        if row.attempts and row.attempts[-1].end is None:
            _end(row.attempts[-1], t, failure)
        row.finish = t
        row.outcome = failure["kind"] if isinstance(failure, dict) else "ok"

    def _on_stream_blocked(self, row: Row, t: float, event: Event) -> None:
        since = self.run_start
        if since is not None and t > since:
            row.segments.append(Segment("wait", since, t, "waiting for dependencies"))
        row.segments.append(Segment("blocked", t, t, f"blocked: '{event.get('blocked_by')}' "
                                                     "did not succeed"))
        row.outcome = "blocked"

    def _on_progress(self, row: Row, t: float, event: Event) -> None:
        message = event.get("message")
        if isinstance(message, str):
            row.progress.append((t, message))


def _end(attempt: Attempt, t: float, failure: Any) -> None:
    attempt.end = t
    if isinstance(failure, dict):
        attempt.outcome = str(failure.get("kind") or "error")
        attempt.message = str(failure.get("message") or "")
    else:
        attempt.outcome = "ok"


def build_timeline(events: list[Event], names: list[str],
                   ordering: Mapping[str, Iterable[str]], now: float,
                   running: bool) -> Timeline:
    reader = _Reader(names, ordering)
    for event in events:
        reader.read(event)
    times = [t for t in map(_stamp_or_none, events) if t is not None]
    start = min(times, default=now)
    end = max([*times, now] if running else times or [now])
    for row in reader.rows.values():
        _close_open(row, reader, end, running)
    for merge in reader.merges:
        if merge.end is None:
            merge.end = end
    return Timeline(start, max(end, start + 1.0), reader.rows,
                    critical_path(reader.rows, ordering, names), reader.merges)


def _close_open(row: Row, reader: _Reader, end: float, running: bool) -> None:
    """Bars still open at the end: running attempts, streams still waiting."""
    for attempt in row.attempts:
        if attempt.end is None:
            attempt.end = end
            attempt.outcome = "running" if running else "interrupted"
    if running and row.first_start is None and row.outcome is None:
        since = reader.run_start
        if since is not None and end > since:
            reader._wait(row, since, end)
    prepared = reader.preparing.get(row.name)
    if prepared is not None and not row.attempts:
        row.segments.append(Segment("prepare", prepared, end, "worktree and setup"))


def critical_path(rows: Mapping[str, Row], ordering: Mapping[str, Iterable[str]],
                  names: list[str]) -> list[str]:
    """The chain that decided when the run ended: from the stream that finished last, back
    through the predecessor that finished last before it started. Before any stream has
    finished, the plan's longest chain."""
    finished = [r for r in rows.values() if r.finish is not None and r.first_start is not None]
    if not finished:
        return graph.longest_chain(ordering, names)
    current = max(finished, key=lambda r: (r.finish or 0.0, -names.index(r.name)))
    path = [current.name]
    while True:
        before = [rows[p] for p in ordering.get(current.name, ())
                  if rows[p].finish is not None
                  and (rows[p].finish or 0.0) <= (current.first_start or 0.0) + 1.0]
        if not before:
            return path
        current = max(before, key=lambda r: r.finish or 0.0)
        path.insert(0, current.name)
