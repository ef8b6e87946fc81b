"""The agent's supervisor: ``python -m worktree_runner.supervise EXIT_FILE -- CMD...``.

It leads the agent's process group, runs the agent, and writes the agent's exit code to
EXIT_FILE before exiting with the same code. The runner may die meanwhile (kill -9): the
code is not lost, and ``wtr resume`` reads it. Standard library only, so it starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time


def _ignore(signum: int, frame: object) -> None:
    """SIGTERM reaches the whole group: the agent ends, and this process records how."""


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m worktree_runner.supervise EXIT_FILE -- CMD...", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"wtr: cannot start the agent {command[0]!r}: {exc.strerror}", flush=True)
        code = 127
    else:
        code = _wait(child)
    # On a full disk the runner, our parent, still gets the code from our exit status.
    with contextlib.suppress(OSError):
        _record(exit_file, code)
    return code if code >= 0 else 128 - code


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
