"""``wtr run`` on a terminal: the live table, a subscriber of the run's events, shows each
stream's end (a real pseudo-terminal, a real run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.gitrepo import Repo
from tests.runhelp import agent_plan

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_the_live_table_on_a_terminal_ends_showing_every_stream(repo: Repo) -> None:
    plan = repo.write_plan(agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2",
                                                "AGENT_SLEEP": "1.5"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"], "env": {"AGENT_EXIT": "3"}},
        "ui": {"files": ["src/ui/**"], "depends_on": ["api"]},
    }))
    leader, follower = os.openpty()
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run", str(plan)],
                              cwd=repo.path, stdin=subprocess.DEVNULL, stdout=follower,
                              stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "160"})
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the run
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert runner.wait(timeout=120) == 1
    text = ANSI.sub("", shown.decode(errors="replace"))
    frames = text.count("stream")  # the table's header, once a frame
    assert frames >= 2, text  # drawn at the start and again as the run went
    last = text[text.rindex("stream"):]
    assert re.search(r"db\s.*succeeded", last) and re.search(r"api\s.*failed", last)
    assert re.search(r"ui\s.*blocked", last)
    assert "1 succeeded" in text and "1 failed" in text and "1 blocked" in text
    assert "estimated completion: unknown" in text  # under the table while it ran
