"""``wtr report --serve``: the live page, over HTTP and in a real headless chromium."""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.agents.hostile_agent import HOSTILE
from tests.browser import Cdp, chromium_or_skip
from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, status, wait_for
from worktree_runner.report.serve import EventTail, event_of

HOSTILE_AGENT = Path(__file__).resolve().parent / "agents" / "hostile_agent.py"


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_or_skip("the live page")


@contextmanager
def served(repo: Repo, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``wtr report --serve`` as a user starts it; its URL; Ctrl-C at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "worktree_runner", "report", "--serve", *args],
                            cwd=repo.path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.stderr else "")
        yield proc, line.rsplit(" at ", 1)[1].strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class Sse:
    """A bare server-sent-events client on a socket: what an EventSource does, readable
    with a timeout."""

    def __init__(self, url: str, last_id: int | None = None) -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=30)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        self.sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                          f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        self.buffer = b""
        head = self._until(b"\r\n\r\n", 30)
        assert head is not None and head.startswith(b"HTTP/1.0 200"), head
        assert b"text/event-stream" in head

    def _until(self, mark: bytes, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while mark not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return None
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the stream"
            self.buffer += chunk
        found, self.buffer = self.buffer.split(mark, 1)
        return found

    def message(self, timeout: float = 30) -> tuple[int, dict[str, Any]] | None:
        """The next message with data (comments and retry hints skipped), or None."""
        deadline = time.monotonic() + timeout
        while (block := self._until(b"\n\n", max(0.0, deadline - time.monotonic()))) is not None:
            fields = dict(line.split(": ", 1) for line in block.decode().splitlines()
                          if not line.startswith(":") and ": " in line)
            if "data" in fields:
                return int(fields["id"]), json.loads(fields["data"])
        return None

    def close(self) -> None:
        self.sock.close()


def _finished_run(repo: Repo) -> dict[str, Any]:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=MODELS = [2]"}}})
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    return status(repo)


def start_run(repo: Repo, plan: dict[str, Any]) -> subprocess.Popen[bytes]:
    """``wtr run`` in the background, as a person starts it in another terminal."""
    return subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                             str(repo.write_plan(plan))], cwd=repo.path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_stream_running(repo: Repo) -> bool:
    return (run_wtr("status", "--json", cwd=repo.path).returncode == 0
            and status(repo)["streams"][0]["status"] == "running")


def _with_token(url: str, token: str | None, path: str = "/") -> str:
    base = url.split("/?", 1)[0]
    return base + path + ("" if token is None else f"?token={token}")


def test_without_the_token_nothing_is_served(repo: Repo) -> None:
    doc = _finished_run(repo)
    with served(repo) as (proc, url):
        token = parse_qs(urlsplit(url).query)["token"][0]
        assert len(token) >= 32
        wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
        refused = [
            ("GET", _with_token(url, None)), ("GET", _with_token(url, "")),
            ("GET", _with_token(url, wrong)), ("GET", _with_token(url, token[:-1])),
            ("GET", _with_token(url, wrong, "/body")), ("GET", _with_token(url, None, "/events")),
            ("GET", _with_token(url, wrong, "/events")), ("GET", _with_token(url, wrong, "/x")),
            ("GET", url.replace("token=", "Token=")), ("GET", _with_token(url, token, "/x")),
            ("GET", _with_token(url, token, "/../state.json")),
            ("HEAD", url), ("POST", url), ("DELETE", _with_token(url, wrong)),
        ]
        for method, address in refused:
            code, headers, body = get(address, method)
            assert code in (403, 404, 501), (method, address, code)
            assert body == b"", (method, address, body[:200])
            assert doc["run"] not in json.dumps(headers)
        # A request that is not HTTP at all gets nothing either.
        with socket.create_connection(urlsplit(url)[1].split(":")) as raw:  # type: ignore[arg-type]
            raw.sendall(b"\x16\x03\x01 garbage\r\n\r\n")
            answer = raw.recv(65536)
        assert doc["run"].encode() not in answer and b"<" not in answer
        code, headers, body = get(url)
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        html = body.decode()
        assert f"wtr run {doc['run']}" in html and 'id="stream-db"' in html
        nonce = re.search(r"<script nonce=\"([^\"]+)\"", html)
        assert nonce and f"'nonce-{nonce.group(1)}'" in headers["Content-Security-Policy"]
        assert "connect-src 'self'" in headers["Content-Security-Policy"]
        assert 'http-equiv="refresh"' not in html and 'id="finished"' in html
        assert re.search(r'<pre class="diff">.*<span class="add">\+MODELS = \[2\]</span>', html,
                         re.S)
        code, _, body = get(_with_token(url, token, "/body"))
        assert code == 200 and b'id="stream-db"' in body and b"<script" not in body
        assert proc.poll() is None
        watching = Sse(url.replace("/?", "/events?"))  # a browser still listening at Ctrl-C
        stopped = time.monotonic()
    assert proc.returncode == 130 and time.monotonic() - stopped < 10
    watching.close()
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert err.strip() == f"wtr: stopped serving the report of run {doc['run']}"


def test_serve_options_and_a_busy_port(repo: Repo) -> None:
    _finished_run(repo)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with served(repo, "--port", str(port)) as (_, url):
        assert url.startswith(f"http://127.0.0.1:{port}/?token=")
        busy = run_wtr("report", "--serve", "--port", str(port), cwd=repo.path)
        assert busy.returncode == 1 and "Traceback" not in busy.stderr
        assert busy.stderr.startswith(f"wtr: cannot serve on 127.0.0.1:{port}")
        assert "another --port" in busy.stderr
    alone = run_wtr("report", "--port", "8000", cwd=repo.path)
    assert alone.returncode == 2 and "--port goes with --serve" in alone.stderr
    both = run_wtr("report", "--serve", "-o", repo.path / "x.html", cwd=repo.path)
    assert both.returncode == 2 and "cannot go together" in both.stderr
    assert not (repo.path / "x.html").exists()
    no_run = run_wtr("report", "--serve", "--run", "nope-1", cwd=repo.path)
    assert no_run.returncode == 2 and "Traceback" not in no_run.stderr


def test_the_event_stream_sends_each_line_as_it_is_appended(repo: Repo) -> None:
    doc = _finished_run(repo)
    log = repo.path / ".git" / "worktree-runner" / "runs" / doc["run"] / "events.jsonl"
    written = len(log.read_text().splitlines())
    with served(repo) as (_, url):
        events = url.replace("/?", "/events?")
        everything = Sse(events)
        first, line = everything.message(), json.loads(log.read_text().splitlines()[0])
        assert first == (1, {"kind": line.get("kind") or line["event"], "stream": None,
                             "time": line.get("time") or line["at"], "seq": line.get("seq")})
        everything.close()

        live = Sse(f"{events}&since={written}")
        assert live.message(timeout=1.0) is None  # nothing new yet
        with log.open("a") as out:
            out.write(json.dumps({"seq": written + 1, "kind": "stream.started", "stream": "db",
                                  "time": "2026-01-01T00:00:00Z"}) + "\n")
        assert live.message() == (written + 1, {"kind": "stream.started", "stream": "db",
                                                "time": "2026-01-01T00:00:00Z",
                                                "seq": written + 1})
        with log.open("a") as out:  # a line half written is not an event yet
            out.write('{"event": "progress", "stream": "api"')
        assert live.message(timeout=1.0) is None
        with log.open("a") as out:
            out.write(', "at": "2026-01-01T00:00:01Z"}\nnot json\n["a list"]\n'
                      '{"event": "stream_finished", "stream": "api"}\n')
        assert live.message() == (written + 2, {"kind": "progress", "stream": "api",
                                                "time": "2026-01-01T00:00:01Z", "seq": None})
        assert live.message() == (written + 5, {"kind": "stream_finished", "stream": "api",
                                                "time": "", "seq": None})
        live.close()
        # A browser that reconnects says where it was; it gets what came after, once.
        again = Sse(events, last_id=written + 1)
        assert [again.message(), again.message()] == [
            (written + 2, {"kind": "progress", "stream": "api",
                           "time": "2026-01-01T00:00:01Z", "seq": None}),
            (written + 5, {"kind": "stream_finished", "stream": "api", "time": "", "seq": None})]
        assert again.message(timeout=1.0) is None
        again.close()


def test_event_log_reader_tolerates_both_formats_and_never_follows_a_link(tmp_path: Path) -> None:
    assert event_of(b'{"event": "run_created", "run": "p-1", "at": "T"}') == {
        "kind": "run_created", "time": "T", "stream": None, "seq": None}
    assert event_of(b'{"seq": 3, "kind": "landing.landed", "time": "T", "stream": 5}') == {
        "kind": "landing.landed", "time": "T", "stream": None, "seq": 3}
    for junk in (b"", b"{", b"[]", b'"x"', b'{"kind": 1}', b"\xff\xfe", b"[" * 100_000):
        assert event_of(junk) is None
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"event": "secret"}\n')
    log = tmp_path / "run" / "events.jsonl"
    log.parent.mkdir()
    log.symlink_to(outside)
    tail = EventTail(log)
    assert tail.poll() == [] and tail.skip_to_end() == 0
    log.unlink()
    log.write_text('{"event": "a"}\n{"event": "b"}\n')
    assert [n for n, _ in EventTail(log, after=1).poll()] == [2]
    tail = EventTail(log)
    assert tail.skip_to_end() == 2
    log.write_text('{"event": "c"}\n')  # replaced by a shorter file: read from its start
    assert [(n, e["kind"]) for n, e in tail.poll()] == [(1, "c")]
    # Numbered lines are known by their number (as ``wtr events --since`` knows them).
    log.write_text('{"event": "a"}\n{"seq": 7, "kind": "x.y"}\n{"event": "b"}\n')
    assert [n for n, _ in EventTail(log).poll()] == [1, 7, 8]
    assert [n for n, _ in EventTail(log, after=7).poll()] == [8]


# -- in a real browser ------------------------------------------------------------------------

_PAGE_STATE = """JSON.stringify({
  state: document.getElementById("run-state")?.textContent,
  streams: Object.fromEntries([...document.querySelectorAll("details.stream")].map(
    d => [d.dataset.stream, d.querySelector("summary .chip").textContent])),
  counts: document.getElementById("counts")?.textContent.replace(/\\s+/g, " ").trim(),
  bars: [...document.querySelectorAll("svg.tl g.row")].map(
    r => r.dataset.stream + ":" + [...r.querySelectorAll("g.attempt")].map(
      a => a.dataset.outcome).join(",")),
  mark: window.wtrTestMark || null,
  updates: Number(document.getElementById("report")?.dataset.updates || 0),
  title: document.title,
})"""


def test_the_live_page_follows_a_run_in_chromium(repo: Repo, tmp_path: Path,
                                                 chromium: str) -> None:
    gate = tmp_path / "go"
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WAIT_FOR": str(gate), "AGENT_CHATTY": "1",
                                               "AGENT_WRITE": "src/db/models.py=MODELS = [2]"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "env": {"AGENT_SLEEP": "4", "AGENT_WRITE": "src/api/orders.py=ORDERS = [1]"}},
        "ui": {"files": ["src/ui/**"], "agent": {"command": [sys.executable, str(HOSTILE_AGENT)]},
               "depends_on": ["db"]},
    })
    runner = start_run(repo, plan)
    seen: list[dict[str, Any]] = []
    try:
        wait_for(lambda: first_stream_running(repo))
        with served(repo) as (_, url), Cdp(chromium, url) as page:
            wait_for(lambda: page.evaluate("document.getElementById('run-state') !== null"))
            page.evaluate("window.wtrTestMark = 'same page'")

            def look() -> dict[str, Any]:
                state: dict[str, Any] = json.loads(page.evaluate(_PAGE_STATE))
                if not seen or state != seen[-1]:
                    seen.append(state)
                return state

            first = look()
            assert first["state"] == "running"
            assert first["streams"] == {"db": "running", "api": "pending", "ui": "pending"}
            gate.touch()  # db finishes; then api and ui start and finish
            wait_for(lambda: look()["state"] == "finished", timeout=120, poll=0.2)
            last = look()
            # The same page all along (a reload would have lost the mark), swapped in place.
            assert last["mark"] == "same page" and last["updates"] >= 2
            assert last["streams"] == {"db": "succeeded", "api": "succeeded", "ui": "succeeded"}
            assert last["title"].endswith("— finished")
            assert "3 succeeded" in last["counts"]
            assert last["bars"] == ["db:ok", "api:ok", "ui:ok"]
            # The page went through the run's steps as they happened: db ended first.
            db_done = next(i for i, s in enumerate(seen) if s["streams"]["db"] == "succeeded")
            assert db_done > 0 and seen[db_done]["state"] == "running"
            assert seen[db_done - 1]["streams"]["db"] == "running"
            # Each stream's output tail and diff, as text; nothing the agent wrote ran.
            db_log = page.evaluate("document.querySelector('#log-db pre').textContent")
            assert "working\ndone\n" in db_log and db_log.rstrip().endswith("succeeded ---")
            db_diff = page.evaluate("document.querySelector('#diff-db pre').textContent")
            assert "+MODELS = [2]" in db_diff and "src/db/models.py" in db_diff
            ui_log = page.evaluate("document.querySelector('#log-ui pre').textContent")
            assert HOSTILE in ui_log
            ui_diff = page.evaluate("document.querySelector('#diff-ui pre').textContent")
            assert "><img src=x onerror=alert(1)><script>x<script>.txt" in ui_diff
            assert page.evaluate("document.querySelectorAll('main img, main script').length") == 0
            assert page.evaluate("document.body.getAttribute('data-pwned')") is None
            assert not page.evaluate("document.title").startswith("pwned")
            # A card the reader opened stays open when the page changes under it.
            page.evaluate("document.querySelector('#diff-api summary').click()")
            assert page.evaluate("document.querySelector('#diff-api').open") is True
            before = look()["updates"]
            assert run_wtr("merge", cwd=repo.path).returncode == 0  # appends events
            wait_for(lambda: look()["updates"] > before and "merged" in look()["counts"],
                     timeout=60, poll=0.2)
            assert page.evaluate("document.querySelector('#diff-api').open") is True
            assert page.evaluate("document.getElementById('merge-state').textContent") == "landed"
    finally:
        gate.touch()
        runner.wait(timeout=120)
    assert runner.returncode == 0


def test_a_wrong_token_gets_an_empty_page_in_chromium(repo: Repo, chromium: str) -> None:
    doc = _finished_run(repo)
    with served(repo) as (_, url):
        wrong = url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB")
        with Cdp(chromium, wrong) as page:
            # An empty 403: chromium shows its own error page, in place of anything of ours.
            wait_for(lambda: page.evaluate("location.href") != "about:blank"
                     and page.evaluate("document.readyState") == "complete")
            html = page.evaluate("document.documentElement.outerHTML")
            assert doc["run"] not in html and "MODELS" not in html
            assert page.evaluate("document.getElementById('report')") is None
            assert "403" in page.evaluate("document.body.innerText")
        with Cdp(chromium, url) as page:  # the same browser, the right token: the page
            wait_for(lambda: page.evaluate("document.getElementById('run-state') !== null"))
            assert page.evaluate("document.getElementById('run-state').textContent") == "finished"
            # Its script cannot be made to fetch the page without the token.
            assert page.evaluate("fetch('/body').then(r => r.status)") == 403


# A second listener to the page's event stream, as the page's own: did the server say that
# the runner is gone?
_LISTEN_FOR_GONE = """(() => {
  const token = new URLSearchParams(location.search).get("token");
  const source = new EventSource("events?token=" + encodeURIComponent(token));
  source.onopen = () => { window.wtrListening = true; };
  source.onmessage = (e) => {
    if (JSON.parse(e.data).kind === "runner.gone") window.wtrGone = true;
  };
  return true;
})()"""


def test_the_live_page_shows_a_killed_runner_and_follows_its_resume(repo: Repo, tmp_path: Path,
                                                                     chromium: str) -> None:
    gate = tmp_path / "go"
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {
        "AGENT_WAIT_FOR": str(gate), "AGENT_WRITE": "src/db/models.py=MODELS = [3]"}}})
    runner = start_run(repo, plan)
    try:
        wait_for(lambda: first_stream_running(repo))
        with served(repo) as (_, url), Cdp(chromium, url) as page:
            wait_for(lambda: page.evaluate("document.getElementById('in-progress') !== null"))
            page.evaluate("window.wtrTestMark = 'same page'")
            page.evaluate(_LISTEN_FOR_GONE)
            wait_for(lambda: page.evaluate("window.wtrListening === true"))
            runner.kill()  # kill -9: the runner writes no event about it
            runner.wait(timeout=30)
            state = "document.getElementById('run-state').textContent"
            wait_for(lambda: page.evaluate(state) == "interrupted", timeout=40, poll=0.2)
            # the server said so (the page's own look comes only every ten seconds)
            wait_for(lambda: page.evaluate("window.wtrGone === true"), timeout=40, poll=0.2)
            assert page.evaluate("document.getElementById('interrupted') !== null")
            gate.touch()
            resumed = run_wtr("resume", cwd=repo.path)
            assert resumed.returncode == 0, resumed.stderr
            wait_for(lambda: page.evaluate(state) == "finished", timeout=40, poll=0.2)
            assert page.evaluate("window.wtrTestMark") == "same page"
            diff = page.evaluate("document.querySelector('#diff-db pre').textContent")
            assert "+MODELS = [3]" in diff
    finally:
        gate.touch()
        if runner.poll() is None:
            runner.kill()
        runner.wait(timeout=60)
