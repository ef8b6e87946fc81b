"""``wtr push``: hand streams to a team as branches on a remote and, with ``--pr``, as pull
requests stacked by dependency.

Pushes use a lease: a remote branch is set only where it still is what we last pushed (or
absent, the first time), so someone else's push is never overwritten. Everything done is
recorded in the run's state as soon as it is done (``pushed``, ``pr`` of each stream), so
a push that fails half-way leaves an exact record of what reached the remote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from worktree_runner import git
from worktree_runner.errors import BadInput
from worktree_runner.forge import Forge, ForgeFailed, Proposal, PullRequest, forge_for
from worktree_runner.plan import graph
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, Status, StreamRecord, now
from worktree_runner.run.status import stream_document

PUSHABLE = (Status.SUCCEEDED.value, Status.MERGED.value)
PROMPT_LINES = 15


@dataclass
class PushOutcome:
    stream: str
    ok: bool
    lines: list[str]


@dataclass(frozen=True)
class PushRequest:
    streams: tuple[str, ...] = ()
    remote: str | None = None
    pr: bool = False
    draft: bool = False
    forge: str | None = None


def push_streams(repo: git.Repository, store: RunStore, plan: Plan,
                 request: PushRequest) -> list[PushOutcome]:
    """Push the streams (all succeeded ones by default) in dependency order."""
    record = store.load()
    names = _chosen(store, plan, request.streams)
    remote = _remote(repo, record.target, request.remote)
    forge = None
    if request.pr:
        forge = forge_for(request.forge, remote, git.remote_url(repo, remote), repo.root)
        forge.ensure_ready()
    return [_push_one(repo, store, plan, name, remote, forge, request.draft) for name in names]


def _chosen(store: RunStore, plan: Plan, asked: Sequence[str]) -> list[str]:
    streams = store.record.streams
    for name in asked:
        if name not in streams:
            raise registry.unknown_stream(store, name)
        if streams[name].status not in PUSHABLE:
            raise BadInput(f"stream {name} has not succeeded ({streams[name].status}); only "
                           "finished, checked work is pushed",
                           hint=f"'wtr retry {name}' or 'wtr accept {name}' first")
    names = list(asked) or [n for n, s in streams.items() if s.status in PUSHABLE]
    if not names:
        raise BadInput(f"run {store.run_id} has no succeeded stream to push",
                       hint=f"see 'wtr status --run {store.run_id}'")
    level = graph.levels(plan.dependency_graph())
    position = {name: (level[name], index) for index, name in enumerate(plan.names)}
    return sorted(dict.fromkeys(names), key=lambda n: position[n])


def _remote(repo: git.Repository, target: str, asked: str | None) -> str:
    remote = asked or git.upstream_remote(repo, target) or "origin"
    known = git.remote_names(repo)
    if remote not in known:
        where = f"remotes: {', '.join(known)}" if known else "the repository has no remote"
        raise BadInput(f"no remote named '{remote}' ({where})",
                       hint="add one with 'git remote add origin URL' or pass --remote NAME")
    return remote


def _push_one(repo: git.Repository, store: RunStore, plan: Plan, name: str, remote: str,
              forge: Forge | None, draft: bool) -> PushOutcome:
    stream = store.record.streams[name]
    tip = git.ref_commit(repo, f"refs/heads/{stream.branch}")
    if tip is None:
        return PushOutcome(name, False, [f"{name}: branch {stream.branch} is gone; nothing "
                                         "pushed (see 'wtr clean' output for its pinned tip)"])
    pushed, line = _push_branch(repo, store, stream, remote, tip)
    lines = [line]
    if not pushed or forge is None:
        return PushOutcome(name, pushed, lines)
    try:
        lines.append(_open_or_update(store, plan, plan.stream(name), forge, draft))
    except ForgeFailed as exc:
        return PushOutcome(name, False, [*lines, f"{name}: {exc.message}"])
    return PushOutcome(name, True, lines)


def _push_branch(repo: git.Repository, store: RunStore, stream: StreamRecord, remote: str,
                 tip: str) -> tuple[bool, str]:
    name, branch = stream.name, stream.branch
    ours = (stream.pushed or {}).get("commit") if (stream.pushed or {}).get("remote") == remote \
        else None
    there = git.remote_branch_commit(repo, remote, branch)
    if there == tip:
        _record_push(store, name, remote, branch, tip)
        return True, f"{name}: {remote}/{branch} is up to date ({tip[:10]})"
    if there is not None and there != ours:
        return False, (f"{name}: {remote}/{branch} holds {there[:10]}, which this run did not "
                       "push; nothing forced (fetch it and look, or push another run)")
    result = git.push_branch(repo, remote, branch, tip, there)
    if not result.ok:
        reason = (result.stderr or result.stdout).strip().splitlines()
        return False, (f"{name}: push to {remote} rejected: "
                       f"{reason[-1] if reason else 'no reason given'}; nothing forced")
    _record_push(store, name, remote, branch, tip)
    return True, f"{name}: pushed {branch} to {remote} ({tip[:10]})"


def _record_push(store: RunStore, name: str, remote: str, branch: str, commit: str) -> None:
    store.update_stream(name, "stream_pushed",
                        pushed={"remote": remote, "branch": branch, "commit": commit, "at": now()})


def _open_or_update(store: RunStore, plan: Plan, stream: Stream, forge: Forge,
                    draft: bool) -> str:
    proposal = _proposal(store, plan, stream, draft)
    found = forge.find(proposal.branch)
    if found is not None and found.state == "merged":
        _record_pr(store, stream.name, forge, found, draft)
        return f"{stream.name}: {forge.label} #{found.number} is already merged ({found.url})"
    if found is not None and found.state == "open":
        forge.edit(found, proposal)
        updated = PullRequest(found.number, found.url, "open", proposal.base)
        _record_pr(store, stream.name, forge, updated, draft)
        return f"{stream.name}: updated {forge.label} #{found.number} ({found.url})"
    created = forge.create(proposal)
    _record_pr(store, stream.name, forge, created, draft)
    return (f"{stream.name}: opened {forge.label} #{created.number} onto {proposal.base} "
            f"({created.url})")


def _record_pr(store: RunStore, name: str, forge: Forge, request: PullRequest,
               draft: bool) -> None:
    store.update_stream(name, "stream_pr", pr={
        "forge": forge.name, "number": request.number, "url": request.url,
        "state": request.state, "base": request.base, "draft": draft, "at": now()})


def pr_base(store: RunStore, stream: Stream) -> str:
    """The target, or the branch of the stream's one dependency while that is pushed and
    not yet in the target: a stack of pull requests, each showing only its own work."""
    record = store.record
    if len(stream.depends_on) != 1:
        return record.target
    below = record.streams[stream.depends_on[0]]
    if below.status == Status.MERGED.value or not below.pushed:
        return record.target
    if (below.pr or {}).get("state") == "merged":
        return record.target
    return below.branch


def _proposal(store: RunStore, plan: Plan, stream: Stream, draft: bool) -> Proposal:
    base = pr_base(store, stream)
    first = next((line.strip() for line in stream.prompt.splitlines() if line.strip()), "")
    title = stream.description.strip() or f"{stream.name}: {first}".rstrip(": ")
    return Proposal(branch=store.record.streams[stream.name].branch, base=base,
                    title=title[:120], body=pr_body(store, plan, stream, base), draft=draft)


def pr_body(store: RunStore, plan: Plan, stream: Stream, base: str) -> str:
    """What a reviewer needs: why the stream exists, what its agent says, what it changed,
    what was checked. Marked so a later push finds and replaces it whole."""
    record = store.record
    doc = stream_document(store, record.streams[stream.name])
    parts = [f"<!-- worktree-runner run={record.run} stream={stream.name} -->",
             f"Work of stream **{stream.name}** from run `{record.run}` (worktree-runner)."]
    if stream.description:
        parts.append(f"> {stream.description}")
    parts += _dependency_note(record.target, stream, base)
    parts += ["### What it was asked", _fenced(_first_lines(stream.prompt, PROMPT_LINES))]
    parts += ["### What its agent reports", _agent_report(doc)]
    files = doc["changed_files"]
    parts += [f"### Changed files ({len(files)})",
              "\n".join(f"- `{path}`" for path in files) or "none"]
    parts += ["### Checks", _checks(plan, stream, len(files))]
    return "\n\n".join(parts) + "\n"


def _dependency_note(target: str, stream: Stream, base: str) -> list[str]:
    if not stream.depends_on:
        return []
    deps = ", ".join(f"`{d}`" for d in stream.depends_on)
    if base != target:
        return [f"Stacked on {deps}: review and merge that one first; this request shows "
                "only this stream's own changes."]
    return [f"Depends on {deps}. It is based on `{target}` and so also carries their "
            "changes until they are merged."]


def _agent_report(doc: dict[str, object]) -> str:
    report = doc.get("report")
    if isinstance(report, dict) and report.get("text"):
        return str(report["text"]).strip()
    progress = doc.get("progress")
    message = progress.get("message") if isinstance(progress, dict) else None
    return f"Last progress message: {message}" if message else "The agent left no report."


def _checks(plan: Plan, stream: Stream, changed: int) -> str:
    verify = [*stream.verify]
    lines = [f"- every changed file ({changed}) is inside the stream's files and shared paths"]
    if verify:
        lines += [f"- verify passed: `{command}`" for command in verify]
    else:
        lines.append("- the stream has no verify commands")
    if plan.verify:
        lines.append("- the plan's verify runs when streams are merged together, not here")
    return "\n".join(lines)


def _first_lines(text: str, count: int) -> str:
    lines = text.strip().splitlines()
    kept = lines[:count]
    if len(lines) > count:
        kept.append(f"... ({len(lines) - count} more lines)")
    return "\n".join(kept) or "(no prompt)"


def _fenced(text: str) -> str:
    """A code block that no run of backticks inside ``text`` can close early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"
