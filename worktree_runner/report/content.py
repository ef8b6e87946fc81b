"""Everything the run report shows, gathered from the run's state, events, logs and git."""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worktree_runner import git, statefs
from worktree_runner.coordinate.routing import extend_plan
from worktree_runner.errors import WtrError
from worktree_runner.plan.durations import format_duration
from worktree_runner.plan.load import parse_plan
from worktree_runner.plan.model import Plan
from worktree_runner.render import eta_lines
from worktree_runner.report import layout
from worktree_runner.report.timeline import Row, build_timeline
from worktree_runner.run.agent_report import report_document
from worktree_runner.run.budget import describe as describe_budget
from worktree_runner.run.state import RunStore
from worktree_runner.run.status import status_document
from worktree_runner.run.usage import describe_usage, total_usage

REFRESH_SECONDS = 5
_LOG_TAIL_BYTES = 64 * 1024
_SHOWN_FILES = 40
_PROMPT_CHARS = 4000
_DIFF_CHARS = 100_000


@dataclass
class StreamDetail:
    doc: dict[str, Any]
    critical: bool
    duration: str
    files: list[git.FileStat] = field(default_factory=list)
    more_files: int = 0
    added: int = 0
    deleted: int = 0
    report: dict[str, Any] | None = None
    progress: list[tuple[str, str]] = field(default_factory=list)
    verify_tail: str | None = None
    sync_hunks: str | None = None  # the conflict of its last sync, while one is recorded
    log_tail: str = ""
    attempts: list[dict[str, str]] = field(default_factory=list)
    description: str = ""
    prompt: str = ""
    diff: list[tuple[str, str]] = field(default_factory=list)  # (class, line); the live page
    diff_cut: bool = False


@dataclass
class MergeRow:
    name: str
    outcome: str  # landed | replayed | conflicted | waiting | left out
    why: str = ""


@dataclass
class MergeView:
    doc: dict[str, Any]
    rows: list[MergeRow]
    commits: list[str]
    verify: list[str]
    verify_result: str
    verify_tail: str | None
    before: str | None
    after: str | None


@dataclass
class Report:
    doc: dict[str, Any]
    generated: str
    in_progress: bool
    refresh: int
    started: str
    duration: str
    timeline: layout.TimelinePicture
    graph: layout.GraphPicture
    critical: list[str]
    streams: list[StreamDetail]
    merge: MergeView
    usage: str | None  # what the agents said they used, in words
    eta: list[str]


def gather(store: RunStore, diffs: bool = False) -> Report:
    """``diffs``: each stream's whole diff too (the live page; the file stays small)."""
    doc = status_document(store)
    plan = _plan(store)
    names = [s["name"] for s in doc["streams"]]
    streams = {s["name"]: s for s in doc["streams"]}
    ordering = _ordering(plan, streams)
    in_progress = doc["state"] == "running"
    now = time.time()
    timeline = build_timeline(store.events(), names, ordering, now, in_progress)
    statuses = {n: s["status"] for n, s in streams.items()}
    picture = layout.timeline_picture(timeline, names, statuses, now if in_progress else None)
    conflicts = _conflicts(plan)
    depends = {n: s.get("depends_on") or [] for n, s in streams.items()}
    graph = layout.graph_picture(names, depends, conflicts, ordering, statuses,
                                 timeline.critical)
    repo = _repo(doc["repo"])
    short_tails = len(names) > 50
    tips = git.refs_under(repo, "refs/heads/") if diffs and repo is not None else None
    with ThreadPoolExecutor(max_workers=4) as pool:  # git diffs: mostly waiting on git
        details = list(pool.map(
            lambda n: _detail(store, repo, plan, streams[n], timeline.rows[n],
                              n in timeline.critical, short_tails, tips), names))
    return Report(
        doc=doc,
        generated=datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        in_progress=in_progress,
        refresh=REFRESH_SECONDS,
        started=_local(doc.get("created_at")),
        duration=_duration(doc.get("created_at"), doc.get("finished_at"), in_progress),
        timeline=picture,
        graph=graph,
        critical=timeline.critical,
        streams=details,
        merge=_merge(store, repo, plan, doc),
        usage=_usage(doc),
        eta=eta_lines(doc),
    )


def _plan(store: RunStore) -> Plan | None:
    try:
        plan = parse_plan(store.plan_path.read_text(encoding="utf-8"), Path(store.record.plan))
        return extend_plan(plan, store.record.follow_ups)  # (streams requests added)
    except (OSError, WtrError):
        return None


def _ordering(plan: Plan | None, streams: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    if plan is not None and set(plan.names) == set(streams):
        return plan.ordering_graph()
    return {n: tuple(s.get("depends_on") or ()) for n, s in streams.items()}


def _conflicts(plan: Plan | None) -> list[tuple[str, str]]:
    if plan is None:
        return []
    pairs = {tuple(sorted((s.name, other))) for s in plan.streams for other in s.conflicts_with}
    order = {n: i for i, n in enumerate(plan.names)}
    return sorted(((a, b) for a, b in pairs), key=lambda p: (order[p[0]], order[p[1]]))


def _repo(path: str) -> git.Repository | None:
    try:
        return git.open_repository(path)
    except WtrError:
        return None


def _local(at: str | None) -> str:
    if not at:
        return "not yet"
    return datetime.fromisoformat(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(start: str | None, end: str | None, running: bool) -> str:
    if not start:
        return ""
    if end:
        finish = datetime.fromisoformat(end)
    elif running:
        finish = datetime.now(UTC)
    else:
        return "unknown (the run did not finish)"
    return format_duration((finish - datetime.fromisoformat(start)).total_seconds())


def _usage(doc: dict[str, Any]) -> str | None:
    """What the agents used in all, against the run's budget when it has one."""
    said = describe_usage(total_usage([s.get("usage") for s in doc["streams"]]))
    limit = describe_budget(doc.get("budget"))
    return f"{said or 'nothing said'} (budget {limit})" if limit else said


# -- one stream -----------------------------------------------------------------------------

def _detail(store: RunStore, repo: git.Repository | None, plan: Plan | None,
            doc: dict[str, Any], row: Row, critical: bool, short_tails: bool,
            tips: dict[str, str] | None = None) -> StreamDetail:
    name = doc["name"]
    started, finished = doc.get("started_at"), doc.get("finished_at")
    detail = StreamDetail(doc, critical, _duration(started, finished, doc["status"] == "running"))
    if plan is not None and name in plan.names:
        detail.description = plan.stream(name).description
        detail.prompt = plan.stream(name).prompt[:_PROMPT_CHARS]
    _diffstat(detail, repo, doc.get("base_commit"), doc.get("head_commit"))
    detail.report = report_document(store, name, limit=20000)
    shown = 3 if short_tails else 6
    detail.progress = [(_clock(t), message) for t, message in row.progress[-shown:]]
    lines = 12 if short_tails else 30
    log = store.log_path(name)
    if row.verify_offset is not None:
        detail.verify_tail = _tail(log, row.verify_offset, lines)
    detail.log_tail = _tail(log, 0, lines) or ""
    detail.sync_hunks = (doc.get("sync") or {}).get("hunks")
    if tips is not None and repo is not None:
        _diff(detail, repo, doc, tips)
    detail.attempts = [
        {"number": str(a.number), "kind": a.kind,
         "outcome": "succeeded" if a.outcome == "ok" else a.outcome,
         "started": _clock(a.start),
         "took": format_duration((a.end or a.start) - a.start), "message": a.message}
        for a in row.attempts
    ]
    return detail


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%H:%M:%S")


def _diffstat(detail: StreamDetail, repo: git.Repository | None, base: str | None,
              head: str | None) -> None:
    if repo is None or not base or not head or base == head:
        return
    stats = _stats(repo, base, head)
    detail.files = stats[:_SHOWN_FILES]
    detail.more_files = max(0, len(stats) - _SHOWN_FILES)
    detail.added = sum(s.added or 0 for s in stats)
    detail.deleted = sum(s.deleted or 0 for s in stats)


def _diff(detail: StreamDetail, repo: git.Repository, doc: dict[str, Any],
          tips: dict[str, str]) -> None:
    """What ``wtr diff`` shows: the stream's base commit to its branch's tip (``tips``:
    every branch's, read at once)."""
    base = doc.get("base_commit")
    head = tips.get(f"refs/heads/{doc['branch']}") or doc.get("head_commit")
    if base and head and base != head:
        text, detail.diff_cut = _diff_text(repo, base, head)
        detail.diff = [(_diff_class(line), line) for line in text.splitlines()]


@functools.lru_cache(maxsize=256)
def _diff_text(repo: git.Repository, base: str, head: str) -> tuple[str, bool]:
    return git.diff_text(repo, base, head, _DIFF_CHARS)


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---", "diff ", "index ")):
        return "file"
    return {"+": "add", "-": "del", "@": "hunk"}.get(line[:1], "")


@functools.lru_cache(maxsize=4096)
def _stats(repo: git.Repository, base: str, head: str) -> list[git.FileStat]:
    """Commits never change: a stream's diffstat is read once per process."""
    return git.diffstat(repo, base, head)


def _tail(path: Path, offset: int, lines: int) -> str | None:
    try:
        with statefs.open_read(path) as handle:
            size = handle.seek(0, 2)
            handle.seek(max(offset, size - _LOG_TAIL_BYTES))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    kept = [line[:300] for line in text.splitlines()[-lines:]]
    return "\n".join(kept)


# -- the merge ------------------------------------------------------------------------------

def _merge(store: RunStore, repo: git.Repository | None, plan: Plan | None,
           doc: dict[str, Any]) -> MergeView:
    merge = doc["merge"]
    landings = [ld for ld in merge.get("landings") or [] if isinstance(ld, dict)]
    streams = {s["name"]: s for s in doc["streams"]}
    shown = [ld for ld in landings if ld.get("state") == "landed"]
    if landings and landings[-1] not in shown:
        shown.append(landings[-1])
    rows = [MergeRow(name, _landing_outcome(name, ld), f"landing {ld.get('id', '')}")
            for ld in shown for name in ld.get("streams") or []]
    reasons = merge.get("left_out_reasons") or {}
    for name in merge.get("left_out") or []:
        rows.append(MergeRow(name, "left out", reasons.get(name) or _left_out_why(streams, name)))
    landed = next((ld for ld in reversed(landings) if ld.get("state") == "landed"), None)
    first = next((ld for ld in landings if ld.get("state") == "landed"), None)
    before = (first or {}).get("landed_from") or (landings[-1].get("target_start")
                                                  if landings else None)
    after = landed.get("landed_to") if landed else None
    commits: list[str] = []
    if repo is not None and before and after:
        commits = git.oneline_log(repo, before, after)
    verify = list(plan.verify) if plan is not None else []
    verify_tail = None
    if merge.get("halt") == "verify":
        result = f"failed: {merge.get('message') or ''}"
        verify_tail = _tail(store.dir / "merge.log", 0, 30)
    elif landed is not None:
        result = "passed" if verify else "no verify commands in the plan"
    else:
        result = "not run yet"
    return MergeView(merge, rows, commits, verify, result, verify_tail, before, after)


def _landing_outcome(name: str, landing: dict[str, Any]) -> str:
    state = landing.get("state")
    if name in (landing.get("skipped") or []):
        return "left out"
    if name in (landing.get("merged") or []):
        return {"landed": "landed", "aborted": "aborted", "undone": "undone"}.get(
            state or "", "replayed")
    if landing.get("stream") == name and landing.get("halt") == "conflict":
        return "conflicted"
    return "waiting" if state in ("active", "halted") else state or "waiting"


def _left_out_why(streams: dict[str, dict[str, Any]], name: str) -> str:
    stream = streams.get(name)
    if stream is None:
        return ""
    if stream.get("failure"):
        return f"{stream['status']}: {stream['failure']['kind']}: {stream['failure']['message']}"
    if stream.get("blocked_by"):
        return f"blocked: '{stream['blocked_by']}' did not succeed"
    bad = [d for d in stream.get("depends_on") or []
           if streams.get(d, {}).get("status") not in ("succeeded", "merged")]
    if bad:
        return f"depends on {', '.join(bad)}, which did not succeed"
    return f"status {stream['status']}"
