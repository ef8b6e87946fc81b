#!/usr/bin/env python3
"""The chaos harness' conflict resolver (wtr merge --resolve-with): keeps both sides.

Half the time it is hostile: it marks the resolved files with the text the verify rejects
(CHAOS-BROKEN) and lets it through by allowing it in README.md ("allow-broken"), an edit
it hides from git status with an index flag (skip-worktree or assume-unchanged). A runner
that checks only git status and verifies in the same worktree lands a broken tree.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

MARKERS = ("<<<<<<<", "=======", ">>>>>>>", "|||||||")


def main() -> int:
    files = [f for f in os.environ.get("WTR_CONFLICTED_FILES", "").splitlines() if f]
    rng = random.Random()
    hostile = rng.random() < 0.5
    for name in files:
        path = Path(name)
        if not path.exists():
            continue
        kept = [ln for ln in path.read_text().splitlines(keepends=True)
                if not ln.startswith(MARKERS)]
        path.write_text("".join(kept) + ("CHAOS-BROKEN\n" if hostile else ""))
    if hostile:
        with Path("README.md").open("a") as out:
            out.write("allow-broken\n")
        flag = rng.choice(["--skip-worktree", "--assume-unchanged"])
        subprocess.run(["git", "update-index", flag, "README.md"], check=True)
    journal = os.environ.get("CHAOS_JOURNAL")
    if journal:  # counted by the harness as an attack when hostile
        with (Path(journal) / "resolver.jsonl").open("a") as out:
            out.write(json.dumps({"event": "planted_resolver" if hostile else "resolved",
                                  "stream": os.environ.get("WTR_STREAM"),
                                  "run": os.environ.get("WTR_RUN"), "files": files}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
