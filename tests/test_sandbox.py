"""``sandbox: true``: the agent under bubblewrap can do its work and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, stream_of


def _bwrap_problem() -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (scripts/test installs the 'bubblewrap' package as root)"
    probe = subprocess.run(["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
                            "--unshare-pid", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"bwrap cannot run here: {probe.stderr.strip()}"
    return None


needs_bwrap = pytest.mark.skipif(
    _bwrap_problem() is not None,
    reason=f"SANDBOX NOT TESTED: {_bwrap_problem()}",
)

COMMON = '"$(git rev-parse --path-format=absolute --git-common-dir)"'


def attempt(label: str, command: str, results: Path) -> str:
    return (f"if ( {command} ) >/dev/null 2>&1; then echo '{label} ok' >> {results}; "
            f"else echo '{label} refused' >> {results}; fi; ")


@needs_bwrap
def test_sandboxed_agent_commits_and_reports_but_cannot_write_elsewhere(
        repo: Repo, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results = cache / "results"
    script = "".join([
        attempt("main checkout", f"echo x >> {COMMON}/../README.md", results),
        attempt("hooks", f"echo x > {COMMON}/hooks/post-commit", results),
        attempt("config", "git config core.sneaky yes", results),
        attempt("user branch", "git update-ref refs/heads/main HEAD", results),
        attempt("new branch", "git branch sneaky", results),
        attempt("sibling branch", "git update-ref refs/heads/$SIBLING HEAD~1", results),
        attempt("sibling worktree", "echo x > $SIBLING_WT/src/db/models.py", results),
        attempt("tmp", "echo x > /tmp/private && test -s /tmp/private", results),
        attempt("progress", "wtr progress 'inside the box' --percent 40", results),
        attempt("commit", "echo 'A = 1' > src/api/orders.py && git add -A && "
                          "git commit -qm 'api work'", results),
    ])
    plan = agent_plan({
        "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=D = 1"}},
        "api": {"files": ["src/api/**"], "depends_on": ["db"], "sandbox": True,
                "agent": {"command": script, "timeout": 60}},
    }, writable=[str(cache)], worktrees_dir="../wt")
    run_id = "plan-1"
    env = {"SIBLING": f"wtr/{run_id}/db",
           "SIBLING_WT": str(repo.path.parent / "wt" / run_id / "db")}
    plan["streams"]["api"]["agent"]["env"] = env
    before = repo.head("main")
    result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert doc["run"] == run_id
    seen = dict(line.rsplit(" ", 1) for line in results.read_text().splitlines())
    assert seen == {
        "main checkout": "refused", "hooks": "refused", "config": "refused",
        "user branch": "refused", "new branch": "refused", "sibling branch": "refused",
        "sibling worktree": "refused", "tmp": "ok", "progress": "ok", "commit": "ok",
    }, seen
    assert result.returncode == 0, result.stderr
    api = stream_of(doc, "api")
    assert api["status"] == "succeeded" and api["changed_files"] == ["src/api/orders.py"]
    assert api["progress"]["message"] == "inside the box"
    assert repo.git("log", "-1", "--format=%s", f"wtr/{run_id}/api") == "api work"
    assert repo.head("main") == before and repo.git("status", "--porcelain") == ""
    assert not Path("/tmp/private").exists()
    assert doc["isolation"] == []


@needs_bwrap
def test_sandboxed_stream_is_never_blamed_for_an_outside_change(repo: Repo) -> None:
    outside = f"sleep 1; echo x >> {COMMON}/../README.md; echo 'U = 1' > src/ui/view.py"
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "sandbox": True,
                "env": {"AGENT_WRITE": "src/api/orders.py=A = 1", "AGENT_SLEEP": "3"}},
        "ui": {"files": ["src/ui/**"], "agent": {"command": outside, "timeout": 60}},
    })
    run_wtr("run", repo.write_plan(plan), cwd=repo.path)
    doc = run_wtr("status", "--json", cwd=repo.path).json()
    assert stream_of(doc, "api")["status"] == "succeeded"
    ui = stream_of(doc, "ui")
    assert ui["status"] == "failed" and "README.md" in ui["failure"]["message"]


def _path_without_bwrap(tmp_path: Path) -> dict[str, Any]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    git = shutil.which("git")
    assert git
    (bin_dir / "git").symlink_to(git)
    return {"PATH": str(bin_dir)}


def test_missing_bwrap_is_one_clear_line_at_check_and_run(repo: Repo, tmp_path: Path) -> None:
    plan = agent_plan({"api": {"files": ["src/api/**"]}}, sandbox=True)
    path = repo.write_plan(plan)
    env = _path_without_bwrap(tmp_path)
    for command in ("check", "run"):
        line = run_wtr(command, path, cwd=repo.path, env=env).one_line_error(2)
        assert "bubblewrap" in line and "api" in line, line
    assert "wtr/" not in repo.git("branch", "--list")


def test_sandbox_keys_are_checked(repo: Repo) -> None:
    plan = agent_plan({"api": {"files": ["src/api/**"], "sandbox": "yes please",
                               "writable": ["relative/cache"]}})
    result = run_wtr("check", repo.write_plan(plan), cwd=repo.path)
    text = result.stderr
    assert result.returncode == 2
    assert "sandbox" in text and "true or false" in text, text
    assert "relative/cache" in text and "absolute" in text, text


@needs_bwrap
@pytest.mark.parametrize("hidden", ["/tmp", "/dev/shm"])
def test_an_agent_script_under_a_tree_the_sandbox_hides_stays_visible(
        repo: Repo, hidden: str) -> None:
    """The sandbox's private /tmp and its own /dev hide what lies under /tmp and /dev/shm;
    the script the agent's command names is kept visible there, read-only."""
    if not Path(hidden).is_dir():
        pytest.skip(f"no {hidden} here")
    folder = Path(tempfile.mkdtemp(prefix="wtr-sandbox-script-", dir=hidden))
    try:
        script = folder / "agent.py"
        script.write_text("import pathlib, subprocess\n"
                          "pathlib.Path('src/api/orders.py').write_text('A = 1\\n')\n"
                          "subprocess.run(['git', 'commit', '-qam', 'api'], check=True)\n")
        plan = agent_plan({"api": {"files": ["src/api/**"], "sandbox": True}},
                          agent={"command": [sys.executable, str(script)]})
        result = run_wtr("run", repo.write_plan(plan), cwd=repo.path)
        assert result.returncode == 0, result.stderr + result.stdout
        api = stream_of(run_wtr("status", "--json", cwd=repo.path).json(), "api")
        assert api["status"] == "succeeded" and api["changed_files"] == ["src/api/orders.py"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
