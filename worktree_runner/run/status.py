"""The consolidated status of a run: the document of ``wtr status --json`` (docs/commands.md)."""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path
from typing import Any

from worktree_runner.errors import WtrError
from worktree_runner.run import handover, registry
from worktree_runner.run.agent_report import report_document
from worktree_runner.run.disk import run_disk
from worktree_runner.run.state import (
    RunRecord,
    RunState,
    RunStore,
    Status,
    StreamRecord,
    empty_merge,
)
from worktree_runner.run.usage import total_usage


def stream_document(store: RunStore, stream: StreamRecord) -> dict[str, Any]:
    progress = store.progress(stream.name) or {}
    percent = progress.get("percent")
    if stream.status in (Status.SUCCEEDED, Status.MERGED):
        percent = 100
    return {
        "name": stream.name,
        "status": stream.status,
        "branch": stream.branch,
        "worktree": stream.worktree,
        "checkout": stream.checkout,
        "base_commit": stream.base_commit,
        "head_commit": stream.head_commit,
        "depends_on": stream.depends_on,
        "attempts": stream.attempts,
        "exit_code": stream.exit_code,
        "progress": {
            "percent": percent,
            "message": progress.get("message"),
            "blocked": bool(progress.get("blocked", False)),
            "at": progress.get("at"),
        },
        "failure": _failure(stream),
        "changed_files": stream.changed_files,
        "started_at": stream.started_at,
        "finished_at": stream.finished_at,
        "blocked_by": stream.blocked_by,
        "usage": stream.usage,
        "budget": stream.budget,
        "accepted": stream.accepted,
        "start_conflict": ({"streams": stream.start_conflict["streams"],
                            "files": stream.start_conflict["files"]}
                           if stream.start_conflict else None),
        "sync": _sync(store, stream.name),
        "warnings": stream.warnings,
        "pushed": stream.pushed,
        "pr": stream.pr,
        "report": report_document(store, stream.name),
        # best-of-N: [{attempt, agent, branch, worktree, status, failure, head_commit,
        # diff_stat, chosen, archive, ...}]; empty for a stream of one attempt
        "candidates": [dict(c) for c in stream.candidates],
        "session": stream.session,
        "attempt_log": stream.attempt_log,
        "attached": handover.sessions(store.stream_dir(stream.name)),
    }


def _failure(stream: StreamRecord) -> dict[str, Any] | None:
    """``output`` (a failed verify's last lines) only when there is some."""
    if stream.failure is None:
        return None
    document = asdict(stream.failure)
    if document.get("output") is None:
        document.pop("output", None)
    return document


def _sync(store: RunStore, name: str) -> dict[str, Any] | None:
    from worktree_runner.merge.sync import sync_document

    return sync_document(store, name)


def merge_view(merge: dict[str, Any], target: str) -> dict[str, Any]:
    from worktree_runner.merge.queue import MergeQueue

    return {**empty_merge(target), **MergeQueue.from_json(merge, target).to_json()}


def status_document(store: RunStore, disk: bool = False) -> dict[str, Any]:
    """The status; with ``disk``, also ``disk_bytes`` of the run and of each stream (a walk
    of every worktree: asked for by ``wtr status`` only)."""
    record = store.load()
    streams = [stream_document(store, s) for s in record.streams.values()]
    used = run_disk(record) if disk else None
    for entry in streams if used else []:
        entry["disk_bytes"] = used["streams"][entry["name"]] if used else None
    counts = {status.value: 0 for status in Status}
    for stream in record.streams.values():
        counts[stream.status] += 1
    state = registry.effective_state(store, record.state)
    return {
        "run": record.run,
        "plan": record.plan,
        "repo": record.repo,
        "state": state,
        "runner": registry.runner_of(store),
        "base": record.base,
        "base_commit": record.base_commit,
        "target": record.target,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "counts": counts,
        "streams": streams,
        "merge": merge_view(record.merge, record.target),
        **({"disk_bytes": used["disk_bytes"]} if used else {}),
        "isolation": record.isolation,
        "usage": total_usage([s.usage for s in record.streams.values()]),
        "budget": record.budget,
        "notifications": {"failed": record.notify_failures},
        "requests": _requests(store),
        **_eta(store, record, state),
    }


def _requests(store: RunStore) -> list[dict[str, Any]]:
    """The change requests between streams (coordinate/), oldest first."""
    from worktree_runner.coordinate.book import RequestBook

    return [r.to_json() for r in RequestBook(store.dir).read()]


def _eta(store: RunStore, record: RunRecord, state: str) -> dict[str, Any]:
    from worktree_runner.run.eta import estimate

    if state != RunState.RUNNING.value:  # e.g. its runner is gone: nothing moves
        return {"eta": None, "eta_basis": f"the run is {state}: nothing left to estimate",
                "next_milestone": None}
    found = estimate(record, store.dir.parent, _ordering(store, record))
    following = ({"stream": found.next_stream, "at": found.next_at}
                 if found.next_stream else None)
    return {"eta": found.eta, "eta_basis": found.basis, "next_milestone": following}


def _ordering(store: RunStore, record: RunRecord) -> dict[str, tuple[str, ...]]:
    """What each stream waits for (dependencies and conflicts), from the run's plan copy."""
    try:
        stamp = store.plan_path.stat().st_mtime_ns
        return dict(_plan_ordering(str(store.plan_path), record.plan, stamp))
    except (OSError, WtrError):
        return {n: tuple(s.depends_on) for n, s in record.streams.items()}


@functools.lru_cache(maxsize=8)
def _plan_ordering(path: str, origin: str, stamp: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    from worktree_runner.plan.load import parse_plan

    plan = parse_plan(Path(path).read_text(encoding="utf-8"), Path(origin))
    return tuple(plan.ordering_graph().items())
