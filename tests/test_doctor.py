"""``wtr doctor``: can the plan's agents run here; and ``wtr check`` refusing a preset
that cannot start, before anything is created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan
from worktree_runner.presets import PRESETS


def _stand_ins(folder: Path, versions: dict[str, str]) -> str:
    """Programs named like the presets' that print ``versions[name]``; a PATH holding only
    them and the system's programs."""
    folder.mkdir(exist_ok=True)
    for name, said in versions.items():
        program = folder / PRESETS[name].program
        program.write_text(f"#!/bin/sh\necho '{said}'\n")
        program.chmod(0o755)
    return f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin"


def test_doctor_without_a_plan_examines_every_preset_and_names_no_secret(tmp_path: Path) -> None:
    claude = PRESETS["claude"]
    path = _stand_ins(tmp_path / "bin", {"claude": f"{claude.pinned} (Claude Code)",
                                         "codex": "codex-cli 0.1.0"})
    env = {"PATH": path, "ANTHROPIC_API_KEY": "sk-very-secret", "HOME": str(tmp_path)}
    result = run_wtr("doctor", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr  # aider, gemini, opencode are not found
    assert "sk-very-secret" not in result.stdout
    lines = {line.split()[1]: line for line in result.stdout.splitlines()
             if line[:4] in ("ok  ", "warn", "FAIL")}
    assert set(lines) == set(PRESETS)
    assert lines["claude"].startswith("ok") and "set: ANTHROPIC_API_KEY" in lines["claude"]
    assert lines["codex"].startswith("warn") and "version 0.1.0" in lines["codex"]
    assert "outside the tested range" in result.stdout
    assert lines["gemini"].startswith("FAIL") and "not found" in lines["gemini"]
    assert PRESETS["gemini"].pinned in result.stdout  # how to install the tested one
    doc = run_wtr("doctor", "--json", cwd=tmp_path, env=env).json()
    by_name = {a["name"]: a for a in doc["agents"]}
    assert doc["ok"] is False
    assert by_name["claude"]["found"] and by_name["claude"]["in_tested_range"] is True
    assert by_name["claude"]["variables_set"] == ["ANTHROPIC_API_KEY"]
    assert by_name["codex"]["in_tested_range"] is False and by_name["codex"]["ok"] is True
    assert by_name["opencode"]["found"] is False and by_name["opencode"]["ok"] is False


def test_doctor_with_a_plan_examines_only_its_agents(repo: Repo, tmp_path: Path) -> None:
    path = _stand_ins(tmp_path / "bin", {"claude": f"{PRESETS['claude'].pinned} (Claude Code)"})
    plan = agent_plan({"db": {"files": ["src/db/**"], "agent": {"preset": "claude"}},
                       "ui": {"files": ["src/ui/**"]}})
    plan_file = repo.write_plan(plan)
    env = {"PATH": path}
    doc = run_wtr("doctor", plan_file, "--json", cwd=repo.path, env=env).json()
    names = [a["name"] for a in doc["agents"]]
    assert names[0] == "claude" and len(names) == 2  # claude, and the test agent's python
    assert doc["agents"][0]["streams"] == ["db"]
    assert doc["agents"][1]["streams"] == ["ui"]


def test_a_plan_whose_preset_cannot_start_is_refused_before_anything_is_made(
        repo: Repo, tmp_path: Path) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}}, agent={"preset": "opencode"})
    plan["agent"].pop("command")
    plan_file = repo.write_plan(plan)
    env = {"PATH": _stand_ins(tmp_path / "bin", {})}
    checked = run_wtr("check", plan_file, cwd=repo.path, env=env)
    assert checked.returncode == 2
    assert "'opencode', which is not on PATH" in checked.stderr + checked.stdout
    assert "npm install -g opencode-ai@" in checked.stderr + checked.stdout
    ran = run_wtr("run", plan_file, cwd=repo.path, env=env)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert repo.git("branch", "--list", "wtr/*") == ""
    assert not (repo.path.parent / "repo.worktrees").exists()


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.refused])
def test_check_refuses_arguments_the_tested_cli_refuses(repo: Repo, tmp_path: Path,
                                                        name: str) -> None:
    preset = PRESETS[name]
    flag = next(iter(preset.refused))
    plan = agent_plan({"db": {"files": ["src/db/**"]}}, agent={"preset": name, "args": [flag]})
    plan["agent"].pop("command")
    env = {"PATH": _stand_ins(tmp_path / "bin", {name: preset.pinned})}
    checked = run_wtr("check", repo.write_plan(plan), cwd=repo.path, env=env)
    assert checked.returncode == 2
    assert f"refuses {flag}" in checked.stderr + checked.stdout


def test_doctor_and_check_look_at_every_candidate_agent_of_a_best_of_n_stream(
        repo: Repo, tmp_path: Path) -> None:
    path = _stand_ins(tmp_path / "bin", {"claude": f"{PRESETS['claude'].pinned} (Claude Code)"})
    plan = agent_plan({"db": {"files": ["src/db/**"], "attempts": 3,
                              "agents": ["claude", "gemini"]}})
    plan_file = repo.write_plan(plan)
    env = {"PATH": path}
    doc = run_wtr("doctor", plan_file, "--json", cwd=repo.path, env=env).json()
    # the stream's own agent (the test agent) runs in none of its candidates
    assert [(a["name"], a["streams"]) for a in doc["agents"]] == [
        ("claude", ["db"]), ("gemini", ["db"])]
    checked = run_wtr("check", plan_file, cwd=repo.path, env=env)
    assert checked.returncode == 2
    assert "the gemini preset runs 'gemini', which is not on PATH" in checked.stdout + \
        checked.stderr
