"""Landing while a run goes on: ``wtr run --merge``, and ``wtr merge`` during a run.

The runner owns one lander thread: every landing of the run happens there, one at a
time, under the run's lock. With ``--merge`` it lands after each success: each ready
stream is first replayed in memory, and one that would conflict is held back (with every
stream that depends on it) so that it halts nobody else; a later ``wtr merge`` takes it
and halts for a human as usual. A landing that halts anyway (verify, a dirty checkout of
the target) stays halted, and automatic landings wait until a human has continued or
aborted it. A ``wtr merge`` from another process reaches the same thread through the
desk (desk.py).

The lander is a subscriber of the run's events, attached where ``run``, ``resume`` and
``retry`` are assembled (``attach``): a success queues a landing, the run settling lands
what is left and stops the desk before the run is recorded finished, an interruption
stops it without landing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from worktree_runner import faults, git
from worktree_runner.coordinate.routing import extend_plan
from worktree_runner.errors import EXIT_OK, WtrError
from worktree_runner.events import Event, Kind
from worktree_runner.merge.desk import Desk, Reply
from worktree_runner.merge.order import MergeOrder, merge_order
from worktree_runner.merge.predict import predict
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import RunStore


class Lander:
    def __init__(self, repo: git.Repository, store: RunStore, plan: Plan, auto: bool) -> None:
        self.repo, self.store, self._plan, self.auto = repo, store, plan, auto
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lander")
        self.desk = Desk(store, lambda action, resolver: self._pool.submit(
            self.act, action, resolver).result())

        self._closed = threading.Lock()
        self._open = True

    @property
    def plan(self) -> Plan:
        """The run's plan with the follow-up streams change requests added so far."""
        return extend_plan(self._plan, self.store.record.follow_ups)

    def start(self) -> None:
        self.store.subscribers.append(self.listen)
        self.desk.start()

    def listen(self, event: Event) -> None:
        if event.kind == Kind.STREAM_SUCCEEDED and self.auto:
            self._pool.submit(self.land_ready)
        elif event.kind == "run.streams_settled":
            self.close()
        elif event.kind == Kind.RUN_INTERRUPTED:
            self.close(land=False)

    def close(self, land: bool = True) -> None:
        """Serve the last requests, land what is left (with --merge), then stop; once."""
        with self._closed:
            if not self._open:
                return
            self._open = False
        self.desk.stop()
        if self.auto and land:
            self._pool.submit(self.land_ready)
        self._pool.shutdown(wait=True)
        if self.listen in self.store.subscribers:
            self.store.subscribers.remove(self.listen)

    def land_ready(self) -> None:
        from worktree_runner.merge.stage import MergeStage

        try:
            stage = MergeStage(self.repo, self.store, self.plan)
            if stage.queue.open is not None:
                self.store.event("auto_merge_waits", reason="a merge is halted")
                return
            # One look at the ready streams decides this landing: a stream that succeeds
            # while they are checked is not in it, unchecked (it may conflict and halt
            # everyone); its own success has queued the next pass, which checks it.
            checked = merge_order(self.plan, self.store.record)
            held = self.conflicting(checked)
            faults.point("auto_merge_checked", "")
            if merge_order(self.plan, self.store.record, held, checked.streams).streams:
                stage.start(held, checked.streams)
            elif held != stage.queue.held:  # nothing to land: status still says why not
                stage.queue.held = held
                stage.save("auto_merge_held")
        except WtrError as exc:
            self.store.event("auto_merge_stopped", message=exc.message)
        except Exception as exc:  # a bug must not take the running agents down with it
            self.store.event("auto_merge_failed", message=repr(exc))

    def conflicting(self, order: MergeOrder) -> dict[str, str]:
        """The streams of ``order`` whose replay would conflict, with the reason kept in
        status."""
        return {p.stream: "conflicts with the target in " + ", ".join(p.conflicts)
                for p in predict(self.repo, self.store.record, order) if not p.clean}

    def act(self, action: str, resolver: str | None = None) -> Reply:
        """A human's merge action, done here because the runner holds the run."""
        from worktree_runner import render
        from worktree_runner.merge.stage import MergeStage
        from worktree_runner.run.status import merge_view

        stage = MergeStage(self.repo, self.store, self.plan, resolver)
        try:
            if action.startswith("skip:"):
                text = stage.skip(action.removeprefix("skip:"))
            elif action == "abort":
                text = stage.abort()
            elif action == "undo":
                text = stage.undo()
            else:
                text = render.landed_report(stage.resume() if action == "continue"
                                            else stage.start())
            reply = Reply(EXIT_OK, out=text)
        except WtrError as exc:
            first, *rest = exc.lines()
            reply = Reply(exc.exit_code, err=[f"wtr: {first}", *rest])
        reply.merge = merge_view(self.store.record.merge, self.store.record.target)
        return reply


@contextmanager
def attach(repo: git.Repository, store: RunStore, plan: Plan, auto: bool) -> Iterator[Lander]:
    """A lander subscribed to the run while the body runs; stopped (without landing)
    if the body ends before the run settled."""
    lander = Lander(repo, store, plan, auto)
    lander.start()
    try:
        yield lander
    finally:
        lander.close(land=False)
