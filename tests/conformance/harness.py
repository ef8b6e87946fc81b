"""The conformance scenario: a real CLI, through ``wtr run``, against a scripted model server.

Two streams (``alpha`` and ``beta``) run in parallel on a small repository; each agent is
scripted to report progress, write its file, run the tests, take a lock, commit, and end
with a final message. ``Outcome.assert_standard`` checks what a user relies on: the agent's
own commit on its branch and nothing anywhere else, the command output back at the model,
progress, lock, report and usage recorded.

Variants (``VARIANTS``): ``checkout`` runs from the user's main checkout, as root;
``elsewhere`` puts the repository and HOME outside /tmp and runs from another repository
(a decoy that must stay untouched), naming the repository with ``--repo``; ``nonroot``
runs wtr as an unprivileged user; ``sandbox`` sets ``sandbox: true`` (bubblewrap). Only
``checkout`` keeps its folders under /tmp.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conformance import install
from tests.conformance.modelserver import ModelServer, Script
from tests.gitrepo import IDENTITY
from tests.gitrepo import git as _git
from worktree_runner.presets import PRESETS, StreamFacts

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("checkout", "elsewhere", "nonroot", "sandbox")
STREAMS = ("alpha", "beta")
USER = "wtr-conformance"
_MADE: list[Path] = []  # folders outside tmp_path, removed at the end of the session

Gateway = Callable[[str, Path], Mapping[str, str]]


def git(path: Path, *args: str) -> str:
    """git as the test (root) sees it, also in a repository another user owns."""
    return _git(path, "-c", "safe.directory=*", *args)


def linked_stream(tmp_path: Path, files: Mapping[str, str],
                  wtr_bin: Path | None = None) -> StreamFacts:
    """Stream ``alpha``'s facts as the runner gives them: a fresh repository (``repo``)
    holding ``files``, its linked worktree ``wt`` on branch ``wtr/p-1/alpha`` and the
    state folder ``state`` (also ``wtr_bin`` unless given)."""
    repo, worktree, state = (tmp_path / n for n in ("repo", "wt", "state"))
    for folder in (repo, state):
        folder.mkdir()
    for name, text in files.items():
        (repo / name).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    git(repo, "worktree", "add", "-q", "-b", "wtr/p-1/alpha", str(worktree))
    return StreamFacts(stream="alpha", worktree=worktree, state_dir=state,
                       git_dir=Path(git(worktree, "rev-parse", "--absolute-git-dir")),
                       git_common_dir=repo / ".git", scope=("src/alpha/**",),
                       wtr_bin=wtr_bin or state, run_state_dir=state.parent,
                       locks_dir=state / "locks", as_root=os.geteuid() == 0)


def loud_skip(reason: str) -> None:
    """Skip, and say so where nobody can miss it."""
    print(f"\n!!! CONFORMANCE NOT CHECKED: {reason} !!!", file=sys.stderr)
    pytest.skip(f"!!! {reason} !!!")


def cli_bin_dir(name: str) -> Path:
    """The folder of the installed, pinned CLI of preset ``name`` (skips when missing)."""
    preset = PRESETS[name]
    if not install.installed(preset):
        loud_skip(f"{preset.program} {preset.pinned} is not installed in "
                  f"{install.install_dir(preset)} (python -m tests.conformance.install)")
    return install.bin_dir(preset)


RUN_TESTS = '''\
"""The repository's test command: python3 run_tests.py STREAM"""
import pathlib
import sys

name = sys.argv[1]
feature = pathlib.Path("src") / name / "feature.py"
if feature.is_file() and "def value" in feature.read_text():
    print(f"TESTS PASSED: {name}")
    sys.exit(0)
print(f"TESTS FAILED: {name}: {feature} has no value()")
sys.exit(1)
'''


def standard_turns() -> list[dict[str, Any]]:
    return [
        {"shell": 'wtr progress "starting {stream}" --percent 10'},
        {"shell": "mkdir -p src/{stream} && printf 'def value():\\n    return 42\\n' "
                  "> src/{stream}/feature.py"},
        {"shell": "python3 run_tests.py {stream}"},
        {"shell": "wtr lock conformance -- sh -c 'echo \"LOCK HELD BY $WTR_STREAM\"'"},
        {"shell": 'git add src/{stream} && git commit -q -m "{stream}: add feature"'},
        {"text": "REPORT {stream}: added src/{stream}/feature.py; run_tests.py passed."},
    ]


def plan_for(preset: str, agent: Mapping[str, Any] | None = None,
             plan_extra: Mapping[str, Any] | None = None,
             stream_agents: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The two-stream plan; ``stream_agents`` gives a stream keys of its own agent."""
    streams = {
        name: {"files": [f"src/{name}/**"],
               "prompt": f"Add src/{name}/feature.py with a function value() returning 42, "
                         f"run `python3 run_tests.py {name}`, and commit.",
               "verify": [f"python3 run_tests.py {name}"],
               **({"agent": dict(stream_agents[name])} if name in (stream_agents or {}) else {})}
        for name in STREAMS
    }
    return {"version": 1, "name": "conformance",
            "agent": {"preset": preset, "timeout": 300, **(agent or {})},
            **(plan_extra or {}), "streams": streams}


@dataclass
class Workspace:
    root: Path
    repo: Path
    home: Path
    caller: Path  # the cwd wtr is run from
    user: str | None = None

    @property
    def decoy(self) -> Path | None:
        return None if self.caller == self.repo else self.caller


def _outside_tmp() -> Path:
    base = Path("/var/tmp")
    folder = Path(tempfile.mkdtemp(prefix="wtr-conformance-", dir=base))
    folder.chmod(0o755)
    _MADE.append(folder)
    return folder


def _make_repo(path: Path, files: Mapping[str, str]) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return git(path, "rev-parse", "HEAD")


def workspace(variant: str) -> Workspace:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}")
    if variant == "sandbox" and shutil.which("bwrap") is None:
        loud_skip("bubblewrap (bwrap) is missing: the sandbox variant cannot run")
    user = _unprivileged_user() if variant == "nonroot" else None
    # (the sandbox gives the agent a private /tmp: a HOME under /tmp would vanish there)
    root = _in_tmp() if variant == "checkout" else _outside_tmp()
    repo = root / "repo"
    _make_repo(repo, {"README.md": "# conformance\n", "run_tests.py": RUN_TESTS,
                      "src/common.py": "COMMON = 1\n"})
    caller = repo
    if variant == "elsewhere":
        caller = root / "decoy"
        _make_repo(caller, {"README.md": "the user's other checkout\n"})
    home = root / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Agent\n\temail = agent@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n")
    if user is not None:
        subprocess.run(["chown", "-R", f"{user}:{user}", str(root)], check=True)
    return Workspace(root, repo, home, caller, user)


def _in_tmp() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="wtr-conformance-"))
    _MADE.append(folder)
    return folder


def _unprivileged_user() -> str:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name  # already not root
    try:
        pwd.getpwnam(USER)
    except KeyError:
        made = subprocess.run(["useradd", "--system", "--create-home", "--shell", "/bin/sh",
                               USER], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            loud_skip(f"could not create the user {USER}: {made.stderr.strip()}")
    for path in (ROOT, *ROOT.parents):
        if not os.access(path, os.R_OK | os.X_OK) or path.stat().st_mode & 0o005 != 0o005:
            loud_skip(f"{path} cannot be read by other users: the nonroot variant needs the "
                      "checkout readable")
    if not (install.deps_venv() / ".installed").exists():
        loud_skip(f"no venv of worktree_runner's dependencies for other users in "
                  f"{install.deps_venv()} (python -m tests.conformance.install)")
    return USER


@dataclass
class Outcome:
    preset: str
    variant: str
    ws: Workspace
    server: ModelServer
    exit_code: int
    stdout: str
    stderr: str
    status: dict[str, Any]
    initial: dict[str, str] = field(default_factory=dict)  # repo -> HEAD before the run

    def stream(self, name: str) -> dict[str, Any]:
        return next(s for s in self.status["streams"] if s["name"] == name)

    def log(self, name: str) -> str:
        """The stream's agent log (every attempt's output)."""
        found = sorted(self.ws.repo.glob(f".git/worktree-runner/runs/*/streams/{name}/agent.log"))
        return found[-1].read_text(errors="replace") if found else ""

    def describe(self) -> str:
        logs = "\n".join(f"--- log of {s} ---\n{self.log(s)[-3000:]}" for s in STREAMS)
        return (f"{self.preset}/{self.variant}: exit {self.exit_code}\nstdout:\n{self.stdout}"
                f"\nstderr:\n{self.stderr}\n{logs}")

    def git(self, *args: str) -> str:
        return git(self.ws.repo, *args)

    def assert_standard(self, streams: tuple[str, ...] = STREAMS, shell: bool = True,
                        report: bool = True) -> None:
        """What every preset must do. ``shell=False`` for a CLI that runs no commands."""
        assert self.exit_code == 0, self.describe()
        assert "Traceback" not in self.stderr, self.describe()
        run = self.status["run"]
        for name in streams:
            self._assert_stream(run, name, shell, report)
        self._assert_nothing_else_changed(run, streams)

    def _assert_stream(self, run: str, name: str, shell: bool, report: bool) -> None:
        stream = self.stream(name)
        assert stream["status"] == "succeeded", (stream["failure"], self.describe())
        subjects = self.git("log", "--format=%s", f"{stream['base_commit']}..wtr/{run}/{name}")
        assert f"{name}: add feature" in subjects.splitlines(), (subjects, self.describe())
        assert "work left uncommitted" not in subjects, (subjects, self.describe())
        assert stream["changed_files"] == [f"src/{name}/feature.py"], self.describe()
        assert stream["usage"] is not None, self.describe()
        if shell:
            sent = self.server.sent_back()
            assert f"TESTS PASSED: {name}" in sent, self.describe()
            assert f"LOCK HELD BY {name}" in sent, self.describe()
            assert (stream["progress"] or {}).get("message") == f"starting {name}", stream
        if report:
            text = (stream.get("report") or {}).get("text", "")
            assert f"REPORT {name}: added src/{name}/feature.py" in text, (stream, self.describe())

    def _assert_nothing_else_changed(self, run: str, streams: tuple[str, ...]) -> None:
        branches = set(self.git("for-each-ref", "--format=%(refname:short)",
                                "refs/heads").split())
        assert branches == {"main", *(f"wtr/{run}/{n}" for n in streams)}, branches
        for repo, head in self.initial.items():
            assert git(Path(repo), "rev-parse", "HEAD") == head, f"{repo} moved"
            assert git(Path(repo), "status", "--porcelain") == "", f"{repo} was changed"


def _wtr_argv(ws: Workspace, *args: str) -> list[str]:
    if ws.user is None:
        return [sys.executable, "-m", "worktree_runner", *args]
    python = str(install.deps_venv() / "bin" / "python")
    # -p: keep the environment given (runuser would set HOME to the user's own)
    runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
    return [runuser, "-p", "-u", ws.user, "--", python, "-m", "worktree_runner", *args]


def _environment(ws: Workspace, bin_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if k in ("LANG", "LC_ALL", "TERM", "TZ") or k.startswith("GIT_AUTHOR_")
            or k.startswith("GIT_COMMITTER_")}
    node_dir = str(Path(shutil.which("node") or "/usr/bin/node").parent)
    path = os.pathsep.join([str(bin_dir), node_dir, "/usr/local/bin", "/usr/bin", "/bin"])
    env = {**keep, **IDENTITY, "HOME": str(ws.home), "PATH": path, "PWD": str(ws.caller),
           "USER": ws.user or "root", "LOGNAME": ws.user or "root",
           "XDG_CONFIG_HOME": str(ws.home / ".config"),
           "XDG_CACHE_HOME": str(ws.home / ".cache"),
           "XDG_DATA_HOME": str(ws.home / ".local" / "share"),
           "XDG_STATE_HOME": str(ws.home / ".local" / "state"),
           "TMPDIR": "/tmp", **extra}
    # The checkout under test, whichever copy of worktree_runner the venv has installed.
    env["PYTHONPATH"] = str(ROOT)
    return env


def wtr_in(ws: Workspace, env: Mapping[str, str], timeout: float = 600
           ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``wtr ARGS --repo REPO`` as the workspace's user runs it, from the repository, with
    ``env``: for tests that drive several commands against one model server."""

    def wtr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_wtr_argv(ws, *args, "--repo", str(ws.repo)), cwd=ws.repo,
                              env=dict(env), capture_output=True, text=True, timeout=timeout,
                              check=False)

    return wtr


def run_conformance(preset: str, variant: str, gateway: Gateway,
                    turns: list[dict[str, Any]] | None = None,
                    agent: Mapping[str, Any] | None = None,
                    plan_extra: Mapping[str, Any] | None = None,
                    timeout: float = 600, script: Script | None = None,
                    stream_agents: Mapping[str, Mapping[str, Any]] | None = None) -> Outcome:
    """Run the two-stream plan with ``preset`` in ``variant``; return what happened.
    ``script`` replaces the one made of ``turns``."""
    bin_dir = cli_bin_dir(preset)
    ws = workspace(variant)
    extra = dict(plan_extra or {})
    if variant == "sandbox":
        extra.setdefault("sandbox", True)
    plan_path = ws.root / "plan.yaml"
    plan_path.write_text(yaml.safe_dump(plan_for(preset, agent, extra, stream_agents),
                                        sort_keys=False))
    initial = {str(ws.repo): git(ws.repo, "rev-parse", "HEAD")}
    if ws.decoy is not None:
        initial[str(ws.decoy)] = git(ws.decoy, "rev-parse", "HEAD")
    script = script or Script(turns or standard_turns())
    with ModelServer(script, log_path=ws.root / "requests.jsonl") as server:
        env = _environment(ws, bin_dir, gateway(server.url, ws.home))
        if ws.user is not None:
            subprocess.run(["chown", "-R", f"{ws.user}:{ws.user}", str(ws.home)], check=True)
        done = subprocess.run(_wtr_argv(ws, "run", str(plan_path), "--repo", str(ws.repo)),
                              cwd=ws.caller, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
        shown = subprocess.run(_wtr_argv(ws, "status", "--json", "--repo", str(ws.repo)),
                               cwd=ws.caller, env=env, capture_output=True, text=True,
                               timeout=60, check=False)
    try:
        status = json.loads(shown.stdout)
    except ValueError:
        status = {"run": None, "streams": [], "error": shown.stderr}
    return Outcome(preset, variant, ws, server, done.returncode, done.stdout, done.stderr,
                   status, initial)


def remove_made() -> None:
    for folder in _MADE:
        shutil.rmtree(folder, ignore_errors=True)
    _MADE.clear()
