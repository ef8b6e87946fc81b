#!/usr/bin/env python3
"""A test agent for feedback rounds: a first round and a fixing round, as its variables say.

FB_RECORD=DIR  write DIR/<stream>.<n>.json for its n-th start: argv, WTR_FEEDBACK,
               WTR_MESSAGE and the prompt file's text
FB_FIRST=SH    run with sh -c when started without WTR_FEEDBACK or WTR_MESSAGE
FB_FIX=SH      run with sh -c when started with one of them (a feedback round, a message)
Either script's changes are committed unless it ends with code 3 (then left uncommitted);
the agent exits 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def record() -> None:
    folder = Path(os.environ["FB_RECORD"])
    stream = os.environ["WTR_STREAM"]
    number = len(list(folder.glob(f"{stream}.*.json"))) + 1
    prompt_file = sys.argv[1] if len(sys.argv) > 1 else os.environ["WTR_PROMPT_FILE"]
    data = {"argv": sys.argv, "feedback": os.environ.get("WTR_FEEDBACK"),
            "message": os.environ.get("WTR_MESSAGE"),
            "prompt": Path(prompt_file).read_text()}
    (folder / f"{stream}.{number}.json").write_text(json.dumps(data))


def main() -> int:
    if os.environ.get("FB_RECORD"):
        record()
    told = os.environ.get("WTR_FEEDBACK") or os.environ.get("WTR_MESSAGE")
    script = os.environ.get("FB_FIX" if told else "FB_FIRST", "")
    code = subprocess.run(["sh", "-c", script], check=False).returncode if script else 0
    if code != 3:
        subprocess.run(["git", "add", "-A"], check=True)
        subprocess.run(["git", "commit", "-q", "-m", "feedback agent"], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
