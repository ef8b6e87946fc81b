"""``wtr merge --resolve-with``: an agent proposes a conflict resolution; checks decide.

The resolver runs in the integration worktree, stopped on the conflict, with a prompt
naming the conflicted files, both sides' commits and the streams' descriptions. Its
result is kept only if every conflict marker is gone from those files, nothing else in
the worktree changed (HEAD included) and the plan's verify passes there. Otherwise its
attempt is saved under ``refs/worktree-runner/resolver/...`` and the worktree is put
back exactly as the conflict left it (index included), for a human.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from worktree_runner import git, procs
from worktree_runner.plan.model import Plan
from worktree_runner.presets import PRESETS
from worktree_runner.run.prompt import render_command
from worktree_runner.run.state import RunStore

MARKERS = (b"<<<<<<< ", b"=======", b">>>>>>> ")
TIMEOUT = 1800.0


@dataclass
class Verdict:
    kept: bool
    reason: str = ""
    diff: str = ""
    ref: str | None = None
    log: str = ""
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Conflict:
    stream: str
    files: list[str]
    onto: str        # the integration tip the stream is replayed onto
    commit: str      # the stream's commit that stopped
    base: str        # the stream's base commit


def resolver_argv(spec: str, values: dict[str, str]) -> list[str] | str:
    """A preset's command line, or the user's command (shell text), placeholders filled."""
    template: tuple[str, ...] | str = PRESETS[spec].argv if spec in PRESETS else spec
    return render_command(template, values)


def prompt_text(repo: git.Repository, plan: Plan, conflict: Conflict, worktree: Path) -> str:
    theirs = repo.out("log", "-1", "--format=%h %s%n%n%b", conflict.commit)
    ours = repo.out("log", "--format=- %h %s", f"{conflict.base}..{conflict.onto}", "--",
                    *conflict.files) or "(none)"
    described = [f"- {s.name}: {s.description}" for s in plan.streams if s.description]
    return "\n".join([
        f"# Resolve a merge conflict (stream {conflict.stream})",
        "",
        f"You are in {worktree}, a git worktree stopped in the middle of a rebase.",
        "These files have conflict markers; edit ONLY them, so that each keeps the intent",
        "of both sides, and remove every marker (<<<<<<<, =======, >>>>>>>):",
        *(f"- {f}" for f in conflict.files),
        "Do not commit, do not run git add, do not change any other file.",
        "",
        f"## The commit being replayed (stream {conflict.stream})",
        theirs,
        "",
        "## What the other side changed in these files since the stream started",
        ours,
        "",
        "## The streams of this run",
        *(described or ["(no descriptions)"]),
        "",
    ])


def _state(worktree: Path) -> dict[str, str]:
    """Every changed or untracked path of ``worktree`` with a digest of its content."""
    out = git.run_git(["status", "--porcelain", "-z", "--no-renames",
                       "--untracked-files=all"], worktree).stdout
    state = {}
    for entry in filter(None, out.split("\0")):
        path = worktree / entry[3:]
        data = path.read_bytes() if path.is_file() else b""
        state[entry[3:]] = f"{entry[:2]} {hashlib.sha256(data).hexdigest()}"
    return state


def _has_markers(path: Path) -> bool:
    if not path.is_file():
        return False
    return any(line.startswith(MARKERS) for line in path.read_bytes().splitlines())


class Attempt:
    """One resolver run on one conflict stop, and the checks on what it left."""

    def __init__(self, repo: git.Repository, store: RunStore, plan: Plan, worktree: Path,
                 spec: str, ref: str) -> None:
        self.repo, self.store, self.plan = repo, store, plan
        self.worktree, self.spec, self.ref = worktree, spec, ref

    def run(self, conflict: Conflict) -> Verdict:
        head = git.head_of(self.worktree)
        before = _state(self.worktree)
        index = Path(git.run_git(["rev-parse", "--path-format=absolute", "--git-path",
                                  "index"], self.worktree).stdout.strip())
        with tempfile.TemporaryDirectory() as tmp:
            saved_index = Path(tmp) / "index"
            shutil.copy2(index, saved_index)
            log = self.store.dir / f"resolver-{conflict.stream}.log"
            code = self._start(conflict, log)
            verdict = self._judge(conflict, head, before, code)
            verdict.log = str(log)
            if not verdict.kept:
                verdict.ref = self._save_attempt(conflict)
                self._put_back(conflict, saved_index, index, before)
        return verdict

    def _start(self, conflict: Conflict, log: Path) -> int:
        prompt = self.store.dir / f"resolver-{conflict.stream}.md"
        text = prompt_text(self.repo, self.plan, conflict, self.worktree)
        prompt.write_text(text, encoding="utf-8")
        values = {"prompt_file": str(prompt), "prompt": text, "stream": conflict.stream,
                  "worktree": str(self.worktree), "branch": ""}
        env = procs.child_env({"WTR_RUN": self.store.run_id, "WTR_STREAM": conflict.stream,
                               "WTR_WORKTREE": str(self.worktree),
                               "WTR_PROMPT_FILE": str(prompt),
                               "WTR_CONFLICTED_FILES": "\n".join(conflict.files)})
        process = procs.start(resolver_argv(self.spec, values), self.worktree, env, log)
        try:
            return process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            procs.stop_group(process.pid, process)
            return -9
        finally:
            procs.reap_group(process.pid, process)

    def _judge(self, conflict: Conflict, head: str, before: dict[str, str],
               code: int) -> Verdict:
        if code != 0:
            return Verdict(False, f"the resolver exited with code {code}")
        if git.head_of(self.worktree) != head:
            return Verdict(False, "the resolver moved HEAD")
        after = _state(self.worktree)
        changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
        others = sorted(changed - set(conflict.files))
        if others:
            return Verdict(False, f"the resolver changed other files: {', '.join(others)}")
        marked = [f for f in conflict.files if _has_markers(self.worktree / f)]
        if marked:
            return Verdict(False, f"conflict markers remain in {', '.join(marked)}")
        failed = self._verify()
        if failed:
            return Verdict(False, f"verify failed on the proposal: {failed}")
        diff = git.run_git(["diff", conflict.onto, "--", *conflict.files],
                           self.worktree).stdout
        return Verdict(True, diff=diff, files=list(conflict.files))

    def _verify(self) -> str | None:
        log = self.store.dir / "merge.log"
        env = procs.child_env({"WTR_RUN": self.store.run_id,
                               "WTR_WORKTREE": str(self.worktree),
                               "WTR_STATE_DIR": str(self.store.dir)})
        for command in self.plan.verify:
            code = procs.run_logged(command, self.worktree, env, log)
            if code != 0:
                return f"{command} (exit {code})"
        return None

    def _save_attempt(self, conflict: Conflict) -> str:
        commit = git.snapshot_worktree(self.repo, self.worktree,
                                       f"wtr: resolver's attempt for {conflict.stream} "
                                       f"({', '.join(conflict.files)})")
        git.update_ref(self.repo, self.ref, commit or git.head_of(self.worktree))
        return self.ref

    def _put_back(self, conflict: Conflict, saved: Path, index: Path,
                  before: dict[str, str]) -> None:
        """The worktree and index as the conflict left them."""
        shutil.copy2(saved, index)
        git.run_git(["checkout", "-m", "--", *conflict.files], self.worktree)
        tracked = set(git.run_git(["ls-files", "-z"], self.worktree).stdout.split("\0"))
        for path in sorted(set(_state(self.worktree)) - set(before)):
            if path not in tracked:
                (self.worktree / path).unlink(missing_ok=True)
        restore = [p for p in _state(self.worktree) if p not in conflict.files
                   and _state_differs(self.worktree, p, before)]
        if restore:
            git.run_git(["checkout", "--", *restore], self.worktree)


def _state_differs(worktree: Path, path: str, before: dict[str, str]) -> bool:
    return _state(worktree).get(path) != before.get(path)
