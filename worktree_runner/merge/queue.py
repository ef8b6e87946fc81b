"""The ``merge`` section of a run's state: a queue of landings, at most one of them open.

A landing takes some streams, replays them onto the target and lands them (or halts, is
aborted, or is undone later). A run may land several times: streams that finish later
land in a later landing. The documented fields of ``status --json`` (state, target, worktree,
stream, conflicted_files, merged, left_out) are a view of the queue, stored beside it so
that readers of the raw state see them too. State files written before the queue existed
(one attempt described by flat fields) are read as a queue of that one landing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from worktree_runner.run.state import known_fields, now

QUEUE_VERSION = 2
OPEN = ("active", "halted")


@dataclass
class Landing:
    id: int
    state: str = "active"  # active | halted | landed | aborted | undone
    streams: list[str] = field(default_factory=list)   # to replay, in order
    merged: list[str] = field(default_factory=list)    # replayed (and pinned) so far
    left_out: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # left-out stream -> why
    target_start: str | None = None
    tip: str | None = None          # the integration tip while replaying without a worktree
    worktree: str | None = None     # the integration worktree, while one exists
    halt: str | None = None         # conflict | verify | land
    stream: str | None = None       # the stream being replayed (or halted at)
    conflicted_files: list[str] = field(default_factory=list)
    commit: str | None = None       # the commit a conflict stopped at
    onto: str | None = None         # the integration tip the current stream started from
    landed_from: str | None = None
    landed_to: str | None = None
    squashed: list[str] = field(default_factory=list)  # landed as one commit of their net change
    resolved_by_rerere: dict[str, list[str]] = field(default_factory=dict)  # stream -> files
    in_memory: list[str] = field(default_factory=list)  # replayed in the object database
    tips: dict[str, str] = field(default_factory=dict)  # stream -> integration tip after it
    skipped: list[str] = field(default_factory=list)    # left out by 'wtr merge --skip'
    broke_verify: str | None = None  # the stream the bisection found
    verify_runs: int = 0
    resolve_with: str | None = None  # the resolver agent asked for (--resolve-with)
    agent_resolutions: list[dict[str, Any]] = field(default_factory=list)  # kept proposals
    resolver_attempts: list[dict[str, Any]] = field(default_factory=list)  # rejected ones
    message: str | None = None
    started_at: str = field(default_factory=now)
    updated_at: str | None = None

    @property
    def open(self) -> bool:
        return self.state in OPEN


@dataclass
class MergeQueue:
    target: str
    landings: list[Landing] = field(default_factory=list)
    # Streams the last automatic pass held back (name -> why): shown as left out even when
    # that pass had nothing to land, so no landing recorded them.
    held: dict[str, str] = field(default_factory=dict)
    # Every move of the target a landing or an undo made, in order (see moves.py).
    moves: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None, target: str) -> MergeQueue:
        data = data or {}
        target = data.get("target") or target
        if "landings" in data:
            landings = [Landing(**known_fields(Landing, item)) for item in data["landings"]]
            return cls(target, landings, dict(data.get("held") or {}),
                       list(data.get("moves") or []))
        return cls(target, _migrated(data))

    def to_json(self) -> dict[str, Any]:
        return {**self.view(), "version": QUEUE_VERSION, "held": dict(self.held),
                "landings": [asdict(landing) for landing in self.landings],
                "moves": list(self.moves)}

    # -- queries ---------------------------------------------------------------------------

    @property
    def open(self) -> Landing | None:
        last = self.landings[-1] if self.landings else None
        return last if last is not None and last.open else None

    @property
    def last(self) -> Landing | None:
        return self.landings[-1] if self.landings else None

    def last_landed(self) -> Landing | None:
        return next((ld for ld in reversed(self.landings) if ld.state == "landed"), None)

    def landed_streams(self) -> list[str]:
        return [name for ld in self.landings if ld.state == "landed" for name in ld.merged]

    def next_id(self) -> int:
        return max((ld.id for ld in self.landings), default=0) + 1

    def view(self) -> dict[str, Any]:
        """The documented ``merge`` fields of ``status --json``, and the runner's own after them."""
        last, current = self.last, self.open
        landed = self.last_landed()
        merged = self.landed_streams() + (current.merged if current else [])
        squashed = [n for ld in self.landings if ld.state == "landed" or ld.open
                    for n in ld.squashed]
        left_out = list(last.left_out) if last else []
        reasons = dict(last.reasons) if last else {}
        for name, why in self.held.items():
            if name not in merged:
                reasons[name] = why
                if name not in left_out:
                    left_out.append(name)
        return {
            "state": _spec_state(last),
            "target": self.target,
            "worktree": current.worktree if current else None,
            "stream": current.stream if current and current.state == "halted" else None,
            "conflicted_files": list(current.conflicted_files) if current else [],
            "merged": merged,
            "left_out": left_out,
            "left_out_reasons": reasons,
            "active": current is not None,
            "halt": current.halt if current else None,
            "squashed": squashed,
            "resolved_by_rerere": dict(last.resolved_by_rerere) if last else {},
            "landed_to": landed.landed_to if landed else None,
            "broke_verify": current.broke_verify if current else None,
            "agent_resolutions": list(last.agent_resolutions) if last else [],
            "resolver_attempts": list(last.resolver_attempts) if last else [],
            "message": last.message if last else None,
        }

    # -- changes that are not a landing's own ----------------------------------------------

    def abandon_open(self, why: str) -> None:
        """Mark the open landing aborted (its worktree was removed by someone else)."""
        current = self.open  # once aborted it is no longer the open one: keep hold of it
        if current is not None:
            current.state, current.worktree, current.message = "aborted", None, why
            current.updated_at = now()


def _spec_state(last: Landing | None) -> str:
    if last is None or last.state == "active":
        return "none"
    return last.state


def _migrated(data: dict[str, Any]) -> list[Landing]:
    """One landing from a merge section written before the queue (version 1 state)."""
    state, active = data.get("state", "none"), bool(data.get("active"))
    if state == "none" and not active:
        return []
    landing = Landing(
        id=int(data.get("attempt") or 1),
        state="active" if state == "none" else state,
        streams=list(data.get("order") or data.get("merged") or []),
        merged=list(data.get("merged") or []),
        left_out=list(data.get("left_out") or []),
        target_start=data.get("target_start"),
        worktree=data.get("worktree"),
        halt=data.get("halt"),
        stream=data.get("stream"),
        conflicted_files=list(data.get("conflicted_files") or []),
        commit=data.get("commit"),
        onto=data.get("onto"),
        landed_from=data.get("landed_from"),
        landed_to=data.get("landed_to"),
        message=data.get("message"),
        started_at=data.get("updated_at") or now(),
        updated_at=data.get("updated_at"),
    )
    return [landing]
