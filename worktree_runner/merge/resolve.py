"""``wtr merge --resolve-with``: an agent proposes a conflict resolution; checks decide.

The resolver runs in the integration worktree, stopped on the conflict, with a prompt
naming the conflicted files, both sides' commits and the streams' descriptions. Its
result is kept only if every conflict marker is gone from those files, nothing else in
the worktree changed (HEAD included; a file hidden from git by an index flag counts) and
the plan's verify passes on a fresh checkout of the very commit the rebase goes on with
(never in the resolver's own worktree, where a file it hid or an ignored file it left
could make verify pass). Otherwise its attempt is saved under
``refs/worktree-runner/resolver/...`` and the worktree is put back exactly as the conflict
left it (index included), for a human. Ignored files it made are removed either way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from worktree_runner import git, procs, statefs
from worktree_runner.plan.model import Plan
from worktree_runner.presets import PRESETS, Launch, StreamFacts
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


def resolver_argv(spec: str, values: dict[str, str],
                  launch: Launch | None = None) -> list[str] | str:
    """A preset's command line (as its launch gives it), or the user's command (shell
    text), placeholders filled."""
    template: tuple[str, ...] | str = (launch.argv if launch is not None
                                       else PRESETS[spec].argv if spec in PRESETS else spec)
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
    """Every changed or untracked path of ``worktree`` with a digest of its content (index
    flags that hide a file cleared first)."""
    git.unhide(worktree)
    out = git.run_git(["status", "--porcelain", "-z", "--no-renames",
                       "--untracked-files=all"], worktree).stdout
    state = {}
    for entry in filter(None, out.split("\0")):
        path = worktree / entry[3:]
        data = path.read_bytes() if path.is_file() else b""
        state[entry[3:]] = f"{entry[:2]} {hashlib.sha256(data).hexdigest()}"
    return state


def _ignored(worktree: Path) -> set[str]:
    """The ignored files and folders of ``worktree`` (a folder as one entry)."""
    out = git.run_git(["ls-files", "-z", "--others", "--ignored", "--exclude-standard",
                       "--directory"], worktree).stdout
    return {name for name in out.split("\0") if name}


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
        self.index = worktree  # (its index file, found when the attempt starts)

    def run(self, conflict: Conflict) -> Verdict:
        head = git.head_of(self.worktree)
        before, ignored = _state(self.worktree), _ignored(self.worktree)
        self.index = Path(git.run_git(["rev-parse", "--path-format=absolute", "--git-path",
                                       "index"], self.worktree).stdout.strip())
        with tempfile.TemporaryDirectory() as tmp:
            saved_index = Path(tmp) / "index"
            shutil.copy2(self.index, saved_index)
            log = self.store.dir / f"resolver-{conflict.stream}.log"
            code = self._start(conflict, log)
            verdict = self._judge(conflict, head, before, code)
            verdict.log = str(log)
            if not verdict.kept:
                verdict.ref = self._save_attempt(conflict)
                self._put_back(conflict, saved_index, self.index, before)
        left = sorted(_ignored(self.worktree) - ignored)
        if left:  # (the verify of the landing runs in this worktree)
            git.run_git(["--literal-pathspecs", "clean", "-ffdqX", "--", *left], self.worktree)
        return verdict

    def _start(self, conflict: Conflict, log: Path) -> int:
        prompt = self.store.dir / f"resolver-{conflict.stream}.md"
        text = prompt_text(self.repo, self.plan, conflict, self.worktree)
        prompt.write_text(text, encoding="utf-8")
        values = {"prompt_file": str(prompt), "prompt": text, "stream": conflict.stream,
                  "worktree": str(self.worktree), "branch": ""}
        launch = self._launch(conflict)
        env = procs.child_env({**(launch.env if launch else {}),
                               "WTR_RUN": self.store.run_id, "WTR_STREAM": conflict.stream,
                               "WTR_WORKTREE": str(self.worktree),
                               "WTR_PROMPT_FILE": str(prompt),
                               "WTR_CONFLICTED_FILES": "\n".join(conflict.files)})
        process = procs.start(resolver_argv(self.spec, values, launch), self.worktree, env, log)
        try:
            return process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            procs.stop_group(process.pid, process)
            return -9
        finally:
            procs.reap_group(process.pid, process)

    def _launch(self, conflict: Conflict) -> Launch | None:
        """A preset resolver starts as the preset starts a stream's agent (its unattended
        flags, variables and files; for claude, edits refused outside the conflicted
        files), with a folder of its own in the run's state folder."""
        preset = PRESETS.get(self.spec)
        if preset is None:
            return None
        folder = self.store.dir / "resolver" / conflict.stream
        launch = preset.launch(StreamFacts(
            stream=conflict.stream, worktree=self.worktree, state_dir=folder,
            git_dir=git.git_dir_of(self.worktree), git_common_dir=self.repo.common_dir,
            scope=tuple(git.literal_pattern(f) for f in conflict.files),
            wtr_bin=procs.write_wtr_shim(self.store.dir / "bin"), run_state_dir=self.store.dir,
            locks_dir=self.repo.state_dir / "locks", as_root=os.geteuid() == 0))
        for name, text in launch.files.items():
            statefs.write_text(folder / name, text, 0o600, below=folder)
        return launch

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
        failed = self._verify(self._proposal(conflict, head))
        if failed:
            return Verdict(False, f"verify failed on the proposal: {failed}")
        diff = git.run_git(["diff", "--no-ext-diff", "--no-textconv", conflict.onto, "--",
                            *conflict.files], self.worktree).stdout
        return Verdict(True, diff=diff, files=list(conflict.files))

    def _proposal(self, conflict: Conflict, head: str) -> str:
        """The commit ``rebase --continue`` makes of the proposal: the index with the
        conflicted files as the resolver left them, on HEAD."""
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            shutil.copy2(self.index, env["GIT_INDEX_FILE"])
            git.run_git(["add", "--all", "--", *conflict.files], self.worktree, env=env)
            tree = git.run_git(["write-tree"], self.worktree, env=env).stdout.strip()
        return git.commit_tree(self.repo, tree, [head], f"wtr: resolver's proposal for "
                               f"{conflict.stream}")

    def _verify(self, commit: str) -> str | None:
        """The plan's verify on a fresh checkout of ``commit``; the failing command."""
        if not self.plan.verify:
            return None
        path = self.worktree.with_name(f"{self.worktree.name}.verify")
        git.remove_worktree(self.repo, path)  # (one a killed run left)
        git.add_detached_worktree(self.repo, path, commit)
        try:
            log = self.store.dir / "merge.log"
            env = procs.child_env({"WTR_RUN": self.store.run_id, "WTR_WORKTREE": str(path),
                                   "WTR_STATE_DIR": str(self.store.dir)})
            for command in self.plan.verify:
                code = procs.run_logged(command, path, env, log)
                if code != 0:
                    return f"{command} (exit {code})"
            return None
        finally:
            git.remove_worktree(self.repo, path)

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
