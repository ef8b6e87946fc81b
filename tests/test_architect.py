"""``wtr plan GOAL``: a command agent (tests/agents/architect.py) drafts, ``wtr check``'s
problems go back to it, a clean draft is written; nothing else in the repository moves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitrepo import Repo, Result, make_repo, run_wtr
from worktree_runner import git as wgit
from worktree_runner.architect.evidence import gather, is_test

AGENT = Path(__file__).parent / "agents" / "architect.py"

# Round 1: README.md owned by two streams that may run together (an error), and api/cli,
# whose modules the history always changes together, left unordered (a missing dependency).
BAD = {"version": 1, "name": "orders", "agent": {"preset": "claude"}, "streams": {
    "api": {"description": "the API module and its tests",
            "files": ["src/api.py", "tests/test_api.py", "README.md"],
            "prompt": "Add the orders endpoint.", "verify": ["pytest tests/test_api.py -q"]},
    "cli": {"description": "the command line and its tests",
            "files": ["src/cli.py", "tests/test_cli.py", "README.md"],
            "prompt": "Add the orders command.", "verify": ["pytest tests/test_cli.py -q"]},
}}
GOOD = {"version": 1, "name": "orders", "agent": {"preset": "claude"}, "streams": {
    "api": {"description": "the API module and its tests; first: the command line calls it",
            "files": ["src/api.py", "tests/test_api.py"],
            "prompt": "Add the orders endpoint.", "verify": ["pytest tests/test_api.py -q"]},
    "cli": {"description": "the command line; after api, whose module changes with it",
            "files": ["src/cli.py", "tests/test_cli.py"], "depends_on": ["api"],
            "prompt": "Add the orders command.", "verify": ["pytest tests/test_cli.py -q"]},
    "docs": {"description": "the README and changelog, apart from the code",
             "files": ["README.md", "CHANGES.md", "pyproject.toml"],
             "prompt": "Document orders.", "verify": ["true"]},
}}


@pytest.fixture(autouse=True)
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wtr plan's temporary folder (kept when no draft comes clean) inside the test's."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


@pytest.fixture
def project(tmp_path: Path) -> Repo:
    return coupled_project(tmp_path / "repo")


def coupled_project(folder: Path) -> Repo:
    """api.py and cli.py change together in every commit that touches either."""
    repo = make_repo(folder, {
        "pyproject.toml": "[tool.pytest.ini_options]\n", "README.md": "r\n",
        "CHANGES.md": "c\n", "src/api.py": "A = 0\n", "src/cli.py": "C = 0\n",
        "tests/test_api.py": "", "tests/test_cli.py": ""})
    for i in range(1, 7):
        repo.commit({"src/api.py": f"A = {i}\n", "src/cli.py": f"C = {i}\n"}, f"both {i}")
    for i in range(1, 9):
        repo.commit({"README.md": f"r{i}\n"}, f"readme {i}")
    return repo


def drafts(tmp_path: Path, *rounds: dict[str, Any]) -> Path:
    folder = tmp_path / "drafts"
    folder.mkdir()
    for number, plan in enumerate(rounds, 1):
        (folder / f"round-{number}.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    return folder


def seen(folder: Path, number: int) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((folder / f"seen-{number}.json").read_text())
    return loaded


def plan(repo: Repo, folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    command = f"{sys.executable} {AGENT} {folder} {{prompt_file}}"
    return run_wtr("plan", "Add orders to the API and the command line", "--command",
                   command, *args, cwd=repo.path, env=env)


def untouched(repo: Repo, refs: str, allowed: set[str]) -> None:
    assert repo.refs() == refs
    assert set(repo.git("status", "--porcelain").splitlines()) == {f"?? {p}" for p in allowed}
    assert len(repo.git("worktree", "list").splitlines()) == 1  # the scratch one is gone


def test_a_draft_with_an_overlap_and_a_missing_order_is_fixed_from_the_feedback(
        project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, BAD, GOOD)
    refs = project.refs()
    check = f'wtr check "$WTR_PLAN_DRAFT" --repo {project.path} > {folder}/check-$WTR_ROUND 2>&1'
    result = plan(project, folder, env={"ARCHITECT_AFTER": check})
    assert result.returncode == 0, result.stderr
    # The agent may run the check itself (the wtr running it is on its PATH).
    assert "'README.md' is owned by both 'api' and 'cli'" in (folder / "check-1").read_text()
    assert "plan is valid" in (folder / "check-2").read_text()
    written = project.path / "worktree-plan.yaml"
    assert yaml.safe_load(written.read_text()) == GOOD
    assert written.read_text().startswith("# Drafted by 'wtr plan'")
    assert run_wtr("check", written, cwd=project.path).returncode == 0
    assert seen(folder, 1)["feedback"] == ""
    feedback = seen(folder, 2)["feedback"]
    assert "'README.md' is owned by both 'api' and 'cli'" in feedback
    assert "src/api.py" in feedback and "changed in the same commits as files of cli" in feedback
    assert "round 1 of 3" in feedback
    # A command agent starts afresh: its prompt holds the first one and the feedback.
    again = seen(folder, 2)["prompt"]
    assert "Add orders to the API" in again and feedback in again
    assert "1. api, docs\n  2. cli" in result.stdout
    assert "critical path: api -> cli" in result.stdout
    assert "after api, whose module changes with it" in result.stdout
    assert "round 1: checked: 4 problems, fed back" in result.stderr
    untouched(project, refs, {"worktree-plan.yaml"})
    scratch = Path(seen(folder, 1)["cwd"])
    assert not scratch.exists() and not scratch.parent.exists()  # nothing left in /tmp


def test_the_first_prompt_carries_the_goal_the_rules_and_the_evidence(
        project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, GOOD)
    assert plan(project, folder).returncode == 0
    first = seen(folder, 1)
    prompt = first["prompt"]
    for text in ("Add orders to the API and the command line", "must own disjoint files",
                 "- src/api.py: tests/test_api.py (by name)", "`pytest` (from pyproject.toml)",
                 "- CHANGES.md: a changelog or lockfile", "- src/cli.py 6 Python",
                 "README.md: changed by 9 of 15 commits", "What `wtr init --suggest` proposes",
                 "wtr check "):
        assert text in prompt, text
    env = first["env"]
    assert Path(env["WTR_PLAN_DRAFT"]).name == "worktree-plan.yaml"
    assert not Path(env["WTR_PLAN_DRAFT"]).is_relative_to(project.path)
    assert Path(first["cwd"]) == Path(env["WTR_WORKTREE"])
    assert not any(k in env for k in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE"))


def test_json_has_the_plan_every_round_and_its_problems(project: Repo, tmp_path: Path) -> None:
    result = plan(project, drafts(tmp_path, BAD, GOOD), "--json", "-o", "orders.yaml")
    assert result.returncode == 0, result.stderr
    doc = result.json()
    assert doc["written"] is True and doc["plan"] == str(project.path / "orders.yaml")
    assert [len(r["problems"]) for r in doc["rounds"]] == [4, 0]
    assert doc["rounds"][0]["problems"][0]["kind"] == "error"
    assert doc["analysis"]["waves"] == [["api", "docs"], ["cli"]]
    assert doc["analysis"]["valid"] is True
    assert doc["reasons"]["docs"] == "the README and changelog, apart from the code"
    assert doc["repository_changed"] == [] and doc["drafts_kept_in"] is None
    assert yaml.safe_load(doc["draft"]) == GOOD


def test_a_stream_without_a_reason_a_prompt_or_a_verify_is_sent_back(
        project: Repo, tmp_path: Path) -> None:
    bare = {"version": 1, "agent": {"preset": "claude"}, "streams": {
        "all": {"files": ["**"], "prompt": "Describe what the agent should do."}}}
    result = plan(project, drafts(tmp_path, bare, GOOD), "--json")
    assert result.returncode == 0, result.stderr
    first = result.json()["rounds"][0]["problems"]
    assert [(p["kind"], p["where"]) for p in first] == [
        ("rule", "streams.all.description"), ("rule", "streams.all.prompt"),
        ("rule", "streams.all.verify")]


def test_a_draft_that_never_validates_stops_after_the_rounds_with_its_problems(
        project: Repo, tmp_path: Path) -> None:
    refs = project.refs()
    result = plan(project, drafts(tmp_path, BAD), "--rounds", "2")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "the draft still has 4 problems after 2 rounds; nothing written" in result.stderr
    assert "'README.md' is owned by both 'api' and 'cli'" in result.stderr
    assert not (project.path / "worktree-plan.yaml").exists()
    untouched(project, refs, set())
    kept = Path(result.stderr.split("are kept in ")[1].split(";")[0])
    assert sorted(p.name for p in kept.glob("round-*.log")) == ["round-1.log", "round-2.log"]
    assert yaml.safe_load((kept / "agent" / "worktree-plan.yaml").read_text()) == BAD
    doc = plan(project, tmp_path / "drafts", "--rounds", "1", "--json")
    assert doc.returncode == 1 and doc.json()["written"] is False
    assert len(doc.json()["problems"]) == 4


def test_an_agent_that_writes_into_the_users_checkout_is_reported(
        project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, GOOD)
    meddle = f"echo scratch > notes.txt && echo x >> {project.path}/README.md"
    result = plan(project, folder, env={"ARCHITECT_SHELL": meddle})
    assert result.returncode == 0, result.stderr
    assert "warning: the agent changed your repository: path README.md" in result.stderr
    assert not (project.path / "notes.txt").exists()  # (written in the scratch checkout)


def test_an_agent_that_fails_without_a_draft_stops_at_once(
        project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, GOOD)
    result = plan(project, folder, env={"ARCHITECT_NO_DRAFT": "1", "ARCHITECT_EXIT": "3"})
    assert result.returncode == 1
    assert "the agent exited with code 3 without writing a draft" in result.stderr
    assert not (folder / "seen-2.json").exists()
    slow = plan(project, folder, "--timeout", "1",
                env={"ARCHITECT_SHELL": "sleep 30", "ARCHITECT_NO_DRAFT": "1"})
    assert slow.returncode == 1
    assert "the agent ran past the timeout (1s) without writing a draft" in slow.stderr


def test_an_existing_output_is_kept_unless_forced(project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, GOOD)
    target = project.path / "worktree-plan.yaml"
    target.write_text("mine\n")
    refused = plan(project, folder)
    assert f"{target} already exists; pass another -o FILE, or --force" in \
        refused.one_line_error()
    assert target.read_text() == "mine\n" and not (folder / "seen-1.json").exists()
    assert plan(project, folder, "--force").returncode == 0
    assert yaml.safe_load(target.read_text()) == GOOD


@pytest.mark.parametrize(("args", "expected"), [
    (["plan", "  "], "the goal is empty"),
    (["plan", "x", "--agent", "robot"], "unknown preset 'robot'; use one of claude"),
    (["plan", "x", "--agent", "claude", "--command", "true"],
     "--agent and --command cannot go together"),
    (["plan", "x", "--timeout", "soon"], "--timeout soon"),
])
def test_bad_input_is_one_line_and_exit_2(project: Repo, args: list[str],
                                          expected: str) -> None:
    assert expected in run_wtr(*args, cwd=project.path).one_line_error()
    assert project.git("status", "--porcelain") == ""


def test_a_preset_whose_cli_is_missing_or_fails_is_said_so(project: Repo,
                                                           tmp_path: Path) -> None:
    only_git = tmp_path / "only-git"
    only_git.mkdir()
    (only_git / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    missing = run_wtr("plan", "x", cwd=project.path, env={"PATH": str(only_git)})
    assert "the claude preset runs 'claude', which is not on PATH; install it (npm install" \
        in missing.one_line_error()
    # The stand-in claude of the test suite fails as a CLI without a key would.
    failing = run_wtr("plan", "x", "--agent", "claude", cwd=project.path)
    assert failing.returncode == 1
    assert "the agent exited with code 97 without writing a draft" in failing.stderr
    assert len(project.git("worktree", "list").splitlines()) == 1


def test_outside_a_repository_it_says_so(tmp_path: Path) -> None:
    line = run_wtr("plan", "x", cwd=tmp_path).one_line_error()
    assert "is not inside a git repository" in line


def test_evidence_pairs_modules_with_tests_and_reads_the_repos_commands(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {
        "pkg/parse.py": "", "tests/test_parse.py": "", "cmd/run.go": "",
        "cmd/run_test.go": "", "web/app.ts": "", "web/app.test.ts": "",
        "src/main/Foo.java": "", "src/test/FooTest.java": "", "yarn.lock": "",
        "CHANGES.rst": "", "pkg/history.py": "",
        "package.json": json.dumps({"scripts": {"test": "jest", "lint": "eslint .",
                                                "build": "tsc"}}),
        "Makefile": "test:\n\tpytest\nlint:\n\truff check .\ninstall:\n\tpip install .\n",
        ".github/workflows/ci.yml": yaml.safe_dump({"jobs": {"t": {"steps": [
            {"uses": "actions/checkout@v4"}, {"run": "pip install -e .\npytest -q"}]}}}),
        "pyproject.toml": "[tool.ruff]\nline-length = 99\n[tool.mypy]\nstrict = true\n"})
    for i in range(3):  # a test named after nothing, that always changes with its module
        repo.commit({"pkg/orders.py": f"O = {i}\n", "tests/check_orders.py": f"# {i}\n"})
    for i in range(8):
        repo.commit({"web/app.ts": f"// {i}\n"})
    opened = wgit.open_repository(repo.path)
    evidence = gather(opened, "main", repo.head())
    assert evidence.tests["pkg/orders.py"] == [
        ("tests/check_orders.py", "changed together in 3 of 3 commits")]
    assert ["pkg/orders.py", "tests/check_orders.py"] in evidence.clusters
    assert evidence.tests["pkg/parse.py"] == [("tests/test_parse.py", "by name")]
    assert evidence.tests["cmd/run.go"] == [("cmd/run_test.go", "by name")]
    assert evidence.tests["web/app.ts"] == [("web/app.test.ts", "by name")]
    assert evidence.tests["src/main/Foo.java"] == [("src/test/FooTest.java", "by name")]
    commands = {c.command: c.source for c in evidence.commands}
    assert commands == {"pytest -q": ".github/workflows/ci.yml", "make test": "Makefile",
                        "make lint": "Makefile", "npm test": "package.json",
                        "npm run lint": "package.json", "ruff check .": "pyproject.toml",
                        "mypy": "pyproject.toml"}
    assert evidence.hot == [
        ("CHANGES.rst", "a changelog or lockfile: every change may touch it"),
        ("web/app.ts", "changed by 9 of 12 commits"),
        ("yarn.lock", "a changelog or lockfile: every change may touch it")]
    assert is_test("tests/conftest.py") and not is_test("pkg/parse.py")


def test_on_a_detached_head_it_asks_for_a_branch(project: Repo) -> None:
    project.git("checkout", "-q", "--detach")
    assert "HEAD is detached" in run_wtr("plan", "x", cwd=project.path).one_line_error()


def test_the_progress_line_shows_what_the_agent_does(tmp_path: Path) -> None:
    from worktree_runner.cli.plan import _last_line

    log = tmp_path / "round-1.log"
    call = {"type": "tool_use", "name": "Bash", "input": {"command": "cat > d <<'EOF'\nx"}}
    log.write_text("start\n" + json.dumps({"type": "assistant",
                                           "message": {"content": [call]}}) + "\n\n")
    assert _last_line(log) == "Bash: cat > d <<'EOF'"
    log.write_text('{"type": "result"}\n')
    assert _last_line(log) == "result"
    log.write_text("drafting the streams\n")
    assert _last_line(log) == "drafting the streams"
    assert _last_line(tmp_path / "none.log") == ""


def test_a_symlink_for_a_draft_is_not_followed(project: Repo, tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere.yaml"
    secret.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    folder = drafts(tmp_path, GOOD)
    link = f'rm -f "$WTR_PLAN_DRAFT" && ln -s {secret} "$WTR_PLAN_DRAFT"'
    result = plan(project, folder, "--rounds", "1", env={"ARCHITECT_AFTER": link})
    assert result.returncode == 1
    assert "no draft was written to" in result.stderr and "as a regular file" in result.stderr
    assert not (project.path / "worktree-plan.yaml").exists()


def test_ctrl_c_stops_the_agent_and_removes_the_scratch_checkout(
        project: Repo, tmp_path: Path) -> None:
    folder = drafts(tmp_path, GOOD)
    pid_file = folder / "agent.pid"
    command = f"{sys.executable} {AGENT} {folder} {{prompt_file}}"
    env = {**os.environ, "ARCHITECT_SHELL": f"echo $$ > {pid_file}; sleep 60"}
    process = subprocess.Popen([sys.executable, "-m", "worktree_runner", "plan", "x",
                                "--command", command], cwd=project.path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "wtr: interrupted" in stderr and "Traceback" not in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)
    assert len(project.git("worktree", "list").splitlines()) == 1
    assert project.git("status", "--porcelain") == ""


def test_a_big_repository_is_cut_to_fit_one_argument(tmp_path: Path) -> None:
    files = {f"módulos/ñ{i:04d}/un_nombre_largo_de_archivo_código_{i}.py": ""
             for i in range(800)}
    repo = make_repo(tmp_path / "big", files)
    folder = drafts(tmp_path, {"version": 1, "agent": {"preset": "claude"}, "streams": {
        "all": {"description": "everything: one stream is the safe plan", "files": ["**"],
                "prompt": "Do it."}}})
    result = plan(repo, folder)
    assert result.returncode == 0, result.stderr
    prompt = seen(folder, 1)["prompt"]
    assert len(prompt.encode()) < 64 * 1024
    assert "(cut here: read the rest in " in prompt
    evidence = Path(seen(folder, 1)["env"]["WTR_EVIDENCE"])
    assert not evidence.exists()  # (the temporary folder is gone after a clean draft)
