"""When will the run finish? An estimate for ``status`` (``eta``, ``eta_basis``).

Each stream still to finish is timed by the median duration of streams of the same name in
earlier runs of this repository, else by the median of the streams already finished in
this run. The remaining streams are then scheduled as the runner would (dependencies and
conflicts first, at most ``max_parallel`` at a time, longest remaining chain first); the
run ends when the last of them does, and the next milestone is the stream expected to end
first.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from worktree_runner.plan import graph
from worktree_runner.run.state import RunRecord, RunState, Status, read_json

_HISTORY_RUNS = 20  # the most recent earlier runs consulted
_CACHE_SECONDS = 30.0
_history_cache: dict[tuple[Path, str], tuple[float, dict[str, list[float]]]] = {}
_DONE = {Status.SUCCEEDED.value, Status.FAILED.value, Status.MERGED.value,
         Status.BLOCKED.value}


@dataclass(frozen=True)
class Estimate:
    eta: str | None
    basis: str
    next_stream: str | None = None
    next_at: str | None = None


def estimate(record: RunRecord, runs_root: Path, ordering: Mapping[str, Sequence[str]],
             now: float | None = None) -> Estimate:
    if record.state != RunState.RUNNING.value:
        return Estimate(None, f"the run is {record.state}: nothing left to estimate")
    now = time.time() if now is None else now
    left = _remaining(record)
    if not left:
        return Estimate(None, "every stream has finished; the run is ending")
    history = earlier_durations(runs_root, record.run)
    here = [s.seconds for s in record.streams.values()
            if s.status in _DONE and s.seconds is not None]
    durations, from_history = {}, 0
    for name in left:
        if history.get(name):
            durations[name], from_history = statistics.median(history[name]), from_history + 1
        elif here:
            durations[name] = statistics.median(here)
    if len(durations) < len(left):
        return Estimate(None, "no stream has finished yet, in this run or an earlier one "
                              "of the same names: nothing to time the rest by")
    ends = _schedule(record, left, durations, ordering, now)
    finish = max(ends.values())
    running = [n for n in left if record.streams[n].status == Status.RUNNING.value]
    following = min(running or list(ends), key=lambda n: ends[n])
    basis = (f"{len(left)} stream(s) to finish, at most {record.max_parallel} at a time; "
             f"{from_history} timed by earlier runs of the same stream, "
             f"{len(left) - from_history} by the median of the {len(here)} finished in "
             "this run")
    return Estimate(_iso(now + finish), basis, following, _iso(now + ends[following]))


def _remaining(record: RunRecord) -> list[str]:
    """Streams that still have to run: pending or running, and not behind a failure."""
    failed = {n for n, s in record.streams.items()
              if s.status in (Status.FAILED.value, Status.BLOCKED.value)}
    ancestry = graph.Ancestry({n: s.depends_on for n, s in record.streams.items()})
    failed_bits = ancestry.bits(failed)
    return [n for n, s in record.streams.items()
            if s.status in (Status.PENDING.value, Status.RUNNING.value)
            and not ancestry.mask[n] & failed_bits]


def _schedule(record: RunRecord, left: list[str], durations: Mapping[str, float],
              ordering: Mapping[str, Sequence[str]], now: float) -> dict[str, float]:
    """Seconds from now at which each remaining stream should end."""
    ends: dict[str, float] = {}
    for name in left:
        stream = record.streams[name]
        if stream.status == Status.RUNNING.value and stream.started_at:
            elapsed = now - datetime.fromisoformat(stream.started_at).timestamp()
            ends[name] = max(durations[name] - elapsed, 0.0)
    waiting = [n for n in left if n not in ends]
    chain = graph.chain_below({n: tuple(ordering.get(n, ())) for n in record.streams})
    order = {n: i for i, n in enumerate(record.streams)}
    clock = 0.0
    while waiting:
        finished = {n for n in record.streams if n not in left} | {
            n for n, end in ends.items() if end <= clock}
        ready = sorted((n for n in waiting
                        if all(p in finished for p in ordering.get(n, ()))),
                       key=lambda n: (-chain.get(n, 1), order[n]))
        busy = sum(1 for end in ends.values() if end > clock)
        for name in ready[:max(record.max_parallel - busy, 0)]:
            ends[name] = clock + durations[name]
            waiting.remove(name)
        later = [end for end in ends.values() if end > clock]
        if not later:  # what waits cannot start (a conflict with nothing left): stop here
            break
        clock = min(later)
    return ends


def earlier_durations(runs_root: Path, current: str) -> dict[str, list[float]]:
    """Seconds each stream name took in earlier runs that it succeeded in (recent runs)."""
    cached = _history_cache.get((runs_root, current))
    if cached is not None and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[1]
    folders = [p for p in runs_root.iterdir() if p.is_dir() and p.name != current] \
        if runs_root.is_dir() else []
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    durations: dict[str, list[float]] = {}
    for folder in folders[:_HISTORY_RUNS]:
        state = read_json(folder / "state.json")
        streams = state.get("streams") if isinstance(state, dict) else None
        for name, stream in (streams or {}).items():
            seconds = stream.get("seconds") if isinstance(stream, dict) else None
            if stream.get("status") in ("succeeded", "merged") and seconds:
                durations.setdefault(name, []).append(float(seconds))
    _history_cache[(runs_root, current)] = (time.monotonic(), durations)
    return durations


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")
