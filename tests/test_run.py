"""wtr run on real repositories with real agent processes (tests/agents/agent.py)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, records, stream_of


def run(repo: Repo, plan: dict, *args: str, env: dict | None = None):
    path = repo.write_plan(plan)
    result = run_wtr("run", path, *args, cwd=repo.path, env=env)
    status = run_wtr("status", "--json", cwd=repo.path)
    doc = status.json() if status.returncode == 0 else None
    return result, doc


def test_chain_and_independent_stream_succeed_with_env(repo: Repo, rec: Path) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_RECORD": str(rec),
                                                "AGENT_WRITE": "src/db/models.py=DB = 1",
                                                "CUSTOM_VAR": "x y"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"],
                "env": {"AGENT_RECORD": str(rec), "AGENT_WRITE": "src/api/orders.py=API = 1"}},
        "ui": {"files": ["src/ui/**"],
               "env": {"AGENT_RECORD": str(rec), "AGENT_WRITE": "src/ui/view.py=UI = 1"}},
    })
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert doc["counts"]["succeeded"] == 3 and doc["state"] == "finished"
    run_id = doc["run"]
    api = stream_of(doc, "api")
    db = stream_of(doc, "db")
    # the dependent's branch contains its dependency's work
    assert api["base_commit"] == db["head_commit"]
    assert repo.git("show", f"wtr/{run_id}/api:src/db/models.py") == "DB = 1"
    assert api["changed_files"] == ["src/api/orders.py"]
    # the independent stream does not
    assert repo.git("show", f"wtr/{run_id}/ui:src/db/models.py") == "MODELS = []"
    # every WTR_* variable, with the right value
    seen = records(rec, "db")[0]
    env = seen["env"]
    worktree = Path(db["worktree"])
    assert env["WTR_RUN"] == run_id and env["WTR_STREAM"] == "db"
    assert env["WTR_WORKTREE"] == str(worktree) == seen["cwd"]
    assert env["WTR_BRANCH"] == f"wtr/{run_id}/db"
    assert env["WTR_BASE_COMMIT"] == repo.head("main")
    assert env["WTR_FILES"] == "src/db/**"
    assert Path(env["WTR_STATE_DIR"]).is_dir()
    assert "do the db work" in Path(env["WTR_PROMPT_FILE"]).read_text()
    assert env["CUSTOM_VAR"] == "x y"
    assert not any(k in env for k in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE"))
    # worktrees live outside the repository, beside it
    assert worktree == repo.path.parent / "repo.worktrees" / run_id / "db"
    assert repo.path not in worktree.parents
    # the user's checkout was not touched
    assert repo.git("status", "--porcelain") == ""
    assert repo.git("rev-parse", "--abbrev-ref", "HEAD") == "main"
    # the prompt of the dependent names what its dependency changed
    api_prompt = Path(records(rec, "api")[0]["env"]["WTR_PROMPT_FILE"]).read_text()
    assert "src/db/models.py" in api_prompt and "src/api/**" in api_prompt


def test_stream_with_two_dependencies_starts_from_both(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db", "ui"],
                "env": {"AGENT_WRITE": "src/api/orders.py=API"}},
    })
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    branch = f"wtr/{doc['run']}/api"
    assert repo.git("show", f"{branch}:src/db/models.py") == "DB"
    assert repo.git("show", f"{branch}:src/ui/view.py") == "UI"
    assert repo.git("show", f"{branch}:src/api/orders.py") == "API"
    base = stream_of(doc, "api")["base_commit"]
    for dep in ("db", "ui"):
        head = stream_of(doc, dep)["head_commit"]
        assert repo.git("merge-base", "--is-ancestor", head, base, check=False) == ""
    assert stream_of(doc, "api")["changed_files"] == ["src/api/orders.py"]


def test_uncommitted_work_is_committed_on_the_branch(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_WRITE": "src/db/new.py=NEW", "AGENT_COMMIT": "0"}}})
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    db = stream_of(doc, "db")
    assert repo.git("show", f"{db['branch']}:src/db/new.py") == "NEW"
    assert db["changed_files"] == ["src/db/new.py"]
    assert git(Path(db["worktree"]), "status", "--porcelain") == ""


def test_out_of_scope_write_fails_ownership_and_blocks_dependents(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"],
               "env": {"AGENT_WRITE": "src/db/models.py=DB;src/ui/view.py=HACK;top.txt=x"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
        "docs": {"files": ["docs/**"], "env": {"AGENT_WRITE": "docs/index.md=D"}},
    })
    result, doc = run(repo, plan)
    assert result.returncode == 1
    db = stream_of(doc, "db")
    assert db["status"] == "failed"
    assert db["failure"]["kind"] == "ownership"
    assert sorted(db["failure"]["files"]) == ["src/ui/view.py", "top.txt"]
    assert stream_of(doc, "api")["status"] == "blocked"
    assert stream_of(doc, "docs")["status"] == "succeeded"
    # the work is kept on its branch for a human to look at
    assert repo.git("show", f"{db['branch']}:top.txt") == "x"


def test_agent_exit_code_blocks_dependents_only(repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_EXIT": "1"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"]},
        "far": {"files": ["docs/**"], "depends_on": ["api"]},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI"}},
    })
    result, doc = run(repo, plan)
    assert result.returncode == 1
    db = stream_of(doc, "db")
    assert (db["status"], db["exit_code"], db["failure"]["kind"]) == ("failed", 1, "exit_code")
    assert stream_of(doc, "api")["status"] == "blocked"
    assert stream_of(doc, "far")["status"] == "blocked"
    assert stream_of(doc, "ui")["status"] == "succeeded"
    assert doc["counts"] == {"pending": 0, "running": 0, "succeeded": 1, "failed": 1,
                             "blocked": 2, "merged": 0}
    assert "db: failed" in result.stdout and "api: blocked" in result.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_hung_agent_and_its_grandchild_are_killed_at_timeout(repo: Repo, rec: Path) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "agent": {"timeout": "2s"},
               "env": {"AGENT_RECORD": str(rec), "AGENT_CHATTY_HANG": "1"}},
    })
    started = time.monotonic()
    result, doc = run(repo, plan, env={"WTR_KILL_GRACE": "1"})
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    db = stream_of(doc, "db")
    assert db["failure"]["kind"] == "timeout"
    child = records(rec, "db", "child")[0]
    assert not _alive(child["child_pid"]) and not _alive(child["pid"])


def test_silent_agent_is_stopped_at_stall_timeout(repo: Repo, rec: Path) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "agent": {"timeout": "1m", "stall_timeout": "2s"},
               "env": {"AGENT_RECORD": str(rec), "AGENT_HANG": "1"}},
    })
    result, doc = run(repo, plan, env={"WTR_KILL_GRACE": "1"})
    assert result.returncode == 1
    assert stream_of(doc, "db")["failure"]["kind"] == "stalled"
    child = records(rec, "db", "child")[0]
    assert not _alive(child["child_pid"])


def test_output_keeps_an_agent_from_stalling_and_silence_does_not(repo: Repo,
                                                                  rec: Path) -> None:
    # Both run past stall_timeout twice over; only the one printing all along may finish.
    # (The talker prints every 0.2 s: ten times within the 2 s it may be silent.)
    agent = {"timeout": "2m", "stall_timeout": "2s"}
    plan = agent_plan({
        "talker": {"files": ["src/db/**"], "agent": agent,
                   "env": {"AGENT_CHATTY": "4.5", "AGENT_WRITE": "src/db/t.py=T = 1"}},
        "mute": {"files": ["src/ui/**"], "agent": agent,
                 "env": {"AGENT_SLEEP": "4.5", "AGENT_WRITE": "src/ui/m.py=M = 1"}},
    })
    result, doc = run(repo, plan, env={"WTR_KILL_GRACE": "1"})
    assert result.returncode == 1
    talker, mute = stream_of(doc, "talker"), stream_of(doc, "mute")
    assert talker["status"] == "succeeded", talker["failure"]
    assert talker["changed_files"] == ["src/db/t.py"]
    assert mute["failure"]["kind"] == "stalled"


def test_on_failure_stop_ends_every_running_agent(repo: Repo, rec: Path) -> None:
    plan = agent_plan({
        "slow": {"files": ["src/ui/**"], "env": {"AGENT_RECORD": str(rec), "AGENT_HANG": "1"}},
        "db": {"files": ["src/db/**"], "on_failure": "stop",
               "env": {"AGENT_SLEEP": "1", "AGENT_EXIT": "3"}},
        "later": {"files": ["docs/**"], "depends_on": ["slow"]},
    })
    started = time.monotonic()
    result, doc = run(repo, plan, env={"WTR_KILL_GRACE": "1"})
    assert result.returncode == 1
    assert time.monotonic() - started < 30
    assert stream_of(doc, "db")["failure"]["kind"] == "exit_code"
    assert stream_of(doc, "slow")["failure"]["kind"] == "interrupted"
    assert stream_of(doc, "later")["status"] in ("pending", "blocked")
    assert not _alive(records(rec, "slow", "child")[0]["child_pid"])


def test_max_parallel_and_conflicts_with_are_honoured(repo: Repo, rec: Path) -> None:
    env = {"AGENT_RECORD": str(rec), "AGENT_SLEEP": "0.6"}
    plan = agent_plan({
        "a": {"files": ["a/**"], "env": {**env, "AGENT_WRITE": "a/x=1"}},
        "b": {"files": ["b/**"], "env": {**env, "AGENT_WRITE": "b/x=1"}},
        "c": {"files": ["c/**"], "env": {**env, "AGENT_WRITE": "c/x=1"}},
        "d": {"files": ["d/**"], "conflicts_with": ["a"], "env": {**env, "AGENT_WRITE": "d/x=1"}},
    }, max_parallel=2)
    result, doc = run(repo, plan)
    assert result.returncode == 0, result.stderr
    spans = {name: (records(rec, name)[0]["time"], records(rec, name, "end")[0]["time"])
             for name in "abcd"}
    moments = sorted(t for span in spans.values() for t in span)
    for moment in moments:
        at_once = sum(1 for start, end in spans.values() if start <= moment < end)
        assert at_once <= 2
    _, a_end = spans["a"]
    d_start, _ = spans["d"]
    assert d_start >= a_end
    a_head = stream_of(doc, "a")["head_commit"]
    d = stream_of(doc, "d")
    assert repo.git("merge-base", "--is-ancestor", a_head, d["head_commit"], check=False) == ""
    assert repo.git("show", f"{d['branch']}:a/x") == "1"


def test_prompt_with_shell_syntax_reaches_the_agent_literally(repo: Repo, rec: Path,
                                                              tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    prompt = f"Use $(touch {marker}) and `touch {marker}`; touch {marker} && echo 'q\"x'"
    plan = agent_plan({"db": {"files": ["src/db/**"], "prompt": prompt,
                              "env": {"AGENT_RECORD": str(rec)}}},
                      agent={"command": [os.sys.executable, str(Path(__file__).parent / "agents"
                                                                 / "agent.py"), "{prompt}",
                                         "{stream}"]})
    result, _ = run(repo, plan)
    assert result.returncode == 0, result.stderr
    argv = records(rec, "db")[0]["argv"]
    assert prompt in argv[1] and argv[2] == "db" and len(argv) == 3
    assert not marker.exists()


def test_prompt_placeholder_in_a_shell_command_is_quoted(repo: Repo, rec: Path,
                                                         tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    prompt = f"$(touch {marker}); touch {marker}"
    agent = Path(__file__).parent / "agents" / "agent.py"
    plan = agent_plan({"db": {"files": ["src/db/**"], "prompt": prompt,
                              "env": {"AGENT_RECORD": str(rec)}}},
                      agent={"command": f"{os.sys.executable} {agent} {{prompt}}"})
    result, _ = run(repo, plan)
    assert result.returncode == 0, result.stderr
    assert prompt in records(rec, "db")[0]["argv"][1]
    assert not marker.exists()


def test_dry_run_changes_nothing(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]},
                       "api": {"files": ["src/api/**"], "depends_on": ["db"]}})
    before = (repo.refs(), repo.git("worktree", "list", "--porcelain"))
    state = repo.path / ".git" / "worktree-runner"
    existed = state.exists()
    result, _ = run(repo, plan, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "wtr/" in result.stdout and "agent.py" in result.stdout
    assert "the result of db" in result.stdout
    assert (repo.refs(), repo.git("worktree", "list", "--porcelain")) == before
    assert state.exists() == existed
    assert not (repo.path.parent / "repo.worktrees").exists()


def test_twenty_streams_in_parallel_without_git_lock_errors(repo: Repo) -> None:
    streams = {f"s{i:02d}": {"files": [f"area{i:02d}/**"],
                             "env": {"AGENT_WRITE": f"area{i:02d}/f.txt={i}", "AGENT_COMMIT": "0"}}
               for i in range(20)}
    result, doc = run(repo, agent_plan(streams, max_parallel=20))
    assert result.returncode == 0, result.stderr + result.stdout
    assert doc["counts"]["succeeded"] == 20
    assert "lock" not in result.stderr.lower()


def test_retry_runs_a_new_attempt_that_is_told_why(repo: Repo, rec: Path) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "agent": {"retries": 2},
                              "env": {"AGENT_RECORD": str(rec), "AGENT_FAIL_ATTEMPTS": "1",
                                      "AGENT_WRITE": "src/db/models.py=DB"}}})
    result, doc = run(repo, plan, env={"WTR_RETRY_BACKOFF": "0.1"})
    assert result.returncode == 0, result.stderr
    db = stream_of(doc, "db")
    assert db["attempts"] == 2 and db["status"] == "succeeded"
    second = records(rec, "db")[1]
    prompt = Path(second["env"]["WTR_PROMPT_FILE"]).read_text()
    assert "previous attempt failed" in prompt and "exit_code" in prompt


def test_setup_failure_and_verify_failure(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}}, setup=["exit 7"])
    result, doc = run(repo, plan)
    assert result.returncode == 1
    assert stream_of(doc, "db")["failure"]["kind"] == "setup"
    plan = agent_plan({"db": {"files": ["src/db/**"], "verify": ["test -f src/db/nothing"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB"}},
                       "ok": {"files": ["docs/**"], "verify": ["test -f docs/index.md"]}})
    result, doc = run(repo, plan)
    assert result.returncode == 1
    assert stream_of(doc, "db")["failure"]["kind"] == "verify"
    assert stream_of(doc, "ok")["status"] == "succeeded"


def test_missing_agent_program_fails_before_any_worktree(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}},
                      agent={"command": ["no-such-agent-program", "{prompt_file}"]})
    result, doc = run(repo, plan)
    assert result.returncode == 1
    db = stream_of(doc, "db")
    assert db["failure"]["kind"] == "error" and "no-such-agent-program" in db["failure"]["message"]
    assert db["worktree"] is None
    assert "wtr/" not in repo.git("branch", "--list")


def test_progress_reports_reach_status(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "env": {"AGENT_PROGRESS": "1",
                                                              "AGENT_EXIT": "1"}}})
    result, doc = run(repo, plan)
    assert result.returncode == 1
    db = stream_of(doc, "db")
    assert db["progress"]["percent"] == 50 and db["progress"]["message"] == "halfway"
    logs = run_wtr("logs", "db", cwd=repo.path)
    assert logs.returncode == 0 and "attempt 1" in logs.stdout
    markdown = run_wtr("status", "--markdown", cwd=repo.path)
    assert "## Needs attention" in markdown.stdout and "**db** failed" in markdown.stdout
    listing = run_wtr("runs", "--json", cwd=repo.path).json()
    assert listing["runs"][0]["run"] == doc["run"]


def test_progress_outside_an_agent_is_a_clear_error(repo: Repo) -> None:
    result = run_wtr("progress", "hello", cwd=repo.path)
    assert result.returncode == 2
    assert result.stderr.startswith("wtr: ") and "Traceback" not in result.stderr


def test_status_without_runs_and_unknown_run(repo: Repo) -> None:
    result = run_wtr("status", cwd=repo.path)
    assert result.returncode == 2 and "no runs" in result.stderr
    plan = agent_plan({"db": {"files": ["src/db/**"]}})
    run(repo, plan)
    result = run_wtr("status", "--run", "nope-1", cwd=repo.path)
    assert result.returncode == 2 and "nope-1" in result.stderr
    result = run_wtr("logs", "nope", cwd=repo.path)
    assert result.returncode == 2 and "no stream 'nope'" in result.stderr


def test_progress_finds_the_run_by_wtr_run_without_a_state_dir(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"]}})
    _, doc = run(repo, plan)
    env = {"WTR_RUN": doc["run"], "WTR_STREAM": "db", "WTR_STATE_DIR": ""}
    result = run_wtr("progress", "from outside", "--percent", "30", cwd=repo.path, env=env)
    assert result.returncode == 0, result.stderr
    seen = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "db")["progress"]
    assert seen["message"] == "from outside"
    wrong = run_wtr("progress", "x", cwd=repo.path, env={**env, "WTR_STREAM": "nope"})
    assert wrong.returncode == 2 and "no stream 'nope'" in wrong.stderr


def test_logs_follow_streams_until_the_stream_ends(repo: Repo, rec: Path) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_RECORD": str(rec), "AGENT_SLEEP": "1.5"}}})
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not records(rec, "db") and time.monotonic() < deadline:
        time.sleep(0.05)
    follow = run_wtr("logs", "db", "--follow", cwd=repo.path)
    runner.wait(timeout=60)
    assert follow.returncode == 0
    assert "attempt 1" in follow.stdout and "done" in follow.stdout


def test_max_parallel_option_overrides_the_plan(repo: Repo, rec: Path) -> None:
    env = {"AGENT_RECORD": str(rec), "AGENT_SLEEP": "0.4"}
    plan = agent_plan({n: {"files": [f"{n}/**"], "env": env} for n in ("a", "b", "c")},
                      max_parallel=3)
    result, _ = run(repo, plan, "--max-parallel", "1")
    assert result.returncode == 0, result.stderr
    spans = sorted((records(rec, n)[0]["time"], records(rec, n, "end")[0]["time"])
                   for n in "abc")
    assert all(first[1] <= second[0] for first, second in itertools.pairwise(spans))
    bad = run_wtr("run", repo.write_plan(plan), "--max-parallel", "0", cwd=repo.path)
    assert bad.returncode == 2
