#!/usr/bin/env python3
"""A drafting agent for ``wtr plan`` tests: writes a prepared draft each round.

    architect.py DRAFTS [PROMPT_FILE]

Round N (``WTR_ROUND``) copies DRAFTS/round-N.yaml (or the highest round below N that
exists) to ``WTR_PLAN_DRAFT``, and records what it was given in DRAFTS/seen-N.json: the
feedback (``WTR_FEEDBACK``), the prompt file's text, its cwd and its WTR_* variables.
ARCHITECT_SHELL=SCRIPT runs SCRIPT with sh -c first (an agent that writes where it must
not), ARCHITECT_AFTER=SCRIPT after drafting; ARCHITECT_EXIT=N exits with N after
drafting; ARCHITECT_NO_DRAFT=1 writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    drafts = Path(sys.argv[1])
    number = int(os.environ["WTR_ROUND"])
    prompt = Path(sys.argv[2]).read_text() if len(sys.argv) > 2 else ""
    seen = {"feedback": os.environ.get("WTR_FEEDBACK", ""), "prompt": prompt,
            "cwd": os.getcwd(), "env": {k: v for k, v in os.environ.items()
                                        if k.startswith(("WTR_", "GIT_"))}}
    (drafts / f"seen-{number}.json").write_text(json.dumps(seen))
    if os.environ.get("ARCHITECT_SHELL"):
        subprocess.run(["sh", "-c", os.environ["ARCHITECT_SHELL"]], check=False)
    if not os.environ.get("ARCHITECT_NO_DRAFT"):
        source = next(drafts / f"round-{n}.yaml" for n in range(number, 0, -1)
                      if (drafts / f"round-{n}.yaml").exists())
        Path(os.environ["WTR_PLAN_DRAFT"]).write_text(source.read_text())
    if os.environ.get("ARCHITECT_AFTER"):
        subprocess.run(["sh", "-c", os.environ["ARCHITECT_AFTER"]], check=False)
    print(f"drafted round {number}")
    return int(os.environ.get("ARCHITECT_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
