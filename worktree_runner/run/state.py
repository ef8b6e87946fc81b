"""A run's state: a versioned JSON file written atomically, and an append-only event log.

Layout under ``<common git dir>/worktree-runner/runs/<run>/``::

    state.json            the run and every stream (the runner is its only writer)
    events.jsonl          one JSON line per event, numbered (events.py)
    plan.yaml             the plan as it was when the run started
    streams/<name>/       agent.log, prompt.md, progress.json (written by ``wtr progress``),
                          report.md (the agent's own report, WTR_REPORT)
    report.html           the run report (``wtr report``), rewritten as the run goes
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from worktree_runner import logs, statefs
from worktree_runner.errors import BadInput
from worktree_runner.events import Event, EventLog, facts_of, kind_of, utc_now
from worktree_runner.files import write_text_atomic

STATE_VERSION = 1
RESERVE_BYTES = 256 * 1024
T = TypeVar("T")


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BLOCKED = "blocked"
    MERGED = "merged"


class RunState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` so that readers never see half of it."""
    # No indent: json's C encoder only serves compact output, and a run's state is
    # rewritten at every transition of every stream.
    write_text_atomic(path, json.dumps(document, separators=(",", ":")) + "\n")


def read_json(path: Path) -> Any:
    """The document at ``path``; None when it is missing, damaged, or not a regular file
    (a symlink or a FIFO an agent put in its folder is never followed nor waited on)."""
    try:
        return json.loads(statefs.read_text(path))
    except (OSError, ValueError):
        return None


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of dataclass ``cls`` (a newer state file may
    carry more; they are ignored, not an error)."""
    known = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in known}


def checked(cls: type[T], data: Any) -> T:
    """An instance of dataclass ``cls`` from a state document, every known field of the
    type it is declared with; a damaged file raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} entry is {type(data).__name__}, not an object")
    values = known_fields(cls, data)
    hints = _type_hints(typing.cast(type, cls))
    for name, value in values.items():
        if not _conforms(value, hints[name]):
            raise ValueError(f"'{name}' holds {value!r:.40}, which is not {hints[name]}")
    return cls(**values)


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_conforms(item, args[0]) for item in value)
    if origin is dict:
        return isinstance(value, dict) and all(
            isinstance(k, str) and _conforms(v, args[1]) for k, v in value.items())
    if hint in (int, float, str, bool):
        number = hint in (int, float) and not isinstance(value, bool)
        return isinstance(value, hint if hint is not float else int | float) and (
            number or hint in (str, bool))
    return True  # Any, and nested records checked on their own


@dataclass
class Failure:
    # exit_code | timeout | stalled | setup | ownership | verify | interrupted | error
    # | history | no_changes | budget | sync
    kind: str
    message: str
    files: list[str] = field(default_factory=list)
    output: str | None = None  # verify: the failing command's last lines; sync: the hunks


@dataclass
class StreamRecord:
    name: str
    branch: str
    worktree: str | None
    depends_on: list[str]
    status: str = Status.PENDING.value
    base_commit: str | None = None
    head_commit: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    failure: Failure | None = None
    changed_files: list[str] = field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    pid: int | None = None
    pid_start: int | None = None
    agent_started: float | None = None
    log_start: int | None = None
    usage: dict[str, float | None] | None = None  # input_tokens, output_tokens, cost_usd, turns
    prepared: bool = False
    adopted: bool = False
    blocked_by: str | None = None
    accepted: dict[str, str] | None = None
    # {"kind": "history" | "no_changes", "message": ...}: the stream succeeded, but look.
    warnings: list[dict[str, str]] = field(default_factory=list)
    reflog_start: int | None = None  # entries in the branch's reflog when the attempt began
    remote_task: str | None = None
    # Set while the results it starts from conflict and wait for a human in its worktree.
    start_conflict: dict[str, Any] | None = None
    pushed: dict[str, str] | None = None
    pr: dict[str, Any] | None = None
    # Best-of-N (run/candidates.py): one entry per candidate, {"attempt", "branch",
    # "status", "failure", "diff_stat", "chosen", ...}; empty for a stream of one attempt.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    # The agent CLI's session the last attempt belonged to (its preset's ``session()``).
    session: str | None = None
    # One entry per attempt: {"attempt", "kind": agent | retry | feedback | message,
    # "started_at", "resumed": session or None, "finished_at", "failure"}.
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    # A person's message (``wtr retry --message``) the next attempt continues the session with.
    message: str | None = None
    budget: dict[str, float | None] | None = None  # {"usd": X, "tokens": N}: the most it may spend
    # How its worktree got its files: full | overlay | reflink (worktree_runner/checkout.py).
    checkout: str | None = None

    def to_json(self) -> dict[str, Any]:
        document = dict(vars(self))
        if self.failure is not None:
            document["failure"] = dict(vars(self.failure))
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamRecord:
        failure = data.get("failure") if isinstance(data, dict) else None
        record = checked(cls, {**data, "failure": None} if failure is not None else data)
        if failure is not None:
            record.failure = checked(Failure, failure)
        if record.status not in {s.value for s in Status}:
            raise ValueError(f"stream '{record.name}' has the unknown status {record.status!r}")
        return record


def empty_merge(target: str) -> dict[str, Any]:
    return {
        "state": "none",
        "target": target,
        "worktree": None,
        "stream": None,
        "conflicted_files": [],
        "merged": [],
        "left_out": [],
    }


@dataclass
class RunRecord:
    run: str
    plan: str
    repo: str
    base: str
    base_commit: str
    target: str
    worktrees_root: str
    max_parallel: int
    streams: dict[str, StreamRecord]
    state: str = RunState.RUNNING.value
    created_at: str = field(default_factory=now)
    finished_at: str | None = None
    runner_pid: int | None = None
    cleaned_at: str | None = None
    merge: dict[str, Any] = field(default_factory=dict)
    # What changed outside the run's worktrees while it ran (see run/guard.py).
    isolation: list[dict[str, Any]] = field(default_factory=list)
    # Untracked files brought into the worktrees by ``copy``/.worktreeinclude: never committed.
    copied: list[str] = field(default_factory=list)
    # Where the streams run: {"kind": "dask", "scheduler": ..., "remote": ...}; None: here.
    executor: dict[str, Any] | None = None
    budget: dict[str, float | None] | None = None  # the whole run's: {"usd": X, "tokens": N}
    # Notifications that did not arrive (the last few): {"to", "topic", "about", "error", "at"}.
    notify_failures: list[dict[str, Any]] = field(default_factory=list)
    # Streams change requests added (coordinate/): {"name", "owner", "request",
    # "requester", "prompt"}, in the order they were added.
    follow_ups: list[dict[str, Any]] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        # By hand, not dataclasses.asdict: its deep copy made every save O(streams) slower
        # than it needs to be, and a run saves at every transition of every stream.
        document = dict(vars(self))
        document["streams"] = {name: s.to_json() for name, s in self.streams.items()}
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        streams = data.get("streams")
        if not isinstance(streams, dict):
            raise ValueError("'streams' is not an object")
        record = checked(cls, {**data, "streams": {}})
        record.streams = {name: StreamRecord.from_json(s) for name, s in streams.items()}
        if record.state not in {s.value for s in RunState}:
            raise ValueError(f"the run has the unknown state {record.state!r}")
        return record


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class RunStore:
    """The state folder of one run; the single place that writes ``state.json``."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.state_path = run_dir / "state.json"
        self.events_path = run_dir / "events.jsonl"
        self.plan_path = run_dir / "plan.yaml"
        self._lock = threading.RLock()
        self.log = EventLog(self.events_path)
        self._record: RunRecord | None = None
        # Called with each event this store publishes, in order, in the publisher's thread.
        self.subscribers: list[Callable[[Event], None]] = []
        self.out_of_space = False
        self.on_full: Callable[[], None] | None = None

    @property
    def run_id(self) -> str:
        return self.dir.name

    def stream_dir(self, name: str) -> Path:
        return self.dir / "streams" / name

    def log_path(self, name: str) -> Path:
        return self.stream_dir(name) / "agent.log"

    def prompt_path(self, name: str) -> Path:
        return self.stream_dir(name) / "prompt.md"

    def exit_path(self, name: str, attempt: int) -> Path:
        return self.stream_dir(name) / f"exit-{attempt}.json"

    def progress_path(self, name: str) -> Path:
        return self.stream_dir(name) / "progress.json"

    def report_path(self, name: str) -> Path:
        return self.stream_dir(name) / "report.md"

    # -- the state file ------------------------------------------------------------

    def load(self) -> RunRecord:
        data = read_json(self.state_path)
        if not isinstance(data, dict):
            raise BadInput(
                f"the state of run {self.run_id} is missing or unreadable ({self.state_path})",
                hint="pick another run with --run, or remove that folder",
            )
        if data.get("version") != STATE_VERSION:
            raise BadInput(
                f"run {self.run_id} was written by another version of worktree_runner "
                f"(state version {data.get('version')!r})",
                hint="use the version that started it",
            )
        try:
            record = RunRecord.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"the state of run {self.run_id} is damaged: {exc}",
                           hint=f"look at {self.state_path}, or pick another run with "
                                "--run") from None
        self._record = record
        return record

    @property
    def record(self) -> RunRecord:
        return self._record if self._record is not None else self.load()

    def save(self, record: RunRecord | None = None) -> None:
        with self._lock:
            if record is not None:
                self._record = record
            self._when_full(lambda: write_json_atomic(self.state_path, self.record.to_json()))

    # -- a full disk -------------------------------------------------------------------
    # The run folder keeps a reserve file. When the disk fills up (an agent's output, a
    # build), giving the reserve back lets the state record how the run ended, instead
    # of staying "running" with nobody running it.

    @property
    def reserve_paths(self) -> tuple[Path, Path]:
        """Two reserves: one for the write that found the disk full, one to end the run."""
        return self.dir / "space-reserve-1", self.dir / "space-reserve-2"

    def reserve_space(self) -> None:
        """Set aside room for the last writes of a run; quietly skipped when there is none."""
        size = max(RESERVE_BYTES, 2 * _size(self.state_path))
        for path in self.reserve_paths:
            if _size(path) >= size:
                continue
            try:
                with path.open("wb") as handle:
                    handle.write(bytes(size))
            except OSError:
                path.unlink(missing_ok=True)

    def release_space(self) -> None:
        for path in self.reserve_paths:
            path.unlink(missing_ok=True)

    def _when_full(self, write: Callable[[], None]) -> None:
        """``write``, and once more after giving back a reserve if the disk was full."""
        try:
            write()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.out_of_space = True
            if self.on_full is not None:
                self.on_full()
            reserve = next((p for p in self.reserve_paths if p.exists()), None)
            if reserve is None:
                raise
            reserve.unlink()
            write()

    def update_stream(self, name: str, event: str | None = None, **changes: Any) -> StreamRecord:
        """Change a stream's fields, save the state, and publish the transition."""
        with self._lock:
            stream = self.record.streams[name]
            for key, value in changes.items():
                setattr(stream, key, value)
            self.save()
            facts = {"status": stream.status, "attempt": stream.attempts, **_loggable(changes)}
            published = self._append(event, stream=name, **facts)
        self._dispatch(published)
        return stream

    def add_stream(self, stream: StreamRecord, **changes: Any) -> None:
        """A stream added to the run while it runs (a follow-up), and the run's ``changes``,
        saved at once; its folder is made first."""
        self.stream_dir(stream.name).mkdir(parents=True, exist_ok=True)
        with self._lock:
            # (a new mapping: a thread going through the old one is not disturbed)
            self.record.streams = {**self.record.streams, stream.name: stream}
            for key, value in changes.items():
                setattr(self.record, key, value)
            self.save()
            published = self._append("stream_added", stream=stream.name,
                                     depends_on=stream.depends_on)
        self._dispatch(published)

    def update_streams(self, names: list[str], event: str, **changes: Any) -> None:
        """The same change to several streams, saved once."""
        with self._lock:
            for name in names:
                for key, value in changes.items():
                    setattr(self.record.streams[name], key, value)
            self.save()
            published = self._append(event, streams=names, **_loggable(changes))
        self._dispatch(published)

    def update_run(self, event: str | None = None, **changes: Any) -> RunRecord:
        with self._lock:
            record = self.record
            for key, value in changes.items():
                setattr(record, key, value)
            self.save()
            published = self._append(event, **_loggable(changes))
        self._dispatch(published)
        return record

    # -- the event log -----------------------------------------------------------------

    def event(self, name: str, **data: Any) -> Event | None:
        """Publish an event: appended to the log, then handed to each subscriber. A log that
        cannot be written or a subscriber that fails never stops the producer."""
        with self._lock:
            published = self._append(name, **data)
        self._dispatch(published)
        return published

    def _append(self, name: str | None, **data: Any) -> Event | None:
        """The event written to the log (in the order of the state changes: under the lock);
        None when there is none or the log already says it."""
        if name is None:
            return None
        stream = data.pop("stream", None)
        kind = kind_of(name, data, stream)
        facts = facts_of(data)
        # Unwritten (the disk refused it), the event still reaches the subscribers.
        published: list[Event | None] = [Event(0, kind, utc_now(), self.run_id, stream, facts)]

        def write() -> None:
            published[0] = self.log.append(kind, self.run_id, stream, facts)

        with contextlib.suppress(OSError):
            self._when_full(write)
        return published[0]

    def _dispatch(self, event: Event | None) -> None:
        """Hand ``event`` to the subscribers, outside the lock: a subscriber may wait for a
        thread that changes the state (the lander)."""
        if event is None:
            return
        for subscriber in list(self.subscribers):
            try:
                subscriber(event)
            except Exception as exc:  # an observer's bug must not stop a run
                logs.debug("event subscriber failed", kind=event.kind, error=repr(exc))

    def events(self, since: int = 0) -> list[Event]:
        from worktree_runner.events import read_since

        return read_since(self.events_path, since)

    # -- progress, written by agents through ``wtr progress`` ---------------------------

    def progress(self, name: str) -> dict[str, Any] | None:
        data = read_json(self.progress_path(name))
        return data if isinstance(data, dict) else None


def _loggable(changes: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for key, value in changes.items():
        result[key] = asdict(value) if isinstance(value, Failure) else value
    return result
