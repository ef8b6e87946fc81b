#!/usr/bin/env python3
"""A test agent whose every word is an attempt at HTML injection.

It names a file, reports progress, writes its report and commits with text that would run
script in a page that did not escape it. HOSTILE is the text; the file goes in DIR
(its first WTR_FILES pattern's folder).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HOSTILE = ("<script>document.title='pwned'</script>"
           "\"><img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">")


def main() -> None:
    folder = Path(os.environ["WTR_FILES"].splitlines()[0].rstrip("*").rstrip("/"))
    folder.mkdir(parents=True, exist_ok=True)
    # A file name may hold anything but '/' and NUL.
    (folder / "\"><img src=x onerror=alert(1)><script>x<script>.txt").write_text("x\n")
    subprocess.run(["wtr", "progress", HOSTILE, "--percent", "50"], check=True)
    Path(os.environ["WTR_REPORT"]).write_text(f"# Report {HOSTILE}\n\n- done {HOSTILE}\n")
    subprocess.run(["git", "add", "-A"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"hostile {HOSTILE}"], check=True)
    print(HOSTILE, flush=True)


if __name__ == "__main__":
    main()
