"""What a run must leave alone, watched: the user's branches and tags, the main checkout,
the shared hooks and config.

A snapshot is taken when a run starts and compared when a stream ends (a look that could
blame nobody waits until no other stream runs). A change is blamed on a stream only when
that stream was the only one running since the last look; otherwise it is reported on the
run with the streams that could have made it. A branch a person moved in a checkout of
their own (run/by_hand.py) is never blamed: it is reported on the run as theirs. Refs that
moved or vanished keep their old tip under ``refs/worktree-runner/isolation/<run>/``.
"""

from __future__ import annotations

import hashlib
import stat
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worktree_runner import faults, git
from worktree_runner.merge.moves import Move, explains, landing_lock
from worktree_runner.merge.moves import recorded as moves_of
from worktree_runner.run import by_hand
from worktree_runner.run.state import RunStore, now, read_json, write_json_atomic

MESSAGE_CHANGES = 8
RULES = (".gitignore", ".gitattributes")  # files whose change changes how git sees others


@dataclass
class Snapshot:
    refs: dict[str, str]
    head: str
    checkout: dict[str, str]  # path -> "<status code> <size> <mtime_ns>"
    hooks: dict[str, str]  # file under the hooks folder -> "<mode> <sha256>"
    config: str  # sha256 of the shared config file
    moves: int = 0  # how many moves of the run's landings (merge/moves.py) it saw made
    taken: int = 0  # when (ns since the epoch), just before the checkout was read

    @classmethod
    def from_json(cls, data: Any) -> Snapshot | None:
        try:
            return cls(**data)
        except TypeError:
            return None


def _digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _stamp(path: Path) -> str:
    try:
        info = path.lstat()
    except OSError:
        return "gone"
    return f"{info.st_size} {info.st_mtime_ns}"


def _hooks(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.rglob("*")):
        try:
            mode = path.lstat().st_mode
        except OSError:  # removed while we looked
            continue
        if not stat.S_ISDIR(mode):
            found[str(path.relative_to(folder))] = f"{mode:o} {_digest(path)}"
    return found


def take(repo: git.Repository, run_id: str, hooks: Path | None = None,
         index_copy: Path | None = None) -> Snapshot:
    taken = time.time_ns()
    own = f"refs/heads/wtr/{run_id}/"
    refs = {name: sha for name, sha in git.user_refs(repo).items() if not name.startswith(own)}
    checkout = {path: f"{code} {_stamp(repo.root / path)}"
                for code, path in git.status_entries(repo.root, index_copy)}
    return Snapshot(refs=refs, head=git.main_checkout_head(repo), checkout=checkout,
                    hooks=_hooks(hooks or git.hooks_dir(repo)),
                    config=_digest(repo.common_dir / "config"), taken=taken)


def _without(entries: dict[str, str], paths: set[str]) -> dict[str, str]:
    return {path: entry for path, entry in entries.items() if path not in paths}


def _untouched_since(path: Path, when: int) -> bool:
    try:
        return path.lstat().st_ctime_ns < when
    except OSError:
        return False


def _short(ref: str) -> str:
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix):
            return f"{kind} {ref.removeprefix(prefix)}"
    return ref


def ref_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changes = []
    for ref in sorted(before.keys() | after.keys()):
        old, new = before.get(ref), after.get(ref)
        if old == new:
            continue
        if old is None:
            changes.append(f"{_short(ref)} created at {new and new[:12]}")
        elif new is None:
            changes.append(f"{_short(ref)} deleted (was {old[:12]})")
        else:
            changes.append(f"{_short(ref)} moved from {old[:12]} to {new[:12]}")
    return changes


def _entry_changes(before: dict[str, str], after: dict[str, str], what: str) -> list[str]:
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        verb = "added" if old is None else "removed" if new is None else "changed"
        changes.append(f"{what}{key} {verb}")
    return changes


def _checkout_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"main checkout: {path} {_checkout_verb(before.get(path), after.get(path))}"
            for path in sorted(before.keys() | after.keys()) if before.get(path) != after.get(path)]


def _checkout_verb(old: str | None, new: str | None) -> str:
    """What happened to a file of the main checkout, told by its status code before and
    after (a clean file has none): a tracked file edited is "modified", not "added"."""
    if old is not None and new is not None:
        return "changed"
    code = (new or old or "")[:2]  # "XY <size> <mtime>", X or Y a space when unchanged
    if new is None:
        return "removed" if code == "??" or "A" in code else "restored"
    if code == "??" or "A" in code:
        return "added"
    return "deleted" if "D" in code else "modified"


def differences(repo: git.Repository, before: Snapshot, after: Snapshot,
                hooks: Path | None = None) -> list[str]:
    changes = ref_changes(before.refs, after.refs)
    if before.head != after.head:
        changes.append(f"the main checkout's HEAD changed from {before.head} to {after.head}")
    changes += _checkout_changes(before.checkout, after.checkout)
    if before.hooks != after.hooks:
        hooks = hooks or git.hooks_dir(repo)
        shown = hooks.relative_to(repo.root) if hooks.is_relative_to(repo.root) else hooks
        changes += _entry_changes(before.hooks, after.hooks, f"{shown}/")
    if before.config != after.config:
        changes.append(".git/config changed")
    return changes


@dataclass
class Guard:
    """The snapshot of a run, and which streams could have changed what it watches."""

    repo: git.Repository
    store: RunStore
    # Streams that cannot write outside their worktree (sandboxed): never suspects.
    contained: frozenset[str] = frozenset()
    _active: set[str] = field(default_factory=set)
    _touched: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # who runs, who ran
    # One look at a time. The run's first look holds only this one: streams enter and
    # make their worktrees meanwhile (a minute at a million files), and wait for it in
    # ``started`` before anything of the plan runs.
    _looking: threading.Lock = field(default_factory=threading.Lock)
    _hooks_dir: Path | None = None
    _starting: threading.Thread | None = None
    _failed: BaseException | None = None

    def _take(self) -> Snapshot:
        # The hooks folder as git found it when the run started: an agent that points
        # core.hooksPath elsewhere changes the config, which is watched too.
        if self._hooks_dir is None:
            self._hooks_dir = git.hooks_dir(self.repo)
        with landing_lock(self.repo):  # never half way through a landing
            snapshot = take(self.repo, self.store.run_id, self._hooks_dir, self.index_copy)
            snapshot.moves = len(moves_of(self.store.record.merge))
        return snapshot

    @property
    def path(self) -> Path:
        return self.store.dir / "guard.json"

    @property
    def index_copy(self) -> Path:
        """Where the looks keep their copy of the main checkout's index (status_entries)."""
        return self.store.dir / "guard-index"

    def close(self) -> None:
        """The run is over: its copy of the index is not needed (a resume makes another)."""
        git.drop_index_copy(self.index_copy)

    def start(self) -> None:
        """Take the run's snapshot; on a resume, first report what changed unwatched."""
        with self._looking:
            faults.point("guard_snapshot", "")
            stored = Snapshot.from_json(read_json(self.path))
            if stored is None:
                write_json_atomic(self.path, asdict(self._take()))
            else:
                self._compare(stored, suspects=set(), stream=None)

    def start_soon(self) -> None:
        """``start`` beside the streams' preparation (worktrees, branches of this run: none
        of it watched), which must call ``started`` before anything of the plan runs."""
        def take_it() -> None:
            try:
                self.start()
            except BaseException as exc:  # raised again by ``started``, in every stream
                self._failed = exc
        self._starting = threading.Thread(target=take_it, name="guard", daemon=True)
        self._starting.start()

    def started(self) -> None:
        """Wait for the snapshot ``start_soon`` takes; its error, if it failed."""
        self._snapshot_taken()
        if self._failed is not None:
            raise self._failed

    def _snapshot_taken(self) -> None:
        if self._starting is not None:
            self._starting.join()

    def enter(self, name: str) -> None:
        with self._lock:
            self._active.add(name)
            if name not in self.contained:
                self._touched.add(name)

    def leave(self, name: str, look: bool = True) -> str | None:
        """Look again as ``name`` ends; what it changed, if it alone could have.
        Without ``look`` (the run is stopping), the next look covers this stream too.

        A look that could blame nobody (other streams ran meanwhile) while others still
        run is put off: the look made when the last of them ends reports the same changes
        with the same suspects, and a run of many parallel streams reads the user's
        checkout about once instead of once per stream."""
        # A stream that ends before the run's snapshot is taken (it failed at once) must
        # not look first: it would be blamed for what changed while no runner ran.
        self._snapshot_taken()
        with self._lock:
            self._active.discard(name)
            if not look:
                return None
            suspects = set(self._touched)
            if suspects != {name} and self._active - self.contained:
                return None
            self._touched = self._active - self.contained
            with self._looking:
                stored = Snapshot.from_json(read_json(self.path))
                if stored is None:
                    write_json_atomic(self.path, asdict(self._take()))
                    return None
                blamed = name if suspects == {name} else None
                changes = self._compare(stored, suspects, blamed)
        if not changes or blamed is None:
            return None
        listed = "; ".join(changes[:MESSAGE_CHANGES])
        extra = len(changes) - MESSAGE_CHANGES
        more = f" and {extra} more" if extra > 0 else ""
        return (f"changed what lies outside its worktree: {listed}{more}; if you made that "
                f"change yourself, 'wtr accept {name}'")

    def _compare(self, before: Snapshot, suspects: set[str], stream: str | None) -> list[str]:
        after = self._take()
        refs = self._expected_refs(before, after)
        hand = self._by_hand(refs, before, after)
        ruled = self._ruled_by_landings(before, after) | hand.paths
        expected = replace(before, refs={**refs, **hand.refs}, head=hand.head,
                           checkout=_without(before.checkout, ruled))
        changes = differences(self.repo, expected,
                              replace(after, checkout=_without(after.checkout, ruled)),
                              self._hooks_dir)
        if hand.changes:
            self._record_by_hand(refs, after.refs, hand)
        if changes:
            self._record(expected.refs, after.refs, changes, suspects, stream)
        write_json_atomic(self.path, asdict(after))
        return changes

    def _by_hand(self, refs: dict[str, str], before: Snapshot, after: Snapshot) -> ByHand:
        """What a person did in a checkout of their own since the last look (run/by_hand.py):
        branches they moved there, the files of the main checkout their commits there took
        out of ``git status``, the branch they switched the main checkout to. Never blamed
        on a stream: reported on the run."""
        head = before.head
        hand = ByHand(head=head)
        root = Path(self.store.record.worktrees_root)
        gone = before.checkout.keys() - after.checkout.keys()
        for ref in sorted(refs.keys() & after.refs.keys()):
            old, new = refs[ref], after.refs[ref]
            where = old != new and by_hand.moved_by_hand(self.repo, ref, old, new, root)
            if not where:
                continue
            hand.refs[ref] = new
            hand.changes += ref_changes({ref: old}, {ref: new})
            hand.checkouts.add(str(where))
            if where.resolve() == self.repo.root.resolve():
                hand.paths |= gone & set(git.changed_paths(self.repo, old, new))
        if after.head != head and by_hand.switched_by_hand(self.repo, head, after.head):
            hand.changes.append(f"the main checkout's HEAD changed from {head} to {after.head}")
            hand.checkouts.add(str(self.repo.root))
            hand.head = after.head
        return hand

    def _expected_refs(self, before: Snapshot, after: Snapshot) -> dict[str, str]:
        """The refs as wtr left them: as the last look found them, moved by exactly the
        moves this run's landings and undo made since, in order; a change that is still
        not explained may be another run's landing, or a running run's own branch."""
        refs = dict(before.refs)
        for move in moves_of(self.store.record.merge)[before.moves:after.moves]:
            if refs.get(move.ref) == move.old:
                refs[move.ref] = move.new
        unexplained = sorted(ref for ref in refs.keys() | after.refs.keys()
                             if refs.get(ref) != after.refs.get(ref))
        others = self._other_runs_moves() if unexplained else []
        for ref in unexplained:
            new = after.refs.get(ref)
            if not (self._other_runs_branch(ref) or explains(others, ref, refs.get(ref), new)):
                continue
            if new is None:
                del refs[ref]
            else:
                refs[ref] = new
        return refs

    def _ruled_by_landings(self, before: Snapshot, after: Snapshot) -> set[str]:
        """Files of the main checkout that git sees otherwise (untracked or ignored, clean
        or not) only because a landing of its branch changed the rules it reads them by
        (.gitignore, .gitattributes): the files themselves were not written since the
        last look. (A landing's own changes to files are never seen: it moves the branch
        and the checkout while the guard cannot look.)"""
        moves = [move for move in moves_of(self.store.record.merge)[before.moves:after.moves]
                 if move.ref == before.head]
        if not any(Path(path).name in RULES for move in moves
                   for path in git.changed_paths(self.repo, move.old, move.new)):
            return set()
        return {path for path in before.checkout.keys() ^ after.checkout.keys()
                if _untouched_since(self.repo.root / path, before.taken)}

    def _other_runs_branch(self, ref: str) -> bool:
        if not ref.startswith("refs/heads/wtr/"):
            return False
        run = ref.removeprefix("refs/heads/wtr/").split("/", 1)[0]
        state = read_json(self.store.dir.parent / run / "state.json")
        return isinstance(state, dict) and state.get("state") == "running"

    def _other_runs_moves(self) -> list[Move]:
        """What the landings of the repository's other runs recorded (read only when this
        run's own moves do not explain a change)."""
        found = []
        for folder in sorted(self.store.dir.parent.iterdir()):
            if folder != self.store.dir:
                state = read_json(folder / "state.json")
                found += moves_of(state.get("merge") if isinstance(state, dict) else None)
        return found

    def _record(self, before: dict[str, str], after: dict[str, str], changes: list[str],
                suspects: set[str], stream: str | None) -> None:
        self._keep_old_tips(before, after)
        entry = {"at": now(), "stream": stream, "suspects": sorted(suspects), "changes": changes}
        self.store.update_run("isolation_breach", isolation=[*self.store.record.isolation, entry])

    def _record_by_hand(self, before: dict[str, str], after: dict[str, str],
                        hand: ByHand) -> None:
        self._keep_old_tips({ref: before[ref] for ref in hand.refs}, after)
        entry = {"at": now(), "stream": None, "suspects": [], "changes": hand.changes,
                 "by_hand": sorted(hand.checkouts)}
        self.store.update_run("moved_by_hand", isolation=[*self.store.record.isolation, entry])

    def _keep_old_tips(self, before: dict[str, str], after: dict[str, str]) -> None:
        number = len(self.store.record.isolation) + 1
        for ref, old in before.items():
            if after.get(ref) != old:
                git.update_ref(self.repo, f"refs/worktree-runner/isolation/{self.store.run_id}/"
                                          f"{number}/{ref.removeprefix('refs/')}", old)


@dataclass
class ByHand:
    """What a person did by hand since the last look (``Guard._by_hand``)."""

    head: str  # what the main checkout's HEAD names, as the person left it
    refs: dict[str, str] = field(default_factory=dict)  # branch -> the tip they moved it to
    paths: set[str] = field(default_factory=set)  # files their commits took out of status
    changes: list[str] = field(default_factory=list)
    checkouts: set[str] = field(default_factory=set)  # where they did it

