"""Runs a plan's streams as their dependencies allow (futures, waited on FIRST_COMPLETED).

The scheduler knows nothing of git or agents: it hands a stream name to ``work`` on an
executor and learns whether it succeeded. Any ``concurrent.futures`` executor fits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field

from worktree_runner.plan import graph
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import Status

# A stream that landed (``run --merge``) succeeded first: a resumed run must see it so.
SUCCEEDED = frozenset({Status.SUCCEEDED, Status.MERGED})
FINISHED = SUCCEEDED | {Status.FAILED, Status.BLOCKED}
POLL_SECONDS = 0.2  # how often ``Hooks.poll`` is asked, while streams run


def _unchanged() -> Plan | None:
    return None


@dataclass
class Hooks:
    """What the scheduler reports: a stream became blocked; or asks: stop every agent now,
    and (several times a second) whether streams were added to the plan."""

    blocked: Callable[[str, str], None]
    kill_all: Callable[[], None]
    poll: Callable[[], Plan | None] = field(default=_unchanged)


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        statuses: dict[str, Status],
        work: Callable[[str], bool],
        hooks: Hooks,
        limit: int,
        stop: threading.Event,
    ) -> None:
        self.plan = plan
        self.statuses = statuses
        self.work = work
        self.hooks = hooks
        self.limit = limit
        self.stop = stop
        self.order = {name: i for i, name in enumerate(plan.names)}
        self.chain = graph.chain_below(plan.dependency_graph())
        self.added: set[str] = set()  # streams added while the run ran (follow-ups)

    def adopt(self, plan: Plan | None) -> None:
        """The plan with streams added to it: the new ones are pending."""
        if plan is None:
            return
        for name in plan.names:
            if name not in self.statuses:
                self.statuses[name] = Status.PENDING
                self.added.add(name)
        self.plan = plan
        self.order = {name: i for i, name in enumerate(plan.names)}
        self.chain = graph.chain_below(plan.dependency_graph())

    def ready(self) -> Iterator[str]:
        """Pending streams that may start now: longest remaining chain first, then plan order."""
        candidates = [
            s for s in self.plan.streams
            if self.statuses[s.name] == Status.PENDING
            and all(self.statuses[d] in SUCCEEDED for d in s.depends_on)
            and all(self.statuses[w] in FINISHED for w in s.waits_for)
        ]
        candidates.sort(key=lambda s: (-self.chain[s.name], self.order[s.name]))
        yield from (s.name for s in candidates)

    def block_dependents(self) -> None:
        """Pending streams behind a failed or blocked dependency will never start."""
        changed = True
        while changed:
            changed = False
            for stream in self.plan.streams:
                if self.statuses[stream.name] != Status.PENDING:
                    continue
                bad = [d for d in stream.depends_on
                       if self.statuses[d] in (Status.FAILED, Status.BLOCKED)]
                if bad:
                    self.statuses[stream.name] = Status.BLOCKED
                    self.hooks.blocked(stream.name, bad[0])
                    changed = True

    def run(self, executor: Executor) -> dict[str, Status]:
        running: dict[Future[bool], str] = {}
        try:
            while True:
                self.adopt(self.hooks.poll())
                self.block_dependents()
                if not self.stop.is_set():
                    self._launch(executor, running)
                if not running:
                    return self.statuses
                done, _ = wait(running, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    ok = future.result()
                    self.statuses[name] = Status.SUCCEEDED if ok else Status.FAILED
                    if not ok and self.plan.stream(name).on_failure == "stop":
                        self.stop.set()
        except BaseException:
            # Ctrl-C: the workers stop their agents (SIGTERM, then SIGKILL after a grace
            # period). A second Ctrl-C while they do stops every agent at once.
            self.stop.set()
            try:
                wait(running)
            except KeyboardInterrupt:
                self.hooks.kill_all()
                wait(running)
            raise

    def slots(self, name: str) -> int:
        """Agents the stream runs at once: one, or its best-of-N candidates (up to all).
        An added stream takes none: the stream that asked for it may be waiting for it."""
        if name in self.added:
            return 0
        return min(self.plan.stream(name).attempts, self.limit)

    def _launch(self, executor: Executor, running: dict[Future[bool], str]) -> None:
        for name in self.ready():
            if sum(map(self.slots, running.values())) + self.slots(name) > self.limit:
                return
            self.statuses[name] = Status.RUNNING
            running[executor.submit(self.work, name)] = name
