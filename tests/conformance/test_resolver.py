"""``wtr merge --resolve-with claude``: the real CLI, started as the preset starts a stream's
agent, resolves a conflict against the scripted model; the proposal is checked and lands."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from tests.conformance.harness import cli_bin_dir
from tests.conformance.modelserver import ModelServer, Script
from tests.conformance.test_claude import gateway
from tests.gitrepo import make_repo, run_wtr

RESOLVE = [{"shell": "printf 'alpha and main\\n' > notes.txt"},
           {"text": "Kept both sides in notes.txt."}]


def test_claude_resolves_a_conflict_as_a_preset_resolver(tmp_path: Path) -> None:
    bin_dir = cli_bin_dir("claude")
    repo = make_repo(tmp_path / "repo", {"notes.txt": "start\n", "README.md": "r\n"})
    agent = [sys.executable, "-c",
             "import pathlib, subprocess; pathlib.Path('notes.txt').write_text('alpha\\n'); "
             "subprocess.run(['git', 'commit', '-qam', 'alpha: notes'], check=True)"]
    plan = {"version": 1, "agent": {"command": agent, "timeout": 60},
            "streams": {"alpha": {"files": ["notes.txt"], "prompt": "note"}}}
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    assert run_wtr("run", plan_file, cwd=repo.path).returncode == 0
    repo.commit({"notes.txt": "main\n"}, "main moved meanwhile")
    home = tmp_path / "home"
    home.mkdir()
    with ModelServer(Script(RESOLVE)) as server:
        env = {**gateway(server.url, home), "HOME": str(home),
               "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        merged = run_wtr("merge", "--resolve-with", "claude", cwd=repo.path, env=env,
                         timeout=300)
    assert merged.returncode == 0, (merged.stdout, merged.stderr)
    assert repo.git("show", "main:notes.txt") == "alpha and main"
    assert "Kept both sides" not in merged.stderr
