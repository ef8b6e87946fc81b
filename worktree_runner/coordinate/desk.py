"""The runner's side of change requests: it puts each request in front of its owner,
adds follow-up streams, and answers or escalates.

A stream's thread takes the requests its prompt carries (``for_prompt``) and those that
make one more round in its session once its work passed its checks (``next_round``), and
asks whether it must halt (``halted``). The scheduler's thread calls ``poll`` several
times a second for the rest, which all wait for an owner that has finished: a follow-up
when it succeeded, a person when it did not, the answer when a request's stream ended.
A request that comes while its owner is ending is therefore never lost between the two.
"""

from __future__ import annotations

import threading
from typing import Any

from worktree_runner import git, logs
from worktree_runner.errors import WtrError
from worktree_runner.events import Kind
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import Failure, RunStore, Status, StreamRecord

from .book import Request, RequestBook, Route, State, change
from .move import bring_in
from .routing import FOLLOW_UP_MARK, extend_plan, follow_up_prompt, route_for

FINAL = frozenset({Status.SUCCEEDED.value, Status.MERGED.value, Status.FAILED.value,
                   Status.BLOCKED.value})
GOOD = frozenset({Status.SUCCEEDED.value, Status.MERGED.value})
WAIT_POLL = 0.2


class Desk:
    def __init__(self, repo: git.Repository, store: RunStore, plan: Plan) -> None:
        self.repo, self.store, self.plan = repo, store, plan
        self.book = RequestBook(store.dir)
        self.lock = threading.Lock()
        self.halts: dict[str, Failure] = {}
        self.halted_once: set[str] = set()

    # -- the scheduler's thread ----------------------------------------------------------

    def poll(self) -> Plan | None:
        """Act on every open request; the plan with the follow-ups added, if any was."""
        if not any(r.open for r in self.book.read()):
            return None
        before = self.plan
        with self.lock, self.book.editing() as requests:
            for request in requests:
                if request.open:
                    self._look_at(request)
        return self.plan if self.plan is not before else None

    def _look_at(self, request: Request) -> None:
        streams = self.store.record.streams
        if request.cycle:
            self._halt(request)
            return
        status = streams[request.target].status if request.target in streams else None
        if request.state == State.PENDING:
            self._route(request, status)
        elif request.state == State.DELIVERED and status in FINAL:
            self._ended(request, str(request.target), str(status))

    def _route(self, request: Request, status: str | None) -> None:
        if request.route == Route.PERSON or request.target is None:
            self._escalate(request, None)
            return
        route = route_for(status)
        if route in (Route.PROMPT, Route.FEEDBACK):
            return  # (its stream's thread delivers it: in its prompt, or one more round)
        if route == Route.FOLLOW_UP and self.store.record.executor:
            self._escalate(request, f"'{request.target}' has finished, and a follow-up "
                                    "stream runs only on this machine, not on Dask workers")
        elif route == Route.FOLLOW_UP:
            self._follow_up(request)
        else:
            self._escalate(request, f"'{request.target}' is {status} and cannot take it")

    def _ended(self, request: Request, target: str, status: str) -> None:
        """The stream the request went to has finished: answered if it succeeded, for a
        person to decide if it did not."""
        record = self.store.record.streams[target]
        if status in GOOD:
            tip = (record.head_commit or "")[:12]
            said = (f"follow-up '{target}' made the change and succeeded ({record.branch} "
                    f"at {tip}); you depend on it: its result comes into your branch"
                    if request.route == Route.FOLLOW_UP else
                    f"'{target}' made its work with your request and succeeded "
                    f"({record.branch} at {tip}); it merges before you")
            change(request, state=State.ANSWERED.value, answered_by=target, answer=said)
            self._publish(Kind.REQUEST_ANSWERED, request)
            return
        failure = record.failure.message if record.failure else status
        self._escalate(request, f"'{target}' took the request but {status}: {failure}")

    def _escalate(self, request: Request, why: str | None) -> None:
        change(request, state=State.ESCALATED.value, route=Route.PERSON.value,
               answer=why or request.answer)
        self._publish(Kind.REQUEST_ESCALATED, request, why=why)

    def _halt(self, request: Request) -> None:
        """The requester closed a cycle of waiting streams: it stops, the cycle named."""
        asking = self.store.record.streams.get(request.requester)
        if request.requester in self.halted_once or asking is None \
                or asking.status != Status.RUNNING.value:
            return
        self.halted_once.add(request.requester)
        cycle = " -> ".join(request.cycle)
        self.halts[request.requester] = Failure(
            "error", f"halted: its request {request.id} would close a cycle of streams "
                     f"waiting on each other ({cycle}); a person decides: 'wtr answer "
                     f"{request.id} TEXT', then 'wtr retry {request.requester}'")

    def _follow_up(self, request: Request) -> None:
        """The owner has finished: a follow-up stream of its files does the request, and
        the requester depends on it."""
        owner = str(request.target)
        record = self.store.record
        taken = {str(s["name"]) for s in record.follow_ups} | set(record.streams)
        number = 1
        while f"{owner}{FOLLOW_UP_MARK}{number}" in taken:
            number += 1
        name = f"{owner}{FOLLOW_UP_MARK}{number}"
        spec = {"name": name, "owner": owner, "request": request.id,
                "requester": request.requester,
                "prompt": follow_up_prompt(request, self.plan.stream(owner))}
        self.store.add_stream(StreamRecord(name=name, branch=f"wtr/{record.run}/{name}",
                                           worktree=None, depends_on=[owner],
                                           budget=record.streams[owner].budget),
                              follow_ups=[*record.follow_ups, spec])
        asking = record.streams.get(request.requester)
        if asking is not None:
            self.store.update_stream(request.requester, None,
                                     depends_on=[*asking.depends_on, name])
        self.plan = extend_plan(self.plan, [spec])
        change(request, route=Route.FOLLOW_UP.value, target=name, state=State.DELIVERED.value)
        self._publish(Kind.REQUEST_ROUTED, request)
        self._publish(Kind.REQUEST_DELIVERED, request)

    def _publish(self, kind: Kind, request: Request, **more: Any) -> None:
        self.store.event(kind.value, stream=request.requester, request=request.id,
                         path=request.path, route=request.route, target=request.target,
                         state=request.state, **more)

    # -- a stream's thread -----------------------------------------------------------------

    def for_prompt(self, name: str, attempt: int) -> list[Request]:
        """The requests a fresh start of ``name`` carries in its prompt: those waiting for
        it, and those an earlier attempt took and did not see through."""
        with self.lock, self.book.editing() as requests:
            earlier = [r for r in requests if r.target == name and r.state == State.DELIVERED
                       and r.route in (Route.PROMPT, Route.FEEDBACK)]
            return [*earlier, *self._take(requests, name, attempt, Route.PROMPT)]

    def next_round(self, name: str, attempt: int) -> list[Request]:
        """``name``'s work passed its checks: the requests it carried are answered; those
        that came meanwhile make one more round in its session (attempt ``attempt``).
        None left: the stream ends; a request that comes later waits for that end, and
        goes to a follow-up (``poll`` acts only on an owner that has finished)."""
        with self.lock, self.book.editing() as requests:
            for request in requests:
                if request.target == name and request.state == State.DELIVERED \
                        and request.route in (Route.PROMPT, Route.FEEDBACK):
                    change(request, state=State.ANSWERED.value, answered_by=name,
                           answer=f"'{name}' made its work with your request and it passed "
                                  "its checks; it merges before you")
                    self._publish(Kind.REQUEST_ANSWERED, request)
            return self._take(requests, name, attempt, Route.FEEDBACK)

    def _take(self, requests: list[Request], name: str, attempt: int,
              route: Route) -> list[Request]:
        taken = [r for r in requests if r.target == name and r.state == State.PENDING
                 and not r.cycle and r.route != Route.PERSON]
        for request in taken:
            change(request, state=State.DELIVERED.value, route=route.value,
                   delivered_attempt=attempt)
            self._publish(Kind.REQUEST_DELIVERED, request)
        return taken

    def halted(self, name: str) -> Failure | None:
        return self.halts.pop(name, None)

    def _unrouted(self, name: str) -> bool:
        """A request of ``name``'s still pending though its owner has finished: the
        scheduler's thread has yet to route it (a follow-up, or a person)."""
        streams = self.store.record.streams
        return any(r.requester == name and r.state == State.PENDING.value
                   and r.target in streams and streams[r.target].status in FINAL
                   for r in self.book.read())

    def settle_follow_ups(self, name: str, stop: threading.Event) -> list[str]:
        """Before ``name``'s work is checked: wait for the follow-ups it depends on, and
        bring each one that succeeded into its branch. What could not be, as warnings."""
        warnings: list[str] = []
        while self._unrouted(name):  # (the scheduler's next poll makes its follow-up)
            if stop.wait(WAIT_POLL):
                return warnings
        for spec in self.store.record.follow_ups:
            if spec.get("requester") != name:
                continue
            follow_up = str(spec["name"])
            while self.store.record.streams[follow_up].status not in FINAL:
                if stop.wait(WAIT_POLL):
                    return warnings
            if self.store.record.streams[follow_up].status not in GOOD:
                continue
            try:
                bring_in(self.repo, self.store, name, follow_up)
            except WtrError as exc:
                warnings.append(exc.message)
            except Exception as exc:  # a bug here must not take the stream down
                logs.debug("bringing in a follow-up failed", error=repr(exc))
                warnings.append(f"could not bring in '{follow_up}': {exc!r}")
        return warnings
