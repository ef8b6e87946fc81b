"""The agent's supervisor: ``python -m worktree_runner.supervise EXIT_FILE
[--log PATH --log-limit BYTES] -- CMD...``.

It leads the agent's process group, runs the agent, and writes the agent's exit code to
EXIT_FILE before exiting with the same code. The runner may die meanwhile (kill -9): the
code is not lost, and ``wtr resume`` reads it. Standard library only, so it starts fast.

With ``--log``, the agent's output comes through a pipe and this process appends it to
PATH, keeping the file under BYTES: past it, the middle of the log is dropped (its start
and its end are kept) and a marker line says how much went. Being the only writer of the
log while the agent runs, it can cut the file without losing what is being written.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any


def _ignore(signum: int, frame: object) -> None:
    """SIGTERM reaches the whole group: the agent ends, and this process records how."""


USAGE = "usage: python -m worktree_runner.supervise EXIT_FILE [--log PATH --log-limit N] -- CMD..."
# After the agent exits, what it left running may hold the pipe open: read on this long.
DRAIN_SECONDS = 2.0


def main(argv: list[str]) -> int:
    try:
        split = argv.index("--")
        exit_file, options, command = argv[0], argv[1:split], argv[split + 1:]
        log = dict(zip(options[::2], options[1::2], strict=True))
        if not command or set(log) - {"--log", "--log-limit"}:
            raise ValueError
        limit = int(log.get("--log-limit", "0"))
    except (ValueError, IndexError):
        print(USAGE, file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        piped = "--log" in log
        child = subprocess.Popen(command, stdout=subprocess.PIPE if piped else None,
                                 stderr=subprocess.STDOUT if piped else None)
    except OSError as exc:
        print(f"wtr: cannot start the agent {command[0]!r}: {exc.strerror}", flush=True)
        code = 127
    else:
        if child.stdout is not None:
            with CappedLog(log["--log"], limit) as out:
                _pump(child, child.stdout.fileno(), out)
            child.stdout.close()
        code = _wait(child)
    # On a full disk the runner, our parent, still gets the code from our exit status.
    with contextlib.suppress(OSError):
        _record(exit_file, code)
    return code if code >= 0 else 128 - code


def _pump(child: subprocess.Popen[bytes], fd: int, out: CappedLog) -> None:
    """Copy the agent's output to the log until the pipe closes, or shortly after the agent
    exited (descendants it left may keep the pipe open; the runner stops them)."""
    deadline: float | None = None
    while deadline is None or time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                return
            out.write(data)
        if deadline is None and child.poll() is not None:
            deadline = time.monotonic() + DRAIN_SECONDS


class CappedLog:
    """An append-only log file kept under ``limit`` bytes (0: no limit)."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.dropped = 0
        self.handle = open(path, "ab", buffering=0)  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # a full disk must not stop the agent's pipe
            self.handle.write(data)
            if self.limit and self.handle.tell() > self.limit:
                self._trim()

    def _trim(self) -> None:
        """Keep the first quarter of the limit and the last half, cut at line ends."""
        with open(self.path, "r+b") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(0)
            head = log.read(self.limit // 4)
            head = head[: head.rfind(b"\n") + 1]
            tail_start = size - self.limit // 2
            log.seek(tail_start)
            first_line = log.readline()
            tail_start += len(first_line) if first_line.endswith(b"\n") else 0
            self.dropped += tail_start - len(head)
            marker = (f"[wtr: {self.dropped} bytes of output dropped here; a stream's log "
                      f"keeps at most {self.limit} bytes (log_limit), its start and its "
                      "end]\n").encode()
            _move(log, tail_start, len(head) + len(marker), size - tail_start)
            log.seek(len(head))
            log.write(marker)
            log.truncate(len(head) + len(marker) + size - tail_start)


def _move(log: Any, source: int, target: int, length: int) -> None:
    """Copy ``length`` bytes from ``source`` down to ``target`` (< source) in chunks."""
    done = 0
    while done < length:
        log.seek(source + done)
        chunk = log.read(min(1 << 20, length - done))
        log.seek(target + done)
        log.write(chunk)
        done += len(chunk)


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except InterruptedError:  # pragma: no cover - retried by Python itself since 3.5
            continue


def _record(path: str, code: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump({"exit_code": code, "ended_at": time.time()}, handle)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
