"""``wtr check`` and ``wtr run --dry-run`` warn about a plan that is valid but not ready:
an agent program missing from PATH, a prompt still holding init's placeholder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan


def test_missing_agent_program_is_a_warning_in_check_and_dry_run(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]},
                       "api": {"files": ["src/api/**"],
                               "agent": {"command": ["no-such-agent-xyz", "{prompt_file}"]}}})
    path = repo.write_plan(plan)
    checked = run_wtr("check", "--json", path, cwd=repo.path)
    assert checked.returncode == 0, checked.stderr
    [warning] = [w for w in checked.json()["warnings"] if "not on PATH" in w]
    assert "'no-such-agent-xyz'" in warning and "api" in warning and "db" not in warning
    text = run_wtr("check", path, cwd=repo.path)
    assert text.returncode == 0 and "warning: agent program 'no-such-agent-xyz'" in text.stdout
    dry = run_wtr("run", "--dry-run", path, cwd=repo.path)
    assert dry.returncode == 0, dry.stderr
    assert "warning: agent program 'no-such-agent-xyz'" in dry.stdout


def test_init_placeholder_prompts_are_warned_and_a_missing_preset_program_is_an_error(
        repo: Repo, tmp_path: Path, preset_stand_ins: Path) -> None:
    assert run_wtr("init", "--streams", "db:src/db/**", cwd=repo.path).returncode == 0
    only_git = tmp_path / "bin"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git") or "git")
    checked = run_wtr("check", cwd=repo.path, env={"PATH": str(only_git)})
    assert checked.returncode == 2, checked.stderr
    assert "the claude preset runs 'claude', which is not on PATH" in checked.stderr
    dry = run_wtr("run", "--dry-run", cwd=repo.path, env={"PATH": str(only_git)})
    assert dry.returncode == 2 and "'claude'" in dry.stderr
    bare_path = {"PATH": f"{only_git}{os.pathsep}{preset_stand_ins}"}
    checked = run_wtr("check", cwd=repo.path, env=bare_path)
    assert checked.returncode == 0, checked.stderr
    assert "warning: stream 'db' still has the placeholder prompt 'wtr init' wrote" \
        in checked.stdout
    dry = run_wtr("run", "--dry-run", cwd=repo.path, env=bare_path)
    assert dry.returncode == 0, dry.stderr
    assert "placeholder prompt" in dry.stdout
    plan = repo.path / "worktree-plan.yaml"
    plan.write_text(plan.read_text().replace("Describe what the agent should do with",
                                             "Add indexes to"))
    again = run_wtr("check", cwd=repo.path, env=bare_path)
    assert "placeholder prompt" not in again.stdout
