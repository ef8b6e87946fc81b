"""Budgets: the most a stream's agent, and a whole run, may spend (``budget: {usd, tokens}``).

Spend is what the agents report (``run/usage.py``): dollars as ``cost_usd``, tokens as
input plus output. It is read live while an agent runs, from its growing output, where its
CLI reports usage as it goes (``Preset.live_usage``: claude's per-message usage, codex's
``turn.completed``, a ``command`` agent's result lines); else when the attempt ends. An
agent past its stream's budget, or past what is left of the run's, is stopped and its
stream fails with kind ``budget``; once the run's is spent, no stream starts.
The budgets in force are those of the run's state (the plan's, or what ``--budget-usd``
and ``--budget-tokens`` gave ``run``, ``resume`` or ``retry``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from worktree_runner import statefs
from worktree_runner.presets import Preset
from worktree_runner.run.state import Failure, RunStore
from worktree_runner.run.usage import Usage, add_usage, attempt_output, generic_usage, total_usage

CHECK_SECONDS = 1.0  # how often a running agent's output is read again, at most
READ_SHARE = 10  # and no more often than ten times as long as reading it took


def tokens_of(usage: Usage | None) -> float | None:
    """Input plus output tokens; None when the agent said neither."""
    if not usage:
        return None
    said = [usage.get(k) for k in ("input_tokens", "output_tokens")]
    counts = [v for v in said if v is not None]
    return sum(counts) if counts else None


def overspent(budget: Mapping[str, Any] | None, usage: Usage | None) -> str | None:
    """What of ``budget`` ``usage`` has passed ("$0.61 of its $0.50"), or None."""
    if not budget or not usage:
        return None
    cost, tokens = usage.get("cost_usd"), tokens_of(usage)
    if budget.get("usd") is not None and cost is not None and cost > budget["usd"]:
        return f"${cost:.2f} of ${budget['usd']:.2f}"
    if budget.get("tokens") is not None and tokens is not None and tokens > budget["tokens"]:
        return f"{tokens:,.0f} tokens of {budget['tokens']:,.0f}"
    return None


def describe(budget: Mapping[str, Any] | None) -> str | None:
    """"$2.00, 100,000 tokens": a budget in words."""
    if not budget:
        return None
    parts = []
    if budget.get("usd") is not None:
        parts.append(f"${budget['usd']:.2f}")
    if budget.get("tokens") is not None:
        parts.append(f"{budget['tokens']:,.0f} tokens")
    return ", ".join(parts) or None


def attempt_usage(preset: Preset | None, output: str, live: bool) -> Usage | None:
    """What an attempt's output says it used; ``live``: while it still runs."""
    if preset is None:
        return generic_usage(output)
    return preset.live_usage(output) if live else preset.usage(output)


class Ledger:
    """What a run's streams spent: their finished attempts (in the state) and their
    running ones (read live); a best-of-N stream's, while its candidates run, is what each
    candidate spent (``split`` to ``fold``). Shared by the threads of a run."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._live: dict[str, Usage] = {}
        # best-of-N stream -> candidate -> [what its attempts spent, what its running one has]
        self._parts: dict[str, dict[int, list[Usage | None]]] = {}
        self._lock = threading.Lock()

    def running(self, name: str, usage: Usage | None) -> None:
        with self._lock:
            if usage is None:
                self._live.pop(name, None)
            else:
                self._live[name] = usage

    def settle(self, name: str, usage: Usage | None) -> None:
        """The attempt of ``name`` ended having used ``usage``: from its live count into
        the stream's state at once (never counted twice, nor missed, by another thread)."""
        with self._lock:
            record = self.store.record.streams[name]
            self.store.update_stream(name, usage=add_usage(record.usage, usage))
            self._live.pop(name, None)

    def split(self, name: str, spent: Mapping[int, Usage | None]) -> None:
        """Stream ``name``'s candidates start: from now its spend is theirs (what each
        has spent so far, ``spent``), until ``fold``."""
        with self._lock:
            self._parts[name] = {attempt: [usage, None] for attempt, usage in spent.items()}

    def candidate(self, name: str, attempt: int, spent: Usage | None,
                  running: Usage | None) -> None:
        """What candidate ``attempt`` of ``name`` has spent in its ended attempts, and
        in its running one so far."""
        with self._lock:
            self._parts.setdefault(name, {})[attempt] = [spent, running]

    def fold(self, name: str, usage: Usage | None, **changes: Any) -> None:
        """The candidates of ``name`` ended: their spend, ``usage``, is the stream's."""
        with self._lock:
            self.store.update_stream(name, None, usage=usage, **changes)
            self._parts.pop(name, None)

    def _spend(self, name: str) -> Usage | None:
        parts = self._parts.get(name)
        if parts is not None:
            return total_usage([add_usage(spent, live) for spent, live in parts.values()])
        return add_usage(self.store.record.streams[name].usage, self._live.get(name))

    def stream_spend(self, name: str) -> Usage | None:
        with self._lock:
            return self._spend(name)

    def run_spend(self) -> Usage | None:
        with self._lock:
            return total_usage([self._spend(name) for name in self.store.record.streams])

    def budgets(self, name: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
        """The budgets in force: stream ``name``'s and the run's."""
        record = self.store.record
        return record.streams[name].budget, record.budget

    def limited(self, name: str) -> bool:
        """Whether stream ``name``, or the run, has a budget."""
        return any(self.budgets(name))

    def over(self, name: str) -> Failure | None:
        """The budget failure of stream ``name``, when it or the run is past its budget."""
        own, run = self.budgets(name)
        spent = overspent(own, self.stream_spend(name))
        if spent is not None:
            return Failure("budget", f"the agent spent {spent}, its stream's budget; to go "
                                     f"on, raise it: 'wtr retry {name} --budget-usd X' (or "
                                     "--budget-tokens N)")
        spent = overspent(run, self.run_spend())
        if spent is not None:
            return Failure("budget", f"the run's budget is spent ({spent}); raise it with "
                                     f"'wtr resume --run {self.store.run_id} --retry-failed "
                                     "--budget-usd X' (or --budget-tokens N)")
        return None


class CandidateLedger(Ledger):
    """The ledger of one candidate of a best-of-N stream (its own state): what it spends is
    told to the run's ledger as it goes, so the run's budget counts every candidate's
    spend, and every other stream's counts it; the budgets in force are the run's state's.
    The stream's budget is each candidate's own."""

    def __init__(self, store: RunStore, outer: Ledger, attempt: int) -> None:
        super().__init__(store)
        self.outer, self.attempt = outer, attempt

    def _tell(self, name: str) -> None:
        spent = self.store.record.streams[name].usage
        self.outer.candidate(name, self.attempt, spent, self._live.get(name))

    def running(self, name: str, usage: Usage | None) -> None:
        super().running(name, usage)
        self._tell(name)

    def settle(self, name: str, usage: Usage | None) -> None:
        super().settle(name, usage)
        self._tell(name)

    def run_spend(self) -> Usage | None:
        return self.outer.run_spend()

    def budgets(self, name: str) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
        return self.outer.budgets(name)


class Meter:
    """Reads one running attempt's output again, when it grew, at most once a second and
    for at most a tenth of the time (7 MB of claude's stream-json take about 0.4 s), and
    tells the ledger what it has used so far."""

    def __init__(self, ledger: Ledger, name: str, preset: Preset | None, log: Path,
                 since: int) -> None:
        self.ledger, self.name, self.preset = ledger, name, preset
        self.log, self.since = log, since
        self.next_read = 0.0
        self.size = -1

    def check(self) -> Failure | None:
        """The budget failure, once the attempt so far (or the run) is past a budget."""
        if not self.ledger.limited(self.name):
            return None  # (no output is read again where no budget asks for it)
        if time.monotonic() >= self.next_read:
            started = time.monotonic()
            size = statefs.size(self.log)
            if size != self.size:
                self.size = size
                output = attempt_output(self.log, self.since) or ""
                self.ledger.running(self.name, attempt_usage(self.preset, output, live=True))
            # A long output takes long to read again: never more than a tenth of the time.
            took = time.monotonic() - started
            self.next_read = started + max(CHECK_SECONDS, READ_SHARE * took)
        return self.ledger.over(self.name)
