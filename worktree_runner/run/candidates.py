"""Best-of-N (``attempts: N``): a stream's candidates run side by side, each in its own
worktree and branch and through every gate of a stream; one is kept (docs/best-of-n.md).

Each candidate lives the whole life of a stream (run/stream.py) with a state of its own
under ``streams/<stream>/candidates/<K>/``. When all have ended, the one kept is chosen;
its branch becomes the stream's branch ``wtr/<run>/<stream>`` and its worktree the
stream's worktree. The others are pinned under ``refs/worktree-runner/archive/<run>/
<stream>+attempt-<K>`` and keep their branch and worktree until ``wtr clean``.

Every step is recorded before the next one acts, so a runner killed anywhere resumes:
candidates that ended keep their outcome, living ones are adopted, a recorded choice is
carried out, never made again.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from worktree_runner import faults, git, procs, rescue, statefs
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.events import Event
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.run import recover
from worktree_runner.run.budget import CandidateLedger, Ledger
from worktree_runner.run.guard import Guard
from worktree_runner.run.state import (
    Failure,
    RunRecord,
    RunStore,
    Status,
    StreamRecord,
)
from worktree_runner.run.stream import (
    RunContext,
    StartConflict,
    compose_project_name,
    live_stream,
    run_stream,
    stream_base,
)
from worktree_runner.run.usage import add_usage

SEPARATOR = "+attempt-"  # '+' is never in a stream name: no candidate is mistaken for one
JUDGE_TIMEOUT = 600.0
STOP_POLL = 0.2  # how often a waiting candidate looks whether the run was stopped
ENDED = (Status.SUCCEEDED.value, Status.FAILED.value)


def label(name: str, attempt: int) -> str:
    """A candidate's name in its branch, worktree folder and archive ref."""
    return f"{name}{SEPARATOR}{attempt}"


def candidate_branch(run: str, name: str, attempt: int) -> str:
    return f"wtr/{run}/{label(name, attempt)}"


class CandidateStore(RunStore):
    """The state of one candidate: a run folder of its own, ``candidates/<K>`` in the
    stream's folder, whose record holds the stream (and copies of what it starts from);
    the runner's events about it go to the run's log as ``candidate_*`` events."""

    def __init__(self, parent: RunStore, name: str, attempt: int) -> None:
        super().__init__(parent.stream_dir(name) / "candidates" / str(attempt))
        self.parent = parent
        self.attempt = attempt

    @property
    def run_id(self) -> str:
        return self.parent.run_id

    def _append(self, name: str | None, **data: Any) -> Event | None:
        if name is None:
            return None
        return self.parent._append(f"candidate_{name}", candidate=self.attempt, **data)

    def _dispatch(self, event: Event | None) -> None:
        self.parent._dispatch(event)


@dataclass
class CandidateContext(RunContext):
    """A run context in which the stream's branch and worktree are the candidate's."""

    attempt: int = 1
    candidate_port: int = 0  # from the whole plan (``plan`` here is the candidate's)
    run_ledger: Ledger | None = None  # the run's, which the candidate's spend is told to

    def __post_init__(self) -> None:
        assert self.run_ledger is not None
        self.ledger = CandidateLedger(self.store, self.run_ledger, self.attempt)

    def branch(self, name: str) -> str:
        return candidate_branch(self.run_id, name, self.attempt)

    def worktree(self, name: str) -> Path:
        return self.worktrees_root / self.run_id / label(name, self.attempt)

    def port(self, name: str) -> int:
        return self.candidate_port

    def compose_project(self, name: str) -> str:
        return compose_project_name(self.run_id, label(name, self.attempt))


class _Labelled(dict[str, procs.Agent]):
    """A candidate's running agent, kept in the run's table under the candidate's label:
    a second Ctrl-C stops it with every other agent of the run."""

    def __init__(self, outer: dict[str, procs.Agent], attempt: int) -> None:
        super().__init__()
        self.outer, self.attempt = outer, attempt

    def __setitem__(self, name: str, agent: procs.Agent) -> None:
        self.outer[label(name, self.attempt)] = agent

    def pop(self, name: str, default: Any = None) -> Any:
        return self.outer.pop(label(name, self.attempt), default)


class _WithinStream(Guard):
    """The run's guard as a candidate sees it: the stream as a whole enters and leaves
    it (run_best_of); the candidates only wait for its snapshot."""

    def __init__(self, outer: Guard) -> None:  # (no super().__init__: nothing of its own)
        self.outer = outer

    def started(self) -> None:
        self.outer.started()

    def enter(self, name: str) -> None:
        return None

    def leave(self, name: str, look: bool = True) -> str | None:
        return None


# -- the stream --------------------------------------------------------------------------


def run_best_of(ctx: RunContext, name: str) -> bool:
    """Run the stream's candidates, choose one and make it the stream's; True if one was
    kept. The stream's record says running, then succeeded or failed, as any stream's."""
    record = ctx.store.record.streams[name]
    again = record.failure is not None and record.failure.kind != "interrupted"
    return live_stream(ctx, name, lambda: _best_of(ctx, ctx.plan.stream(name), again),
                       lambda text: _log(ctx, name, text))


def _best_of(ctx: RunContext, stream: Stream, again: bool) -> Failure | None:
    base = _base(ctx, stream)
    if isinstance(base, Failure):
        return base
    _plan_candidates(ctx, stream)
    if _chosen(ctx, stream.name) is None:
        _run_candidates(ctx, stream, base, again)
        entries = _entries(ctx, stream.name)
        ctx.ledger.fold(stream.name, spent(entries), attempts=started(entries))
        if ctx.stop.is_set():
            return Failure("interrupted", "the run was stopped before its candidates finished")
        passing = [c for c in entries if c["status"] == Status.SUCCEEDED.value]
        if not passing:
            return _none_passed(entries)
        winner = choose(ctx, stream, entries, passing)
        _update(ctx, stream.name, winner, chosen=True)
        ctx.store.event("candidate_chosen", stream=stream.name, attempt=winner,
                        by=stream.choose.kind)
        faults.point("candidate_chosen", stream.name)
    _keep(ctx, stream, base)
    return None


def _base(ctx: RunContext, stream: Stream) -> str | Failure:
    """The commit every candidate starts from (one for all: their diffs compare)."""
    record = ctx.store.record.streams[stream.name]
    if record.base_commit:
        return record.base_commit
    base = stream_base(ctx, stream)
    if isinstance(base, StartConflict):
        return Failure("error", f"the results of {', '.join(base.streams)}, which it starts "
                                f"from, conflict in {', '.join(base.files)}; a best-of-N "
                                "stream starts only from results that merge cleanly",
                       base.files)
    ctx.store.update_stream(stream.name, "base_resolved", base_commit=base, checkout="full")
    return base


def _plan_candidates(ctx: RunContext, stream: Stream) -> None:
    """Record every candidate before any is started."""
    if len(_entries(ctx, stream.name)) == stream.attempts:
        return
    entries = [
        {"attempt": k, "branch": candidate_branch(ctx.run_id, stream.name, k),
         "worktree": str(ctx.worktrees_root / ctx.run_id / label(stream.name, k)),
         "agent": stream.candidate_names()[k - 1], "status": Status.PENDING.value, "failure": None,
         "head_commit": None, "diff_stat": None, "chosen": False, "archive": None,
         "ended_at": None, "stopped": False}
        for k in range(1, stream.attempts + 1)
    ]
    ctx.store.update_stream(stream.name, "candidates_planned", candidates=entries)
    faults.point("candidates_planned", stream.name)


def _entries(ctx: RunContext, name: str) -> list[dict[str, Any]]:
    return [dict(entry) for entry in ctx.store.record.streams[name].candidates]


_updating = threading.Lock()


def _update(ctx: RunContext, name: str, attempt: int, **changes: Any) -> None:
    with _updating:
        entries = _entries(ctx, name)
        entries[attempt - 1].update(changes)
        ctx.store.update_stream(name, None, candidates=entries)


def _chosen(ctx: RunContext, name: str) -> int | None:
    return next((c["attempt"] for c in _entries(ctx, name) if c.get("chosen")), None)


# -- the candidates --------------------------------------------------------------------


class _Decided(threading.Event):
    """The candidates' stop: set when the run stops, or when ``choose: first`` has its
    candidate (the others are stopped then, their work archived as any not kept)."""

    def __init__(self, run_stop: threading.Event, first: bool) -> None:
        super().__init__()
        self.run_stop, self.first = run_stop, first

    def is_set(self) -> bool:
        return super().is_set() or self.run_stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            super().wait(STOP_POLL if left is None else min(left, STOP_POLL))
        return True

    @property
    def decided(self) -> bool:
        """Set by a choice, not by the run stopping."""
        return super().is_set() and not self.run_stop.is_set()


def _run_candidates(ctx: RunContext, stream: Stream, base: str, again: bool) -> None:
    """Each candidate not yet ended (with ``again``: not yet passed) runs to its end,
    as many at once as ``max_parallel`` allows; with ``choose: first``, until one passes."""
    attempts = list(range(1, stream.attempts + 1))
    ctx.ledger.split(stream.name, {k: _spent_so_far(ctx, stream.name, k) for k in attempts})
    decided = _Decided(ctx.stop, first=stream.choose.kind == "first")
    if decided.first and _passed(ctx, stream.name):
        decided.set()  # (a runner killed once one had passed: the others are not run again)
    # (the scheduler gave the stream at most max_parallel places: more candidates queue)
    places = min(len(attempts), ctx.store.record.max_parallel)
    with ThreadPoolExecutor(max_workers=places,
                            thread_name_prefix=f"{stream.name}+") as pool:
        running = {pool.submit(_run_candidate, ctx, stream, k, base, again, decided): k
                   for k in attempts}
        for future in as_completed(running):
            attempt, outcome = running[future], future.result()
            log = CandidateStore(ctx.store, stream.name, attempt).log_path(stream.name)
            _log(ctx, stream.name, f"--- candidate {attempt} ended: {outcome} "
                                   f"(its log: {log}) ---")


def _spent_so_far(ctx: RunContext, name: str, attempt: int) -> dict[str, Any] | None:
    """What candidate ``attempt`` spent in the attempts it made before (a resume, a retry)."""
    store = CandidateStore(ctx.store, name, attempt)
    if not statefs.is_file(store.state_path):
        return None
    return store.record.streams[name].usage


def _passed(ctx: RunContext, name: str) -> list[int]:
    return [c["attempt"] for c in _entries(ctx, name) if c["status"] == Status.SUCCEEDED.value]


def _run_candidate(ctx: RunContext, stream: Stream, attempt: int, base: str,
                   again: bool, decided: _Decided) -> str:
    store = CandidateStore(ctx.store, stream.name, attempt)
    cplan = candidate_plan(ctx.plan, stream, attempt)
    if not statefs.is_file(store.state_path):
        store.dir.mkdir(parents=True, exist_ok=True)
        store.save(_first_record(ctx, stream, attempt, base))
    own = store.record.streams[stream.name]
    ran = own.status not in ENDED or _redo(own, again)
    if ran and decided.decided:
        return _not_needed(ctx, stream.name, attempt, store)
    if ran:
        recovered = recover.reconcile(store, cplan, retry_failed=again)
        _update(ctx, stream.name, attempt, status=Status.RUNNING.value, failure=None)
        cctx = CandidateContext(
            repo=ctx.repo, plan=cplan, store=store, base_commit=base,
            worktrees_root=ctx.worktrees_root, bin_dir=ctx.bin_dir,
            guard=_WithinStream(ctx.guard), stop=decided, recovered=recovered,
            copy_patterns=ctx.copy_patterns, bound_agents=ctx.bound_agents,
            agents=_Labelled(ctx.agents, attempt), attempt=attempt,
            candidate_port=ctx.plan.port(stream.name, attempt), run_ledger=ctx.ledger)
        run_stream(cctx, stream.name)
    own = store.record.streams[stream.name]
    if ran and decided.decided and own.failure is not None and own.failure.kind == "interrupted":
        return _not_needed(ctx, stream.name, attempt, store)  # (a failure of its own stays)
    outcome = _record_outcome(ctx, stream.name, attempt, own, ran)
    if decided.first and own.status == Status.SUCCEEDED.value:
        # (set here, before this thread takes a waiting candidate: that one never starts)
        decided.set()
        faults.point("candidate_passed", stream.name)
    return outcome


def _not_needed(ctx: RunContext, name: str, attempt: int, store: CandidateStore) -> str:
    """A candidate stopped (or never started) because another passed first: recorded as
    stopped; what it made stays on its branch and in its worktree, archived as any loser."""
    winner = min(_passed(ctx, name), key=lambda k: _entries(ctx, name)[k - 1]["ended_at"] or 0)
    why = f"stopped: candidate {winner} passed its gates first (choose: first)"
    for agent in procs.stream_agents(store.stream_dir(name)):  # (one a killed runner left)
        agent.stop()
    own = store.record.streams[name]
    store.update_stream(name, None, status=Status.FAILED.value,
                        failure=Failure("interrupted", why))
    _record_outcome(ctx, name, attempt, store.record.streams[name], ran=True)
    _update(ctx, name, attempt, stopped=True)
    ctx.store.event("candidate_stopped", stream=name, candidate=attempt, by=winner)
    return why if own.attempts else f"not started: candidate {winner} passed its gates first"


def _redo(own: StreamRecord, again: bool) -> bool:
    """A candidate that ended failed runs again on a retry, or when it was interrupted."""
    if own.status != Status.FAILED.value:
        return False
    return again or (own.failure is not None and own.failure.kind == "interrupted")


def candidate_plan(plan: Plan, stream: Stream, attempt: int) -> Plan:
    """The plan as one candidate runs it: the stream with the candidate's agent, alone."""
    mine = replace(stream, agent=stream.candidate_agent(attempt), attempts=1, agents=())
    return replace(plan, streams=tuple(mine if s.name == stream.name else s
                                       for s in plan.streams))


def _first_record(ctx: RunContext, stream: Stream, attempt: int, base: str) -> RunRecord:
    """The candidate's record: the stream, from ``base``, and copies of the streams it
    starts from (for its prompt)."""
    run = ctx.store.record
    own = StreamRecord(name=stream.name, branch=candidate_branch(run.run, stream.name, attempt),
                       worktree=None, depends_on=list(stream.depends_on), base_commit=base,
                       budget=run.streams[stream.name].budget)  # (each candidate's own)
    others = {n: StreamRecord.from_json(run.streams[n].to_json())
              for n in (*stream.depends_on, *stream.waits_for)}
    return replace(run, streams={**others, stream.name: own}, merge={}, isolation=[],
                   runner_pid=None)


def _record_outcome(ctx: RunContext, name: str, attempt: int, own: StreamRecord,
                    ran: bool) -> str:
    """Copy how the candidate ended into the stream's record (``ended_at`` only when it
    ran now: ``first`` goes by it, and a resume must not reorder what ended before)."""
    ended_at = _entries(ctx, name)[attempt - 1].get("ended_at")
    base = own.base_commit or ctx.base_commit
    stat = _diff_stat(ctx.repo, base, own.head_commit) if own.head_commit else None
    failure = None if own.failure is None else vars(own.failure).copy()
    status = own.status if own.status in ENDED else Status.FAILED.value
    _update(ctx, name, attempt, status=status, failure=failure, head_commit=own.head_commit,
            diff_stat=stat, ended_at=time.time() if ran or not ended_at else ended_at,
            attempts=own.attempts, exit_code=own.exit_code, usage=own.usage)
    return "passed its gates" if status == Status.SUCCEEDED.value else (
        f"{failure['kind']}: {failure['message']}" if failure else status)


def _diff_stat(repo: git.Repository, base: str, head: str) -> dict[str, int]:
    stats = git.diffstat(repo, base, head)
    return {"files": len(stats),
            "insertions": sum(s.added or 0 for s in stats),
            "deletions": sum(s.deleted or 0 for s in stats)}


def diff_size(entry: dict[str, Any]) -> int:
    stat = entry.get("diff_stat") or {}
    return int(stat.get("insertions", 0)) + int(stat.get("deletions", 0))


def _none_passed(entries: list[dict[str, Any]]) -> Failure:
    kinds = {(c["failure"] or {}).get("kind", "error") for c in entries}
    said = "; ".join(f"candidate {c['attempt']}: " + (
        f"{c['failure']['kind']}: {c['failure']['message']}" if c["failure"] else c["status"])
        for c in entries)
    kind = kinds.pop() if len(kinds) == 1 else "error"
    return Failure(kind, f"none of its {len(entries)} candidates passed its gates ({said})")


# -- choosing ------------------------------------------------------------------------------


class ChoiceFailed(WtrError):
    """The judge could not name a candidate; every candidate is kept as it is."""


def choose(ctx: RunContext, stream: Stream, entries: list[dict[str, Any]],
           passing: list[dict[str, Any]]) -> int:
    """The attempt number of the candidate to keep, among those that passed."""
    if stream.choose.kind == "first":
        return int(min(passing, key=lambda c: (c.get("ended_at") or 0, c["attempt"]))["attempt"])
    if stream.choose.kind == "smallest":
        return int(min(passing, key=lambda c: (diff_size(c), c["attempt"]))["attempt"])
    return _judge(ctx, stream, entries, {c["attempt"] for c in passing})


def _judge(ctx: RunContext, stream: Stream, entries: list[dict[str, Any]],
           passing: set[int]) -> int:
    """Run the judge with every candidate on its stdin (JSON, diffs in files); the number
    it prints last must be one of the candidates that passed."""
    command = stream.choose.command
    assert command is not None
    folder = ctx.store.stream_dir(stream.name) / "judge"
    given = judge_input(ctx, stream, entries, folder)
    statefs.write_text(folder / "input.json", given)
    env = procs.child_env({"WTR_RUN": ctx.run_id, "WTR_STREAM": stream.name,
                           "WTR_JUDGE_INPUT": str(folder / "input.json")}, ctx.bin_dir)
    log = ctx.store.log_path(stream.name)
    _log(ctx, stream.name, f"--- the judge chooses among candidates {sorted(passing)} ---")
    code, out = procs.ask(command, ctx.repo.root, env, given, log, JUDGE_TIMEOUT)
    keep = "every candidate is kept on its branch; fix the judge and 'wtr retry " \
           f"{stream.name}' chooses again"
    if code != 0:
        raise ChoiceFailed(f"the judge exited with code {code} (its errors are in "
                           f"'wtr logs {stream.name}'); {keep}")
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    answer = lines[-1] if lines else ""
    if not answer.isdigit() or int(answer) not in passing:
        said = f"printed {answer[:60]!r}" if answer else "printed nothing"
        raise ChoiceFailed(f"the judge {said}, not the number of a candidate that passed "
                           f"its gates ({', '.join(map(str, sorted(passing)))}); {keep}")
    return int(answer)


def judge_input(ctx: RunContext, stream: Stream, entries: list[dict[str, Any]],
                folder: Path) -> str:
    """What the judge reads on stdin: the stream and every candidate, with its diff in a
    file of ``folder``."""
    base = ctx.store.record.streams[stream.name].base_commit or ctx.base_commit
    candidates = []
    for entry in entries:
        diff_file = None
        if entry["head_commit"]:
            diff_file = folder / f"attempt-{entry['attempt']}.diff"
            text = ctx.repo.git("diff", base, entry["head_commit"], "--", check=False).stdout
            statefs.write_text(diff_file, text)
        candidates.append({
            "attempt": entry["attempt"], "agent": entry["agent"], "branch": entry["branch"],
            "worktree": entry["worktree"], "passed": entry["status"] == Status.SUCCEEDED.value,
            "failure": entry["failure"], "head_commit": entry["head_commit"],
            "diff_stat": entry["diff_stat"], "diff_file": str(diff_file) if diff_file else None,
            "verify": list(stream.verify)})
    return json.dumps({"run": ctx.run_id, "stream": stream.name, "prompt": stream.prompt,
                       "base_commit": base, "candidates": candidates}, indent=2) + "\n"


def _entry(stream: StreamRecord, attempt: int) -> dict[str, Any]:
    """Candidate ``attempt`` of the stream, or a one-line error."""
    if not stream.candidates:
        raise BadInput(f"stream '{stream.name}' has no candidates (it runs one attempt)",
                       hint="leave out --attempt")
    if not 1 <= attempt <= len(stream.candidates):
        raise BadInput(f"stream '{stream.name}' has candidates 1 to {len(stream.candidates)}, "
                       f"not {attempt}")
    return dict(stream.candidates[attempt - 1])


def candidate_store(store: RunStore, name: str, attempt: int) -> CandidateStore:
    """The state folder of candidate ``attempt`` of stream ``name`` (``wtr logs --attempt``)."""
    entry = _entry(store.record.streams[name], attempt)
    found = CandidateStore(store, name, attempt)
    if not statefs.is_file(found.state_path):
        raise BadInput(f"candidate {attempt} of stream '{name}' has not started yet "
                       f"({entry['status']})")
    return found


def candidate_diff(repo: git.Repository, stream: StreamRecord, attempt: int) -> tuple[str, str]:
    """The commits ``wtr diff STREAM --attempt K`` compares: the candidates' base and the
    candidate's tip (its branch, else its archive ref, else the commit recorded)."""
    entry = _entry(stream, attempt)
    tip = next((found for ref in (f"refs/heads/{entry['branch']}", entry.get("archive"))
                if ref and (found := git.ref_commit(repo, ref))), None) or entry["head_commit"]
    if entry.get("chosen") and stream.head_commit:
        tip = stream.head_commit
    if not stream.base_commit or not tip:
        raise BadInput(f"candidate {attempt} of stream '{stream.name}' has no changes to show: "
                       f"it never started ({entry['status']})",
                       hint=f"see 'wtr logs {stream.name}'")
    return stream.base_commit, tip


# -- keeping the winner ------------------------------------------------------------------


def _keep(ctx: RunContext, stream: Stream, base: str) -> None:
    """Archive the others, then make the winner's branch and worktree the stream's. Each
    step is skipped when a runner killed after it had done it."""
    name = stream.name
    winner = _chosen(ctx, name)
    assert winner is not None
    entries = _entries(ctx, name)
    for entry in entries:
        if entry["attempt"] != winner and not entry.get("archive"):
            _archive(ctx, name, entry)
    chosen = entries[winner - 1]
    branch, path = ctx.branch(name), ctx.worktree(name)
    tip = git.ref_commit(ctx.repo, f"refs/heads/{branch}") or chosen["head_commit"]
    own_path = Path(chosen["worktree"])
    if git.ref_commit(ctx.repo, f"refs/heads/{branch}") is None:
        git.switch_worktree(own_path, branch, tip, tip)
        faults.point("candidate_branch", name)
    if own_path.exists() and not path.exists():
        git.move_worktree(ctx.repo, own_path, path)
    if git.ref_commit(ctx.repo, f"refs/heads/{chosen['branch']}") == tip:
        git.delete_branch(ctx.repo, chosen["branch"], tip)  # (the stream's branch holds it)
    _update(ctx, name, winner, worktree=str(path))
    own = CandidateStore(ctx.store, name, winner).record.streams[name]
    ctx.store.update_stream(name, "candidate_kept", worktree=str(path), head_commit=tip,
                            changed_files=git.changed_paths(ctx.repo, base, tip),
                            exit_code=own.exit_code, warnings=own.warnings,
                            usage=spent(entries), attempts=started(entries), prepared=True)


def started(entries: list[dict[str, Any]]) -> int:
    """How many agents the stream started: every attempt of every candidate."""
    return sum(int(entry.get("attempts") or 0) for entry in entries)


def spent(entries: list[dict[str, Any]]) -> dict[str, float | None] | None:
    """What every candidate's agent said it used: the stream's cost is all of theirs."""
    total: dict[str, float | None] | None = None
    for entry in entries:
        total = add_usage(total, entry.get("usage"))
    return total


def _archive(ctx: RunContext, name: str, entry: dict[str, Any]) -> None:
    """Pin a candidate not kept under the archive refs (its branch and worktree stay
    until ``wtr clean``)."""
    tip = git.ref_commit(ctx.repo, f"refs/heads/{entry['branch']}")
    if tip is None:
        return
    ref = rescue.pin_archive(ctx.repo, ctx.run_id, label(name, entry["attempt"]), tip)
    _update(ctx, name, entry["attempt"], archive=ref)


def _log(ctx: RunContext, name: str, text: str) -> None:
    statefs.append_text(ctx.store.log_path(name), text if text.endswith("\n") else text + "\n")
