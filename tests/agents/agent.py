#!/usr/bin/env python3
"""A test agent: does what its AGENT_* environment variables say, and records what it saw.

AGENT_RECORD=DIR     write DIR/<stream>.<attempt>.json: argv, cwd, WTR_* variables, times
AGENT_WRITE=a=x;b=y  write file a with text x and b with y (relative to the worktree)
AGENT_COMMIT=0       leave the changes uncommitted (default: commit them)
AGENT_SHELL=SCRIPT   after writing and committing, run SCRIPT with sh -c (git tricks)
AGENT_SLEEP=S        sleep S seconds before finishing
AGENT_EXIT=N         exit with code N (after writing and committing)
AGENT_FAIL_ATTEMPTS=N  exit 1 on the first N attempts
AGENT_HANG=1         start a grandchild that sleeps, then sleep forever (printing nothing)
AGENT_HANG_ATTEMPTS=N  with AGENT_HANG: hang on the first N attempts only (needs AGENT_RECORD)
AGENT_CHATTY_HANG=1  like AGENT_HANG, but keep printing output
AGENT_PROGRESS=1     report progress with `wtr progress`
AGENT_SLEEP_FIRST=S  on the first attempt only (needs AGENT_RECORD), sleep S seconds at the end
AGENT_WAIT_FOR=PATH  wait (up to 120 s) until PATH exists before doing anything else
AGENT_CHATTY=S       print a line every 0.2 s for S seconds, then finish as usual
AGENT_PROGRESS_MESSAGE=TEXT  report progress with this message (and --percent 50)
AGENT_REPORT=TEXT    write TEXT to the file named by WTR_REPORT
AGENT_SPANS=FILE     append "start PID PPID TIME" when it starts, "end PID PPID TIME" when it ends
                     (one line each, atomic appends: agents running at once never mix)
AGENT_SPEND=T,N,USD  print N usage lines, 0.2 s apart, as claude's stream-json result record
                     does: each the running total (T more tokens and USD more dollars a line)
AGENT_SPEND_ATTEMPTS=N  with AGENT_SPEND: spend on the first N attempts only (needs AGENT_RECORD)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECORDED = ("WTR_", "GIT_", "CUSTOM", "COMPOSE_")


def record(stage: str, extra: dict[str, object] | None = None) -> None:
    folder = os.environ.get("AGENT_RECORD")
    if not folder:
        return
    stream = os.environ["WTR_STREAM"]
    attempt = len(list(Path(folder).glob(f"{stream}.*.start")))
    if stage == "start":
        attempt += 1
        (Path(folder) / f"{stream}.{attempt}.start").write_text(str(time.time()))
    data = {
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "env": {k: v for k, v in os.environ.items() if k.startswith(RECORDED)},
        "path": os.environ.get("PATH", ""),
        "time": time.time(),
        "attempt": attempt,
        "pid": os.getpid(),
        **(extra or {}),
    }
    # Written whole, then renamed: a test polling the folder never reads half a record.
    final = Path(folder) / f"{stream}.{attempt}.{stage}.json"
    partial = final.with_name(f".{final.name}.tmp")
    partial.write_text(json.dumps(data))
    partial.replace(final)


def span(mark: str) -> None:
    if os.environ.get("AGENT_SPANS"):
        with open(os.environ["AGENT_SPANS"], "a") as spans:
            spans.write(f"{mark} {os.getpid()} {os.getppid()} {time.time()!r}\n")


def _hangs() -> bool:
    return bool(os.environ.get("AGENT_HANG")) and _within("AGENT_HANG_ATTEMPTS")


def _within(limit_variable: str) -> bool:
    """Whether this attempt is one of the first N the variable names (any without it)."""
    limit = os.environ.get(limit_variable)
    folder = os.environ.get("AGENT_RECORD")
    if limit is None or not folder:
        return True
    attempt = len(list(Path(folder).glob(f"{os.environ['WTR_STREAM']}.*.start")))
    return attempt <= int(limit)


def spend() -> None:
    if not os.environ.get("AGENT_SPEND") or not _within("AGENT_SPEND_ATTEMPTS"):
        return
    tokens, lines, dollars = os.environ["AGENT_SPEND"].split(",")
    for line in range(1, int(lines) + 1):
        print(json.dumps({"type": "result", "num_turns": line, "total_cost_usd":
                          round(line * float(dollars), 6),
                          "usage": {"input_tokens": line * int(tokens), "output_tokens": line}}),
              flush=True)
        time.sleep(0.2)


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def main() -> int:
    record("start")
    waited_for = os.environ.get("AGENT_WAIT_FOR")
    deadline = time.monotonic() + 120
    while waited_for and not Path(waited_for).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.environ.get("AGENT_PROGRESS"):
        subprocess.run(["wtr", "progress", "halfway", "--percent", "50"], check=True)
    if _hangs() or os.environ.get("AGENT_CHATTY_HANG"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        record("child", {"child_pid": child.pid, "pid": os.getpid()})
        while True:
            if os.environ.get("AGENT_CHATTY_HANG"):
                print("still working", flush=True)
            time.sleep(0.2)
    spend()
    chatty_until = time.monotonic() + float(os.environ.get("AGENT_CHATTY", "0"))
    while time.monotonic() < chatty_until:
        print("working", flush=True)
        time.sleep(0.2)
    if os.environ.get("AGENT_PROGRESS_MESSAGE"):
        subprocess.run(["wtr", "progress", os.environ["AGENT_PROGRESS_MESSAGE"],
                        "--percent", "50"], check=True)
    if os.environ.get("AGENT_REPORT"):
        Path(os.environ["WTR_REPORT"]).write_text(os.environ["AGENT_REPORT"])
    failing = int(os.environ.get("AGENT_FAIL_ATTEMPTS", "0"))
    folder = os.environ.get("AGENT_RECORD")
    attempt = len(list(Path(folder).glob(f"{os.environ['WTR_STREAM']}.*.start"))) if folder else 1
    if attempt <= failing:
        print(f"failing attempt {attempt} on purpose", flush=True)
        return 1
    for item in filter(None, os.environ.get("AGENT_WRITE", "").split(";")):
        name, _, text = item.partition("=")
        target = Path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")
    if os.environ.get("AGENT_COMMIT", "1") == "1" and os.environ.get("AGENT_WRITE"):
        git("add", "-A")
        staged = subprocess.run(["git", "diff", "--cached", "--quiet"], check=False)
        if staged.returncode:  # a later attempt may find its work committed already
            git("commit", "-q", "-m", f"{os.environ['WTR_STREAM']}: work")
    if os.environ.get("AGENT_SHELL"):
        subprocess.run(["sh", "-c", os.environ["AGENT_SHELL"]], check=True)
    time.sleep(float(os.environ.get("AGENT_SLEEP", "0")))
    if attempt == 1:
        time.sleep(float(os.environ.get("AGENT_SLEEP_FIRST", "0")))
    record("end")
    print("done", flush=True)
    return int(os.environ.get("AGENT_EXIT", "0"))


if __name__ == "__main__":
    span("start")
    try:
        code = main()
    finally:
        span("end")  # (an agent that is killed leaves its span open: running to the end)
    sys.exit(code)
