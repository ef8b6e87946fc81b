"""Best-of-N with the real CLIs: a stream with ``attempts: 3`` and ``agents: [claude,
codex]`` (claude, codex, claude) against one scripted model server.

The scripted model answers every candidate with the same turns, but its shell command
writes a working feature only in candidate 2's worktree (codex's): candidates 1 and 3
(claude) fail the stream's verify. Checked: each CLI ran in its own candidate worktree,
codex's candidate is kept and lands through ``wtr merge``, and the two claude candidates
are still reachable under the archive refs after ``wtr clean``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conformance import test_claude, test_codex
from tests.conformance.harness import ROOT, _environment, cli_bin_dir, git, workspace
from tests.conformance.modelserver import ModelServer, Script

ARCHIVE = "refs/worktree-runner/archive"
TURNS: list[dict[str, Any]] = [
    {"shell": "mkdir -p src/{stream} && case '{worktree}' in *+attempt-2) printf "
              "'def value():\\n    return 42\\n' > src/{stream}/feature.py;; *) echo broken "
              "> src/{stream}/feature.py;; esac"},
    {"shell": 'git add src/{stream} && git commit -q -m "{stream}: add feature"'},
    {"text": "Done: wrote src/{stream}/feature.py."},
]


def test_best_of_three_with_claude_and_codex_keeps_the_one_that_passes() -> None:
    bins = [cli_bin_dir("claude"), cli_bin_dir("codex")]
    ws = workspace("checkout")
    plan = {"version": 1, "name": "bestof",
            "agent": {"preset": "claude", "timeout": 300},
            "streams": {"alpha": {
                "files": ["src/alpha/**"], "attempts": 3, "agents": ["claude", "codex"],
                # every candidate through its gates (choose: first would stop the others
                # once one passed: then they end interrupted, not failing their verify)
                "choose": "smallest",
                "prompt": "Add src/alpha/feature.py with value() returning 42 and commit.",
                "verify": ["python3 run_tests.py alpha"]}}}
    plan_path = ws.root / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan, sort_keys=False))
    with ModelServer(Script(TURNS), log_path=ws.root / "requests.jsonl") as server:
        env = _environment(ws, bins[0], {**test_claude.gateway(server.url, ws.home),
                                         **test_codex.gateway(server.url, ws.home)})
        env["PATH"] = f"{bins[1]}{os.pathsep}{env['PATH']}"
        env["PYTHONPATH"] = str(ROOT)  # (this checkout's worktree_runner, wherever pytest is)

        def wtr(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "worktree_runner", *args,
                                   "--repo", str(ws.repo)], cwd=ws.repo, env=env,
                                  capture_output=True, text=True, timeout=600, check=False)

        ran = wtr("run", str(plan_path))
        shown = wtr("status", "--json")
        assert shown.returncode == 0, (ran.stderr, shown.stderr)
        status = json.loads(shown.stdout)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in
                     sorted(ws.repo.glob(".git/worktree-runner/runs/*/streams/alpha/**/agent.log")))
    assert ran.returncode == 0, (ran.stdout, ran.stderr, logs)
    run = status["run"]
    alpha = status["streams"][0]
    found = [(c["attempt"], c["agent"], c["status"], (c["failure"] or {}).get("kind"),
              c["chosen"]) for c in alpha["candidates"]]
    assert found == [(1, "claude", "failed", "verify", False),
                     (2, "codex", "succeeded", None, True),
                     (3, "claude", "failed", "verify", False)], (found, logs)
    # each CLI worked in its own candidate's worktree (the model saw each one's prompt)
    sent = "\n".join(r["body"] for r in server.requests)
    for attempt in (1, 2, 3):
        assert f"alpha+attempt-{attempt}, on branch wtr/{run}/alpha+attempt-{attempt}" in sent
    assert git(ws.repo, "show", f"wtr/{run}/alpha:src/alpha/feature.py").startswith(
        "def value")

    merged = subprocess.run([sys.executable, "-m", "worktree_runner", "merge", "--repo",
                             str(ws.repo)], cwd=ws.repo, env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert merged.returncode == 0, merged.stderr
    assert git(ws.repo, "show", "main:src/alpha/feature.py").startswith("def value")
    cleaned = subprocess.run([sys.executable, "-m", "worktree_runner", "clean", "--repo",
                              str(ws.repo)], cwd=ws.repo, env=env, capture_output=True,
                             text=True, timeout=300, check=False)
    assert cleaned.returncode == 0, cleaned.stderr
    assert git(ws.repo, "branch", "--list", f"wtr/{run}/*") == ""
    for attempt in (1, 3):
        ref = f"{ARCHIVE}/{run}/alpha+attempt-{attempt}"
        assert git(ws.repo, "show", f"{ref}:src/alpha/feature.py") == "broken"
    assert not Path(alpha["worktree"]).exists()
