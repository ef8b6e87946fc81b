"""``wtr merge``: replay finished streams onto the target in an integration worktree.

Nothing the user or the agents own moves until landing: the integration worktree is
detached, rebases are given commit ids (never branch names), and the target moves once,
as a compare-and-swap against the tip it had when the merge began. Every intermediate
commit is pinned under ``refs/worktree-runner/merge/<run>/<attempt>/``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import git, procs
from worktree_runner.errors import BadInput, Halted, WtrError
from worktree_runner.merge.order import merge_order
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import RunStore, Status, known_fields, now

INTEGRATION_DIR = "_merge"


@dataclass
class MergeState:
    """The ``merge`` section of a run's state (documented fields first, then the runner's own)."""

    state: str = "none"
    target: str = ""
    worktree: str | None = None
    stream: str | None = None
    conflicted_files: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    attempt: int = 0
    active: bool = False
    order: list[str] = field(default_factory=list)
    target_start: str | None = None
    halt: str | None = None  # conflict | verify | land
    commit: str | None = None
    onto: str | None = None
    landed_from: str | None = None
    landed_to: str | None = None
    message: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any], target: str) -> MergeState:
        state = cls(**known_fields(cls, data))
        state.target = state.target or target
        return state


@dataclass(frozen=True)
class Landed:
    target: str
    old: str
    new: str
    merged: list[str]
    left_out: list[str]
    verified: int = 0  # verify commands that passed on the merged result
    log: str = ""      # where their output is


class MergeStage:
    def __init__(self, repo: git.Repository, store: RunStore, plan: Plan) -> None:
        self.repo = repo
        self.store = store
        self.plan = plan
        record = store.record
        self.ms = MergeState.from_json(record.merge, record.target)
        self.path = Path(record.worktrees_root) / record.run / INTEGRATION_DIR

    # -- bookkeeping ---------------------------------------------------------------------

    def save(self, event: str) -> None:
        self.ms.updated_at = now()
        self.store.update_run(event, merge=asdict(self.ms))

    def pin_prefix(self) -> str:
        return f"refs/worktree-runner/merge/{self.store.run_id}/{self.ms.attempt}"

    def pin(self, name: str, commit: str) -> None:
        git.update_ref(self.repo, f"{self.pin_prefix()}/{name}", commit)

    def target_tip(self) -> str:
        tip = git.ref_commit(self.repo, f"refs/heads/{self.ms.target}")
        if tip is None:
            raise BadInput(f"target branch '{self.ms.target}' does not exist")
        return tip

    def _next_steps(self) -> list[str]:
        where = f"--repo {self.repo.root} --run {self.store.run_id}"
        return [f"  then: wtr merge --continue {where}", f"  or:   wtr merge --abort {where}"]

    # -- start ------------------------------------------------------------------------------

    def start(self) -> Landed:
        if self.ms.state == "halted":
            raise BadInput(
                f"the merge of run {self.store.run_id} is halted at stream '{self.ms.stream}'",
                hint="resolve it and run 'wtr merge --continue', or 'wtr merge --abort'",
            )
        order = merge_order(self.plan, self.store.record)
        if not order.streams:
            if order.already:
                raise WtrError(f"nothing new to merge: {', '.join(order.already)} already "
                               f"landed on {self.ms.target}")
            raise WtrError("no stream succeeded, so there is nothing to merge",
                           hint="see 'wtr status'")
        self._refuse_dirty_target()
        tip = self.target_tip()
        if self.path.exists() or self.ms.active:
            self._discard_worktree()
        self.ms = MergeState(target=self.ms.target, attempt=self.ms.attempt + 1, active=True,
                             order=order.streams, left_out=order.left_out, target_start=tip,
                             worktree=str(self.path))
        self.save("merge_started")
        self.pin("start", tip)
        git.add_detached_worktree(self.repo, self.path, tip)
        return self._replay()

    def _refuse_dirty_target(self) -> None:
        checked = git.worktree_of_branch(self.repo, self.ms.target)
        if checked is None:
            return
        dirty = git.tracked_changes(checked.path)
        if dirty:
            raise WtrError(
                f"'{self.ms.target}' is checked out in {checked.path} with uncommitted changes "
                f"({', '.join(dirty[:5])}); the merge would have to move it",
                hint="commit or stash them, then merge again",
            )

    # -- replaying streams ----------------------------------------------------------------

    def _replay(self) -> Landed:
        for name in self.ms.order[len(self.ms.merged):]:
            self._merge_stream(name)
        self._verify()
        return self._land()

    def _merge_stream(self, name: str) -> None:
        stream = self.store.record.streams[name]
        base, head = stream.base_commit, stream.head_commit
        if not base or not head:
            raise WtrError(f"stream '{name}' has no recorded base or head commit")
        onto = git.head_of(self.path)
        self.ms.stream, self.ms.onto = name, onto
        self.save("merge_stream_started")
        if base != head:
            result = git.rebase_onto(self.repo, self.path, onto, base, head)
            if not result.ok:
                self._settle_rebase(name, result.stderr)
        self._stream_done(name)

    def _settle_rebase(self, name: str, stderr: str) -> None:
        """Drive a stopped rebase on while nothing is unmerged (rerere resolved it); else halt."""
        if not git.rebase_in_progress(self.path):
            raise WtrError(f"replaying stream '{name}' failed: {stderr.strip()}")
        while git.rebase_in_progress(self.path):
            unmerged = git.unmerged_files(self.path)
            if unmerged:
                self._halt_conflict(name, unmerged)
            result = git.rebase_continue(self.repo, self.path)
            stuck = git.rebase_in_progress(self.path) and not git.unmerged_files(self.path)
            if not result.ok and stuck:
                self._halt_conflict(name, [], result.stderr.strip())

    def _stream_done(self, name: str) -> None:
        tip = git.head_of(self.path)
        self.pin(name, tip)
        self.ms.merged.append(name)
        self.ms.stream, self.ms.conflicted_files, self.ms.halt = None, [], None
        self.save("merge_stream_done")

    def _halt_conflict(self, name: str, files: list[str], reason: str = "") -> None:
        commit = git.rebase_stopped_at(self.path)
        subject = self.repo.out("log", "-1", "--format=%h %s", commit) if commit else "?"
        self.ms.state, self.ms.halt, self.ms.stream = "halted", "conflict", name
        self.ms.conflicted_files, self.ms.commit = files, commit
        self.save("merge_halted")
        details = [f"  replaying commit {subject}"]
        if files:
            details += ["  conflicted files:", *(f"    {f}" for f in files)]
        elif reason:
            details.append(f"  git says: {reason}")
        details += [
            f"  integration worktree: {self.path}",
            f"  resolve there: cd {self.path} ; edit the files ; git add "
            + (" ".join(files) if files else "<files>"),
            *self._next_steps(),
        ]
        raise Halted(f"merge halted: stream '{name}' conflicts with what is already merged "
                     f"onto {self.ms.target}", details)

    # -- verify and land ------------------------------------------------------------------

    def _verify(self) -> None:
        log = self.store.dir / "merge.log"
        env = procs.child_env({"WTR_RUN": self.store.run_id, "WTR_WORKTREE": str(self.path),
                               "WTR_STATE_DIR": str(self.store.dir)})
        for command in self.plan.verify:
            code = procs.run_logged(command, self.path, env, log)
            if code != 0:
                self.ms.state, self.ms.halt, self.ms.stream = "halted", "verify", None
                self.ms.message = f"verify command failed (exit {code}): {command}"
                self.save("merge_halted")
                raise Halted(
                    f"merge halted: the plan's verify failed on the merged result: {command}",
                    [f"  its output: {log}", f"  integration worktree: {self.path}",
                     "  fix and commit there, or abort; the target has not moved",
                     *self._next_steps()],
                )

    def _land(self) -> Landed:
        old, new = self.ms.target_start or "", git.head_of(self.path)
        if self.target_tip() != old:
            self._target_moved(old)
        checked = git.worktree_of_branch(self.repo, self.ms.target)
        if checked is not None:
            self._land_in_checkout(checked.path, new)
        elif not git.update_ref(self.repo, f"refs/heads/{self.ms.target}", new, old,
                                f"wtr merge {self.store.run_id}"):
            self._target_moved(old)
        self.pin("landed", new)
        self.store.update_streams(self.ms.merged, "streams_merged", status=Status.MERGED.value)
        self.ms.state, self.ms.active, self.ms.halt = "landed", False, None
        self.ms.landed_from, self.ms.landed_to = old, new
        self._discard_worktree()
        self.save("merge_landed")
        return Landed(self.ms.target, old, new, list(self.ms.merged), list(self.ms.left_out),
                      len(self.plan.verify), str(self.store.dir / "merge.log"))

    def _land_in_checkout(self, checkout: Path, new: str) -> None:
        dirty = git.tracked_changes(checkout)
        if dirty:
            self.ms.state, self.ms.halt = "halted", "land"
            self.save("merge_halted")
            raise Halted(
                f"merge halted: '{self.ms.target}' is checked out in {checkout} with "
                f"uncommitted changes ({', '.join(dirty[:5])})",
                ["  commit or stash them; the merged result waits in "
                 f"{self.path}", *self._next_steps()],
            )
        result = git.merge_ff_only(self.repo, checkout, new)
        if not result.ok:
            if self.target_tip() != self.ms.target_start:
                self._target_moved(self.ms.target_start or "")
            raise WtrError(f"could not fast-forward {self.ms.target} in {checkout}: "
                           f"{result.stderr.strip()}")

    def _target_moved(self, old: str) -> None:
        now_at = self.target_tip()
        self._discard_worktree()
        self.ms.state, self.ms.active = "aborted", False
        self.ms.message = f"target moved from {old[:12]} to {now_at[:12]} during the merge"
        self.save("merge_target_moved")
        raise WtrError(
            f"'{self.ms.target}' moved during the merge (from {old[:12]} to {now_at[:12]}); "
            "nothing was changed",
            hint="run 'wtr merge' again to merge onto its new tip",
        )

    # -- continue, abort, undo ---------------------------------------------------------------

    def resume(self) -> Landed:
        if self.ms.state != "halted":
            raise BadInput(f"no merge of run {self.store.run_id} is halted",
                           hint="start one with 'wtr merge'")
        if not self.path.exists():
            raise WtrError(f"the integration worktree {self.path} is gone",
                           hint="run 'wtr merge --abort', then 'wtr merge'")
        halt, self.ms.state = self.ms.halt, "none"
        if halt == "conflict":
            self._resume_conflict()
            return self._replay()
        if halt == "verify":
            self._verify()
        return self._land()

    def _resume_conflict(self) -> None:
        name = self.ms.stream or ""
        if git.rebase_in_progress(self.path):
            unmerged = git.unmerged_files(self.path)
            if unmerged:
                self.ms.state = "halted"
                raise Halted(f"stream '{name}' still has unmerged files: {', '.join(unmerged)}",
                             [f"  resolve them in {self.path} and 'git add' them",
                              *self._next_steps()])
            self._settle_rebase(name, "")
            self._stream_done(name)
        elif self._finished_by_hand():
            self._stream_done(name)
        else:  # the rebase was aborted by hand: start this stream over from where it began
            git.run_git(["checkout", "--quiet", "--detach", self.ms.onto or "HEAD"], self.path)
            self._merge_stream(name)

    def _finished_by_hand(self) -> bool:
        """HEAD has moved on from where the halted stream began (not back to its own tip)."""
        head, onto = git.head_of(self.path), self.ms.onto or ""
        return head != onto and git.is_ancestor(self.repo, onto, head)

    def abort(self) -> str:
        if not self.ms.active and not self.path.exists():
            return f"no merge of run {self.store.run_id} is in progress; nothing to abort"
        self._discard_worktree()
        git.delete_refs_under(self.repo, self.pin_prefix() + "/")
        self.ms.state, self.ms.active, self.ms.halt = "aborted", False, None
        self.ms.stream, self.ms.conflicted_files, self.ms.merged = None, [], []
        self.ms.worktree = None
        self.save("merge_aborted")
        return (f"merge of run {self.store.run_id} aborted: '{self.ms.target}' and every "
                "stream branch are as they were")

    def _discard_worktree(self) -> None:
        if self.path.exists() and git.rebase_in_progress(self.path):
            git.run_git(["rebase", "--abort"], self.path, check=False)
        git.remove_worktree(self.repo, self.path)
        self.ms.worktree = None

    def undo(self) -> str:
        if self.ms.state != "landed" or not self.ms.landed_to or not self.ms.landed_from:
            raise BadInput(f"run {self.store.run_id} has no landed merge to undo")
        current, landed, before = self.target_tip(), self.ms.landed_to, self.ms.landed_from
        if current != landed:
            raise WtrError(
                f"'{self.ms.target}' moved since the merge landed (it is at {current[:12]}, "
                f"the merge left it at {landed[:12]}); undo refused so that nothing is lost",
            )
        checked = git.worktree_of_branch(self.repo, self.ms.target)
        if checked is not None:
            self._refuse_dirty_target()
            result = git.reset_keep(checked.path, before)
            if not result.ok:
                raise WtrError(f"could not move {self.ms.target} back: {result.stderr.strip()}")
        elif not git.update_ref(self.repo, f"refs/heads/{self.ms.target}", before, landed,
                                f"wtr merge --undo {self.store.run_id}"):
            raise WtrError(f"'{self.ms.target}' moved while undoing; nothing was changed")
        self.store.update_streams(self.ms.merged, "streams_unmerged",
                                  status=Status.SUCCEEDED.value)
        self.ms.state = "undone"
        self.save("merge_undone")
        return (f"'{self.ms.target}' is back at {before[:12]}; the merged result stays pinned "
                f"at {self.pin_prefix()}/landed")
