"""Geometry of the report's two pictures, computed here so the template only draws.

The timeline: a row per stream, x is clock time. The dependency graph: waves of the plan
as columns (a tall wave wraps into several), boxes ordered to keep edges short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from worktree_runner.plan import graph
from worktree_runner.plan.durations import format_duration
from worktree_runner.report.timeline import Attempt, Timeline

LABEL_W = 240
CHART_W = 940
AXIS_H = 30
Scale = Callable[[float], float]
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
          43200, 86400)


@dataclass
class Bar:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str


@dataclass
class AttemptBars:
    number: int
    outcome: str
    title: str
    bars: list[Bar]


@dataclass
class TimelineRow:
    name: str
    label: str
    status: str
    y: float
    critical: bool
    segments: list[Bar] = field(default_factory=list)
    attempts: list[AttemptBars] = field(default_factory=list)
    note: str = ""


@dataclass
class Tick:
    x: float
    label: str


@dataclass
class TimelinePicture:
    width: int
    height: int
    row_h: int
    rows: list[TimelineRow]
    ticks: list[Tick]
    now_x: float | None
    zone: str
    merge_y: float
    merges: list[Bar]


def _clock(t: float, with_date: bool) -> str:
    moment = datetime.fromtimestamp(t)  # local time, as the page's zone says
    return moment.strftime("%m-%d %H:%M" if with_date else "%H:%M:%S")


def short(name: str, limit: int) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def timeline_picture(timeline: Timeline, names: list[str], statuses: Mapping[str, str],
                     now: float | None) -> TimelinePicture:
    row_h = 26 if len(names) <= 40 else 15
    span = timeline.end - timeline.start
    scale = CHART_W / span

    def x(t: float) -> float:
        return round(LABEL_W + (t - timeline.start) * scale, 1)

    rows = []
    for i, name in enumerate(names):
        y = AXIS_H + i * row_h
        row = timeline.rows[name]
        picture = TimelineRow(name, short(name, 30), statuses.get(name, ""), y,
                              name in timeline.critical)
        bar_h = row_h - 8 if row_h > 20 else row_h - 4
        top = y + (row_h - bar_h) / 2
        for seg in row.segments:
            thin = seg.kind in ("wait", "queue", "backoff")
            h = max(2.0, bar_h / 4) if thin else bar_h
            # blocked is a moment: a short hatched tag, not a bar to the end of the page
            width = 28.0 if seg.kind == "blocked" else max(x(seg.end) - x(seg.start), 1.0)
            picture.segments.append(Bar(x(seg.start), round(top + (bar_h - h) / 2, 1),
                                        round(width, 1), round(h, 1), f"seg {seg.kind}",
                                        f"{seg.note}: {_span(seg.start, seg.end)}"))
        for attempt in row.attempts:
            picture.attempts.append(_attempt_bars(attempt, x, top, bar_h))
        if row.outcome == "blocked":
            picture.note = "blocked"
        rows.append(picture)
    now_x = x(now) if now is not None else None
    zone = datetime.fromtimestamp(timeline.start).astimezone().strftime("%Z") or "local"
    merge_y = AXIS_H + len(names) * row_h + 4
    bar_h = min(row_h - 8, 16)
    merges = [Bar(x(m.start), merge_y + (row_h - bar_h) / 2,
                  round(max(x(m.end or m.start) - x(m.start), 3.0), 1), bar_h,
                  f"merge m-{m.outcome}", f"merge {m.outcome}: {_span(m.start, m.end or m.start)}")
              for m in timeline.merges]
    height = AXIS_H + len(names) * row_h + (row_h + 8 if merges else 0) + 6
    return TimelinePicture(LABEL_W + CHART_W + 20, height, row_h, rows,
                           _ticks(timeline.start, timeline.end, x), now_x, zone, merge_y,
                           merges)


def _span(start: float, end: float) -> str:
    return f"{_clock(start, False)} to {_clock(end, False)} ({format_duration(end - start)})"


def _attempt_bars(attempt: Attempt, x: Scale, top: float, h: float) -> AttemptBars:
    end = attempt.end if attempt.end is not None else attempt.start
    agent_end = attempt.agent_end if attempt.agent_end is not None else end
    verify = attempt.verify_start if attempt.verify_start is not None else end
    phases = [("run", attempt.start, agent_end, "agent running"),
              ("check", agent_end, verify, "checks (commit, files in scope)"),
              ("verify", verify, end, "verify")]
    bars = []
    for kind, start, stop, label in phases:
        if stop <= start and kind != "run":
            continue
        width = max(round(x(stop) - x(start), 1), 1.5 if kind == "run" else 0.5)
        bars.append(Bar(x(start), round(top, 1), width, round(h, 1),
                        f"bar {kind} o-{attempt.outcome}", f"{label}: {_span(start, stop)}"))
    outcome = "succeeded" if attempt.outcome == "ok" else attempt.outcome
    title = f"attempt {attempt.number}: {outcome}, {_span(attempt.start, end)}"
    if attempt.message:
        title += f" — {attempt.message}"
    return AttemptBars(attempt.number, attempt.outcome, title, bars)


def _ticks(start: float, end: float, x: Scale) -> list[Tick]:
    span = end - start
    step = next((s for s in _STEPS if span / s <= 9), _STEPS[-1] * (int(span / 86400 / 9) + 1))
    first = (int(start) // step + 1) * step
    with_date = span > 86400
    ticks = [Tick(x(start), _clock(start, with_date))]
    t = float(first)
    while t < end:
        if x(t) - ticks[-1].x > 60:
            ticks.append(Tick(x(t), _clock(t, with_date)))
        t += step
    return ticks


# -- the dependency graph ---------------------------------------------------------------------

BOX_W = 168
BOX_H = 30
COL_GAP = 64
ROW_GAP = 10
PAD = 16
MAX_PER_COLUMN = 24


@dataclass
class Box:
    name: str
    label: str
    status: str
    x: float
    y: float
    wave: int
    critical: bool


@dataclass
class Edge:
    path: str
    cls: str
    title: str


@dataclass
class GraphPicture:
    width: int
    height: int
    boxes: list[Box]
    edges: list[Edge]
    waves: list[tuple[float, str]]


def graph_picture(names: list[str], depends_on: Mapping[str, Iterable[str]],
                  conflicts: Iterable[tuple[str, str]], ordering: Mapping[str, Iterable[str]],
                  statuses: Mapping[str, str], critical: Iterable[str]) -> GraphPicture:
    level = graph.levels(ordering)
    columns = _columns(names, level, ordering)
    critical_set = set(critical)
    where: dict[str, tuple[float, float]] = {}
    boxes: list[Box] = []
    waves: list[tuple[float, str]] = []
    for c, (wave, members) in enumerate(columns):
        x = PAD + c * (BOX_W + COL_GAP)
        if not waves or waves[-1][1] != f"wave {wave + 1}":
            waves.append((x, f"wave {wave + 1}"))
        for r, name in enumerate(members):
            y = PAD + 22 + r * (BOX_H + ROW_GAP)
            where[name] = (x, y)
            boxes.append(Box(name, short(name, 21), statuses.get(name, ""), x, y, wave,
                             name in critical_set))
    edges = [_edge(where[d], where[n], "dep", f"{n} depends on {d}")
             for n in names for d in depends_on.get(n, ()) if d in where]
    edges += [_edge(where[a], where[b], "conflict", f"{a} and {b} never run together")
              for a, b in conflicts if a in where and b in where]
    tallest = max((len(m) for _, m in columns), default=1)
    width = PAD * 2 + len(columns) * (BOX_W + COL_GAP) - COL_GAP + 40
    height = PAD * 2 + 22 + tallest * (BOX_H + ROW_GAP)
    return GraphPicture(width, height, boxes, edges, waves)


def _columns(names: list[str], level: Mapping[str, int],
             ordering: Mapping[str, Iterable[str]]) -> list[tuple[int, list[str]]]:
    """Waves in order; inside a wave, streams sorted by where their predecessors sit."""
    position: dict[str, float] = {}
    columns: list[tuple[int, list[str]]] = []
    for wave in range(max(level.values(), default=-1) + 1):
        members = [n for n in names if level[n] == wave]

        def weight(name: str) -> tuple[float, int]:
            seen = [position[p] for p in ordering.get(name, ()) if p in position]
            return (sum(seen) / len(seen) if seen else -1.0, names.index(name))

        members.sort(key=weight)
        for start in range(0, len(members), MAX_PER_COLUMN):
            chunk = members[start:start + MAX_PER_COLUMN]
            for i, name in enumerate(chunk):
                position[name] = float(i)
            columns.append((wave, chunk))
    return columns


def _edge(a: tuple[float, float], b: tuple[float, float], cls: str, title: str) -> Edge:
    (ax, ay), (bx, by) = a, b
    y1, y2 = ay + BOX_H / 2, by + BOX_H / 2
    if ax == bx:  # same column: a loop out to the right
        right = ax + BOX_W
        return Edge(f"M{right} {y1} C{right + 40} {y1} {right + 40} {y2} {right} {y2}", cls,
                    title)
    if bx < ax:
        (ax, y1), (bx, y2) = (bx, y2), (ax, y1)
    x1, x2 = ax + BOX_W, bx
    bend = max((x2 - x1) / 2, 20)
    return Edge(f"M{x1} {y1} C{x1 + bend} {y1} {x2 - bend} {y2} {x2} {y2}", cls, title)
