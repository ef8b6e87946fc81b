#!/usr/bin/env python3
"""A test agent for change requests: runs a shell script, as its variables say, then
commits what it changed as "work of <stream>".

CO_RECORD=DIR    write DIR/<stream>.<n>.json for its n-th start: WTR_REQUEST, the prompt
                 file's text, and what the script printed
CO_FIRST=SH      run with sh -c on a start without WTR_REQUEST (``wtr`` is on PATH)
CO_ON_REQUEST=SH run with sh -c when started with WTR_REQUEST (another stream's request)
The agent exits with the script's exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    told = os.environ.get("WTR_REQUEST")
    script = os.environ.get("CO_ON_REQUEST" if told else "CO_FIRST", "")
    ran = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    sys.stdout.write(ran.stdout + ran.stderr)
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"work of {os.environ['WTR_STREAM']}"],
                   check=False)
    folder = os.environ.get("CO_RECORD")
    if folder:
        stream = os.environ["WTR_STREAM"]
        number = len(list(Path(folder).glob(f"{stream}.*.json"))) + 1
        data = {"request": told, "prompt": Path(os.environ["WTR_PROMPT_FILE"]).read_text(),
                "output": ran.stdout + ran.stderr, "code": ran.returncode}
        (Path(folder) / f"{stream}.{number}.json").write_text(json.dumps(data))
    return ran.returncode


if __name__ == "__main__":
    sys.exit(main())
