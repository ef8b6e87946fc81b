#!/usr/bin/env python3
"""A hostile agent for the chaos harness (scripts/chaos): it picks one behaviour at random.

CHAOS_JOURNAL=DIR    where it journals, outside the repository, one JSON line per event:
                     start (pid, start time), commit (sha), end; and "overlap" when it finds
                     an earlier agent of its stream still alive
CHAOS_SEED=N         with the stream name and attempt, seeds the choice
CHAOS_BEHAVIOURS=a,b the behaviours to pick from (default: all of BEHAVIOURS)
CHAOS_OWN=path       a file the stream owns; CHAOS_SHARED=path a shared file it may touch;
CHAOS_OTHER=path     a file another stream owns
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

BEHAVIOURS = ("good", "multi", "uncommitted", "detached", "reset", "amend",
              "delete_branch", "crash", "hang", "huge_output", "out_of_scope", "conflict",
              "setsid_child", "write_main", "nothing")


def journal(event: str, **data: object) -> None:
    folder = Path(os.environ["CHAOS_JOURNAL"])
    line = json.dumps({"event": event, "stream": os.environ.get("WTR_STREAM"),
                       "run": os.environ.get("WTR_RUN"), "pid": os.getpid(),
                       "time": time.time(), **data})
    with (folder / f"{os.environ.get('WTR_STREAM')}.jsonl").open("a") as out:
        out.write(line + "\n")


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def check_alone() -> None:
    """Journal an overlap if an earlier agent of this stream (same run) is still alive."""
    path = Path(os.environ["CHAOS_JOURNAL"]) / f"{os.environ.get('WTR_STREAM')}.jsonl"
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry["event"] == "start" and entry["pid"] != os.getpid()
                and entry.get("run") == os.environ.get("WTR_RUN")
                and start_time(entry["pid"]) == entry.get("start_time")):
            journal("overlap", other=entry["pid"])


def git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as out:
        out.write(text + "\n")


def commit(message: str, amend: bool = False) -> str:
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", message, *(["--amend"] if amend else []))
    sha = git("rev-parse", "HEAD")
    journal("commit", sha=sha)
    return sha


def main() -> int:
    pid = os.getpid()
    journal("start", start_time=start_time(pid))
    check_alone()
    stream, own = os.environ["WTR_STREAM"], os.environ["CHAOS_OWN"]
    rng = random.Random(f"{os.environ.get('CHAOS_SEED', '0')}:{os.environ.get('WTR_RUN')}:"
                        f"{stream}:{time.time_ns()}")
    choices = [b for b in os.environ.get("CHAOS_BEHAVIOURS", "").split(",") if b] or BEHAVIOURS
    behaviour = rng.choice(list(choices))
    journal("behaviour", behaviour=behaviour)
    tag = f"{stream} {rng.random():.6f}"
    write(own, tag)
    if behaviour == "good":
        commit(f"{stream}: work")
    elif behaviour == "multi":
        for i in range(3):
            write(own, f"{tag} {i}")
            commit(f"{stream}: part {i}")
    elif behaviour == "uncommitted":
        pass
    elif behaviour == "detached":
        commit(f"{stream}: on the branch")
        git("checkout", "-q", "--detach")
        write(own, tag + " detached")
        commit(f"{stream}: on a detached HEAD")
    elif behaviour == "reset":
        commit(f"{stream}: soon hidden")
        git("reset", "-q", "--hard", os.environ["WTR_BASE_COMMIT"])
        write(own, tag + " again")
        commit(f"{stream}: after the reset")
    elif behaviour == "amend":
        commit(f"{stream}: first")
        write(own, tag + " amended")
        commit(f"{stream}: amended", amend=True)
    elif behaviour == "delete_branch":
        commit(f"{stream}: on a branch about to vanish")
        git("checkout", "-q", "-b", f"chaos-{stream}-{pid}")
        git("branch", "-D", os.environ["WTR_BRANCH"])
    elif behaviour == "crash":
        commit(f"{stream}: before the crash")
        journal("end", code=3)
        return 3
    elif behaviour == "hang":
        commit(f"{stream}: before hanging")
        time.sleep(3600)
    elif behaviour == "huge_output":
        block = "x" * 1023 + "\n"
        for _ in range(4096):
            sys.stdout.write(block)
        sys.stdout.flush()
        commit(f"{stream}: after a lot of output")
    elif behaviour == "out_of_scope":
        write(os.environ["CHAOS_OTHER"], tag)
        commit(f"{stream}: touching another stream's file")
    elif behaviour == "conflict":
        shared = os.environ.get("CHAOS_SHARED")
        if shared:
            write(shared, tag)
        commit(f"{stream}: shared edit")
    elif behaviour == "setsid_child":
        loop = "while true; do sleep 0.2; done"
        child = subprocess.Popen(["setsid", "sh", "-c", loop], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal("child", child=child.pid)
        commit(f"{stream}: with a child left behind")
    elif behaviour == "write_main":
        common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir"))
        write(str(common.parent / "README.md"), f"written by {stream}")
        commit(f"{stream}: and a write into the main checkout")
    elif behaviour == "nothing":
        Path(own).write_text(Path(own).read_text().replace(tag + "\n", ""))
    journal("end", code=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
