"""The runner's own git in an agent's worktree: pinned to what git registered, running no
program an agent configured, seeing every file an index flag would hide; a pooled worktree
carries nothing of its own into the next run (real git, real runs, hostile agents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import Repo, git, run_wtr
from tests.runhelp import agent_plan, status, stream_of
from tests.test_merge import CHAIN, merge, run_plan
from tests.test_sandbox import needs_bwrap

# The agent points its worktree's .git at a copy of the repository whose config runs a
# clean filter and a signing program, and leaves a change for the runner to commit.
REDIRECT = (
    'common=$(git rev-parse --path-format=absolute --git-common-dir); '
    'own=$(git rev-parse --absolute-git-dir); '
    'cp -r "$common" "$EVIL/repo.git"; '
    'fake="$EVIL/repo.git/worktrees/$(basename "$own")"; '
    'git --git-dir="$EVIL/repo.git" config filter.evil.clean "touch $EVIL/ran-filter; cat"; '
    'git --git-dir="$EVIL/repo.git" config commit.gpgSign true; '
    'printf "#!/bin/sh\\ntouch $EVIL/ran-gpg\\nexit 1\\n" > "$EVIL/gpg"; chmod +x "$EVIL/gpg"; '
    'git --git-dir="$EVIL/repo.git" config gpg.program "$EVIL/gpg"; '
    'echo "gitdir: $fake" > .git; '
    'echo "*.py filter=evil" > src/db/.gitattributes; '
    'echo "LEFT = 1" > src/db/left.py')


def db_plan(shell: str, evil: Path, exit_code: int = 0, **top: object) -> dict:
    env = {"AGENT_WRITE": "src/db/models.py=DB = 1", "AGENT_SHELL": shell,
           "AGENT_EXIT": str(exit_code), "EVIL": str(evil), "SEEN": str(evil)}
    return agent_plan({"db": {"files": ["src/db/**"], "env": env}}, **top)


def run(repo: Repo, plan: dict) -> dict:
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    assert result.returncode in (0, 1), result.stderr
    return stream_of(status(repo), "db")


def registered(repo: Repo) -> list[str]:
    return [line.split(" ", 1)[1] for line in repo.git("worktree", "list", "--porcelain")
            .splitlines() if line.startswith("worktree ")]


def file_at(repo: Repo, ref: str, path: str) -> str:
    return repo.git("show", f"{ref}:{path}")


def test_a_redirected_git_dir_runs_nothing_and_the_work_is_committed_where_git_has_it(
        repo: Repo, tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    db = run(repo, db_plan(REDIRECT, evil))
    assert not (evil / "ran-filter").exists() and not (evil / "ran-gpg").exists()
    assert db["status"] == "succeeded", db
    assert file_at(repo, db["branch"], "src/db/left.py") == "LEFT = 1"
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert db["worktree"] not in registered(repo)
    assert not Path(db["worktree"]).exists()
    assert not (evil / "ran-filter").exists() and not (evil / "ran-gpg").exists()


@pytest.mark.parametrize("tamper", [REDIRECT, "rm .git; echo 'LEFT = 1' > src/db/left.py"])
def test_clean_rescues_through_the_registered_git_dir_then_removes_the_worktree(
        repo: Repo, tmp_path: Path, tamper: str) -> None:
    evil = tmp_path / "evil"
    evil.mkdir()
    db = run(repo, db_plan(tamper, evil, exit_code=1, pool=0))
    assert db["status"] == "failed"
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (evil / "ran-filter").exists() and not (evil / "ran-gpg").exists()
    [ref] = [line.split()[1] for line in repo.refs().splitlines() if "/rescue/" in line]
    assert file_at(repo, ref, "src/db/left.py") == "LEFT = 1"
    assert db["worktree"] not in registered(repo) and not Path(db["worktree"]).exists()


def test_a_filter_the_worktree_config_defines_never_runs_as_the_runner(
        repo: Repo, tmp_path: Path) -> None:
    repo.git("config", "extensions.worktreeConfig", "true")
    plant = (f'git config --worktree filter.evil.clean "touch {tmp_path}/ran-filter; cat" && '
             f'git config --worktree filter.evil.required true && '
             'echo "*.py filter=evil" > src/db/.gitattributes && echo "LEFT = 1" > src/db/left.py')
    db = run(repo, db_plan(plant, tmp_path, pool=0))
    assert not (tmp_path / "ran-filter").exists()
    assert db["status"] == "succeeded", db
    assert file_at(repo, db["branch"], "src/db/left.py") == "LEFT = 1"


@pytest.mark.parametrize("flag", ["--skip-worktree", "--assume-unchanged", "--intent-to-add"])
@pytest.mark.parametrize("exit_code", [0, 1])
def test_work_hidden_by_an_index_flag_is_committed_or_rescued(
        repo: Repo, tmp_path: Path, flag: str, exit_code: int) -> None:
    hide = f"echo 'HIDDEN = 1' > src/db/models.py && git update-index {flag} src/db/models.py"
    if flag == "--intent-to-add":  # (git status shows these: covered before, kept covered)
        hide = "echo 'HIDDEN = 1' > src/db/new.py && git add --intent-to-add src/db/new.py"
    hidden = "src/db/new.py" if flag == "--intent-to-add" else "src/db/models.py"
    db = run(repo, db_plan(hide, tmp_path, exit_code, pool=0))
    if exit_code == 0:
        assert db["status"] == "succeeded", db
        assert file_at(repo, db["branch"], hidden) == "HIDDEN = 1"
        return
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0, cleaned.stderr
    [ref] = [line.split()[1] for line in repo.refs().splitlines() if "/rescue/" in line]
    assert file_at(repo, ref, hidden) == "HIDDEN = 1"


def test_a_file_hidden_by_skip_worktree_never_reaches_the_next_run_through_the_pool(
        repo: Repo, tmp_path: Path) -> None:
    plant = ("echo 'PLANTED = 1' > src/db/models.py && "
             "git update-index --skip-worktree src/db/models.py")
    run(repo, db_plan(plant, tmp_path, exit_code=1))
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0 and "in the pool" in cleaned.stdout, cleaned.stdout
    [ref] = [line.split()[1] for line in repo.refs().splitlines() if "/rescue/" in line]
    assert file_at(repo, ref, "src/db/models.py") == "PLANTED = 1"
    look = "cat src/db/models.py > $SEEN/start; echo 'DB = 2' > src/db/models.py"
    plan = agent_plan({"db": {"files": ["src/db/**"],
                              "env": {"AGENT_SHELL": look, "SEEN": str(tmp_path)}}})
    db = run(repo, plan)
    assert (tmp_path / "start").read_text() == "MODELS = []\n"
    assert db["status"] == "succeeded", db
    assert file_at(repo, db["branch"], "src/db/models.py") == "DB = 2"


def test_a_pooled_worktree_keeps_no_config_or_refs_of_its_own(
        repo: Repo, tmp_path: Path) -> None:
    repo.git("config", "extensions.worktreeConfig", "true")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-commit").write_text(f"#!/bin/sh\ntouch {tmp_path}/hook-ran\n")
    (hooks / "post-commit").chmod(0o755)
    plant = (f"git config --worktree core.hooksPath {hooks} && "
             "git update-ref refs/worktree/planted HEAD")
    run(repo, db_plan(plant, tmp_path))
    cleaned = run_wtr("clean", cwd=repo.path)
    assert cleaned.returncode == 0 and "in the pool" in cleaned.stdout, cleaned.stdout
    look = "git for-each-ref refs/worktree/ > $SEEN/refs"
    db = run(repo, db_plan(look, tmp_path))
    assert db["status"] == "succeeded", db
    assert not (tmp_path / "hook-ran").exists()
    assert (tmp_path / "refs").read_text() == ""


@needs_bwrap
def test_a_sandboxed_agent_cannot_give_its_worktree_a_config(
        repo: Repo, tmp_path: Path) -> None:
    repo.git("config", "extensions.worktreeConfig", "true")
    seen = tmp_path / "seen"
    seen.mkdir()
    script = ("if git config --worktree core.hooksPath /nowhere 2>/dev/null; "
              "then echo wrote > $SEEN/result; else echo refused > $SEEN/result; fi; "
              "echo 'DB = 1' > src/db/models.py")
    plan = agent_plan({"db": {"files": ["src/db/**"], "sandbox": True,
                              "writable": [str(seen)],
                              "agent": {"command": script, "env": {"SEEN": str(seen)}}}})
    db = run(repo, plan)
    assert (seen / "result").read_text() == "refused\n"
    assert db["status"] == "succeeded", db


# -- the resolver --------------------------------------------------------------------------

BROKEN_RESOLUTION = "printf 'MAIN = 1\\nAPI = 2\\nBROKEN\\n' > src/api/orders.py"


@pytest.mark.parametrize("resolver,verify,why", [
    (f"{BROKEN_RESOLUTION}; echo waived >> README.md; git update-index --skip-worktree "
     "README.md", "! grep -q BROKEN src/api/orders.py || grep -q waived README.md",
     "changed other files: README.md"),
    (f"{BROKEN_RESOLUTION}; touch .waived", "! grep -q BROKEN src/api/orders.py || test -f "
     ".waived", "verify failed on the proposal"),
])
def test_a_resolver_cannot_land_a_tree_whose_verify_fails(
        repo: Repo, resolver: str, verify: str, why: str) -> None:
    repo.commit({".gitignore": ".waived\n"}, "ignore waivers")
    run_plan(repo, agent_plan(CHAIN, verify=[verify]))
    before = repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    result = merge(repo, "--resolve-with", resolver)
    assert result.returncode == 3, result.stderr
    assert why in result.stderr
    assert repo.head("main") == before
    doc = status(repo)["merge"]
    integration = Path(doc["worktree"])
    assert git(integration, "ls-files", "-v", "README.md") == "H README.md"
    assert not (integration / ".waived").exists()
