#!/usr/bin/env python3
"""Stands in for a runner's child between its fork and its exec, the runner already dead.

``half_started.py FACTS``, FACTS a JSON file: ``lock`` (the stream's agent lock), ``gate``,
``exit_file``, ``argv`` (the agent), ``env`` (the agent's), ``cwd`` and ``log``. Like the
runner's child, it leads its own session and holds the lock the runner took before the
fork (its own open of the file here; the kernel's lock is the same), its command line
and environment still those of whoever started it. It writes ``<gate>.held`` once it
holds the lock, waits until ``gate`` exists, then becomes the agent's supervisor by exec,
keeping the lock, as the runner's child does.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from worktree_runner.procs import supervised


def main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    lock = os.open(spec["lock"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fcntl.flock(lock, fcntl.LOCK_EX)
    Path(f"{spec['gate']}.held").write_text(str(os.getpid()))
    while not Path(spec["gate"]).exists():
        time.sleep(0.02)
    os.set_inheritable(lock, True)
    log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(spec["cwd"])
    argv = supervised(spec["exit_file"], spec["argv"], ["--lock", str(lock)])
    os.execve(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
