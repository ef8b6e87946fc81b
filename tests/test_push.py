"""wtr push and pull requests on a real bare remote, with stand-ins for gh and glab that
answer as the real ones do; clean of squash-merged and PR-merged streams; teardown."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.gitrepo import Repo, Result, git, run_wtr
from tests.runhelp import agent_plan, stream_of

STANDIN = Path(__file__).resolve().parent / "forges" / "standin.py"

CHAIN = {
    "db": {"files": ["src/db/**"], "description": "Orders table",
           "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
    "api": {"files": ["src/api/**"], "depends_on": ["db"], "description": "Orders endpoints",
            "env": {"AGENT_WRITE": "src/api/orders.py=API = 2"}},
    "ui": {"files": ["src/ui/**"], "depends_on": ["api"],
           "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}},
    "docs": {"files": ["docs/**"], "prompt": "Document the orders API.\nMore detail here.",
             "env": {"AGENT_WRITE": "docs/index.md=orders"}},
}


class Team:
    """A repository with a bare remote `origin` and a forge CLI stand-in on PATH."""

    def __init__(self, repo: Repo, tmp_path: Path) -> None:
        self.repo = repo
        self.remote = tmp_path / "remote.git"
        git(tmp_path, "init", "-q", "--bare", str(self.remote))
        repo.git("remote", "add", "origin", str(self.remote))
        repo.git("push", "-q", "origin", "main")
        self.db = tmp_path / "forge.json"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for program in ("gh", "glab"):
            wrapper = bin_dir / program
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" {program} "$@"\n')
            wrapper.chmod(0o755)
        self.env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                    "FORGE_DB": str(self.db)}

    def wtr(self, *args: str | Path, **env: str) -> Result:
        return run_wtr(*args, cwd=self.repo.path, env={**self.env, **env})

    def run(self, streams: dict) -> dict:
        result = self.wtr("run", self.repo.write_plan(agent_plan(streams)))
        assert result.returncode in (0, 1), result.stderr
        return self.status()

    def status(self) -> dict:
        return self.wtr("status", "--json").json()

    def forge(self) -> dict:
        return json.loads(self.db.read_text())

    def remote_tip(self, branch: str) -> str | None:
        out = git(self.remote, "for-each-ref", "--format=%(objectname)", f"refs/heads/{branch}")
        return out or None

    def calls(self, *prefix: str) -> list[list[str]]:
        return [c for c in self.forge()["calls"] if c[:len(prefix)] == list(prefix)]


@pytest.fixture
def team(repo: Repo, tmp_path: Path) -> Team:
    return Team(repo, tmp_path)


def test_push_pr_opens_one_request_per_stream_stacked_on_single_dependencies(team: Team) -> None:
    doc = team.run(CHAIN)
    branch = {s["name"]: s["branch"] for s in doc["streams"]}
    result = team.wtr("push", "--pr", "--forge", "github")
    assert result.returncode == 0, result.stderr
    for name in CHAIN:
        assert team.remote_tip(branch[name]) == team.repo.head(branch[name])
    requests = {r["head"]: r for r in team.forge()["requests"]}
    assert {n: requests[branch[n]]["base"] for n in CHAIN} == {
        "db": "main", "api": branch["db"], "ui": branch["api"], "docs": "main"}
    assert requests[branch["db"]]["title"] == "Orders table"
    assert requests[branch["docs"]]["title"] == "docs: Document the orders API."
    body = requests[branch["api"]]["body"]
    assert "Stacked on `db`" in body and "`src/api/orders.py`" in body
    assert "do the api work" in body
    # the pull requests were opened in dependency order, each base before its stack
    created = [c[c.index("--head") + 1] for c in team.calls("gh", "pr", "create")]
    assert created.index(branch["db"]) < created.index(branch["api"]) < created.index(branch["ui"])
    status = team.status()
    for name in CHAIN:
        pr = stream_of(status, name)["pr"]
        assert pr["url"] == requests[branch[name]]["url"] and pr["state"] == "open"
        assert stream_of(status, name)["pushed"]["commit"] == team.repo.head(branch[name])


def test_second_push_updates_requests_and_never_duplicates(team: Team) -> None:
    team.run(CHAIN)
    assert team.wtr("push", "--pr", "--forge", "github").returncode == 0
    again = team.wtr("push", "--pr", "--forge", "github")
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout and "updated pull request #" in again.stdout
    assert len(team.calls("gh", "pr", "create")) == 4
    assert len(team.calls("gh", "pr", "edit")) == 4
    assert len(team.forge()["requests"]) == 4


def test_push_never_overwrites_a_branch_someone_else_moved(team: Team, tmp_path: Path) -> None:
    doc = team.run({"db": CHAIN["db"]})
    branch = stream_of(doc, "db")["branch"]
    assert team.wtr("push", "db").returncode == 0
    # a colleague pushes their own commit onto the stream's remote branch
    other = tmp_path / "colleague"
    git(tmp_path, "clone", "-q", str(team.remote), str(other))
    git(other, "checkout", "-q", branch)
    (other / "theirs.txt").write_text("mine\n")
    git(other, "add", "theirs.txt")
    git(other, "commit", "-q", "-m", "theirs")
    git(other, "push", "-q", "origin", branch)
    theirs = git(other, "rev-parse", "HEAD")
    # the stream moves on locally (say, a retry added a commit)
    worktree = Path(stream_of(doc, "db")["worktree"])
    (worktree / "src/db/more.py").write_text("MORE = 1\n")
    git(worktree, "add", "src/db/more.py")
    git(worktree, "commit", "-q", "-m", "more")
    result = team.wtr("push", "db")
    assert result.returncode == 1
    assert "nothing forced" in result.stderr and "Traceback" not in result.stderr
    assert team.remote_tip(branch) == theirs
    # the record still says what this run last pushed, not what it failed to push
    assert stream_of(team.status(), "db")["pushed"]["commit"] != team.repo.head(branch)


def test_first_push_refuses_a_remote_branch_this_run_did_not_make(team: Team) -> None:
    doc = team.run({"db": CHAIN["db"]})
    branch = stream_of(doc, "db")["branch"]
    team.repo.git("push", "-q", "origin", f"main:refs/heads/{branch}")
    result = team.wtr("push", "db")
    assert result.returncode == 1 and "did not push; nothing forced" in result.stderr
    assert team.remote_tip(branch) == team.repo.head("main")
    assert stream_of(team.status(), "db")["pushed"] is None


def test_gitlab_merge_requests_through_glab(team: Team) -> None:
    doc = team.run({"db": CHAIN["db"], "api": CHAIN["api"]})
    branch = {s["name"]: s["branch"] for s in doc["streams"]}
    result = team.wtr("push", "--pr", "--draft", "--forge", "gitlab")
    assert result.returncode == 0, result.stderr
    assert "opened merge request !" not in result.stdout  # numbers are written '#N'
    requests = {r["head"]: r for r in team.forge()["requests"]}
    assert requests[branch["api"]]["base"] == branch["db"]
    assert all(r["draft"] for r in requests.values())
    create = team.calls("glab", "mr", "create")[0]
    assert "--yes" in create and "--source-branch" in create
    assert team.wtr("push", "--pr", "--forge", "gitlab").returncode == 0
    assert len(team.calls("glab", "mr", "update")) == 2
    url = stream_of(team.status(), "api")["pr"]["url"]
    assert url.endswith("/-/merge_requests/2")


BAD_INPUT = [
    (("--pr",), {}, "cannot tell which forge hosts remote 'origin'"),
    (("--pr", "--forge", "github"), {"FORGE_LOGGED_OUT": "1"}, "'gh' is not logged in"),
    (("--remote", "upstream"), {}, "no remote named 'upstream' (remotes: origin)"),
    (("--draft",), {}, "--draft goes with --pr"),
    (("ui",), {}, "stream ui has not succeeded (blocked)"),
    (("nope",), {}, "nope"),
]


def test_push_bad_input_is_one_line_and_pushes_nothing(team: Team) -> None:
    """Each refusal in turn on one finished run (a refused push changes nothing, so each
    case meets the same run and remote): one line, exit 2, no branch on the remote."""
    team.run({"db": CHAIN["db"], "api": {**CHAIN["api"], "env": {"AGENT_EXIT": "1"}},
              "ui": CHAIN["ui"]})
    for args, env, expected in BAD_INPUT:
        result = team.wtr("push", *args, **env)
        assert expected in result.one_line_error(2), (args, result.stderr)
        assert git(team.remote, "for-each-ref", "refs/heads/wtr") == "", args


def test_missing_forge_cli_is_one_line(team: Team, tmp_path: Path) -> None:
    team.run({"db": CHAIN["db"]})
    git_dir = Path(git(tmp_path, "--exec-path")).parent.parent / "bin"
    result = run_wtr("push", "--pr", "--forge", "github", cwd=team.repo.path,
                     env={"PATH": f"{Path(sys.executable).parent}:{git_dir}:/usr/bin:/bin",
                          "FORGE_DB": str(team.db)})
    assert "'gh' (pull request tool of github) is not installed" in result.one_line_error(2)


def test_no_remote_is_one_line(repo: Repo) -> None:
    result = run_wtr("run", repo.write_plan(agent_plan({"db": CHAIN["db"]})), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    pushed = run_wtr("push", cwd=repo.path)
    assert "the repository has no remote" in pushed.one_line_error(2)


def squash_onto_main(repo: Repo, branch: str, base: str) -> None:
    """What a forge's squash merge leaves: one new commit on main with the branch's changes."""
    repo.git("merge", "-q", "--squash", branch)
    repo.git("commit", "-q", "-m", f"Squashed {branch}")
    assert repo.git("merge-base", "--is-ancestor", repo.head(branch), "main", check=False) == ""


def test_clean_deletes_a_squash_merged_branch_and_keeps_an_unmerged_one(team: Team) -> None:
    doc = team.run({"db": CHAIN["db"], "docs": CHAIN["docs"]})
    db, docs = stream_of(doc, "db"), stream_of(doc, "docs")
    # two commits, so the squash is patch-equivalent to neither: only content can tell
    worktree = Path(db["worktree"])
    (worktree / "src/db/more.py").write_text("MORE = 1\n")
    git(worktree, "add", "src/db/more.py")
    git(worktree, "commit", "-q", "-m", "more")
    db_tip = git(worktree, "rev-parse", "HEAD")
    squash_onto_main(team.repo, db["branch"], db["base_commit"])
    result = team.wtr("clean")
    assert result.returncode == 0, result.stderr
    archive = f"refs/worktree-runner/archive/{doc['run']}/db"
    assert (f"deleted branch {db['branch']} (its work is in main; its original commits "
            f"pinned at {archive})") in result.stdout
    assert team.repo.git("rev-parse", archive) == db_tip
    assert f"kept branch {docs['branch']}" in result.stdout
    assert team.repo.git("branch", "--list", docs["branch"]) != ""


def test_clean_trusts_a_merged_pull_request_only_for_what_was_pushed(team: Team) -> None:
    doc = team.run({"db": CHAIN["db"], "docs": CHAIN["docs"]})
    assert team.wtr("push", "--pr", "--forge", "github").returncode == 0
    forge = team.forge()
    for request in forge["requests"]:
        request["state"] = "merged"  # merged on the forge; the local main never saw it
    team.db.write_text(json.dumps(forge))
    docs = stream_of(doc, "docs")
    # docs got a commit after its push: the merged request does not hold all its work
    worktree = Path(docs["worktree"])
    (worktree / "docs/later.md").write_text("later\n")
    git(worktree, "add", "docs/later.md")
    git(worktree, "commit", "-q", "-m", "later")
    result = team.wtr("clean")
    assert result.returncode == 0, result.stderr
    db_branch = stream_of(doc, "db")["branch"]
    assert f"deleted branch {db_branch}" in result.stdout
    assert f"kept branch {docs['branch']}" in result.stdout
    # the remote copies stay without --remote
    assert team.remote_tip(db_branch) is not None


def test_clean_remote_deletes_pushed_copies_of_deleted_branches_only(team: Team) -> None:
    doc = team.run({"db": CHAIN["db"], "docs": CHAIN["docs"]})
    assert team.wtr("push").returncode == 0
    db, docs = stream_of(doc, "db"), stream_of(doc, "docs")
    squash_onto_main(team.repo, db["branch"], db["base_commit"])
    result = team.wtr("clean", "--remote")
    assert result.returncode == 0, result.stderr
    assert f"deleted remote branch origin/{db['branch']}" in result.stdout
    assert team.remote_tip(db["branch"]) is None
    assert team.remote_tip(docs["branch"]) == team.repo.head(docs["branch"])


def test_teardown_runs_before_removal_and_a_failure_still_rescues(repo: Repo,
                                                                  tmp_path: Path) -> None:
    seen = tmp_path / "teardown.txt"
    plan = agent_plan(
        {"db": {**CHAIN["db"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
         "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}}},
        teardown=[f'echo "$WTR_STREAM $COMPOSE_PROJECT_NAME $(ls | tr "\\n" " ")" >> {seen}',
                  'test "$WTR_STREAM" != ui'])
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    ui_tree = Path(stream_of(doc, "ui")["worktree"])
    (ui_tree / "src/ui/draft.py").write_text("UNSAVED = 1\n")
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    lines = seen.read_text().splitlines()
    # it ran inside each worktree while its files were still there
    assert sorted(line.split()[0] for line in lines) == ["db", "ui"]
    assert all("src" in line.split() for line in lines)
    assert any(line.startswith("ui ") and f"{doc['run']}-ui".lower() in line for line in lines)
    assert "teardown failed: 'test \"$WTR_STREAM\" != ui' (exit 1)" in cleaned.stdout
    assert not ui_tree.exists()
    rescue = f"refs/worktree-runner/rescue/{doc['run']}/ui"
    assert repo.git("show", f"{rescue}:src/ui/draft.py") == "UNSAVED = 1"
    log = run_wtr("logs", "ui", cwd=repo.path).stdout
    assert 'test "$WTR_STREAM" != ui' in log
