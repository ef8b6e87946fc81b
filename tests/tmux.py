"""A terminal a test types into and reads, as a person would: a tmux server of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def require_tmux() -> str:
    """tmux's path; the test skips, loudly, only when it truly is missing."""
    found = shutil.which("tmux")
    if found is None:
        print("\n!!! ATTACH NOT CHECKED: tmux is not installed (scripts/test installs it "
              "as root) !!!", file=sys.stderr)
        pytest.skip("!!! tmux is not installed !!!")
    return found


def wtr_command(folder: Path) -> Path:
    """A ``wtr`` on the terminal's PATH that runs this checkout with the test's Python."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "wtr"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m '
                    'worktree_runner "$@"\n')
    shim.chmod(0o755)
    return folder


class Terminal:
    """One tmux window (200x50) running ``sh`` in ``cwd``."""

    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux = tmux
        self.socket = socket

    def command(self, *args: str) -> str:
        done = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True,
                              text=True, check=True, timeout=30)
        return done.stdout

    def type(self, text: str) -> None:
        """Type ``text`` and press Enter."""
        self.command("send-keys", "-t", "t", "-l", text)
        self.command("send-keys", "-t", "t", "Enter")

    def submit(self, text: str) -> None:
        """Type ``text`` into a full-screen program, and press Enter once it shows it (a
        program that takes fast typing for a paste would take an Enter sent with it as part
        of the paste)."""
        self.command("send-keys", "-t", "t", "-l", text)
        self.wait_for(text)
        time.sleep(0.5)
        self.command("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self.command("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        """What the window shows, with its scrollback."""
        return self.command("capture-pane", "-p", "-J", "-S", "-2000", "-t", "t")

    def wait_for(self, text: str, timeout: float = 60.0, after: int = 0) -> str:
        """The screen once ``text`` appears on it (``after``: ignore the first that many
        occurrences); the test fails, showing the screen, after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if shown.count(text) > after:
                return shown
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} did not appear in the terminal; it shows:\n{shown}")
            time.sleep(0.2)


@contextmanager
def terminal(cwd: Path, env: Mapping[str, str]) -> Iterator[Terminal]:
    """A tmux server of the test's own (its socket unique), started with ``env``; killed
    at the end with everything running in it."""
    tmux = require_tmux()
    socket = f"wtr-test-{uuid.uuid4().hex[:12]}"
    full = {**os.environ, **env, "SHELL": "/bin/sh", "PS1": "$ ", "TERM": "xterm-256color"}
    full.pop("TMUX", None)
    subprocess.run([tmux, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                    "-x", "200", "-y", "50", "-c", str(cwd), "sh"],
                   env=full, check=True, timeout=30)
    place = subprocess.run([tmux, "-L", socket, "display-message", "-p", "#{socket_path}"],
                           capture_output=True, text=True, timeout=30, check=False).stdout
    try:
        yield Terminal(tmux, socket)
    finally:
        subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True, timeout=30,
                       check=False)
        if place.strip():
            Path(place.strip()).unlink(missing_ok=True)
