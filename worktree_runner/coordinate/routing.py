"""Where a change request goes: who owns the path, what state that owner is in, and
whether waiting for it would close a cycle of streams waiting on each other."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worktree_runner.errors import BadInput
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.plan.patterns import compile_patterns
from worktree_runner.run.state import RunRecord, Status

from .book import Request, Route

if TYPE_CHECKING:  # imported where a request is routed: every run and status imports this
    import networkx as nx

UNFINISHED = frozenset({Status.PENDING.value, Status.RUNNING.value})
FOLLOW_UP_MARK = "+req-"


def repo_path(given: str, worktree: Path | None) -> str:
    """``given`` as a path relative to the repository root: a relative path is read from
    the root of the caller's worktree; an absolute one must lie inside that worktree."""
    text = given.strip()
    if not text:
        raise BadInput("the path is empty", hint="name a file of the repository")
    if posixpath.isabs(text):
        root = str(worktree.resolve()) if worktree is not None else None
        if root is None or not (text == root or text.startswith(root.rstrip("/") + "/")):
            raise BadInput(f"{given} is outside the repository",
                           hint="name a file of the repository, relative to its root")
        text = text[len(root):].lstrip("/")
    normal = posixpath.normpath(text)
    if normal in (".", "") or normal == ".." or normal.startswith("../"):
        raise BadInput(f"{given} is outside the repository",
                       hint="name a file of the repository, relative to its root")
    if normal == ".git" or normal.startswith(".git/"):
        raise BadInput(f"{given} is git's own folder, not a file of the repository")
    return normal


def scope_of(stream: Stream, path: str) -> bool:
    return bool(compile_patterns(stream.scope).match_file(path))


def is_shared(plan: Plan, path: str) -> bool:
    """A path no one stream owns: the plan's shared paths, or one a stream lists as shared."""
    patterns = [*plan.shared, *(p for s in plan.streams for p in s.shared)]
    return bool(patterns) and bool(compile_patterns(patterns).match_file(path))


def owner_of(plan: Plan, record: RunRecord, path: str, asking: str) -> str | None:
    """The stream a request about ``path`` goes to: of the others whose ``files`` match it,
    the last one (in plan order, follow-ups last) that has not finished, else the last."""
    owners = [s.name for s in plan.streams
              if s.name != asking and compile_patterns(s.files).match_file(path)]
    if not owners:
        return None
    unfinished = [n for n in owners
                  if n in record.streams and record.streams[n].status in UNFINISHED]
    return (unfinished or owners)[-1]


def route_for(status: str | None) -> Route:
    """The route a request to an owner in ``status`` takes."""
    if status == Status.PENDING.value:
        return Route.PROMPT
    if status == Status.RUNNING.value:
        return Route.FEEDBACK
    if status in (Status.SUCCEEDED.value, Status.MERGED.value):
        return Route.FOLLOW_UP
    return Route.PERSON


def waits_graph(record: RunRecord, requests: Iterable[Request]) -> nx.DiGraph[str]:
    """Who waits for whom now: a stream blocked in a waiting request for the stream it
    went to, and a stream not yet started for each dependency that has not finished. (A
    requester no longer running waits for nothing: its agent was stopped mid-wait.)"""
    import networkx as nx

    graph: nx.DiGraph[str] = nx.DiGraph()
    running = {n for n, s in record.streams.items() if s.status == Status.RUNNING.value}
    for request in requests:
        if request.wait and request.open and request.target and not request.cycle \
                and request.requester in running:
            graph.add_edge(request.requester, request.target)
    for name, stream in record.streams.items():
        if stream.status != Status.PENDING.value:
            continue
        for dep in stream.depends_on:
            if dep in record.streams and record.streams[dep].status in UNFINISHED:
                graph.add_edge(name, dep)
    return graph


def cycle_closed(graph: nx.DiGraph[str], asking: str, target: str) -> list[str]:
    """The cycle ``asking`` -> ``target`` would close (``[asking, target, ..., asking]``),
    or an empty list."""
    if asking == target:
        return [asking, asking]
    if target not in graph or asking not in graph:
        return []
    import networkx as nx

    try:
        path: list[str] = nx.shortest_path(graph, target, asking)
    except nx.NetworkXNoPath:
        return []
    return [asking, *path]


def follow_up_stream(owner: Stream, spec: Mapping[str, Any]) -> Stream:
    """The follow-up a request becomes once its owner has finished: the owner's files,
    agent and checks, starting from the owner's result, asked to do the request."""
    return replace(owner, name=str(spec["name"]), prompt=str(spec["prompt"]),
                   description=f"follow-up of {owner.name} for request {spec['request']} "
                               f"of {spec['requester']}",
                   depends_on=(owner.name,), conflicts_with=(), waits_for=(), attempts=1,
                   agents=())


def extend_plan(plan: Plan, follow_ups: Iterable[Mapping[str, Any]]) -> Plan:
    """The run's plan with the follow-up streams its requests added, each requester
    depending on its follow-ups (in the order they were added)."""
    streams = {s.name: s for s in plan.streams}
    for spec in follow_ups:
        owner, requester = streams.get(str(spec["owner"])), str(spec["requester"])
        if owner is None or str(spec["name"]) in streams:
            continue
        streams[str(spec["name"])] = follow_up_stream(owner, spec)
        if requester in streams:
            asking = streams[requester]
            streams[requester] = replace(asking,
                                         depends_on=(*asking.depends_on, str(spec["name"])))
    if len(streams) == len(plan.streams) and not follow_ups:
        return plan
    return replace(plan, streams=tuple(streams.values()))


def follow_up_prompt(request: Request, owner: Stream) -> str:
    return "\n".join([
        f"You continue the work of stream '{owner.name}', which has finished: its result "
        "is your starting point.",
        "",
        f"Another stream needs a change in files '{owner.name}' owns. {request.text()}",
        "",
        "Make that change (only that), commit it, and exit with code 0. If it cannot or "
        "should not be made, say why in your report and exit with a non-zero code.",
        "",
        f"The task '{owner.name}' had, for context:",
        *(f"> {line}" for line in owner.prompt.strip().splitlines()),
    ])
