"""Plans, files and agents that used to end in a traceback: each now gets one clear line,
the documented exit code, and nothing lost."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.runhelp import agent_plan, stream_of

HEAD = 'version: 1\nagent: {command: ["python3", "agent.py"]}\n'


def problems(repo: Repo, text: str) -> list[str]:
    """The problems ``wtr check`` prints for a plan (exit 2, no traceback)."""
    path = repo.write_plan(text)
    lines = run_wtr("check", path, cwd=repo.path).error_lines()
    return [line.removeprefix(f"  {path}:") for line in lines[1:]]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('streams: {a: {files: [x], agent: {preset: [claude]}}}\n',
         "3: streams.a.agent.preset: unknown preset ['claude']"),
        ('streams: {a: {files: ["[z-a]"]}}\n',
         "3: streams.a.files: '[z-a]' is not a valid pattern: bad character range z-a"),
        ('base: "ma\\0in"\nstreams: {a: {files: [x]}}\n', "3: base: holds a NUL character"),
        ('target: "x\\0"\nstreams: {a: {files: [x]}}\n', "3: target: holds a NUL character"),
        ('worktrees_dir: "../w\\0t"\nstreams: {a: {files: [x]}}\n',
         "3: worktrees_dir: holds a NUL character"),
        ('streams: {a: {files: [x], prompt: "do \\0 it"}}\n',
         "3: streams.a.prompt: holds a NUL character"),
        ('streams: {a: {files: ["x\\0"]}}\n', "3: streams.a.files.0: holds a NUL character"),
        ('streams: {a: {files: [x], agent: {command: ["a\\0b"]}}}\n',
         "3: streams.a.agent.command.0: holds a NUL character"),
        ('streams: {a: {files: [x], agent: {command: [x], env: {K: "\\0"}}}}\n',
         "3: streams.a.agent.env.K: holds a NUL character"),
        ('streams: {a: {files: [x], prompt: "\\ud800"}}\n',
         "3: streams.a.prompt: holds '\\ud800', a lone surrogate"),
        ('base: "\\udc80x"\nstreams: {a: {files: [x]}}\n', "3: base: holds '\\udc80', a lone"),
        ('streams: {a: {files: ["src/\\udfff"]}}\n', "3: streams.a.files.0: holds '\\udfff'"),
    ],
    ids=["preset-list", "bad-range", "nul-base", "nul-target", "nul-worktrees-dir",
         "nul-prompt", "nul-files", "nul-command", "nul-env", "surrogate-prompt",
         "surrogate-base", "surrogate-files"],
)
def test_unusable_values_are_plan_problems(repo: Repo, body: str, expected: str) -> None:
    found = problems(repo, HEAD + body)
    assert any(p.startswith(expected) for p in found), found


def test_yes_and_null_as_stream_names_stay_as_written(repo: Repo) -> None:
    result = run_wtr("check", "--json", repo.write_plan(
        HEAD + "streams:\n  yes: {files: [src/api/**]}\n  null: {files: [src/db/**]}\n"),
        cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert list(result.json()["streams"]) == ["yes", "null"]


@pytest.mark.parametrize("folder", ["/", ".", ".git/wt"])
def test_worktrees_dir_that_cannot_hold_worktrees(repo: Repo, folder: str) -> None:
    text = HEAD + f"worktrees_dir: {folder}\nstreams: {{a: {{files: [src/**]}}}}\n"
    found = problems(repo, text)
    assert len(found) == 1 and found[0].startswith("3: worktrees_dir: "), found
    assert "set 'worktrees_dir' to a writable folder" in found[0]
    result = run_wtr("run", repo.write_plan(text), cwd=repo.path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "wtr/" not in repo.git("branch", "--list")


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``path`` (root only); the test is skipped, loudly, when refused."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({mounted.stderr.strip()}); "
                    "this test needs root and mount permission")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_read_only_worktrees_folder_is_refused_before_anything(repo: Repo,
                                                                 tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "ro,size=1m") as folder:
        text = HEAD + f"worktrees_dir: {folder}/wt\nstreams: {{a: {{files: [src/**]}}}}\n"
        found = problems(repo, text)
        assert found == [f"3: worktrees_dir: {folder} cannot be written (read-only file "
                         "system or no permission); set 'worktrees_dir' to a writable folder "
                         "of its own (by default the worktrees go beside the repository)"]
        result = run_wtr("run", repo.write_plan(text), cwd=repo.path)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert run_wtr("runs", cwd=repo.path).stdout.startswith("no runs yet")


def test_a_full_disk_during_a_run_ends_it_interrupted(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "size=3m") as disk:
        repo = make_repo(disk / "repo", {"src/a.py": "a\n", "docs/x.md": "x\n"})
        filler = "head -c 20M /dev/zero > src/big.bin; exit 0"
        plan = agent_plan({
            "fill": {"files": ["src/**"], "agent": {"command": ["sh", "-c", filler]}},
            "after": {"files": ["docs/**"], "depends_on": ["fill"]},
        }, worktrees_dir="../wt")
        result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1, result.stderr
        doc = run_wtr("status", "--json", cwd=repo.path).json()
        assert doc["state"] in ("interrupted", "finished"), doc["state"]
        assert all(s["status"] != "running" for s in doc["streams"]), doc["streams"]
        if doc["state"] == "interrupted":
            assert result.stderr.splitlines()[-1].startswith(
                "wtr: the run stopped: No space left on device; the agents were stopped")
            assert f"'wtr resume --run {doc['run']}' continues" in result.stderr
        else:  # the stream that filled the disk failed, and nothing started after it
            assert stream_of(doc, "fill")["status"] == "failed"
            assert stream_of(doc, "after")["status"] == "blocked"


# -- a damaged state file ------------------------------------------------------------------


def two_runs(repo: Repo) -> tuple[str, str]:
    plan = repo.write_plan(agent_plan({"a": {"files": ["src/api/**"],
                                             "env": {"AGENT_WRITE": "src/api/n.py=N = 1"}}}))
    first = run_wtr("run", plan, cwd=repo.path)
    second = run_wtr("run", plan, cwd=repo.path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    runs = run_wtr("runs", "--json", cwd=repo.path).json()["runs"]
    return runs[0]["run"], runs[1]["run"]


@pytest.mark.parametrize("damage", [
    {"streams": []}, {"streams": {"a": {"name": "a", "attempts": "many"}}},
    {"state": 7}, {"streams": {"a": {"name": "a", "branch": "b", "worktree": None,
                                     "depends_on": [], "status": "exploded"}}},
    {"streams": {"a": {"name": "a", "branch": "b", "worktree": None, "depends_on": [],
                       "failure": "oops"}}},
], ids=["streams-list", "attempts-text", "state-number", "unknown-status", "failure-text"])
def test_one_damaged_run_does_not_break_the_others(repo: Repo, damage: dict[str, object]) -> None:
    bad, good = two_runs(repo)
    state = repo.path / ".git" / "worktree-runner" / "runs" / bad / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), **damage}))

    status = run_wtr("status", "--run", bad, cwd=repo.path)
    line = status.one_line_error(2)
    assert line.startswith(f"wtr: the state of run {bad} is damaged: ")

    listed = run_wtr("runs", "--json", cwd=repo.path)
    assert listed.returncode == 0, listed.stderr
    states = {r["run"]: r["state"] for r in listed.json()["runs"]}
    assert states == {bad: "damaged", good: "finished"}
    text = run_wtr("runs", cwd=repo.path)
    assert text.returncode == 0 and bad in text.stdout and "damaged" in text.stdout

    cleaned = run_wtr("clean", "--all", cwd=repo.path)
    assert cleaned.returncode == 1 and "Traceback" not in cleaned.stderr
    assert f"run {good}:" in cleaned.stdout
    assert cleaned.stderr.startswith(f"wtr: skipped: the state of run {bad} is damaged")
    assert json.loads((state.parent.parent / good / "state.json").read_text())["cleaned_at"]


# -- what agents print ---------------------------------------------------------------------

USAGE_AGENT = """
import os, pathlib, subprocess, sys
pathlib.Path("src/db/left.py").write_text("left = 1\\n")
subprocess.run(["wtr", "progress", "closing [/bold] and [red]open", "--percent", "40"],
               check=True)
print('{"type": "result", "num_turns": "many", "total_cost_usd": 0.25}', flush=True)
sys.exit(int(os.environ.get("CODE", "0")))
"""


@pytest.mark.parametrize("code", [0, 3])
def test_odd_usage_and_markup_from_an_agent_lose_nothing(repo: Repo, tmp_path: Path,
                                                         code: int) -> None:
    script = tmp_path / "odd_agent.py"
    script.write_text(USAGE_AGENT)
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"CODE": str(code)},
                              "agent": {"command": [sys.executable, str(script)]}}})
    run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    db = stream_of(doc, "db")
    assert db["exit_code"] == code
    # "many" turns is no number: unknown, like the tokens it did not mention; never a 0
    assert db["usage"] == {"input_tokens": None, "output_tokens": None, "cost_usd": 0.25,
                           "turns": None}
    if code == 0:
        assert db["status"] == "succeeded", db["failure"]
        assert db["changed_files"] == ["src/db/left.py"]
    else:
        assert db["failure"]["kind"] == "exit_code"
        assert "exited with code 3" in db["failure"]["message"]
        assert (Path(db["worktree"]) / "src/db/left.py").read_text() == "left = 1\n"

    text = run_wtr("status", cwd=repo.path)
    assert text.returncode == 0 and "Traceback" not in text.stderr
    if code == 0:
        assert "[/bold]" in text.stdout and "[red]open" in text.stdout

    from worktree_runner import render  # the live view draws the same table, with bars

    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200).print(render.status_table(doc, bars=True))
    if code == 0:
        assert "closing [/bold] and [red]open" in out.getvalue()
