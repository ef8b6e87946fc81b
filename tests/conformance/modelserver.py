"""Scripted model servers on 127.0.0.1: what a real CLI talks to instead of a model service.

One HTTP server answers every protocol the CLIs speak (a module each under
``protocols/``), all from one *script*: the list of turns a model would take, the same for
every stream. The turn to answer with is chosen by how many tool results the request
carries (a CLI sends the whole conversation each time), so parallel streams can share one
server. ``{worktree}`` and ``{stream}`` in a turn are filled from the request, which holds
the stream's prompt ("You work in the git worktree ..."; "# Task: stream '...'").

A turn is one model answer, one of:
    {"shell": "git commit -am 'x'"}                 a call of the CLI's shell tool
    {"tool": "Write", "input": {"file_path": ...}}  a call of any tool, by name
    {"mcp": "progress", "input": {...}}             a call of a tool of the MCP server
                                                    ``wtr``, by its name on that server
    {"text": "Done."}                               the final message (no tool call)
Past the last turn the server answers with the last text turn (or "Done.").

Requests without tools (a CLI's title or quota side requests) are answered with a short
text and do not advance anything. Every request is recorded (``requests``, and one JSON
line each in ``log_path`` when given) so a test can see what the CLI sent back, for
instance the output of the test command the agent ran.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WORKTREE = re.compile(r"You work in the git worktree (.+?), on branch")
STREAM = re.compile(r"# Task: stream '([^']+)'")
SIDE_ANSWER = "OK"
# What each answer says it used: the CLIs' usage parsers are checked against these.
INPUT_TOKENS = 1200
OUTPUT_TOKENS = 34


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    @property
    def text(self) -> str:
        """The body as text, JSON escapes undone, for finding the prompt's lines in it."""
        data = self.json
        return _all_strings(data) if data is not None else self.body.decode("utf-8", "replace")


def _all_strings(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "\n".join(_all_strings(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(_all_strings(v) for v in value)
    return ""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] = ()

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        return cls(status, {"content-type": "application/json"}, [json.dumps(data).encode()])

    @classmethod
    def sse(cls, events: Iterable[bytes]) -> Reply:
        return cls(200, {"content-type": "text/event-stream", "cache-control": "no-cache"},
                   events)


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already text."""
    payload = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


class Script:
    """The turns of the scripted model, shared by every stream and protocol."""

    def __init__(self, turns: list[dict[str, Any]]) -> None:
        if not turns:
            raise ValueError("a script needs at least one turn")
        self.turns = turns

    @classmethod
    def load(cls, path: Path) -> Script:
        data = json.loads(path.read_text())
        return cls(data["turns"] if isinstance(data, dict) else data)

    def turn(self, request_text: str, tool_results: int) -> dict[str, Any]:
        """The answer to a request carrying ``tool_results`` results, placeholders filled."""
        if tool_results < len(self.turns):
            chosen = self.turns[tool_results]
        else:
            chosen = next((t for t in reversed(self.turns) if "text" in t), {"text": "Done."})
        return fill(chosen, placeholders(request_text))


def mcp_tool(offered: list[str], tool: str, default: str) -> str:
    """The name a CLI gives tool ``tool`` of the MCP server ``wtr`` among the ``offered``
    tools (``mcp__wtr__progress``, ``wtr__progress``...); ``default`` when it offers none,
    as a model may still call a tool its prompt names (the CLI then answers with an error)."""
    for name in offered:
        if "wtr" in name and name.endswith(tool) and name != tool:
            return name
    return default


def placeholders(request_text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    if match := WORKTREE.search(request_text):
        found["worktree"] = match.group(1)
    if match := STREAM.search(request_text):
        found["stream"] = match.group(1)
    return found


def fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in values.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    return value


class Protocol:
    """One model API. ``answer`` turns a request into a reply, using the script."""

    name = ""

    def matches(self, request: Request) -> bool:
        raise NotImplementedError

    def answer(self, request: Request, script: Script) -> Reply:
        raise NotImplementedError


def default_protocols() -> list[Protocol]:
    """Every protocol module found under ``protocols/`` (each has ``PROTOCOL``)."""
    import importlib
    import pkgutil

    from tests.conformance import protocols

    found = []
    for module in pkgutil.iter_modules(protocols.__path__):
        loaded = importlib.import_module(f"{protocols.__name__}.{module.name}")
        if isinstance(getattr(loaded, "PROTOCOL", None), Protocol):
            found.append(loaded.PROTOCOL)
    return found


class ModelServer:
    """``with ModelServer(script) as server:`` serves on ``server.url`` until the block ends."""

    def __init__(self, script: Script, protocols: list[Protocol] | None = None,
                 log_path: Path | None = None) -> None:
        self.script = script
        self.protocols = protocols if protocols is not None else default_protocols()
        self.log_path = log_path
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, request: Request, protocol: str, status: int) -> None:
        entry = {"method": request.method, "path": request.path, "protocol": protocol,
                 "status": status, "body": request.text}
        with self._lock:
            self.requests.append(entry)
            if self.log_path is not None:
                with self.log_path.open("a") as out:
                    out.write(json.dumps(entry) + "\n")

    def sent_back(self) -> str:
        """Everything the CLIs sent, as text: tool results (command output) included."""
        with self._lock:
            return "\n".join(entry["body"] for entry in self.requests)

    def _route(self, request: Request) -> tuple[str, Reply]:
        for protocol in self.protocols:
            if protocol.matches(request):
                return protocol.name, protocol.answer(request, self.script)
        return "unknown", Reply.json({"error": {"message": f"no route {request.path}"}}, 404)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parts.query,
                                  {k.lower(): v for k, v in self.headers.items()}, body)
                name, reply = server._route(request)
                server.record(request, name, reply.status)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                chunked = reply.headers.get("content-type") == "text/event-stream"
                if chunked:
                    self.send_header("transfer-encoding", "chunked")
                    self.end_headers()
                    for chunk in reply.chunks:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    data = b"".join(reply.chunks)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler


def serve_forever(script_path: Path, port_file: Path) -> None:  # pragma: no cover - manual use
    """``python -m tests.conformance.modelserver SCRIPT PORT_FILE``: serve until killed."""
    with ModelServer(Script.load(script_path)) as server:
        port_file.write_text(str(server.port))
        threading.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    import sys

    serve_forever(Path(sys.argv[1]), Path(sys.argv[2]))
