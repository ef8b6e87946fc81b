"""The asking side of change requests: an agent's ``request_change`` (``wtr request``, the
MCP tool) and a person's answer (``wtr answer``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.events import Kind
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.model import Plan
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, Status, now, read_json, write_json_atomic

from .book import Request, RequestBook, Route, State, change, next_id
from .move import bring_in
from .routing import (
    cycle_closed,
    extend_plan,
    is_shared,
    owner_of,
    repo_path,
    route_for,
    scope_of,
    waits_graph,
)

DEFAULT_TIMEOUT = 600.0
POLL_SECONDS = 0.2
PROGRESS_EVERY = 5.0  # seconds between the progress notes of a waiting agent
MAX_TEXT = 4000


@dataclass(frozen=True)
class Caller:
    """The stream asking: its run's folder, its name, its worktree."""

    store: RunStore
    stream: str
    worktree: Path | None = None


@dataclass(frozen=True)
class Answer:
    """What the asking agent is told: where its request went, and what became of it."""

    id: str
    route: str
    target: str | None
    owner: str | None
    state: str
    answer: str | None
    message: str
    cycle: list[str] = field(default_factory=list)

    @property
    def halted(self) -> bool:
        return bool(self.cycle)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "route": self.route, "target": self.target,
                "owner": self.owner, "state": self.state, "answer": self.answer,
                "cycle": self.cycle, "message": self.message}


def caller_from_env(env: Mapping[str, str], find_repo: Callable[[], git.Repository]) -> Caller:
    """The stream named by WTR_STREAM, in the run at WTR_STATE_DIR (or named by WTR_RUN)."""
    stream, state_dir, run = env.get("WTR_STREAM"), env.get("WTR_STATE_DIR"), env.get("WTR_RUN")
    if not stream or not (state_dir or run):
        raise BadInput("wtr request is for agents started by 'wtr run': WTR_STREAM and "
                       "WTR_RUN are not set", hint="a person answers with 'wtr answer'")
    store = RunStore(Path(state_dir)) if state_dir else registry.open_run(find_repo(), run)
    if not store.state_path.exists():
        raise BadInput(f"WTR_STATE_DIR {state_dir} is not the folder of a run")
    if stream not in store.load().streams:
        raise registry.unknown_stream(store, stream)
    worktree = env.get("WTR_WORKTREE")
    return Caller(store, stream, Path(worktree) if worktree else None)


def plan_of(store: RunStore) -> Plan:
    """The run's plan as it is now: the copy kept when it started, with its follow-ups."""
    plan = parse_plan(store.plan_path.read_text(encoding="utf-8"), Path(store.record.plan))
    return extend_plan(plan, store.record.follow_ups)


def request_change(caller: Caller, path: str, what: str, why: str, wait: bool = False,
                   timeout: float = DEFAULT_TIMEOUT,
                   stop: threading.Event | None = None) -> Answer:
    """Ask the owner of ``path`` for a change; with ``wait``, until it is answered or
    ``timeout`` seconds pass (then a person is asked), or ``stop`` is set (the asker is
    gone: the request no longer waits)."""
    what, why = _text("what", what), _text("why", why)
    store = caller.store
    record, plan = store.load(), plan_of(store)
    where = repo_path(path, caller.worktree)
    if scope_of(plan.stream(caller.stream), where):
        raise BadInput(f"{where} is yours: stream '{caller.stream}' may change it itself",
                       hint="change it in your worktree and commit")
    owner = None if is_shared(plan, where) else owner_of(plan, record, where, caller.stream)
    status = record.streams[owner].status if owner else None
    route = route_for(status) if owner else Route.PERSON
    book = RequestBook(store.dir)
    with book.editing() as requests:
        cycle = (cycle_closed(waits_graph(record, requests), caller.stream, owner)
                 if wait and owner else [])
        to_person = bool(cycle) or route == Route.PERSON
        request = Request(next_id(requests), caller.stream, where, what, why, wait,
                          Route.PERSON.value if to_person else route.value,
                          None if to_person else owner, owner)
        if cycle or request.route == Route.PERSON:
            request.state = State.ESCALATED.value
            request.cycle = cycle
            request.answer = _escalation(request, plan, status)
        requests.append(request)
    _publish(store, Kind.REQUEST_CREATED, request, what=what, why=why, wait=wait)
    if request.state == State.ESCALATED:
        _publish(store, Kind.REQUEST_ESCALATED, request, why=request.answer, cycle=cycle)
    if cycle or not wait:
        return _answer(request, waited=False)
    return _waited(caller, book, request.id, timeout, stop or threading.Event())


def _text(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise BadInput(f"--{name} is empty", hint=f"give --{name} a sentence")
    if len(value) > MAX_TEXT:
        raise BadInput(f"--{name} is {len(value)} characters; at most {MAX_TEXT}",
                       hint="say it shorter, or write the detail in your report")
    return value


def _escalation(request: Request, plan: Plan, status: str | None) -> str:
    if request.cycle:
        return ("it would close a cycle of streams waiting on each other: "
                + " -> ".join(request.cycle))
    if request.owner is None:
        shared = is_shared(plan, request.path)
        return f"{request.path} is {'shared' if shared else 'owned by no stream'}"
    return f"its owner '{request.owner}' is {status}"


def _waited(caller: Caller, book: RequestBook, request_id: str, timeout: float,
            stop: threading.Event) -> Answer:
    deadline = time.monotonic() + timeout
    said = 0.0
    while True:
        found = book.find(request_id)
        if found is None:
            raise WtrError(f"request {request_id} is gone from {book.path}")
        if found.state == State.ANSWERED:
            _waiting(caller, f"request {found.id} answered")
            return _answer(found, waited=True, moved=_bring_in(caller, found))
        if time.monotonic() - said >= PROGRESS_EVERY:
            where = found.target or "a person"
            _waiting(caller, f"waiting for the answer to request {found.id} ({where})")
            said = time.monotonic()
        if time.monotonic() >= deadline:
            timed_out = _time_out(caller.store, book, request_id, timeout)
            if timed_out is not None:
                _waiting(caller, f"request {found.id} timed out: a person decides")
                return _answer(timed_out, waited=True)
        elif stop.wait(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.01))):
            return _answer(_gave_up(book, request_id), waited=False)


def _gave_up(book: RequestBook, request_id: str) -> Request:
    """Nobody waits for the answer any more: no cycle of waiting streams counts it."""
    with book.editing() as requests:
        found = next(r for r in requests if r.id == request_id)
        change(found, wait=False)
    return found


def _waiting(caller: Caller, message: str) -> None:
    """The wait in the stream's progress, renewed now and then (a wait is not a stall),
    and how it ended."""
    path = caller.store.progress_path(caller.stream)
    before = read_json(path)
    percent = before.get("percent") if isinstance(before, dict) else None
    with contextlib.suppress(OSError):
        write_json_atomic(path, {"percent": percent, "blocked": False, "at": now(),
                                 "message": message})
        caller.store.event("progress", stream=caller.stream, percent=percent,
                           message=message, blocked=False)


def _time_out(store: RunStore, book: RequestBook, request_id: str,
              timeout: float) -> Request | None:
    """Past the timeout, the request goes to a person; None if it was answered meanwhile."""
    with book.editing() as requests:
        found = next(r for r in requests if r.id == request_id)
        if found.state == State.ANSWERED:
            return None
        why = f"{found.answer}; " if found.state == State.ESCALATED and found.answer else ""
        change(found, state=State.TIMED_OUT.value,
               answer=f"{why}no answer within {timeout:g}s; a person decides")
    _publish(store, Kind.REQUEST_TIMED_OUT, found, timeout=timeout)
    return found


def _bring_in(caller: Caller, request: Request) -> str | None:
    """A follow-up answered the request: its result comes into the asker's branch now."""
    if request.route != Route.FOLLOW_UP or not request.target:
        return None
    store = caller.store
    record = store.load()
    done = record.streams.get(request.target)
    if done is None or done.status not in (Status.SUCCEEDED.value, Status.MERGED.value):
        return None
    try:
        return bring_in(git.open_repository(Path(record.repo)), store, caller.stream,
                        request.target)
    except WtrError as exc:
        return f"{exc.message} (it is brought in again when your attempt ends)"


def _answer(request: Request, waited: bool, moved: str | None = None) -> Answer:
    return Answer(request.id, request.route, request.target, request.owner, request.state,
                  request.answer, _message(request, waited, moved), list(request.cycle))


def _message(request: Request, waited: bool, moved: str | None) -> str:
    """What the agent reads: what happened and what to do now."""
    head = f"request {request.id} ({request.path})"
    if request.cycle:
        return (f"{head} was not sent: {request.answer}. A person decides; report being "
                "blocked (wtr progress \"...\" --blocked) and exit with a non-zero code.")
    if request.state == State.ANSWERED:
        return f"{head} answered: {request.answer}" + (f"; {moved}" if moved else "")
    if request.state == State.TIMED_OUT:
        return (f"{head}: {request.answer}. Go on with what does not need it, or report "
                "being blocked and exit with a non-zero code.")
    if request.state == State.ESCALATED:
        return (f"{head} went to a person ({request.answer}); "
                + ("you will hear back here" if waited else
                   "go on with what does not need it"))
    return f"{head} went to '{request.target}': {_where(request)}"


def _where(request: Request) -> str:
    if request.route == Route.PROMPT:
        return "it has not started; its prompt carries your request"
    if request.route == Route.FEEDBACK:
        return "it is running; its agent gets your request when its current turn ends"
    return ("it has finished; a follow-up stream of its files makes the change, and your "
            "stream depends on it")


def answer_request(store: RunStore, request_id: str, text: str) -> Request:
    """A person's answer to a request: the waiting agent gets ``text``."""
    text = text.strip()
    if not text:
        raise BadInput("the answer is empty", hint="say what the agent should do")
    book = RequestBook(store.dir)
    with book.editing() as requests:
        found = next((r for r in requests if r.id == request_id), None)
        if found is None:
            known = ", ".join(r.id for r in requests) or "none"
            raise BadInput(f"run {store.run_id} has no request '{request_id}' "
                           f"(requests: {known})", hint="'wtr status' lists them")
        change(found, state=State.ANSWERED.value, answer=text, answered_by="person")
    _publish(store, Kind.REQUEST_ANSWERED, found, by="person")
    return found


def _publish(store: RunStore, kind: Kind, request: Request, **more: Any) -> None:
    with contextlib.suppress(OSError):  # a sandboxed agent may write only its own folder
        store.event(kind.value, stream=request.requester, request=request.id,
                    path=request.path, route=request.route, target=request.target,
                    state=request.state, **more)
