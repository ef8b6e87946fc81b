"""Tests written to kill mutants (scripts/mutation) of the code that carries guarantees:
the landing compare-and-swap and dirty-target check, the ownership check, rescue."""

from __future__ import annotations

from pathlib import Path

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, status, stream_of

STREAMS = {
    "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 7"}},
    "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 7"}},
}


def run_plan(repo: Repo, plan: dict) -> dict:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode in (0, 1), result.stderr
    return status(repo)


# -- landing ------------------------------------------------------------------------------


def test_landing_refuses_a_checked_out_target_moved_back_during_the_merge(repo: Repo) -> None:
    """A fast-forward from an older tip would succeed: only the check against the tip the
    merge started from sees that the user moved the target."""
    older = repo.head("main")
    repo.commit({"later.txt": "later\n"}, "later")
    back = f"git -C {repo.path} reset -q --hard {older}"
    run_plan(repo, agent_plan(STREAMS, verify=[back]))
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "moved during the merge" in result.stderr
    assert repo.head("main") == older
    assert status(repo)["merge"]["state"] == "aborted"
    assert not (repo.path / "src/ui/view.py").read_text().startswith("UI = 7")


def test_landing_is_a_compare_and_swap_on_a_target_not_checked_out(repo: Repo) -> None:
    repo.git("branch", "release")
    moved = repo.commit({"other.txt": "x\n"}, "work of someone else")
    repo.git("checkout", "-q", "HEAD~1")
    repo.git("branch", "-f", "main", moved)
    sneaky = f"git -C {repo.path} update-ref refs/heads/release {moved}"
    run_plan(repo, agent_plan(STREAMS, base="release", target="release", verify=[sneaky]))
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "moved during the merge" in result.stderr and "nothing was changed" in result.stderr
    assert repo.head("release") == moved
    landed = repo.git("for-each-ref", "--format=%(refname)", "refs/worktree-runner/merge/")
    assert "/landed" not in landed


def test_landing_halts_when_the_checked_out_target_became_dirty(repo: Repo) -> None:
    dirty = f"echo 'my edit' >> {repo.path}/README.md"
    run_plan(repo, agent_plan(STREAMS, verify=[dirty]))
    before = repo.head("main")
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "uncommitted changes" in result.stderr and "README.md" in result.stderr
    assert repo.head("main") == before
    assert (repo.path / "README.md").read_text().endswith("my edit\n")
    merge = status(repo)["merge"]
    assert merge["state"] == "halted"
    # once the edit is committed elsewhere or dropped, --continue lands
    repo.git("checkout", "--", "README.md")
    landed = run_wtr("merge", "--continue", cwd=repo.path)
    assert landed.returncode == 0, landed.stderr
    assert repo.git("show", "main:src/ui/view.py") == "UI = 7"
    merge = status(repo)["merge"]
    assert merge["state"] == "landed" and not merge.get("active")


NOTES = [f"notes/n{i}.txt" for i in range(7)]


def dirty_notes(repo: Repo) -> str:
    """Seven tracked files of the target's checkout, each with an uncommitted edit."""
    return "; ".join(f"echo edit >> {repo.path / name}" for name in NOTES)


def test_the_dirty_target_refusal_at_the_start_names_five_files(repo: Repo) -> None:
    repo.commit({name: "note\n" for name in NOTES}, "notes")
    run_plan(repo, agent_plan(STREAMS))
    before = repo.head("main")
    repo.write({name: "edit\n" for name in NOTES})
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"({', '.join(NOTES[:5])})" in result.stderr, result.stderr
    assert repo.head("main") == before
    assert status(repo)["merge"]["landings"] == []


def test_the_dirty_target_halt_at_landing_names_five_files(repo: Repo) -> None:
    repo.commit({name: "note\n" for name in NOTES}, "notes")
    run_plan(repo, agent_plan(STREAMS, verify=[dirty_notes(repo)]))
    before = repo.head("main")
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"uncommitted changes ({', '.join(NOTES[:5])})" in result.stderr, result.stderr
    assert repo.head("main") == before
    assert all((repo.path / name).read_text() == "note\nedit\n" for name in NOTES)


def test_a_landing_claims_only_the_verify_that_ran(repo: Repo) -> None:
    run_plan(repo, agent_plan(STREAMS))
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert repo.git("show", "main:src/db/models.py") == "DB = 7"
    assert "verify: the plan has no verify commands; nothing was run" in result.stdout
    assert "passed on the merged result" not in result.stdout, result.stdout


# -- ownership ------------------------------------------------------------------------------


def test_ownership_names_every_out_of_scope_file_and_lets_shared_ones_pass(repo: Repo) -> None:
    outside = ";".join(f"extra/f{i}.txt=x" for i in range(12))
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "shared": ["README.md"],
               "env": {"AGENT_WRITE": f"src/db/models.py=DB;README.md=R;{outside}"}},
    }, shared=["README.md"])
    doc = run_plan(repo, plan)
    db = stream_of(doc, "db")
    assert db["failure"]["kind"] == "ownership"
    assert db["failure"]["files"] == [f"extra/f{i}.txt" for i in sorted(range(12), key=str)]
    assert db["failure"]["message"].startswith("changed 12 files outside its files: ")
    assert db["failure"]["message"].count("extra/") == 10
    assert "README.md" not in db["failure"]["files"]
    assert sorted(db["changed_files"]) == sorted(["README.md", "src/db/models.py",
                                                  *(f"extra/f{i}.txt" for i in range(12))])
    assert db["head_commit"] == repo.head(db["branch"])


def test_an_agent_that_leaves_its_branch_fails_and_nothing_is_committed_for_it(
        repo: Repo) -> None:
    leave = "echo 'DB = 9' > src/db/models.py && git checkout -q --detach"
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "agent": {"command": leave, "timeout": 60}}})
    doc = run_plan(repo, plan)
    db = stream_of(doc, "db")
    assert db["status"] == "failed" and db["failure"]["kind"] in ("error", "history")
    assert "detached" in db["failure"]["message"]
    worktree = Path(db["worktree"])
    assert git(worktree, "status", "--porcelain") == "M src/db/models.py"


def test_work_is_recorded_before_the_scope_is_judged(repo: Repo) -> None:
    plan = agent_plan({"db": {"files": ["src/db/**"], "verify": ["exit 4"],
                              "env": {"AGENT_WRITE": "src/db/models.py=DB = 3"}}})
    doc = run_plan(repo, plan)
    db = stream_of(doc, "db")
    assert db["failure"] == {"kind": "verify", "message": "verify command failed (exit 4): "
                             "exit 4", "files": []}
    assert db["changed_files"] == ["src/db/models.py"]
    assert db["head_commit"] == repo.head(db["branch"]) != doc["base_commit"]


def test_landing_never_overwrites_an_untracked_file_of_the_checked_out_target(
        repo: Repo) -> None:
    plan = agent_plan({"ui": {"files": ["src/ui/**"],
                              "env": {"AGENT_WRITE": "src/ui/new.py=NEW = 1"}}})
    run_plan(repo, plan)
    (repo.path / "src/ui/new.py").write_text("mine, not committed\n")
    before = repo.head("main")
    result = run_wtr("merge", cwd=repo.path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "would be overwritten" in result.stderr, result.stderr
    assert "moved during the merge" not in result.stderr
    assert (repo.path / "src/ui/new.py").read_text() == "mine, not committed\n"
    assert repo.git("status", "--porcelain") == "?? src/ui/new.py"
    assert repo.git("rev-parse", "HEAD") == before


def test_a_dependent_stream_is_judged_on_its_own_changes_and_its_verify_exit_code(
        repo: Repo) -> None:
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "verify": ["true"],
               "env": {"AGENT_WRITE": "src/db/models.py=DB = 8"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"], "verify": ["exit 1"],
                "env": {"AGENT_WRITE": "src/api/orders.py=API = 8"}},
    })
    doc = run_plan(repo, plan)
    db, api = stream_of(doc, "db"), stream_of(doc, "api")
    assert db["status"] == "succeeded", db["failure"]
    assert api["base_commit"] == db["head_commit"] != doc["base_commit"]
    # judged from its own base: the dependency's file is not its change
    assert api["changed_files"] == ["src/api/orders.py"]
    assert api["failure"]["kind"] == "verify" and "exit 1" in api["failure"]["message"]


def test_ownership_names_ten_of_the_copied_files_forced_into_a_commit(repo: Repo) -> None:
    secrets = [f"secret{i:02}.env" for i in range(11)]
    for name in secrets:
        (repo.path / name).write_text(f"{name}\n")
    plan = agent_plan({"db": {"files": ["**"], "env": {
        "AGENT_WRITE": "src/db/models.py=DB",
        "AGENT_SHELL": "git add -f *.env && git commit -qm secrets"}}}, copy=secrets)
    doc = run_plan(repo, plan)
    db = stream_of(doc, "db")
    assert db["failure"]["kind"] == "ownership" and db["failure"]["files"] == secrets
    assert db["failure"]["message"].endswith(f"must never be committed: {', '.join(secrets[:10])}")


def test_the_verify_output_of_an_agent_that_deleted_its_log_is_reported_whole(
        repo: Repo) -> None:
    erase = 'rm -f "$WTR_STATE_DIR/streams/$WTR_STREAM/agent.log"; '
    plan = agent_plan({"db": {"files": ["src/db/**"], "verify": ["echo verify-says-ok"],
                              "agent": {"command": erase + "echo 'DB = 1' > src/db/models.py"}}})
    doc = run_plan(repo, plan)
    assert stream_of(doc, "db")["status"] == "succeeded"
    result = run_wtr("report", cwd=repo.path)
    assert result.returncode == 0, result.stderr
    html = (repo.path / ".git/worktree-runner/runs" / doc["run"] / "report.html").read_text()
    assert "<h3>Verify output (end)</h3>\n    <pre>$ echo verify-says-ok\nverify-says-ok\n" in html
