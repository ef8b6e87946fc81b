"""Notifications: tell a person when a run needs attention, finishes, or lands.

A ``Notifier`` reads the run's event log as it grows (so it also hears what other
processes publish: a ``wtr sync`` or a ``wtr merge`` of a person, an agent's report) and
delivers on a thread of its own, through a queue: the run never waits for a
notification, and a notification that fails is
recorded (a ``notification.failed`` event, and ``notifications`` in the status) and
never fails the run. Three kinds: a command (the event as JSON on its stdin), the desktop
(``notify-send``), a webhook (the event POSTed as JSON, with a timeout and retries).
"""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from worktree_runner import procs
from worktree_runner.events import Event, Kind, follow, last_seq
from worktree_runner.plan.model import Notify
from worktree_runner.run.state import RunStore

WEBHOOK_TIMEOUT = 5.0  # seconds for one POST
WEBHOOK_ATTEMPTS = 3
COMMAND_TIMEOUT = 30.0
CLOSE_GRACE = 3.0  # how long the end of a command waits for the last deliveries
READ_EVERY = 0.2  # seconds between looks at the event log
KEPT_FAILURES = 20
NOTIFY_LOG = "notify.log"  # in the run's folder: what notification commands said on stderr

_TOPICS = {
    Kind.STREAM_FAILED: "attention",
    Kind.STREAM_BLOCKED: "attention",
    Kind.LANDING_HALTED: "attention",
    Kind.SYNC_CONFLICT: "attention",
    Kind.REQUEST_ESCALATED: "attention",
    Kind.REQUEST_TIMED_OUT: "attention",
    Kind.RUN_FINISHED: "finished",
    Kind.LANDED: "landed",
}


def topic_of(event: Event) -> str | None:
    """Which news ``event`` is: attention, finished, landed; None for the rest."""
    return _TOPICS.get(Kind(event.kind)) if event.kind in _TOPICS else None


def summary(event: Event) -> str:
    """One line a person reads in a notification."""
    run, stream = event.run, event.stream
    if event.kind == Kind.STREAM_FAILED:
        failure = event.get("failure") or {}
        return f"{run}: {stream} failed ({failure.get('kind')}: {failure.get('message')})"
    if event.kind == Kind.STREAM_BLOCKED:
        return f"{run}: {stream} is blocked (it depends on '{event.get('blocked_by')}')"
    if event.kind in (Kind.REQUEST_ESCALATED, Kind.REQUEST_TIMED_OUT):
        why = event.get("why") or (f"no answer within {event.get('timeout')}s"
                                   if event.kind == Kind.REQUEST_TIMED_OUT else "")
        return (f"{run}: {stream}'s change request {event.get('request')} about "
                f"{event.get('path')} needs a person ({why}); 'wtr answer "
                f"{event.get('request')} TEXT'")
    if event.kind == Kind.SYNC_CONFLICT:
        return f"{run}: syncing {stream} conflicts in {', '.join(event.get('files') or [])}"
    landing = event.get("landing") or {}
    if event.kind == Kind.LANDING_HALTED:
        files = ", ".join(landing.get("conflicted_files") or [])
        where = f" at {landing.get('stream')}" + (f" in {files}" if files else "")
        return f"{run}: the merge halted{where if landing.get('stream') else ''}; it needs you"
    if event.kind == Kind.LANDED:
        return f"{run}: landed {', '.join(landing.get('merged') or [])}"
    return f"{run}: the run finished"


def payload(event: Event, topic: str) -> dict[str, Any]:
    return {**event.to_json(), "topic": topic, "message": summary(event)}


class NotificationFailed(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    """Worth another try: no answer, a refused connection, a server error (not a 4xx)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500
    return isinstance(exc, OSError)


def _post(url: str, body: bytes) -> int:
    """POST ``body``, again after no answer or a server error. (urllib.request and tenacity
    are imported only here: every run and merge subscribes a notifier, few have a webhook,
    and tenacity imports tornado when that is installed.)"""
    import urllib.request

    from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

    @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(WEBHOOK_ATTEMPTS),
           wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
    def post() -> int:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "worktree-runner"})
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as answer:
            return int(answer.status)

    return post()


def deliver(target: Notify, document: dict[str, Any], store: RunStore) -> None:
    """Send one notification; raises NotificationFailed saying why it did not arrive."""
    text = json.dumps(document)
    if target.kind == "webhook":
        try:
            _post(str(target.target), text.encode())
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise NotificationFailed(f"{reason} (after {WEBHOOK_ATTEMPTS} tries)") from None
        return
    if target.kind == "desktop":
        if shutil.which("notify-send") is None:
            raise NotificationFailed("notify-send is not installed")
        command: tuple[str, ...] | str = ("notify-send", "--app-name=wtr",
                                          f"wtr: {document['topic']}", document["message"])
    else:
        command = target.target
    log = store.dir / NOTIFY_LOG
    code, _ = procs.ask(command, store.dir, procs.child_env({}), text, log, COMMAND_TIMEOUT)
    if code != 0:
        raise NotificationFailed(f"exit code {code} (its messages: {log})")


class Notifier:
    """Delivers each piece of news the log tells from now on to every target that wants it."""

    def __init__(self, store: RunStore, targets: tuple[Notify, ...]) -> None:
        self.store, self.targets = store, targets
        self._queue: queue.Queue[tuple[Notify, Event, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._reader = threading.Thread(target=self._read, name="notify-read", daemon=True)
        self._since = self._seen = last_seq(store.events_path)
        self._stop_reading = threading.Event()
        self._busy: tuple[Notify, Event, str] | None = None
        # Once closed, the thread records nothing: the command may have let go of the run.
        self._recording = threading.Lock()
        self._closed = False

    def start(self) -> None:
        self._thread.start()
        self._reader.start()

    def _read(self) -> None:
        for event in follow(self.store.events_path, self._since, poll=READ_EVERY,
                            stop=self._stop_reading):
            self.news(event)
            self._seen = event.seq

    def news(self, event: Event) -> None:
        topic = topic_of(event)
        for target in self.targets if topic else ():
            if topic in target.on:
                self._queue.put((target, event, str(topic)))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._busy = item
            target, event, topic = item
            try:
                deliver(target, payload(event, topic), self.store)
            except NotificationFailed as exc:
                self._failed(target, event, topic, str(exc))
            except Exception as exc:  # a bug here must not end the thread (and the news)
                self._failed(target, event, topic, f"internal error: {exc!r}")
            else:
                with self._recording:
                    if not self._closed:
                        self.store.event("notification_sent", to=target.describe(),
                                         topic=topic, about=event.seq)
            self._busy = None

    def _failed(self, target: Notify, event: Event, topic: str, why: str,
                closing: bool = False) -> None:
        entry = {"to": target.describe(), "topic": topic, "about": event.seq, "error": why,
                 "at": event.time}
        with self._recording:
            if self._closed and not closing:
                return
            kept = [*self.store.record.notify_failures, entry][-KEPT_FAILURES:]
            self.store.update_run(None, notify_failures=kept)
            self.store.event("notification_failed", **entry)

    def close(self, grace: float = CLOSE_GRACE) -> None:
        """Read the log to its end, stop; give the last deliveries ``grace`` seconds, then
        record the ones still waiting as not delivered (the thread dies with the process)."""
        end, deadline = last_seq(self.store.events_path), time.monotonic() + 1.0
        while self._seen < end and time.monotonic() < deadline:
            time.sleep(READ_EVERY / 4)
        self._stop_reading.set()
        self._reader.join(READ_EVERY * 5)
        self._queue.put(None)
        self._thread.join(grace)
        with self._recording:
            self._closed = True
        if not self._thread.is_alive():
            return
        left = [self._busy] if self._busy else []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        for target, event, topic in left:
            self._failed(target, event, topic, f"not delivered within {grace:.0f} s of the "
                                               "command's end", closing=True)


@contextmanager
def notifying(store: RunStore, targets: tuple[Notify, ...]) -> Iterator[Notifier | None]:
    """A notifier subscribed to ``store`` while the body runs (nothing without targets)."""
    if not targets:
        yield None
        return
    notifier = Notifier(store, targets)
    notifier.start()
    try:
        yield notifier
    finally:
        notifier.close()
