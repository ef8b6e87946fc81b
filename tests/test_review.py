"""Review commands: ``wtr diff`` (a stream's own changes, printed by git), ``wtr path``
(its worktree, or a halted merge's) and shell completion of stream names and run ids."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of


def chain_run(repo: Repo) -> dict:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "env": {"AGENT_WRITE": "src/api/orders.py=API = 2;src/api/new.py=NEW"}},
        "broken": {"files": ["docs/**"],
                   "agent": {"command": ["no-such-agent-xyz", "{prompt_file}"]}},
    })
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 1, result.stderr
    doc: dict = run_wtr("status", "--json", cwd=repo.path).json()
    return doc


def test_diff_shows_only_the_streams_own_changes_as_git_prints_them(repo: Repo) -> None:
    doc = chain_run(repo)
    api = stream_of(doc, "api")
    result = run_wtr("diff", "api", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    expected = repo.git("diff", api["base_commit"], api["branch"], "--")
    assert result.stdout.rstrip("\n") == expected
    assert "+API = 2" in result.stdout and "src/db/models.py" not in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: git prints no colour
    stat = run_wtr("diff", "api", "--stat", "--run", doc["run"], cwd=repo.path)
    assert stat.returncode == 0, stat.stderr
    assert "2 files changed" in stat.stdout and "src/api/new.py" in stat.stdout


def test_diff_uses_gits_colour_setting(repo: Repo) -> None:
    chain_run(repo)
    repo.git("config", "color.diff", "always")
    coloured = run_wtr("diff", "db", cwd=repo.path)
    assert coloured.returncode == 0 and "\x1b[" in coloured.stdout


def test_diff_and_path_of_a_stream_that_never_started_say_why(repo: Repo) -> None:
    chain_run(repo)
    assert "never started" in run_wtr("diff", "broken", cwd=repo.path).one_line_error(2)
    line = run_wtr("path", "broken", cwd=repo.path).one_line_error(2)
    assert "has no worktree" in line and "never started" in line
    assert "no stream 'nope'" in run_wtr("path", "nope", cwd=repo.path).one_line_error(2)


def test_path_prints_the_worktree_and_says_when_it_is_gone(repo: Repo) -> None:
    doc = chain_run(repo)
    result = run_wtr("path", "api", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == stream_of(doc, "api")["worktree"] + "\n"
    inside = subprocess.run(["bash", "-c", f'cd "$({sys.executable} -m worktree_runner path'
                             ' db)" && git branch --show-current'], cwd=repo.path,
                            capture_output=True, text=True, check=True)
    assert inside.stdout.strip() == stream_of(doc, "db")["branch"]
    assert run_wtr("clean", "--force", cwd=repo.path).returncode == 0
    line = run_wtr("path", "api", cwd=repo.path).one_line_error(2)
    assert "removed by 'wtr clean'" in line


def test_path_merge_prints_the_integration_worktree_only_while_halted(repo: Repo) -> None:
    plan = agent_plan({
        "one": {"files": ["docs/**"], "env": {"AGENT_WRITE": "docs/index.md=one"}},
        "two": {"files": ["docs/**"], "depends_on": [],
                "conflicts_with": ["one"], "env": {"AGENT_WRITE": "docs/index.md=two"}},
    })
    # 'two' starts from 'one', so edit docs on main meanwhile to make the merge conflict
    assert run_wtr("run", repo.write_plan(plan), cwd=repo.path).returncode == 0
    before = run_wtr("path", "--merge", cwd=repo.path)
    assert "no merge of run" in before.one_line_error(2)
    repo.commit({"docs/index.md": "main's own edit\n"}, "main edits docs")
    halted = run_wtr("merge", cwd=repo.path)
    assert halted.returncode == 3, halted.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    result = run_wtr("path", "--merge", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == doc["merge"]["worktree"] + "\n"
    assert Path(result.stdout.strip()).is_dir()
    assert "not both" in run_wtr("path", "one", "--merge", cwd=repo.path).one_line_error(2)
    assert "--merge" in run_wtr("path", cwd=repo.path).one_line_error(2)


def complete(repo: Repo, *words: str) -> list[str]:
    """What bash completion offers after ``wtr WORDS...`` (click's protocol)."""
    env = {**os.environ, "_WTR_COMPLETE": "bash_complete",
           "COMP_WORDS": " ".join(("wtr", *words)), "COMP_CWORD": str(len(words))}
    result = subprocess.run([sys.executable, "-m", "worktree_runner"], cwd=repo.path,
                            env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_completion_offers_stream_names_and_run_ids(repo: Repo) -> None:
    doc = chain_run(repo)
    assert complete(repo, "logs", "") == ["db", "api", "broken"]
    assert complete(repo, "diff", "a") == ["api"]
    assert complete(repo, "retry", "db", "b") == ["broken"]
    assert complete(repo, "path", "--run", doc["run"], "d") == ["db"]
    second = agent_plan({"solo": {"files": ["src/ui/**"]}})
    assert run_wtr("run", repo.write_plan(second, "other.yaml"), cwd=repo.path).returncode == 0
    assert complete(repo, "status", "--run", "") == ["other-1", doc["run"]]
    assert complete(repo, "logs", "") == ["solo"]  # the most recent run's streams
    assert complete(repo, "logs", "--run", doc["run"], "") == ["db", "api", "broken"]
    assert "diff" in complete(repo, "di")


def test_completion_outside_a_repository_offers_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "_WTR_COMPLETE": "bash_complete", "COMP_WORDS": "wtr logs ",
           "COMP_CWORD": "2"}
    result = subprocess.run([sys.executable, "-m", "worktree_runner"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr == ""
