"""The guard and the landings of `wtr run --merge`: the landings' own moves of the target
and of its checkout are never blamed on an agent; an agent's moves to a landing's commits
are."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of, wait_for
from tests.test_merge import CHAIN, status
from tests.test_merge_live import WAIT, start_run

MAIN = '"$(git rev-parse --path-format=absolute --git-common-dir)/.."'
PINS = "git for-each-ref --format='%(refname) %(objectname)' refs/worktree-runner/merge/"


def shell(script: str, **extra: object) -> dict[str, object]:
    return {"agent": {"command": script, "timeout": 120}, **extra}


def finish(runner: subprocess.Popen[str]) -> None:
    assert runner.wait(timeout=WAIT) in (0, 1), runner.stderr.read() if runner.stderr else ""


def test_an_agent_moving_branches_to_a_landings_pinned_start_is_blamed(repo: Repo) -> None:
    """db lands; api (alone then) moves main back to where that landing started and
    feature there too: both moves are the agent's, reported, and the old tips kept."""
    repo.git("checkout", "-q", "-b", "feature")
    feature = repo.commit({"feature.txt": "mine\n"}, "the user's feature work")
    repo.git("checkout", "-q", "main")
    sneaky = ("set -e\n"
              "until git show main:src/db/models.py | grep -q 'DB = 2'; do sleep 0.2; done\n"
              f"start=$({PINS} | grep '/start ' | head -n 1 | cut -d' ' -f2)\n"
              "git update-ref refs/heads/main $start\n"
              "git update-ref refs/heads/feature $start\n"
              "echo 'API = 2' > src/api/orders.py\n")
    plan = agent_plan({"db": CHAIN["db"],
                       "api": {"files": ["src/api/**"], "depends_on": ["db"], **shell(sneaky)}})
    runner = start_run(repo, plan, "--merge")
    finish(runner)
    doc = status(repo)
    landed = doc["merge"]["landings"][0]["landed_to"]
    api = stream_of(doc, "api")
    assert api["status"] == "failed", api
    message = api["failure"]["message"]
    assert "branch main moved from" in message and "branch feature moved from" in message
    assert [b["stream"] for b in doc["isolation"]] == ["api"]
    kept = repo.git("for-each-ref", "--format=%(objectname)",
                    f"refs/worktree-runner/isolation/{doc['run']}/").split()
    assert landed in kept and feature in kept


# s1 lands first (it deletes a file and changes another of the checked-out main); the
# guard looks while that landing has moved main and its checkout has not followed yet;
# s2 lands next while s3, alone, runs.
S1 = "git rm -q docs/index.md; echo 'DB = 2' > src/db/models.py; git commit -qam s1"
S2 = ("until [ -e {go} ]; do sleep 0.1; done; echo 'UI = 2' > src/ui/view.py; "
      "git commit -qam s2; touch {done}")
S3 = ("until [ -e {go} ]; do sleep 0.1; done; {extra}echo 'API = 3' > src/api/orders.py; "
      "git commit -qam s3")


@pytest.mark.parametrize("meddles", [False, True], ids=["innocent", "meddling"])
def test_a_landing_that_updates_the_checked_out_target_is_nobodys_breach(
        repo: Repo, tmp_path: Path, meddles: bool) -> None:
    pause, go2, done2, go3 = (tmp_path / n for n in ("pause", "go2", "done2", "go3"))
    pause.write_text("")
    extra = f"echo mine > {MAIN}/sneaky.txt; " if meddles else ""
    plan = agent_plan({
        "s1": {"files": ["src/db/**", "docs/**"], **shell(S1)},
        "s2": {"files": ["src/ui/**"], **shell(S2.format(go=go2, done=done2))},
        "s3": {"files": ["src/api/**"], "depends_on": ["s2"],
               **shell(S3.format(go=go3, extra=extra))},
    })
    runner = start_run(repo, plan, "--merge", env={"WTR_PAUSE": "landing_checkout",
                                                   "WTR_PAUSE_FILE": str(pause)})
    try:
        wait_for(Path(f"{pause}.reached").exists, timeout=WAIT)
        go2.write_text("")  # s2 ends, and the guard looks, while s1's landing is half done
        wait_for(done2.exists, timeout=WAIT)
        time.sleep(2.0)
    finally:
        pause.unlink()
    wait_for(lambda: status(repo)["merge"]["landings"][0]["state"] == "landed", timeout=WAIT)
    go3.write_text("")
    finish(runner)
    doc = status(repo)
    streams = {s["name"]: s["status"] for s in doc["streams"]}
    if not meddles:
        assert streams == {"s1": "merged", "s2": "merged", "s3": "merged"}, doc["isolation"]
        assert doc["isolation"] == []
        assert (repo.path / "src/api/orders.py").read_text() == "API = 3\n"
        moves = doc["merge"]["moves"]
        assert [m["ref"] for m in moves] == ["refs/heads/main"] * 3
        assert moves[-1]["new"] == repo.head("main")
    else:
        assert streams == {"s1": "merged", "s2": "merged", "s3": "failed"}, doc["isolation"]
        assert [(b["stream"], b["changes"]) for b in doc["isolation"]] == [
            ("s3", ["main checkout: sneaky.txt added"])]
    assert not (repo.path / "docs/index.md").exists()
    assert (repo.path / "src/db/models.py").read_text() == "DB = 2\n"
    assert (repo.path / "src/ui/view.py").read_text() == "UI = 2\n"
    assert repo.git("status", "--porcelain", "--untracked-files=no") == ""


def test_a_tracked_file_edited_in_the_main_checkout_is_modified_not_added(repo: Repo) -> None:
    script = (f"echo edited >> {MAIN}/README.md; rm {MAIN}/docs/index.md; "
              f"echo new > {MAIN}/new.txt; echo 'X = 1' > src/api/orders.py")
    plan = agent_plan({"api": {"files": ["src/api/**"], **shell(script)}})
    run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    message = stream_of(status(repo), "api")["failure"]["message"]
    assert "main checkout: README.md modified" in message
    assert "main checkout: docs/index.md deleted" in message
    assert "main checkout: new.txt added" in message


def test_check_escapes_control_characters_of_file_names(repo: Repo) -> None:
    for i in range(6):
        repo.commit({"src/api/a\tb.py": f"{i}\n", "src/ui/c\nd.py": f"{i}\n"}, f"c{i}")
    plan = agent_plan({"api": {"files": ["src/api/**"]}, "ui": {"files": ["src/ui/**"]}})
    result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert "src/api/a\\tb.py" in result.stdout and "src/ui/c\\nd.py" in result.stdout
    assert "\t" not in result.stdout
    assert not any(line.startswith("d.py") for line in result.stdout.splitlines())


def test_a_landing_that_changes_gitignore_is_not_blamed_for_what_it_hides(repo: Repo) -> None:
    """The user's untracked build.log becomes ignored when s1's .gitignore lands: git no
    longer lists it, but nobody touched it; s2, alone then, is not blamed."""
    (repo.path / "build.log").write_text("the user's\n")
    landed = "until git show main:.gitignore > /dev/null 2>&1; do sleep 0.2; done; "
    plan = agent_plan({
        "s1": {"files": [".gitignore"],
               **shell("echo '*.log' > .gitignore; git add .gitignore; git commit -qm s1")},
        "s2": {"files": ["src/api/**"], "depends_on": ["s1"],
               **shell(landed + "echo 'API = 2' > src/api/orders.py")},
    })
    finish(start_run(repo, plan, "--merge"))
    doc = status(repo)
    assert doc["isolation"] == []
    assert {s["name"]: s["status"] for s in doc["streams"]} == {"s1": "merged", "s2": "merged"}
    assert (repo.path / "build.log").read_text() == "the user's\n"
