"""``wtr merge``: land finished streams on the target, one landing at a time.

Nothing the user or the agents own moves until landing: streams are replayed onto the
integration tip in the object database (replay.py) and, only when a conflict needs a
human or verify needs files on disk, in a detached integration worktree, by rebases given
commit ids (never branch names). The target moves once per landing, as a compare-and-swap
against the tip it had when the landing began. Every intermediate commit is pinned under
``refs/worktree-runner/merge/<run>/<landing>/``. What lands is each stream's net change:
a stream whose history a replay cannot reproduce (merge commits) lands as one commit
holding its net change.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from worktree_runner import faults, git, procs
from worktree_runner.errors import BadInput, Halted, WtrError
from worktree_runner.merge.moves import Move, landing_lock
from worktree_runner.merge.order import merge_order
from worktree_runner.merge.predict import cherry_pick
from worktree_runner.merge.queue import Landing, MergeQueue
from worktree_runner.merge.replay import MemoryReplay
from worktree_runner.merge.resolve import Attempt, Conflict
from worktree_runner.plan import graph
from worktree_runner.plan.model import Plan
from worktree_runner.run.state import RunStore, Status, now

INTEGRATION_DIR = "_merge"
# "rebase": replay every stream in the integration worktree (the path the in-memory replay
# must match; the benchmark's baseline and the tests' reference).
REPLAY_ENV = "WTR_MERGE_REPLAY"


@dataclass(frozen=True)
class Landed:
    target: str
    old: str
    new: str
    merged: list[str]
    left_out: list[str]
    squashed: list[str] = field(default_factory=list)
    resolved_by_rerere: dict[str, list[str]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    verified: int = 0  # verify commands that passed on the merged result
    log: str = ""      # where their output is


class MergeStage:
    def __init__(self, repo: git.Repository, store: RunStore, plan: Plan,
                 resolve_with: str | None = None) -> None:
        self.repo = repo
        self.resolve_with = resolve_with
        self.store = store
        self.plan = plan
        record = store.record
        self.queue = MergeQueue.from_json(record.merge, record.target)
        self.path = Path(record.worktrees_root) / record.run / INTEGRATION_DIR
        self._memory: MemoryReplay | None = None
        self._pins: dict[str, str] = {}
        # The target's checkout was found clean by this process and no command (verify,
        # a resolver agent) has run since: the landing need not look at every file again.
        self._checkout_clean = False

    @property
    def landing(self) -> Landing:
        current = self.queue.open
        if current is None:
            raise BadInput(f"no merge of run {self.store.run_id} is in progress")
        return current

    @property
    def target(self) -> str:
        return self.queue.target

    # -- bookkeeping ---------------------------------------------------------------------

    def save(self, event: str) -> None:
        if event in ("merge_halted", "merge_worktree_added", "merge_landed"):
            self.flush_pins()
        if self.queue.last is not None:
            self.queue.last.updated_at = now()
        self.store.update_run(event, merge=self.queue.to_json())

    def pin_prefix(self, landing: Landing) -> str:
        return f"refs/worktree-runner/merge/{self.store.run_id}/{landing.id}"

    def pin(self, name: str, commit: str) -> None:
        """Pin a commit of the open landing; written with the next halt or landing (a
        landing cut short is started over, so only those need their commits pinned)."""
        self._pins[f"{self.pin_prefix(self.landing)}/{name}"] = commit

    def flush_pins(self) -> None:
        git.update_refs(self.repo, self._pins)
        self._pins.clear()

    def _move_target(self, new: str, old: str, message: str) -> bool:
        """Move the target from ``old`` to ``new`` (compare-and-swap); the move is recorded
        first, for the guard (moves.py), and forgotten if it was refused."""
        move = Move(f"refs/heads/{self.target}", old, new).to_json()
        self.queue.moves.append(move)
        self.store.update_run(merge=self.queue.to_json())
        if git.update_ref(self.repo, move["ref"], new, old, message):
            return True
        self.queue.moves.pop()
        self.store.update_run(merge=self.queue.to_json())
        return False

    def target_tip(self) -> str:
        tip = git.ref_commit(self.repo, f"refs/heads/{self.target}")
        if tip is None:
            raise BadInput(f"target branch '{self.target}' does not exist")
        return tip

    def _next_steps(self) -> list[str]:
        where = f"--repo {self.repo.root} --run {self.store.run_id}"
        return [f"  then: wtr merge --continue {where}", f"  or:   wtr merge --abort {where}"]

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    # -- start ------------------------------------------------------------------------------

    def start(self, skip: Mapping[str, str] | None = None,
              only: Collection[str] | None = None) -> Landed:
        """A new landing of every ready stream but those in ``skip`` (name -> why); with
        ``only``, of those among them only (see merge_order)."""
        current = self.queue.open
        if current is not None and current.state == "halted":
            raise BadInput(
                f"the merge of run {self.store.run_id} is halted at stream '{current.stream}'",
                hint="resolve it and run 'wtr merge --continue', or 'wtr merge --abort'",
            )
        order = merge_order(self.plan, self.store.record, skip, only)
        if not order.streams:
            if order.already:
                raise WtrError(f"nothing new to merge: {', '.join(order.already)} already "
                               f"landed on {self.target}")
            raise WtrError("no stream succeeded, so there is nothing to merge",
                           hint="see 'wtr status'")
        self._refuse_dirty_target()
        tip = self.target_tip()
        if current is not None:  # a landing cut short (kill -9): drop it, start over
            self._discard_worktree(current)
            current.state, current.message = "aborted", "interrupted; started over"
        if self.path.exists():
            git.remove_worktree(self.repo, self.path)
        landing = Landing(id=self.queue.next_id(), streams=order.streams,
                          left_out=order.left_out, reasons=order.reasons, target_start=tip,
                          tip=tip)
        self.queue.landings.append(landing)
        self.queue.held = dict(skip or {})  # (what this landing holds back, and only that)
        self.save("merge_started")
        self.pin("start", tip)
        return self._replay()

    def _refuse_dirty_target(self) -> None:
        checked = git.worktree_of_branch(self.repo, self.target)
        if checked is None:
            return
        dirty = git.tracked_changes(checked.path)
        if dirty:
            raise WtrError(
                f"'{self.target}' is checked out in {checked.path} with uncommitted changes "
                f"({', '.join(dirty[:5])}); the merge would have to move it",
                hint="commit or stash them, then merge again",
            )
        self._checkout_clean = True

    # -- replaying streams ----------------------------------------------------------------

    def _replay(self) -> Landed:
        try:
            for name in self.landing.streams[len(self.landing.merged):]:
                self._merge_stream(name)
        finally:
            self.close()
        verified = self._verify(bisect=True)
        return self._land(verified)

    def _tip(self) -> str:
        return self.landing.tip or self.landing.target_start or self.target_tip()

    def _merge_stream(self, name: str) -> None:
        stream = self.store.record.streams[name]
        base, head = stream.base_commit, stream.head_commit
        if not base or not head:
            raise WtrError(f"stream '{name}' has no recorded base or head commit")
        onto = self._tip()
        self.landing.stream, self.landing.onto = name, onto
        memory = self._memory_replay()
        if base == head:
            pass
        elif memory is not None:
            commits, merges = memory.history(base, head)
            if merges:
                self._replay_net(name, onto, base, head)
            elif not self._replay_in_memory(memory, name, onto, base, head, commits):
                self._replay_in_worktree(name, onto, base, head)
        elif git.has_merge_commits(self.repo, base, head):
            self._replay_net(name, onto, base, head)
        else:
            self._replay_in_worktree(name, onto, base, head)
        self._stream_done(name)

    def _replay_in_worktree(self, name: str, onto: str, base: str, head: str) -> None:
        self._worktree_at(onto)
        result = git.rebase_onto(self.repo, self.path, onto, base, head)
        if not result.ok:
            self._settle_rebase(name, result.stderr)
        self._check_faithful(name, onto, base, head, git.head_of(self.path))

    def _memory_replay(self) -> MemoryReplay | None:
        if os.environ.get(REPLAY_ENV) == "rebase":
            return None
        if self._memory is None:
            self._memory = MemoryReplay(self.repo)
        return self._memory

    def _replay_in_memory(self, memory: MemoryReplay, name: str, onto: str, base: str,
                          head: str, commits: list[str]) -> bool:
        """Replay without a worktree; False when a worktree must decide (a conflict)."""
        replayed = memory.replay(onto, base, head, commits)
        if replayed.tip is None:
            return False
        # One commit replayed is its net change by construction (the same stand-in merge).
        if len(commits) > 1:
            expected = memory.net_tree(onto, base, head)
            if expected is not None and expected != memory.info(replayed.tip).tree:
                self._replay_net(name, onto, base, head)
                return True
        self.landing.tip = replayed.tip
        self.landing.in_memory.append(name)
        return True

    def _check_faithful(self, name: str, onto: str, base: str, head: str, tip: str) -> None:
        """The replayed tree must be the stream's net change applied to ``onto``; where the
        two can be compared and differ, the net change is landed instead."""
        expected = git.net_merge(self.repo, onto, base, head)
        if expected.tree is None or expected.tree == git.tree_of(self.repo, tip):
            self.landing.tip = tip
            return
        self._replay_net(name, onto, base, head)

    def _replay_net(self, name: str, onto: str, base: str, head: str) -> None:
        """Replay ``base..head`` as one commit of its net change (merge commits, and any edit
        made inside one, survive); a conflict halts as any other."""
        subjects = git.subjects(self.repo, base, head, limit=50)
        message = (f"{name}: the stream's net change, as one commit\n\n"
                   f"Its history ({base[:12]}..{head[:12]}) has merge commits, or a replay "
                   "commit by commit would not give its net change.\n\n"
                   + "".join(f"- {line}\n" for line in subjects))
        squash = git.squash_commit(self.repo, base, head, message)
        if name not in self.landing.squashed:
            self.landing.squashed.append(name)
        self.save("merge_stream_squashed")
        memory = self._memory_replay()
        if memory is not None:
            replayed = memory.replay(onto, base, squash)
            if replayed.tip is not None:
                self.landing.tip = replayed.tip
                return
        self._worktree_at(onto)
        result = git.rebase_onto(self.repo, self.path, onto, base, squash)
        if not result.ok:
            self._settle_rebase(name, result.stderr)
        self.landing.tip = git.head_of(self.path)

    def _worktree_at(self, commit: str) -> None:
        """The integration worktree, detached at ``commit`` (made when first needed)."""
        if not self.path.exists():
            git.add_detached_worktree(self.repo, self.path, commit)
            self.landing.worktree = str(self.path)
            self.save("merge_worktree_added")
        elif git.head_of(self.path) != commit:
            git.run_git(["checkout", "--quiet", "--detach", commit], self.path)

    def _settle_rebase(self, name: str, stderr: str, fresh: bool = True) -> None:
        """Drive a stopped rebase on while nothing is unmerged (rerere resolved it); else halt.

        ``fresh``: the rebase has just stopped by itself (not after a human's resolution),
        so conflicts it no longer has were answered by a recorded resolution."""
        if not git.rebase_in_progress(self.path):
            raise WtrError(f"replaying stream '{name}' failed: {stderr.strip()}")
        while git.rebase_in_progress(self.path):
            unmerged = git.unmerged_files(self.path)
            if fresh:
                self._note_recorded_resolutions(name, unmerged)
            fresh = True
            remember = True
            if unmerged:
                self._propose_resolution(name, unmerged)
                remember = False
            result = git.rebase_continue(self.repo, self.path, remember)
            stuck = git.rebase_in_progress(self.path) and not git.unmerged_files(self.path)
            if not result.ok and stuck:
                self._halt_conflict(name, [], result.stderr.strip())

    def _propose_resolution(self, name: str, files: list[str]) -> None:
        """Let the resolver agent (--resolve-with) propose; halt unless it is kept."""
        landing = self.landing
        spec = self.resolve_with or landing.resolve_with
        if not spec:
            self._halt_conflict(name, files)
        landing.resolve_with = spec
        self._checkout_clean = False
        stream = self.store.record.streams[name]
        stopped = git.rebase_stopped_at(self.path) or ""
        conflict = Conflict(name, files, git.head_of(self.path), stopped,
                            stream.base_commit or "")
        number = len(landing.resolver_attempts) + len(landing.agent_resolutions) + 1
        ref = f"refs/worktree-runner/resolver/{self.store.run_id}/{landing.id}/{number}"
        verdict = Attempt(self.repo, self.store, self.plan, self.path, spec or "", ref).run(
            conflict)
        entry = {"stream": name, "files": files, "commit": stopped, "resolver": spec,
                 "log": verdict.log}
        if not verdict.kept:
            landing.resolver_attempts.append({**entry, "reason": verdict.reason,
                                              "ref": verdict.ref})
            self.save("merge_resolution_rejected")
            self._halt_conflict(name, files, extra=[
                f"  the resolver's proposal was not kept: {verdict.reason}",
                f"  its attempt is saved at {verdict.ref} (log: {verdict.log})"])
        git.run_git(["add", "--", *files], self.path)
        landing.agent_resolutions.append({**entry, "diff": verdict.diff})
        self.save("merge_resolved_by_agent")

    def _note_recorded_resolutions(self, name: str, unmerged: list[str]) -> None:
        stopped = git.rebase_stopped_at(self.path)
        if stopped is None:
            return
        conflicts = cherry_pick(self.repo, git.head_of(self.path), stopped).conflicts
        resolved = [f for f in conflicts if f not in unmerged]
        if resolved:
            known = self.landing.resolved_by_rerere.setdefault(name, [])
            known += [f for f in resolved if f not in known]
            self.save("merge_recorded_resolution")

    def _stream_done(self, name: str) -> None:
        landing = self.landing
        self.pin(name, self._tip())
        landing.tips[name] = self._tip()
        landing.merged.append(name)
        landing.stream, landing.conflicted_files, landing.halt = None, [], None
        if self.path.exists():  # in memory, a landing cut short simply starts over
            self.save("merge_stream_done")

    def _halt_conflict(self, name: str, files: list[str], reason: str = "",
                       extra: list[str] | None = None) -> NoReturn:
        commit = git.rebase_stopped_at(self.path)
        subject = self.repo.out("log", "-1", "--format=%h %s", commit) if commit else "?"
        landing = self.landing
        landing.state, landing.halt, landing.stream = "halted", "conflict", name
        landing.conflicted_files, landing.commit = files, commit
        self.save("merge_halted")
        details = [f"  replaying commit {subject}"]
        if files:
            details += ["  conflicted files:", *(f"    {f}" for f in files)]
        elif reason:
            details.append(f"  git says: {reason}")
        details += extra or []
        details += [
            f"  integration worktree: {self.path}",
            f"  resolve there: cd {self.path} ; edit the files ; git add "
            + (" ".join(files) if files else "<files>"),
            *self._next_steps(),
        ]
        raise Halted(f"merge halted: stream '{name}' conflicts with what is already merged "
                     f"onto {self.target}", details)

    # -- verify and land ------------------------------------------------------------------

    def _verify(self, bisect: bool = False) -> bool:
        """The plan's verify on the integration tip; on a failure with ``bisect``, the
        landed sequence is bisected to the first stream whose addition makes it fail."""
        if not self.plan.verify:
            return False
        self._checkout_clean = False
        failed = self._verify_at(self._tip(), self.store.dir / "merge.log")
        if failed is None:
            return True
        landing = self.landing
        if bisect and landing.merged:
            culprit, log = self._bisect()
            landing.broke_verify = culprit
            self._worktree_at(self._tip())
            self._halt_verify(f"verify fails once stream '{culprit}' is added: {failed}", log,
                              [f"  leave it out: wtr merge --skip {culprit} --repo "
                               f"{self.repo.root} --run {self.store.run_id} ; then "
                               "wtr merge --continue"])
        self._halt_verify(f"the plan's verify failed on the merged result: {failed}",
                          self.store.dir / "merge.log", [])
        return False

    def _verify_at(self, commit: str, log: Path) -> str | None:
        """Run verify on ``commit`` in the integration worktree; the failing command."""
        self._worktree_at(commit)
        self.landing.verify_runs += 1
        env = procs.child_env({"WTR_RUN": self.store.run_id, "WTR_WORKTREE": str(self.path),
                               "WTR_STATE_DIR": str(self.store.dir)})
        for command in self.plan.verify:
            code = procs.run_logged(command, self.path, env, log)
            if code != 0:
                return f"{command} (exit {code})"
        return None

    def _bisect(self) -> tuple[str, Path]:
        """The first stream of the landing whose prefix fails verify (the whole sequence
        is known to fail): at most ceil(log2 N) more verify runs."""
        merged = self.landing.merged
        low, high = 0, len(merged) - 1   # the culprit's index lies in [low, high]
        logs: dict[int, Path] = {}
        while low < high:
            middle = (low + high) // 2
            log = self.store.dir / f"merge-verify-{merged[middle]}.log"
            log.unlink(missing_ok=True)
            if self._verify_at(self.landing.tips[merged[middle]], log) is None:
                low = middle + 1
            else:
                high, logs[middle] = middle, log
        return merged[low], logs.get(low, self.store.dir / "merge.log")

    def _halt_verify(self, problem: str, log: Path, extra: list[str]) -> None:
        landing = self.landing
        landing.state, landing.halt, landing.stream = "halted", "verify", None
        landing.message = problem
        self.save("merge_halted")
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        raise Halted(
            f"merge halted: {problem}",
            [f"  its output ({log}):", *(f"    {line}" for line in tail),
             f"  integration worktree: {self.path}",
             "  fix and commit there, or abort; the target has not moved",
             *extra, *self._next_steps()],
        )

    def _land(self, verified: bool) -> Landed:
        """Move the target by compare-and-swap, the one guard against a target that moved
        (checked out or not); a checkout of it must be clean and then follows."""
        landing = self.landing
        old, new = landing.target_start or "", self._tip()
        checked = git.worktree_of_branch(self.repo, self.target)
        clean, self._checkout_clean = self._checkout_clean, False  # (good for one landing)
        if checked is not None and not clean:
            self._refuse_dirty_checkout(checked.path)
        self.pin("landed", new)
        self.flush_pins()
        with landing_lock(self.repo):  # the guard never looks half way (moves.py)
            moved = self._move_target(new, old, f"wtr merge {self.store.run_id}")
            if moved:
                faults.point("landing_checkout", "")
                if checked is not None:
                    self._follow_in_checkout(checked.path, old, new)
        if not moved:
            self._target_moved(old)
        self.store.update_streams(landing.merged, "streams_merged", status=Status.MERGED.value)
        landing.state, landing.halt = "landed", None
        landing.landed_from, landing.landed_to = old, new
        self._discard_worktree(landing)
        self.save("merge_landed")
        return Landed(self.target, old, new, list(landing.merged), list(landing.left_out),
                      list(landing.squashed), dict(landing.resolved_by_rerere),
                      dict(landing.reasons), len(self.plan.verify) if verified else 0,
                      str(self.store.dir / "merge.log"))

    def _refuse_dirty_checkout(self, checkout: Path) -> None:
        dirty = git.tracked_changes(checkout)
        if dirty:
            self._halt_landing(f"'{self.target}' is checked out in {checkout} with "
                               f"uncommitted changes ({', '.join(dirty[:5])})",
                               "commit or stash them")

    def _follow_in_checkout(self, checkout: Path, old: str, new: str) -> None:
        result = git.update_checkout(checkout, old, new)
        if result.ok:
            return
        self._move_target(old, new, f"wtr merge {self.store.run_id}: checkout refused, put back")
        detail = (result.stderr.strip().splitlines() or ["?"])[0]
        self._halt_landing(f"the checkout of '{self.target}' in {checkout} could not follow "
                           f"({detail})", "move the files in the way aside")

    def _halt_landing(self, problem: str, fix: str) -> None:
        landing = self.landing
        landing.state, landing.halt = "halted", "land"
        self.save("merge_halted")
        where = self.path if self.path.exists() else f"commit {self._tip()[:12]}"
        raise Halted(f"merge halted: {problem}",
                     [f"  {fix}; the merged result waits in {where}", *self._next_steps()])

    def _target_moved(self, old: str) -> None:
        now_at = self.target_tip()
        landing = self.landing
        git.delete_refs_under(self.repo, f"{self.pin_prefix(landing)}/landed")
        self._discard_worktree(landing)
        landing.state = "aborted"
        landing.message = f"target moved from {old[:12]} to {now_at[:12]} during the merge"
        self.save("merge_target_moved")
        raise WtrError(
            f"'{self.target}' moved during the merge (from {old[:12]} to {now_at[:12]}); "
            "nothing was changed",
            hint="run 'wtr merge' again to merge onto its new tip",
        )

    # -- continue, abort, undo ---------------------------------------------------------------

    def resume(self) -> Landed:
        current = self.queue.open
        if current is None or current.state != "halted":
            raise BadInput(f"no merge of run {self.store.run_id} is halted",
                           hint="start one with 'wtr merge'")
        halt = current.halt
        if halt != "land" and not self.path.exists():
            raise WtrError(f"the integration worktree {self.path} is gone",
                           hint="run 'wtr merge --abort', then 'wtr merge'")
        current.state = "active"
        if halt == "conflict":
            self._resume_conflict()
            return self._replay()
        if halt == "verify" and current.skipped:
            return self._replay_without_skipped()
        if self.path.exists():  # fixes committed there by hand count
            current.tip = git.head_of(self.path)
        verified = self._verify() if halt == "verify" else bool(self.plan.verify)
        return self._land(verified)

    def skip(self, name: str) -> str:
        """Leave ``name`` (and what depends on it) out of the landing halted on verify."""
        current = self.queue.open
        if current is None or current.state != "halted" or current.halt != "verify":
            raise BadInput(f"no merge of run {self.store.run_id} is halted on verify",
                           hint="--skip leaves out a stream that broke verify")
        if name not in current.merged:
            raise BadInput(f"stream '{name}' is not in the halted merge "
                           f"({', '.join(current.merged)})")
        if name not in current.skipped:
            current.skipped.append(name)
        self.save("merge_stream_skipped")
        dependents = self._dependents(current, current.skipped)
        also = f" and what depends on it ({', '.join(dependents)})" if dependents else ""
        return (f"'{name}'{also} will be left out (broke verify); "
                f"the rest lands with: wtr merge --continue")

    def _dependents(self, landing: Landing, skipped: list[str]) -> list[str]:
        ancestry = graph.Ancestry(self.plan.dependency_graph())
        return [n for n in landing.merged if n not in skipped
                and any(ancestry.waits_for(n, s) for s in skipped)]

    def _replay_without_skipped(self) -> Landed:
        """Start the halted landing over without the skipped streams and their dependents."""
        landing = self.landing
        out = [*landing.skipped, *self._dependents(landing, landing.skipped)]
        for name in out:
            landing.reasons[name] = ("broke verify" if name in landing.skipped
                                     else f"waits for {', '.join(landing.skipped)}")
        landing.left_out = [n for n in self.plan.names
                            if n in landing.left_out or n in out]
        landing.streams = [n for n in landing.streams if n not in out]
        landing.merged, landing.tips, landing.in_memory, landing.squashed = [], {}, [], []
        landing.tip, landing.halt, landing.broke_verify = landing.target_start, None, None
        self.save("merge_restarted")
        return self._replay()

    def _resume_conflict(self) -> None:
        name = self.landing.stream or ""
        if git.rebase_in_progress(self.path):
            unmerged = git.unmerged_files(self.path)
            if unmerged:
                self.landing.state = "halted"
                raise Halted(f"stream '{name}' still has unmerged files: {', '.join(unmerged)}",
                             [f"  resolve them in {self.path} and 'git add' them",
                              *self._next_steps()])
            self._settle_rebase(name, "", fresh=False)
            self.landing.tip = git.head_of(self.path)
            self._stream_done(name)
        elif self._finished_by_hand():
            self.landing.tip = git.head_of(self.path)
            self._stream_done(name)
        else:  # the rebase was aborted by hand: start this stream over from where it began
            self._worktree_at(self.landing.onto or self._tip())
            self.landing.tip = self.landing.onto
            self._merge_stream(name)

    def _finished_by_hand(self) -> bool:
        """HEAD has moved on from where the halted stream began (not back to its own tip)."""
        head, onto = git.head_of(self.path), self.landing.onto or ""
        return head != onto and git.is_ancestor(self.repo, onto, head)

    def abort(self) -> str:
        current = self.queue.open
        if current is None and not self.path.exists():
            return f"no merge of run {self.store.run_id} is in progress; nothing to abort"
        if current is not None:
            self._discard_worktree(current)
            git.delete_refs_under(self.repo, self.pin_prefix(current) + "/")
            current.state, current.halt, current.stream = "aborted", None, None
            current.conflicted_files = []
        elif self.path.exists():
            git.remove_worktree(self.repo, self.path)
        self.save("merge_aborted")
        return (f"merge of run {self.store.run_id} aborted: '{self.target}' and every "
                "stream branch are as they were")

    def _discard_worktree(self, landing: Landing) -> None:
        if self.path.exists() and git.rebase_in_progress(self.path):
            git.run_git(["rebase", "--abort"], self.path, check=False)
        if self.path.exists():
            git.remove_worktree(self.repo, self.path)
        landing.worktree = None

    def undo(self) -> str:
        """Move the target back to where the last landing found it (compare-and-swap)."""
        if self.queue.open is not None:
            raise WtrError(f"a merge of run {self.store.run_id} is in progress",
                           hint="finish it ('wtr merge --continue') or abort it first")
        landing = self.queue.last_landed()
        if landing is None or not landing.landed_to or not landing.landed_from:
            raise BadInput(f"run {self.store.run_id} has no landed merge to undo")
        current, landed, before = self.target_tip(), landing.landed_to, landing.landed_from
        if current != landed:
            raise WtrError(
                f"'{self.target}' moved since the merge landed (it is at {current[:12]}, "
                f"the merge left it at {landed[:12]}); undo refused so that nothing is lost",
            )
        checked = git.worktree_of_branch(self.repo, self.target)
        if checked is not None:
            self._refuse_dirty_target()
        with landing_lock(self.repo):
            if not self._move_target(before, landed, f"wtr merge --undo {self.store.run_id}"):
                raise WtrError(f"'{self.target}' moved while undoing; nothing was changed")
            if checked is not None:
                result = git.update_checkout(checked.path, landed, before)
                if not result.ok:
                    self._move_target(landed, before, f"wtr merge --undo {self.store.run_id}: "
                                                      "checkout refused, put back")
                    raise WtrError(f"could not move {self.target} back: {result.stderr.strip()}")
        self.store.update_streams(landing.merged, "streams_unmerged",
                                  status=Status.SUCCEEDED.value)
        landing.state = "undone"
        self.save("merge_undone")
        return (f"'{self.target}' is back at {before[:12]}; the merged result stays pinned "
                f"at {self.pin_prefix(landing)}/landed")
