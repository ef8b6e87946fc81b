"""``wtr report --serve``: the run report on 127.0.0.1, kept up to date from the event log.

Three addresses, each answering only to the token in the URL (anything else gets a bare 403
or 404, no page and no data): ``/`` the page, ``/body`` its re-rendered content, and
``/events`` the run's event log as server-sent events, one per line as the run appends it.
The page's one script listens to ``/events`` and swaps ``/body`` in: no reload. The server
only reads the run's folder, through ``statefs`` (an agent can write there), and keeps
serving after the run ends: a merge, a resume or a retry goes on appending events.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from worktree_runner import logs, statefs
from worktree_runner.errors import WtrError
from worktree_runner.run.registry import run_is_active
from worktree_runner.run.state import RunStore

HOST = "127.0.0.1"
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
RUNNER_LOOK_SECONDS = 1.0
_READ_AT_ONCE = 1 << 20
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
        "script-src 'nonce-{nonce}'")


def event_of(line: bytes) -> dict[str, Any] | None:
    """One line of the event log as the page gets it, or None for a line that is no event.
    The one place that knows the log's format: a line names its event in ``kind`` (or
    ``event``), its time in ``time`` (or ``at``), and may carry ``seq`` and ``stream``."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # an agent can write to the log: anything goes
        return None
    if not isinstance(doc, dict):
        return None
    kind = doc.get("kind") or doc.get("event")
    if not isinstance(kind, str):
        return None
    stream, seq = doc.get("stream"), doc.get("seq")
    return {"kind": kind, "time": str(doc.get("time") or doc.get("at") or ""),
            "stream": stream if isinstance(stream, str) else None,
            "seq": seq if isinstance(seq, int) else None}


class EventTail:
    """The complete lines appended to the event log since the last look, each with its
    number: its ``seq`` when it has one, else one more than the line before (from 1). The
    number is the id a browser sends back to pick up where it left off."""

    def __init__(self, path: Path, after: int = 0) -> None:
        self.path, self.after = path, after
        self.offset = self.count = 0

    def poll(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            with statefs.open_read(self.path) as handle:
                if handle.seek(0, 2) < self.offset:  # replaced by a shorter file: start over
                    self.offset = self.count = 0
                handle.seek(self.offset)
                chunk = handle.read(_READ_AT_ONCE)
        except OSError:
            return []
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        found = []
        for line in complete.splitlines():
            self.count += 1
            event = event_of(line)
            if event is not None:
                self.count = max(self.count, event["seq"] or 0)
                if self.count > self.after:
                    found.append((self.count, event))
        return found

    def skip_to_end(self) -> int:
        """Read everything there is; the number of lines read."""
        while True:
            before = self.offset
            self.poll()
            if self.offset == before:
                return self.count


@dataclass(frozen=True)
class Live:
    """What the template needs to make the page live."""

    nonce: str
    since: int


class LiveServer(ThreadingHTTPServer):
    daemon_threads = True  # a browser left open never keeps ``wtr`` from exiting

    def __init__(self, store: RunStore, port: int) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(24)
        self.stopping = threading.Event()
        self._rendering = threading.Lock()
        self._last_body: tuple[float, str] = (-1.0, "")
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            raise WtrError(f"cannot serve on {HOST}:{port}: {exc.strerror or exc}",
                           hint="pass another --port, or none for a free one") from None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/?token={self.token}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that broke is logged, not printed: the terminal shows the URL alone."""
        logs.debug("report request failed", error=repr(sys.exc_info()[1]))

    def stop(self) -> None:
        """After ``serve_forever`` returned: the event streams end, the socket closes."""
        self.stopping.set()
        self.server_close()

    def page(self) -> tuple[str, str]:
        """The whole page and the nonce its script runs under."""
        since = EventTail(self.store.events_path).skip_to_end()  # before the render: no gap
        nonce = secrets.token_urlsafe(16)
        return _render(self.store, Live(nonce, since), block=False), nonce

    def body(self) -> str:
        """What the page swaps in: its block ``main``. One render at a time: pages open in
        several tabs that ask together share a render begun after they asked."""
        asked = time.monotonic()
        with self._rendering:
            started, html = self._last_body
            if started < asked:
                started = time.monotonic()
                html = _render(self.store, Live("", 0), block=True)
                self._last_body = (started, html)
            return html


def _render(store: RunStore, live: Live, block: bool) -> str:
    from worktree_runner.report import template
    from worktree_runner.report.content import gather

    report = gather(RunStore(store.dir), diffs=True)
    page = template()
    if not block:
        return str(page.render(r=report, live=live))
    context = page.new_context({"r": report, "live": live})
    return "".join(page.blocks["main"](context))


def serve(store: RunStore, port: int = 0) -> LiveServer:
    """A server bound to 127.0.0.1 (``port`` 0: a free one), not yet serving: the caller
    prints its URL, then runs ``serve_forever``, then ``stop``."""
    return LiveServer(store, port)


class RunnerWatch:
    """Whether the process running the run went away since the last look (at most one
    look a second): a runner killed outright leaves the run 'interrupted' without an event."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.alive = run_is_active(store)
        self.looked = time.monotonic()

    def gone(self) -> bool:
        if time.monotonic() - self.looked < RUNNER_LOOK_SECONDS:
            return False
        self.looked = time.monotonic()
        was, self.alive = self.alive, run_is_active(self.store)
        return was and not self.alive


class _Handler(BaseHTTPRequestHandler):
    server: LiveServer
    server_version = "wtr"
    sys_version = ""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        given = (query.get("token") or [""])[0]
        if not secrets.compare_digest(given.encode(), self.server.token.encode()):
            self._empty(HTTPStatus.FORBIDDEN)
        elif url.path == "/events":
            self._events(query)
        elif url.path in ("/", "/body"):
            self._page(whole=url.path == "/")
        else:
            self._empty(HTTPStatus.NOT_FOUND)

    def do_HEAD(self) -> None:
        self._empty(HTTPStatus.FORBIDDEN)

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Other methods and malformed requests: the status alone, no page."""
        self.close_connection = True
        self._empty(HTTPStatus(code))

    def _page(self, whole: bool) -> None:
        try:
            html, nonce = self.server.page() if whole else (self.server.body(), "none")
        except Exception as exc:  # the run's folder pruned, a file an agent broke: say so
            logs.debug("report not rendered", error=repr(exc))
            self._empty(HTTPStatus.SERVICE_UNAVAILABLE)
            return
        self._html(html, _CSP.format(nonce=nonce))

    def _html(self, html: str, policy: str) -> None:
        data = html.encode("utf-8")
        self.send_response(HTTPStatus.OK)
        self._headers("text/html; charset=utf-8", policy)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _events(self, query: dict[str, list[str]]) -> None:
        after = _number(self.headers.get("Last-Event-ID")) or _number(
            (query.get("since") or [""])[0]) or 0
        runner = RunnerWatch(self.server.store)  # (before the browser hears it is connected)
        self.send_response(HTTPStatus.OK)
        self._headers("text/event-stream; charset=utf-8", "default-src 'none'")
        self.end_headers()
        tail, quiet = EventTail(self.server.store.events_path, after), time.monotonic()
        try:
            self.wfile.write(b"retry: 2000\n\n")
            while not self.server.stopping.is_set():
                events = tail.poll()
                for number, event in events:
                    self.wfile.write(f"id: {number}\ndata: {json.dumps(event)}\n\n".encode())
                if events:
                    quiet = time.monotonic()
                elif runner.gone():  # killed outright, it wrote no event: the page looks again
                    self.wfile.write(b'data: {"kind": "runner.gone"}\n\n')
                    quiet = time.monotonic()
                elif time.monotonic() - quiet > HEARTBEAT_SECONDS:  # finds a closed browser
                    self.wfile.write(b": still here\n\n")
                    quiet = time.monotonic()
                self.wfile.flush()
                self.server.stopping.wait(POLL_SECONDS)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _headers(self, content_type: str, policy: str) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", policy)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")

    def _empty(self, status: HTTPStatus) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the token: it goes nowhere.
        logs.debug("report served", status=args[1] if len(args) > 1 else "")


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None
