"""The run's change requests: one JSON file in the run's folder, changed under a file lock.

Agents (``wtr request``), the runner and people (``wtr answer``) all write it, from as
many processes, so every change is a read-modify-write under ``requests.lock``; the file
itself is replaced atomically, so a reader without the lock never sees half of it. An
agent can write this folder: it is read as untrusted (never through a link, a damaged
entry skipped).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from worktree_runner import statefs
from worktree_runner.errors import WtrError
from worktree_runner.run.state import checked, now, read_json, write_json_atomic

BOOK_VERSION = 1
LOCK_TIMEOUT = 30.0


class Route(StrEnum):
    PROMPT = "prompt"  # the owner has not started: its prompt carries the request
    FEEDBACK = "feedback"  # the owner is running: one more round in its session
    FOLLOW_UP = "follow_up"  # the owner has finished: a follow-up stream does it
    PERSON = "person"  # shared or unowned, or no stream can take it


class State(StrEnum):
    PENDING = "pending"  # recorded, not yet in front of anyone
    DELIVERED = "delivered"  # in the owner's prompt or session, or a follow-up runs it
    ANSWERED = "answered"  # the owner's round or the follow-up ended, or a person answered
    ESCALATED = "escalated"  # a person must decide (shared path, failed owner, cycle)
    TIMED_OUT = "timed_out"  # the requester waited past its timeout: a person must decide


OPEN = frozenset({State.PENDING, State.DELIVERED, State.ESCALATED})


@dataclass
class Request:
    id: str
    requester: str
    path: str
    what: str
    why: str
    wait: bool
    route: str
    target: str | None  # the stream it went to (a follow-up's name once there is one)
    owner: str | None  # the stream that owns ``path``
    state: str = State.PENDING.value
    answer: str | None = None
    answered_by: str | None = None  # the stream, or "person"
    cycle: list[str] = field(default_factory=list)  # streams waiting on each other, if any
    delivered_attempt: int | None = None
    created_at: str = field(default_factory=now)
    updated_at: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN

    def to_json(self) -> dict[str, Any]:
        document = dict(vars(self))
        document["from"] = document.pop("requester")
        return document

    @classmethod
    def from_json(cls, data: Any) -> Request:
        if not isinstance(data, dict):
            raise ValueError("a request is not an object")
        fields = {("requester" if k == "from" else k): v for k, v in data.items()}
        request: Request = checked(cls, fields)
        if request.state not in {s.value for s in State}:
            raise ValueError(f"unknown request state {request.state!r}")
        return request

    def text(self) -> str:
        """The request as its owner reads it."""
        return (f"Stream '{self.requester}' asks (request {self.id}) for a change in "
                f"{self.path}:\n  What: {self.what}\n  Why: {self.why}")


def round_message(requests: list[Request]) -> str:
    """What a running owner's session is told once its turn has ended."""
    return "\n\n".join([
        "## Change requests from other streams",
        "Other streams need changes in files you own:",
        *(r.text() for r in requests),
        "Make each one that fits your task in your worktree, commit, and exit with code 0: "
        "your checks run again then. If one does not fit, say why in your report.",
    ]) + "\n"


class RequestBook:
    """``coordination/requests.json`` of a run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "coordination"
        self.path = self.folder / "requests.json"
        self._lock = FileLock(str(self.folder / "requests.lock"), timeout=LOCK_TIMEOUT)

    def read(self) -> list[Request]:
        data = read_json(self.path) if statefs.is_file(self.path) else None
        entries = data.get("requests") if isinstance(data, dict) else None
        requests = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                requests.append(Request.from_json(entry))
            except (ValueError, TypeError):
                continue  # (an agent can write here: a damaged entry is not a crash)
        return requests

    def find(self, request_id: str) -> Request | None:
        return next((r for r in self.read() if r.id == request_id), None)

    @contextmanager
    def editing(self) -> Iterator[list[Request]]:
        """The requests, to change in place; written back when the block ends."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._lock:
                requests = self.read()
                before = [r.to_json() for r in requests]
                yield requests
                after = [r.to_json() for r in requests]
                if after != before:  # (the runner looks often; it writes only changes)
                    write_json_atomic(self.path, {"version": BOOK_VERSION, "requests": after})
        except Timeout:
            raise WtrError(f"the run's requests are locked by another process for over "
                           f"{LOCK_TIMEOUT:g}s ({self.folder})", hint="try again") from None
        except OSError as exc:
            raise WtrError(f"cannot record the request in {self.folder}: {exc.strerror}",
                           hint="the run's folder is not writable from here (a sandbox?)"
                           ) from None


def next_id(requests: list[Request]) -> str:
    numbers = [int(r.id[1:]) for r in requests if r.id[:1] == "r" and r.id[1:].isdigit()]
    return f"r{max(numbers, default=0) + 1}"


def change(request: Request, **changes: Any) -> None:
    for key, value in changes.items():
        setattr(request, key, value)
    request.updated_at = now()
