"""No option is silently ignored: combinations that cannot go together are usage errors
(exit 2) that change nothing; PLAN defaults to worktree-plan.yaml at the repository root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan


def finished_run(repo: Repo) -> str:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 1"}}})
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    run_id: str = run_wtr("status", "--json", cwd=repo.path).json()["run"]
    return run_id


def state_files(repo: Repo) -> dict[str, bytes]:
    root = repo.path / ".git" / "worktree-runner"
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_status_json_and_markdown_together_is_a_usage_error(repo: Repo) -> None:
    finished_run(repo)
    before = state_files(repo)
    result = run_wtr("status", "--json", "--markdown", cwd=repo.path)
    line = result.one_line_error(2)
    assert "--json" in line and "--markdown" in line
    assert result.stdout == ""
    assert state_files(repo) == before


def test_clean_all_with_run_is_a_usage_error_that_cleans_nothing(repo: Repo) -> None:
    run_id = finished_run(repo)
    worktrees = repo.git("worktree", "list", "--porcelain")
    refs = repo.refs()
    result = run_wtr("clean", "--all", "--run", run_id, cwd=repo.path)
    line = result.one_line_error(2)
    assert "--all" in line and "--run" in line
    assert repo.git("worktree", "list", "--porcelain") == worktrees
    assert repo.refs() == refs


def test_repo_given_twice_with_different_folders_is_a_usage_error(repo: Repo,
                                                                   tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    result = run_wtr("--repo", str(other), "runs", "--repo", str(repo.path), cwd=repo.path)
    assert "--repo" in result.one_line_error(2)
    same = run_wtr("--repo", str(repo.path), "runs", "--repo", str(repo.path), cwd=tmp_path)
    assert same.returncode == 0, same.stderr


def write_default_plan(repo: Repo) -> Path:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}}})
    path = repo.path / "worktree-plan.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def test_check_and_run_default_to_worktree_plan_yaml(repo: Repo) -> None:
    path = write_default_plan(repo)
    subfolder = repo.path / "src" / "api"
    checked = run_wtr("check", "--json", cwd=subfolder)
    assert checked.returncode == 0, checked.stderr
    assert checked.json()["plan"] == str(path)
    dry = run_wtr("run", "--dry-run", cwd=subfolder)
    assert dry.returncode == 0, dry.stderr
    assert "would create run worktree-plan-1" in dry.stdout
    ran = run_wtr("run", cwd=subfolder)
    assert ran.returncode == 0, ran.stderr
    assert repo.git("log", "-1", "--format=%s", "wtr/worktree-plan-1/db") == "db: work"


def test_check_without_a_plan_file_says_how_to_make_one(repo: Repo) -> None:
    line = run_wtr("check", cwd=repo.path).one_line_error(2)
    assert "worktree-plan.yaml" in line and "wtr init" in line
    assert "worktree-plan.yaml" in run_wtr("run", cwd=repo.path).one_line_error(2)


def test_progress_refuses_a_repo_that_is_not_its_runs(repo: Repo, tmp_path: Path) -> None:
    run_id = finished_run(repo)
    state_dir = repo.path / ".git" / "worktree-runner" / "runs" / run_id
    env = {"WTR_STATE_DIR": str(state_dir), "WTR_STREAM": "db", "WTR_RUN": run_id}
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    refused = run_wtr("progress", "hi", "--repo", other, cwd=repo.path, env=env)
    assert "not the repository of this agent's run" in refused.one_line_error(2)
    assert not (state_dir / "streams" / "db" / "progress.json").exists()
    ok = run_wtr("progress", "hi", "--repo", repo.path, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (state_dir / "streams" / "db" / "progress.json").exists()


def test_init_history_options_without_suggest_are_refused(repo: Repo) -> None:
    result = run_wtr("init", "--commits", "50", "--since", "2024-01-01", cwd=repo.path)
    line = result.one_line_error(2)
    assert "--commits and --since" in line and "--suggest" in line
    assert not (repo.path / "worktree-plan.yaml").exists()
