"""A real headless browser for tests and benchmarks: Debian's ``chromium``.

``scripts/test`` installs it when it is missing; ``find_chromium`` says why when it is not
there. ``dump_dom`` returns the DOM the browser built (after parsing, styles and any
script), ``screenshot`` writes a PNG; ``Cdp`` keeps a page open and runs script in it
(for pages that change after they load); ``Dom`` reads the dumped HTML back into elements.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_or_skip(unchecked: str) -> str:
    """The browser, or a loud skip saying that ``unchecked`` was not checked in one."""
    found = find_chromium()
    if found is None:
        pytest.skip("!!! NO BROWSER: chromium is not installed and scripts/test could not "
                    f"install it (apt-get install chromium); {unchecked} was NOT checked in a "
                    "browser !!!")
    return found


def _argv(binary: str, profile: str) -> list[str]:
    flags = ["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}",
             "--disable-extensions", "--mute-audio"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # chromium refuses to run as root with its sandbox
    return [binary, *flags]


def dump_dom(binary: str, page: Path, timeout: float = 120) -> tuple[str, float]:
    """The DOM after load, serialized; and the wall-clock seconds the browser took."""
    with tempfile.TemporaryDirectory(prefix="wtr-chromium-") as profile:
        started = time.perf_counter()
        result = subprocess.run([*_argv(binary, profile), "--dump-dom", page.as_uri()],
                                capture_output=True, text=True, timeout=timeout, check=False)
        took = time.perf_counter() - started
    if result.returncode != 0 or "<html" not in result.stdout:
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout, took


def screenshot(binary: str, page: Path, png: Path, size: tuple[int, int] = (1280, 1600),
               timeout: float = 120) -> float:
    with tempfile.TemporaryDirectory(prefix="wtr-chromium-") as profile:
        started = time.perf_counter()
        result = subprocess.run([*_argv(binary, profile), f"--window-size={size[0]},{size[1]}",
                                 f"--screenshot={png}", page.as_uri()],
                                capture_output=True, text=True, timeout=timeout, check=False)
        took = time.perf_counter() - started
    if result.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium failed ({result.returncode}): {result.stderr[-2000:]}")
    return took


class Cdp:
    """A live headless chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: JSON messages ended by NUL, read on fd 3, written on fd 4),
    for pages that change after they load. One tab; ``evaluate`` runs script in it."""

    def __init__(self, binary: str, url: str, timeout: float = 60) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="wtr-chromium-")
        to_browser, self._to = os.pipe()
        self._from, from_browser = os.pipe()

        def pipes() -> None:  # in the child, before exec: the fds chromium expects
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [*_argv(binary, self._profile.name), "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=pipes)
        os.close(to_browser)
        os.close(from_browser)
        self._timeout, self._next, self._buffer = timeout, 0, b""
        self._session: str | None = None
        target = self.call("Target.createTarget", {"url": url})["targetId"]
        self._session = self.call("Target.attachToTarget",
                                  {"targetId": target, "flatten": True})["sessionId"]

    def call(self, method: str, params: dict[str, object] | None = None) -> dict[str, Any]:
        self._next += 1
        message: dict[str, object] = {"id": self._next, "method": method,
                                      "params": params or {}}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self._timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a script expression in the page (JSON-able values); while the page
        is between two documents (navigating), it waits for the next one."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                result = self.call("Runtime.evaluate", {"expression": expression,
                                                        "returnByValue": True,
                                                        "awaitPromise": True})
                break
            except RuntimeError as exc:
                if "context" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium exited")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            self._session = None
            self.call("Browser.close")
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to)
        os.close(self._from)
        self._profile.cleanup()

    def __enter__(self) -> Cdp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def png_size(png: Path) -> tuple[int, int]:
    """Width and height from a PNG's header; raises ValueError if it is not a PNG."""
    head = png.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{png} is not a PNG image")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    parent: Element | None
    text: list[str] = field(default_factory=list)
    children: list[Element] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def all_text(self) -> str:
        return "".join([*self.text, *(c.all_text() for c in self.children)])

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                found.append(child)
            found += child.find_all(tag, cls)
        return found


_VOID = {"meta", "link", "br", "img", "input", "hr", "area", "base", "col", "embed",
         "source", "track", "wbr"}


class Dom(HTMLParser):
    """The elements of a page, as a tree (enough for assertions, not a browser)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self._at = self.root
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs}, self._at)
        self._at.children.append(element)
        if tag not in _VOID:
            self._at = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._at.children.append(Element(tag, {k: v or "" for k, v in attrs}, self._at))

    def handle_endtag(self, tag: str) -> None:
        at: Element | None = self._at
        while at is not None and at.tag != tag:
            at = at.parent
        if at is not None and at.parent is not None:
            self._at = at.parent

    def handle_data(self, data: str) -> None:
        self._at.text.append(data)

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return self.root.find_all(tag, cls)

    def by_id(self, ident: str) -> Element | None:
        return next((e for e in self.find_all() if e.attrs.get("id") == ident), None)
