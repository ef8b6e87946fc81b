"""The life of one stream: its worktree, its agent's attempts, and the checks of its work."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner import checkout, faults, git, procs, rescue, sandbox, sparse, statefs
from worktree_runner.coordinate.book import Request, round_message
from worktree_runner.coordinate.desk import Desk
from worktree_runner.errors import WtrError
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.plan.patterns import compile_patterns
from worktree_runner.pool import Pool
from worktree_runner.presets import PRESETS, Launch, McpServer, Preset, StreamFacts
from worktree_runner.run import by_hand, feedback, handover, recover
from worktree_runner.run.agent_report import fill_from_final_message
from worktree_runner.run.budget import Ledger, Meter, attempt_usage
from worktree_runner.run.guard import Guard
from worktree_runner.run.prompt import DependencyWork, render_command, render_prompt
from worktree_runner.run.state import Failure, RunStore, Status, now
from worktree_runner.run.usage import ATTEMPT_OPENING, attempt_output
from worktree_runner.words import plural

POLL_SECONDS = 0.2
RETRY_BACKOFF_SECONDS = float(os.environ.get("WTR_RETRY_BACKOFF", "2"))


@dataclass
class RunContext:
    """What every stream of a run shares."""

    repo: git.Repository
    plan: Plan
    store: RunStore
    base_commit: str
    worktrees_root: Path
    bin_dir: Path
    guard: Guard
    stop: threading.Event = field(default_factory=threading.Event)
    # Agents found alive, or ended with a recorded exit code, when a run is resumed.
    recovered: dict[str, procs.Agent] = field(default_factory=dict)
    copy_patterns: tuple[str, ...] = ()
    pool: Pool | None = None
    agents: dict[str, procs.Agent] = field(default_factory=dict)
    # Agents end with this process (a Dask worker's: the stream's next attempt runs
    # elsewhere, none may run on beside it); a local run's outlive it, for resume to adopt.
    bound_agents: bool = False
    desk: Desk | None = None  # change requests between streams (coordinate/)
    _copied: list[str] | None = None
    _copied_lock: threading.Lock = field(default_factory=threading.Lock)
    ledger: Ledger = field(init=False)  # what the streams spent, against their budgets

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.store)

    @property
    def run_id(self) -> str:
        return self.store.run_id

    def branch(self, name: str) -> str:
        return f"wtr/{self.run_id}/{name}"

    def worktree(self, name: str) -> Path:
        return self.worktrees_root / self.run_id / name

    def port(self, name: str) -> int:
        """The stream's ``WTR_PORT``."""
        return self.plan.port(name)

    def compose_project(self, name: str) -> str:
        """The stream's ``COMPOSE_PROJECT_NAME``."""
        return compose_project_name(self.run_id, name)

    def copied(self) -> list[str]:
        """Untracked files of the main worktree that ``copy`` or ``.worktreeinclude``
        select; found once per run, used when preparing and checking every stream."""
        with self._copied_lock:
            if self._copied is None:
                untracked = git.untracked_files(self.repo) if self.copy_patterns else []
                self._copied = sorted(compile_patterns(self.copy_patterns).match_files(untracked))
            return self._copied


class StreamFailed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def run_stream(ctx: RunContext, name: str) -> bool:
    """Prepare, run and check one stream; record the outcome. True if it succeeded."""
    stream = ctx.plan.stream(name)
    previous = ctx.store.record.streams[name].failure

    def life() -> Failure | None:
        _check_budget(ctx, name)
        _check_program(ctx, stream)
        _prepare(ctx, stream)
        return _attempts(ctx, stream, previous)

    return live_stream(ctx, name, life, lambda text: _append_log(ctx, name, text))


def live_stream(ctx: RunContext, name: str, life: Callable[[], Failure | None],
                log: Callable[[str], None]) -> bool:
    """A stream's life as the run records it: running, then ``life`` (a crash in it is the
    stream's failure, never the run's), the look outside its worktree, and its end."""
    started = time.monotonic()
    ctx.store.update_stream(name, "stream_started", status=Status.RUNNING.value,
                            started_at=now(), finished_at=None, failure=None, exit_code=None,
                            warnings=[])
    failure: Failure | None
    ctx.guard.enter(name)
    try:
        failure = life()
    except StreamFailed as exc:
        failure = exc.failure
    except WtrError as exc:
        failure = Failure("error", exc.message)
    except Exception as exc:  # one stream's crash must not take the others down
        log(traceback.format_exc())
        failure = Failure("error", f"internal error: {exc!r} (traceback in the stream's log)")
    try:
        # a run being stopped looks again when it resumes (reported on the run then)
        breach = ctx.guard.leave(name, look=not ctx.stop.is_set())
    except Exception as exc:  # the look must never take the stream's outcome down
        breach = None
        log(f"wtr: could not look for changes outside the worktree: {exc}")
    if breach is not None and failure is None:
        failure = Failure("error", breach)
    status = Status.FAILED if failure else Status.SUCCEEDED
    ctx.store.update_stream(name, "stream_finished", status=status.value, failure=failure,
                            finished_at=now(), pid=None,
                            seconds=round(time.monotonic() - started, 3))
    return failure is None


# -- before the agent ---------------------------------------------------------------------


def _check_budget(ctx: RunContext, name: str) -> None:
    """No agent starts for a stream, or in a run, whose budget is spent."""
    failure = ctx.ledger.over(name)
    if failure is not None:
        raise StreamFailed(failure)


def _check_program(ctx: RunContext, stream: Stream) -> None:
    template = stream.agent.argv_template()
    if isinstance(template, str) or "/" in template[0] or not template[0]:
        return
    path = procs.child_env({}, ctx.bin_dir)["PATH"]
    if shutil.which(template[0], path=path) is None:
        raise StreamFailed(Failure(
            "error", f"agent program '{template[0]}' was not found on PATH; install it or "
                     "change the stream's agent"))


def _prepare(ctx: RunContext, stream: Stream) -> None:
    """Create the stream's branch and worktree, or bring back what a crash left; copy; setup.

    Each step is recorded once done, so a runner killed between any two of them resumes
    at the step it had not finished.
    """
    name, path, branch = stream.name, ctx.worktree(stream.name), ctx.branch(stream.name)
    record = ctx.store.record.streams[name]
    # Once an agent has worked in the worktree, whatever it did to its branch or HEAD is for
    # its attempt's check to judge, and the commits it hid are known to the worktree's HEAD
    # reflog alone: a new branch or worktree there would lose them.
    if not (record.attempts and _registered(ctx, path)):
        _create_worktree(ctx, stream, path, branch)
    if ctx.plan.is_sparse(stream):
        sparse.restrict(ctx.repo, path, stream, record.base_commit or ctx.base_commit)
    elif record.checkout in ("overlay", "reflink"):
        checkout.fill(ctx.repo, path, record.checkout, ctx.worktrees_root, ctx.base_commit,
                      name)
    git.populate_worktree(path)
    faults.point("after_worktree", name)
    if record.worktree != str(path):
        ctx.store.update_stream(name, "worktree_created", worktree=str(path))
    if record.start_conflict is not None:
        _resolved_start(ctx, stream, path, record.start_conflict)
    ctx.guard.started()  # (nothing of the plan runs before the run's snapshot is taken)
    if not record.prepared:
        _copy_files(ctx, path)
        for command in ctx.plan.setup:
            code = procs.run_logged(command, path, agent_env(ctx, stream), ctx.store.log_path(name))
            if code != 0:
                raise StreamFailed(Failure("setup",
                                           f"setup command failed (exit {code}): {command}"))
        ctx.store.update_stream(name, "worktree_prepared", prepared=True)


def _create_worktree(ctx: RunContext, stream: Stream, path: Path, branch: str) -> None:
    """The stream's branch and worktree, or what a crash left of them brought back."""
    name, record = stream.name, ctx.store.record.streams[stream.name]
    if not git.branch_exists(ctx.repo, branch):
        base = record.base_commit or stream_base(ctx, stream)
        # (recorded before the worktree is made: a resumed run finishes it the same way)
        method = _checkout_method(ctx, stream)
        if isinstance(base, StartConflict):
            ctx.store.update_stream(name, "start_conflict", start_conflict=base.to_json(),
                                    checkout=method)
            base = base.ours
        else:
            ctx.store.update_stream(name, "base_resolved", base_commit=base, checkout=method)
        if method != "full" or not _from_pool(ctx, stream, path, branch, base):
            git.add_worktree(ctx.repo, path, branch, base)
        faults.point("after_branch", name)
    elif not _registered(ctx, path, branch):
        ctx.repo.git("worktree", "prune")
        git.add_worktree(ctx.repo, path, branch, None)
        ctx.store.event("worktree_recreated", stream=name)


def _checkout_method(ctx: RunContext, stream: Stream) -> str:
    """How the stream's worktree gets its files: the plan's ``checkout``, as it works here."""
    wanted = "full" if ctx.plan.is_sparse(stream) else stream.checkout
    method = checkout.method_for(wanted, ctx.worktrees_root, ctx.repo)
    if method != wanted and wanted != "auto":
        _append_log(ctx, stream.name, f"wtr: checkout '{wanted}' does not work here; "
                                      f"the worktree is a {method} checkout")
    return method


def _from_pool(ctx: RunContext, stream: Stream, path: Path, branch: str, base: str) -> bool:
    """Take a clean worktree a finished run left in the pool (sparse streams never do)."""
    if ctx.pool is None or ctx.plan.is_sparse(stream):
        return False
    if not ctx.pool.take(path, branch, base, stream.name):
        return False
    ctx.store.event("worktree_reused", stream=stream.name)
    return True


def _registered(ctx: RunContext, path: Path, branch: str | None = None) -> bool:
    """Whether git has a worktree at ``path`` (on ``branch``, if given) and it is there."""
    found = next((w for w in git.list_worktrees(ctx.repo) if w.path == path), None)
    return (found is not None and (branch is None or found.branch == branch)
            and path.exists())


@dataclass(frozen=True)
class StartConflict:
    """The results a stream starts from conflict: ``ours`` is the merge of those before
    the one that conflicts; a human resolves the rest in the stream's worktree."""

    ours: str
    streams: list[str]  # the predecessors merged when the conflict showed
    files: list[str]
    parents: list[str]  # every result to merge, in order
    heads: dict[str, str]  # predecessor -> its result

    def to_json(self) -> dict[str, Any]:
        return {"streams": self.streams, "files": self.files, "parents": self.parents,
                "heads": self.heads}


def stream_base(ctx: RunContext, stream: Stream) -> str | StartConflict:
    """The run's base, the one predecessor's result, or a merge of several (docs/plan.md)."""
    heads = {n: head for n in (*stream.depends_on, *stream.waits_for)
             if (head := _result(ctx, n))}
    parents = git.independent(ctx.repo, list(heads.values()))
    if not parents:
        return ctx.base_commit
    merged = parents[0]
    for index, parent in enumerate(parents[1:], 2):
        result = git.merge_trees(ctx.repo, merged, parent)
        if result.tree is None:
            involved = [n for n, head in heads.items() if head in parents[:index]]
            return StartConflict(merged, involved, result.conflicts, parents, heads)
        merged = git.commit_tree(ctx.repo, result.tree, [merged, parent], "merge")
    if len(parents) == 1:
        return merged
    tree = git.tree_of(ctx.repo, merged)
    return git.commit_tree(ctx.repo, tree, parents, _start_message(stream))


def _result(ctx: RunContext, name: str) -> str | None:
    """The final commit of a predecessor that succeeded, landed or not: under ``run --merge``
    it may be merged already when a dependent starts, and still counts (its result is the
    same whichever way the race with the lander went)."""
    record = ctx.store.record.streams[name]
    done = record.status in (Status.SUCCEEDED.value, Status.MERGED.value)
    return record.head_commit if done and record.head_commit else None


def _start_message(stream: Stream) -> str:
    names = ", ".join(n for n in (*stream.depends_on, *stream.waits_for))
    return f"wtr: start of {stream.name} from {names}"


def _resolved_start(ctx: RunContext, stream: Stream, path: Path,
                    pending: dict[str, Any]) -> None:
    """Merge the stream's starting points in its worktree; a conflict waits there for a
    human. Once every one is in a commit there, that commit is the stream's base."""
    name = stream.name
    if git.merge_in_progress(path) or git.unmerged_files(path):
        raise StreamFailed(_start_failure(
            ctx, stream, path, pending,
            "the merge of its starting points is not resolved and committed yet"))
    parents = pending["parents"]
    for index, parent in enumerate(parents):
        if git.is_ancestor(ctx.repo, parent, git.head_of(path)):
            continue
        result = git.merge_in_worktree(ctx.repo, path, parent, _start_message(stream))
        if not result.ok:
            files = git.unmerged_files(path) or pending["files"]
            involved = [n for n, head in pending.get("heads", {}).items()
                        if head in parents[:index + 1]] or pending["streams"]
            pending = {**pending, "files": files, "streams": involved}
            ctx.store.update_stream(name, "start_conflict", start_conflict=pending)
            raise StreamFailed(_start_failure(ctx, stream, path, pending, ""))
    ctx.store.update_stream(name, "base_resolved", base_commit=git.head_of(path),
                            start_conflict=None)


def _start_failure(ctx: RunContext, stream: Stream, path: Path, pending: dict[str, Any],
                   why: str) -> Failure:
    files = ", ".join(pending["files"])
    quoted = [f"'{n}'" for n in pending["streams"]]
    streams = ", ".join(quoted[:-1]) + f" and {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    cause = (f"{why} (conflict in {files})" if why
             else f"the results of {streams}, which it starts from, conflict in {files}")
    message = (f"{cause}; resolve the merge in {path} (edit, git add, git commit), "
               f"then run 'wtr retry {stream.name}'")
    _append_log(ctx, stream.name, f"wtr: {stream.name}: {message}")
    return Failure("error", message, list(pending["files"]))


def _copy_files(ctx: RunContext, worktree: Path) -> None:
    root = ctx.repo.root
    for relative in ctx.copied():
        source, target = root / relative, worktree / relative
        # A link could lead out of the repository: copy only what really lies inside it.
        if source.is_file() and source.resolve().is_relative_to(root.resolve()):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def agent_env(ctx: RunContext, stream: Stream,
              preset_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the stream's agent, setup and verify (and of a person's session
    in it, ``wtr attach``): the preset's variables, the plan's (which win), then the
    runner's own (which nothing overrides)."""
    record = ctx.store.record.streams[stream.name]
    return procs.child_env(
        {
            **(preset_env or {}),
            **stream.agent.env,
            "WTR_RUN": ctx.run_id,
            "WTR_STREAM": stream.name,
            "WTR_WORKTREE": str(ctx.worktree(stream.name)),
            "WTR_BRANCH": ctx.branch(stream.name),
            "WTR_BASE_COMMIT": record.base_commit or "",
            "WTR_PROMPT_FILE": str(ctx.store.prompt_path(stream.name)),
            "WTR_FILES": "\n".join(stream.files),
            "WTR_STATE_DIR": str(ctx.store.dir),
            "WTR_REPORT": str(ctx.store.report_path(stream.name)),
            "WTR_PORT": str(ctx.port(stream.name)),
            "COMPOSE_PROJECT_NAME": ctx.compose_project(stream.name),
            # (its git commands made in a person's checkout are then told from theirs)
            "GIT_REFLOG_ACTION": by_hand.marker(ctx.run_id, stream.name),
            **_ignore_copied(ctx),
        },
        ctx.bin_dir,
    )


def _ignore_copied(ctx: RunContext) -> dict[str, str]:
    """Git configuration, for the agent's own git commands, that ignores the files brought
    in by ``copy`` (besides what the user already ignores): a careless ``git add -A``
    never commits a copied secret."""
    copied = ctx.copied()
    if not copied:
        return {}
    path = ctx.store.dir / "copied.gitignore"
    if not path.exists():
        path.write_text(git.global_excludes(ctx.repo) + "\n# brought in by copy\n"
                        + "".join(git.literal_pattern(p) + "\n" for p in copied))
    try:
        index = int(os.environ.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        index = 0
    return {"GIT_CONFIG_COUNT": str(index + 1), f"GIT_CONFIG_KEY_{index}": "core.excludesFile",
            f"GIT_CONFIG_VALUE_{index}": str(path)}


def compose_project_name(run_id: str, name: str) -> str:
    """Docker Compose's project of a stream's worktree (its containers, networks, volumes).

    Compose allows only ``a-z 0-9 _ -``; folding case and the other characters alone would
    give streams ``a.b`` and ``a-b`` (or ``HEAD`` and ``head``) one project, so a short
    digest of the exact run and stream names follows the readable part."""
    readable = re.sub(r"[^a-z0-9_-]", "-", f"{run_id}-{name}".lower()).lstrip("-_")
    digest = hashlib.sha256(f"{run_id}/{name}".encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _append_log(ctx: RunContext, name: str, text: str) -> None:
    statefs.append_text(ctx.store.log_path(name), text if text.endswith("\n") else text + "\n")


# -- the agent's attempts -------------------------------------------------------------------


def _attempts(ctx: RunContext, stream: Stream, last: Failure | None) -> Failure | None:
    """Run attempts until one succeeds, retries run out, or the run is stopped. A failure
    the agent can fix is first told to its session, up to ``feedback`` rounds."""
    previous: list[Failure | None] = [last]

    def attempt() -> Failure | None:
        recovered = ctx.recovered.pop(stream.name, None)
        if recovered is not None:
            failure = _finish_attempt(ctx, stream, recovered)
        elif ctx.store.record.streams[stream.name].message is not None:
            failure = _person_round(ctx, stream)
        else:
            failure = _attempt(ctx, stream, previous[-1])
        _end_attempt(ctx, stream.name, failure)
        failure = fed_back(failure)
        while failure is None and (asked := _requests_due(ctx, stream.name)):
            failure = fed_back(_request_round(ctx, stream, asked))
        previous.append(failure)
        return failure

    def fed_back(failure: Failure | None) -> Failure | None:
        while _rounds_left(ctx, stream) and feedback.fixable(failure, stream):
            assert failure is not None
            failure = _feedback_round(ctx, stream, failure)
            _end_attempt(ctx, stream.name, failure)
        return failure

    def pause(seconds: float) -> None:
        ctx.stop.wait(seconds)

    from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

    retrying = Retrying(
        stop=stop_after_attempt(stream.agent.retries + 1),
        wait=wait_exponential(multiplier=RETRY_BACKOFF_SECONDS, max=300),
        retry=retry_if_result(lambda f: f is not None and f.kind != "budget"
                              and not ctx.stop.is_set()),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        sleep=pause,
    )
    result: Failure | None = retrying(attempt)
    return result


def _end_attempt(ctx: RunContext, name: str, failure: Failure | None) -> None:
    _append_log(ctx, name, _attempt_end(ctx, name, failure))
    record = ctx.store.record.streams[name]
    if record.attempt_log:
        ended = {**record.attempt_log[-1], "finished_at": now(),
                 "failure": asdict(failure) if failure else None}
        ctx.store.update_stream(name, attempt_log=[*record.attempt_log[:-1], ended])
    ctx.store.event("attempt_finished", stream=name, attempt=record.attempts,
                    failure=asdict(failure) if failure else None)


def _rounds_left(ctx: RunContext, stream: Stream) -> int:
    """Feedback rounds the stream still has: ``feedback`` less those since its last fresh
    attempt (counted from the attempt log, so a resumed run counts on)."""
    if ctx.stop.is_set():
        return 0
    used = 0
    for entry in reversed(ctx.store.record.streams[stream.name].attempt_log):
        if entry.get("kind") == "request":
            continue  # (another stream's request is not a failure being fixed)
        if entry.get("kind") != "feedback":
            break
        used += 1
    return max(stream.feedback_rounds - used, 0)


def _attempt(ctx: RunContext, stream: Stream, previous: Failure | None) -> Failure | None:
    name = stream.name
    earlier = _earlier_agent(ctx, name)
    if earlier is not None:
        return _finish_attempt(ctx, stream, earlier)
    _check_budget(ctx, name)  # (a retry, after the attempt before it spent more)
    # No supervisor of this stream is alive: anything still running in its name was left by
    # a killed one (a runner and supervisor both killed) and must not work beside a new agent.
    if ctx.store.record.streams[name].attempts and procs.end_tagged(ctx.store.dir, name):
        ctx.store.event("strays_killed", stream=name)
    kind = "retry" if ctx.store.record.streams[name].attempt_log else "agent"
    _record_attempt(ctx, stream, kind, None)
    asked = (ctx.desk.for_prompt(name, ctx.store.record.streams[name].attempts)
             if ctx.desk is not None else [])
    prompt = _prompt(ctx, stream, previous, [r.text() for r in asked])
    prompt_file = ctx.store.prompt_path(name)
    _note_replaced(ctx, name, prompt_file, statefs.write_text(prompt_file, prompt))
    return _start(ctx, stream, prompt, prompt_file, _launch(ctx, stream), {})


def _prompt(ctx: RunContext, stream: Stream, previous: Failure | None,
            requests: list[str] | None = None) -> str:
    worktree, branch = ctx.worktree(stream.name), ctx.branch(stream.name)
    return render_prompt(ctx.plan, stream, str(worktree), branch,
                         _dependency_work(ctx, stream), previous,
                         str(ctx.store.report_path(stream.name)), requests or (),
                         mcp=gets_mcp(stream))


def _requests_due(ctx: RunContext, name: str) -> list[Request]:
    """Requests of other streams that came while the agent worked: one more round each
    time its work passes its checks and some are waiting (none once the run stops)."""
    if ctx.desk is None or ctx.stop.is_set():
        return []
    return ctx.desk.next_round(name, ctx.store.record.streams[name].attempts + 1)


def _request_round(ctx: RunContext, stream: Stream, asked: list[Request]) -> Failure | None:
    """The agent's session continued with other streams' requests (attempt kind
    ``request``); its checks run again when it exits."""
    message = round_message(asked)
    failure = _continue(ctx, stream, "request", message, {"WTR_REQUEST": message})
    _end_attempt(ctx, stream.name, failure)
    return failure


def _record_attempt(ctx: RunContext, stream: Stream, kind: str, resumed: str | None) -> None:
    """The attempt is recorded before its agent starts (a resume then knows of it)."""
    name, worktree, branch = stream.name, ctx.worktree(stream.name), ctx.branch(stream.name)
    record = ctx.store.record.streams[name]
    number = record.attempts + 1
    entry = {"attempt": number, "kind": kind, "started_at": now(), "resumed": resumed,
             "finished_at": None, "failure": None}
    # (a person's message is taken by the attempt that tells it, in the same write)
    ctx.store.update_stream(name, attempts=number, attempt_log=[*record.attempt_log, entry],
                            reflog_start=len(git.reflog(worktree, f"refs/heads/{branch}")),
                            **({"message": None} if kind == "message" else {}))
    ctx.store.event("attempt_started", stream=name, status=record.status, attempt=number,
                    attempt_kind=kind, resumed=resumed)


def _feedback_round(ctx: RunContext, stream: Stream, failure: Failure) -> Failure | None:
    """Tell the agent's session what failed; the checks run again when it exits."""
    record = ctx.store.record.streams[stream.name]
    base = record.base_commit or ctx.base_commit
    undo = [feedback.Undo(path, git.exists_at(ctx.repo, base, path))
            for path in feedback.outside_scope(failure.files, stream)]
    rounds = stream.feedback_rounds
    message = feedback.feedback_message(failure, stream, base, undo,
                                        rounds - _rounds_left(ctx, stream) + 1, rounds,
                                        _conflicted_target(ctx, stream.name)
                                        if failure.kind == "sync" else None)
    return _continue(ctx, stream, "feedback", message, {"WTR_FEEDBACK": message})


def _conflicted_target(ctx: RunContext, name: str) -> feedback.Target:
    """The target's tip the stream's last sync conflicted with (its branch, if unknown)."""
    from worktree_runner.merge.sync import pending_conflict

    target = ctx.store.record.target
    commit = (pending_conflict(ctx.store, name) or {}).get("onto")
    return feedback.Target(target, commit if isinstance(commit, str) else target)


def _person_round(ctx: RunContext, stream: Stream) -> Failure | None:
    """``wtr retry --message``: the session continued with a person's words."""
    record = ctx.store.record.streams[stream.name]
    if record.attempts and procs.end_tagged(ctx.store.dir, stream.name):
        ctx.store.event("strays_killed", stream=stream.name)  # (as before a new attempt)
    text = record.message or ""
    return _continue(ctx, stream, "message", feedback.person_message(text),
                     {"WTR_MESSAGE": text})


def _continue(ctx: RunContext, stream: Stream, kind: str, message: str,
              extra_env: dict[str, str]) -> Failure | None:
    """Continue the stream's agent session with ``message``; where its CLI cannot (or
    for a ``command`` agent), a fresh start whose prompt file holds the prompt and it."""
    name = stream.name
    _check_budget(ctx, name)  # (a round costs too)
    session = ctx.store.record.streams[name].session
    preset = preset_of(stream)
    resumed = (_resume_launch(ctx, stream, preset, session)
               if preset is not None and session else None)
    _record_attempt(ctx, stream, kind, session if resumed is not None else None)
    if resumed is None:
        if preset is not None:
            _append_log(ctx, name, f"wtr: {preset.name} has no session to continue here; a "
                                   "fresh agent is given the prompt and what happened")
        prompt = feedback.fresh_start(_prompt(ctx, stream, None), message)
        prompt_file = ctx.store.prompt_path(name)
        launch = _launch(ctx, stream)
    else:
        prompt, prompt_file, launch = message, ctx.store.stream_dir(name) / "message.md", resumed
    _note_replaced(ctx, name, prompt_file, statefs.write_text(prompt_file, prompt))
    return _start(ctx, stream, prompt, prompt_file, launch, extra_env)


def _start(ctx: RunContext, stream: Stream, prompt: str, prompt_file: Path,
           launch: Launch | None, extra_env: dict[str, str]) -> Failure | None:
    """Start the recorded attempt's agent and see it to its end."""
    name, worktree, branch = stream.name, ctx.worktree(stream.name), ctx.branch(stream.name)
    number = ctx.store.record.streams[name].attempts
    values = {"prompt_file": str(prompt_file), "prompt": prompt, "stream": name,
              "worktree": str(worktree), "branch": branch}
    template = stream.agent.argv_template() if launch is None else (*launch.argv,
                                                                    *stream.agent.args)
    argv = render_command(template, values)
    if stream.sandbox:
        argv = sandbox.wrap(procs.as_argv(argv), _sandbox_layout(ctx, stream))
    _append_log(ctx, name, f"{ATTEMPT_OPENING.format(number=number)}{now()} ---")
    log_start = statefs.size(ctx.store.log_path(name))
    env = {**agent_env(ctx, stream, launch.env if launch is not None else None), **extra_env}
    faults.point("agent_starting", name)
    agent = procs.start_agent(argv, worktree, env, ctx.store.log_path(name),
                              ctx.store.exit_path(name, number), ctx.plan.log_limit,
                              bound=ctx.bound_agents)
    faults.point("agent_started", name)
    ctx.store.update_stream(name, "agent_started", pid=agent.pid, pid_start=agent.started,
                            agent_started=time.time(), log_start=log_start)
    faults.point("agent_running", name)
    return _finish_attempt(ctx, stream, agent)


def preset_of(stream: Stream) -> Preset | None:
    """The stream's preset, when its agent is one (a ``command`` replaces the preset)."""
    agent = stream.agent
    return PRESETS[agent.preset] if agent.command is None and agent.preset else None


def _launch(ctx: RunContext, stream: Stream) -> Launch | None:
    """The preset's start of this attempt, its files written into the stream's folder."""
    preset = preset_of(stream)
    if preset is None:
        return None
    return write_launch_files(ctx, stream, preset.launch(stream_facts(ctx, stream)))


def _resume_launch(ctx: RunContext, stream: Stream, preset: Preset,
                   session: str) -> Launch | None:
    """The preset's continuation of ``session``; None when its CLI cannot continue one."""
    launch = preset.resume(stream_facts(ctx, stream), session)
    return write_launch_files(ctx, stream, launch) if launch is not None else None


def stream_facts(ctx: RunContext, stream: Stream) -> StreamFacts:
    """What the stream's preset knows of it (also for a person's session, ``wtr attach``)."""
    worktree = ctx.worktree(stream.name)
    return StreamFacts(
        stream=stream.name, worktree=worktree, state_dir=ctx.store.stream_dir(stream.name),
        git_dir=git.git_dir_of(worktree), git_common_dir=ctx.repo.common_dir,
        scope=stream.scope, wtr_bin=ctx.bin_dir, run_state_dir=ctx.store.dir,
        locks_dir=ctx.repo.state_dir / "locks", as_root=os.geteuid() == 0,
        sandbox=stream.sandbox, verify=stream.verify,
        mcp=mcp_server(ctx, stream) if gets_mcp(stream) else None)


def gets_mcp(stream: Stream) -> bool:
    """Whether the stream's agent is given ``wtr mcp``: a preset whose CLI takes it, unless
    the plan says ``mcp: false``."""
    preset = preset_of(stream)
    return stream.mcp and preset is not None and preset.gets_mcp(stream.sandbox)


def mcp_server(ctx: RunContext, stream: Stream) -> McpServer:
    """``wtr mcp`` as the shim in the agents' PATH starts wtr: this very Python and
    installation (``PYTHONPATH`` too, when it names where that is)."""
    env = {"WTR_RUN": ctx.run_id, "WTR_STREAM": stream.name,
           "WTR_STATE_DIR": str(ctx.store.dir),
           "WTR_WORKTREE": str(ctx.worktree(stream.name)),
           "WTR_REPORT": str(ctx.store.report_path(stream.name))}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return McpServer(sys.executable, ("-P", "-m", "worktree_runner", "mcp"), env)


def write_launch_files(ctx: RunContext, stream: Stream, launch: Launch) -> Launch:
    """The preset's files of a start, written into the stream's folder."""
    state = ctx.store.stream_dir(stream.name)
    for file_name, text in launch.files.items():
        path = state / file_name
        _note_replaced(ctx, stream.name, path, statefs.write_text(path, text, 0o600, below=state))
    return launch


def _note_replaced(ctx: RunContext, name: str, path: Path, was: str | None) -> None:
    """Say so when a file of the stream's folder was not a regular file (an agent put a
    symlink or a FIFO in its place) and was replaced."""
    if was is not None:
        ctx.store.event("state_file_replaced", stream=name, file=path.name, was=was)
        _append_log(ctx, name, f"wtr: {path.name} was {was}, not a file; replaced, not "
                               "followed")


def _earlier_agent(ctx: RunContext, name: str) -> procs.Agent | None:
    """An agent of this stream that is still alive, looked for again before any new agent
    starts (a resume killed after it had found one leaves it so): adopted, never run
    beside a second one."""
    record = ctx.store.record.streams[name]
    if not record.attempts:
        return None  # (an attempt is recorded before its agent starts: none ever did)
    alive = recover.living_agent(ctx.store, name)
    if alive is None:
        # A resume found it (alive or ended) and was killed before it could watch it.
        ended = ctx.store.exit_path(name, record.attempts)
        if record.adopted and statefs.is_file(ended):
            return procs.Agent(record.pid or 0, record.pid_start, ended)
    return alive


def _sandbox_layout(ctx: RunContext, stream: Stream) -> sandbox.Layout:
    worktree = ctx.worktree(stream.name)
    return sandbox.Layout(
        worktree=worktree,
        common_dir=ctx.repo.common_dir,
        worktree_git_dir=git.git_dir_of(worktree),
        branch=f"refs/heads/{ctx.branch(stream.name)}",
        state_dir=ctx.store.stream_dir(stream.name),
        locks_dir=ctx.repo.state_dir / "locks",
        readable=(ctx.repo.root, ctx.repo.common_dir),
        writable=tuple(sandbox.expand(path) for path in stream.writable),
    )


def _finish_attempt(ctx: RunContext, stream: Stream, agent: procs.Agent) -> Failure | None:
    """Watch the agent to its end, record how it ended, and check its work."""
    ctx.agents[stream.name] = agent
    try:
        failure = _watch(ctx, stream, agent)
    finally:
        ctx.agents.pop(stream.name, None)
    faults.point("agent_ended", stream.name)
    record = ctx.store.record.streams[stream.name]
    output = attempt_output(ctx.store.log_path(stream.name), record.log_start or 0) or ""
    preset = preset_of(stream)
    # (an agent stopped before its CLI's final record still said what it had used so far)
    used = attempt_usage(preset, output, live=True)
    if fill_from_final_message(ctx.store, stream.name, output, preset):
        ctx.store.event("report_filled", stream=stream.name)
    _note_denials(ctx, stream.name, preset.denials(output) if preset is not None else [])
    session = preset.session(output) if preset is not None else None
    ctx.ledger.settle(stream.name, used)  # (its live count becomes the whole attempt's)
    ctx.store.update_stream(stream.name, "agent_exited", exit_code=_exit_code(ctx, stream.name,
                                                                              agent),
                            pid=None, adopted=False,
                            usage=ctx.store.record.streams[stream.name].usage,
                            session=session or record.session)
    failure = failure or ctx.ledger.over(stream.name)
    if failure is not None:
        return failure
    _settle_follow_ups(ctx, stream.name)
    return _check_work(ctx, stream)


def _settle_follow_ups(ctx: RunContext, name: str) -> None:
    """The follow-ups the stream asked for and depends on end, and come into its branch,
    before its work is checked; one that could not come in is a warning."""
    if ctx.desk is None:
        return
    said = ctx.desk.settle_follow_ups(name, ctx.stop)
    if said:
        warnings = ctx.store.record.streams[name].warnings
        ctx.store.update_stream(name, "follow_up_not_brought_in", warnings=[
            *warnings, *({"kind": "request", "message": text} for text in said)])
        for text in said:
            _append_log(ctx, name, f"wtr: {text}")


def _exit_code(ctx: RunContext, name: str, agent: procs.Agent) -> int | None:
    """How the attempt ended: its agent's exit code; after a hand-over (``wtr attach
    --take-over``) the agent was stopped for a person (no failure of its own), and the
    attempt that ended is the person's session: the exit code of that session."""
    record = ctx.store.record.streams[name]
    if not record.attempt_log or record.attempt_log[-1].get("kind") != "attach":
        return agent.exit_code()
    left = handover.sessions(ctx.store.stream_dir(name))
    code = left[-1].get("exit_code") if left else None
    code = code if isinstance(code, int) else None
    ctx.store.update_stream(name, attempt_log=[*record.attempt_log[:-1],
                                               {**record.attempt_log[-1], "exit_code": code}])
    return code


def _note_denials(ctx: RunContext, name: str, denied: list[str]) -> None:
    """Tool calls the agent's CLI refused it: a warning on the stream, so that an agent
    that says it ran the tests or committed, and was not allowed to, is not believed."""
    if not denied:
        return
    shown = "; ".join(denied[:5]) + (f" (+{len(denied) - 5} more)" if len(denied) > 5 else "")
    message = f"its CLI refused the agent {plural(len(denied), 'tool call')}: {shown}"
    warnings = ctx.store.record.streams[name].warnings
    ctx.store.update_stream(name, "tools_denied",
                            warnings=[*warnings, {"kind": "denied", "message": message}])
    _append_log(ctx, name, f"wtr: {message}")


def _attempt_end(ctx: RunContext, name: str, failure: Failure | None) -> str:
    record = ctx.store.record.streams[name]
    code = "none" if record.exit_code is None else record.exit_code
    outcome = f"{failure.kind}: {failure.message}" if failure else "succeeded"
    return f"--- attempt {record.attempts} ended: exit code {code}; {outcome} ---"


def _watch(ctx: RunContext, stream: Stream, agent: procs.Agent) -> Failure | None:
    """Wait for the agent; stop its process group at a timeout, a stall, or a run stop."""
    record = ctx.store.record.streams[stream.name]
    started = time.monotonic() - (time.time() - (record.agent_started or time.time()))
    timeout, stall = stream.agent.timeout, stream.agent.stall_timeout
    activity = _Activity(ctx.store.log_path(stream.name), ctx.store.progress_path(stream.name))
    meter = Meter(ctx.ledger, stream.name, preset_of(stream), ctx.store.log_path(stream.name),
                  record.log_start or 0)
    while agent.running():
        failure = None
        if ctx.stop.is_set():
            failure = Failure("interrupted", "the run was stopped before the agent finished")
        elif timeout is not None and time.monotonic() - started > timeout:
            failure = Failure("timeout", f"the agent ran longer than its timeout of {timeout:g}s")
        elif stall is not None and activity.silent_for() > stall:
            failure = Failure("stalled", f"no output and no progress report for {stall:g}s")
        elif ctx.desk is not None and (halt := ctx.desk.halted(stream.name)) is not None:
            failure = halt
        else:
            failure = meter.check()
        if failure:
            agent.stop()
            _end_strays(ctx, stream.name, agent)
            return failure
        agent.wait(POLL_SECONDS)
    agent.reap()
    _end_strays(ctx, stream.name, agent)
    if handover.taken_over(ctx.store.stream_dir(stream.name)):
        return _handed_over(ctx, stream.name)
    code = agent.exit_code()
    if code == 0:
        return None
    if code is None:
        return Failure("error", "the agent ended without leaving an exit code")
    reason = ""
    progress = ctx.store.progress(stream.name)
    if progress and progress.get("blocked"):
        reason = f"; it reported being blocked: {progress.get('message', '')}"
    return Failure("exit_code", f"the agent exited with code {code}{reason}")


def _handed_over(ctx: RunContext, name: str) -> Failure | None:
    """A person stopped the agent to go on in its session (``wtr attach --take-over``): not
    a failure. Once they leave, the work is checked as after any attempt."""
    ctx.store.event("attempt_handed_over", stream=name)
    _append_log(ctx, name, "wtr: the agent was handed over to a person (wtr attach); its "
                           "work is checked when they leave")
    note = handover.present(ctx.store.stream_dir(name)) or {}
    record = ctx.store.record.streams[name]
    ended = [{**e, "finished_at": e["finished_at"] or now(), "handed_over": True}
             for e in record.attempt_log[-1:]]
    person = {"attempt": record.attempts + 1, "kind": "attach", "started_at": now(),
              "resumed": note.get("session"), "finished_at": None, "failure": None}
    ctx.store.update_stream(name, "attempt_started", attempts=record.attempts + 1,
                            attempt_log=[*record.attempt_log[:-1], *ended, person])
    if handover.wait_for_person(ctx.store.stream_dir(name), ctx.stop):
        return None
    return Failure("interrupted", "the run was stopped while a person had the stream's session")


def _end_strays(ctx: RunContext, name: str, agent: procs.Agent) -> None:
    """A supervisor that left no exit file did not end (it was killed): what the agent
    started may have left its tree. Found by the run and stream in their environment."""
    if statefs.is_file(agent.exit_file):
        return
    ended = procs.end_tagged(ctx.store.dir, name)
    if ended:
        ctx.store.event("strays_killed", stream=name, processes=ended)
        _append_log(ctx, name, f"wtr: the agent's supervisor was killed; stopped {ended} "
                               "process(es) the agent had left running")


class _Activity:
    """When the agent last wrote output or reported progress."""

    def __init__(self, *paths: Path) -> None:
        self.paths = paths
        self.last_seen = time.monotonic()
        self.last_stamp = self._stamp()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        stamps = []
        for path in self.paths:
            try:
                info = path.stat()
                stamps.append((info.st_mtime_ns, info.st_size))
            except FileNotFoundError:
                stamps.append((0, 0))
        return tuple(stamps)

    def silent_for(self) -> float:
        stamp = self._stamp()
        if stamp != self.last_stamp:
            self.last_stamp, self.last_seen = stamp, time.monotonic()
        return time.monotonic() - self.last_seen


def _dependency_work(ctx: RunContext, stream: Stream) -> list[DependencyWork]:
    work = []
    for dep in (*stream.depends_on, *stream.waits_for):
        head = _result(ctx, dep)
        if head is None:
            continue
        record = ctx.store.record.streams[dep]
        subjects = git.subjects(ctx.repo, record.base_commit or ctx.base_commit, head)
        work.append(DependencyWork(dep, record.changed_files, subjects))
    return work


# -- done means checked ---------------------------------------------------------------------


def _adopt_sync(ctx: RunContext, name: str) -> None:
    """The agent synced onto the target (``wtr sync``): its work starts from there now."""
    from worktree_runner.merge.sync import synced_base

    synced = synced_base(ctx.store, name)
    if synced and synced != ctx.store.record.streams[name].base_commit:
        ctx.store.update_stream(name, "base_synced", base_commit=synced)


def _adopt_merged_target(ctx: RunContext, name: str, head: str) -> None:
    """The agent merged the target into its branch (to settle a sync conflict, or to take
    work that landed): its work starts from the target's tip it merged now, and what that
    tip brought is not its own change. (The branch holds target commits its base does not
    exactly when their best common ancestor is no ancestor of the base.)"""
    base = ctx.store.record.streams[name].base_commit or ctx.base_commit
    target = git.ref_commit(ctx.repo, f"refs/heads/{ctx.store.record.target}")
    merged = git.merge_base(ctx.repo, head, target) if target else None
    if merged and merged != base and not git.is_ancestor(ctx.repo, merged, base):
        ctx.store.update_stream(name, "base_merged", base_commit=merged)


def _settle_sync(ctx: RunContext, stream: Stream) -> Failure | None:
    """A sync that conflicted (the agent's ``wtr sync``, or a person's) is tried again once
    the agent has exited: it goes through if the agent merged the target or fixed what
    conflicted. With feedback rounds, a conflict still there fails the check (told to the
    agent, hunks and all); without, it is left to the merge, as the sync said."""
    from worktree_runner.merge.sync import (
        SyncConflict,
        pending_conflict,
        record_conflict,
        sync_stream,
    )

    name = stream.name
    if not stream.feedback_rounds or pending_conflict(ctx.store, name) is None:
        return None
    try:
        sync_stream(ctx.repo, ctx.store, name, holds_run=True)
    except SyncConflict as conflict:
        record_conflict(ctx.store, conflict)
        return Failure("sync", f"its branch conflicts with {conflict.target_name}'s tip "
                               f"({conflict.target[:12]}) in {', '.join(conflict.files)}",
                       list(conflict.files), output=conflict.hunks)
    return None


def _check_work(ctx: RunContext, stream: Stream) -> Failure | None:
    """History kept, leftovers committed, every changed path in scope (and no copied file
    among them), some change made unless allowed, a conflicted sync settled, then verify
    must pass."""
    name, worktree, branch = stream.name, ctx.worktree(stream.name), ctx.branch(stream.name)
    failure, warnings = _check_history(ctx, stream)
    others = [w for w in ctx.store.record.streams[name].warnings if w.get("kind") != "history"]
    ctx.store.update_stream(name, "history_checked" if warnings else None,
                            warnings=[*others, *warnings])
    if failure is not None:
        return failure
    # (what an overlay worktree's agent can have changed: the look below, and the one for
    # files held back, read only those; holding back touches neither worktree nor index)
    among = checkout.suspects(ctx.repo, worktree)
    held, saved = _hold_outside(ctx, stream, among)
    if git.commit_all(ctx.repo, worktree, f"{name}: work left uncommitted by the agent",
                      exclude=[*ctx.copied(), *held], among=among):
        ctx.store.event("leftovers_committed", stream=name)
    record = ctx.store.record.streams[name]
    head = git.ref_commit(ctx.repo, f"refs/heads/{branch}")
    _adopt_sync(ctx, name)
    if head is not None:
        _adopt_merged_target(ctx, name, head)
    base = record.base_commit or ctx.base_commit
    changed = git.changed_paths(ctx.repo, base, head or base)
    faults.point("ownership_check", name)
    ctx.store.update_stream(name, "work_recorded", head_commit=head, changed_files=changed)
    outside = feedback.outside_scope(changed, stream)
    if outside or held:
        every = sorted({*outside, *held})
        kept = (f" ({plural(len(held), 'file')} of them left uncommitted for the agent to "
                f"undo, saved at {saved})" if held else "")
        return Failure("ownership", f"changed {plural(len(every), 'file')} outside its files: "
                       + ", ".join(every[:10]) + kept, every)
    copied = sorted(set(changed) & set(ctx.copied()))
    if copied:
        return Failure("ownership", f"committed {plural(len(copied), 'file')} brought in by "
                       f"copy, which must never be committed: {', '.join(copied[:10])}", copied)
    if not changed:
        failure = _no_changes(ctx, stream)
        if failure is not None:
            return failure
    failure = _settle_sync(ctx, stream)
    if failure is not None:
        return failure
    if stream.verify:
        log = ctx.store.log_path(name)
        ctx.store.event("verify_started", stream=name,
                        log_offset=statefs.size(log))
    for command in stream.verify:
        log = ctx.store.log_path(name)
        since = statefs.size(log)
        code = procs.run_logged(command, worktree, agent_env(ctx, stream), log,
                                timeout=stream.agent.timeout)
        if code != 0:
            output = feedback.tail(attempt_output(log, since) or "").removeprefix(f"$ {command}")
            return Failure("verify", f"verify command failed (exit {code}): {command}",
                           output=output.strip("\n") or None)
    return None


def _hold_outside(ctx: RunContext, stream: Stream,
                  among: list[str] | None) -> tuple[list[str], str]:
    """While feedback rounds are left, files the agent changed outside its scope and did not
    commit stay out of its branch, for it to undo; they are saved under a rescue ref first.
    With no round left they are committed as any leftover, and the failure shows them."""
    if not _rounds_left(ctx, stream):
        return [], ""
    worktree = ctx.worktree(stream.name)
    copied = set(ctx.copied())
    dirty = git.worktree_dirty(worktree, among)
    held = [p for p in feedback.outside_scope(dirty, stream) if p not in copied]
    if not held:
        return [], ""
    snapshot = git.snapshot_worktree(ctx.repo, worktree, f"{stream.name}: changes outside "
                                     "its files, before feedback", exclude=sorted(copied))
    if snapshot is None:
        return [], ""
    ref, _ = rescue.save_uncommitted(ctx.repo, ctx.run_id, stream.name, snapshot)
    ctx.store.event("outside_changes_held", stream=stream.name, files=held, ref=ref)
    return held, ref


def _no_changes(ctx: RunContext, stream: Stream) -> Failure | None:
    message = "the agent exited 0 but changed nothing"
    if not stream.allow_empty:
        return Failure("no_changes", f"{message} (the plan says allow_empty: false)")
    warnings = ctx.store.record.streams[stream.name].warnings
    ctx.store.update_stream(stream.name, "no_changes",
                            warnings=[*warnings, {"kind": "no_changes", "message": message}])
    return None


def _check_history(ctx: RunContext, stream: Stream) -> tuple[Failure | None, list[dict[str, str]]]:
    """Commits the agent made and then hid are saved under rescue refs; a branch that
    vanished, was left, or lost a commit it had is a ``history`` failure, or a warning
    when every file those commits changed is still changed on the branch."""
    name, worktree, branch = stream.name, ctx.worktree(stream.name), ctx.branch(stream.name)
    branch_log = git.reflog(worktree, f"refs/heads/{branch}")
    pinned = rescue.pin_hidden(ctx.repo, ctx.run_id, name,
                               [*git.reflog(worktree, "HEAD"), *branch_log])
    saved = f"; saved to {', '.join(pinned)}" if pinned else ""
    tip = git.ref_commit(ctx.repo, f"refs/heads/{branch}")
    if tip is None:
        return Failure("history", f"the agent deleted its branch {branch}{saved}"), []
    on_branch = git.current_branch(ctx.repo, cwd=worktree)
    if on_branch != branch:
        return Failure("history", f"the agent left its branch {branch} (HEAD is now "
                                  f"{on_branch or 'detached'}); check out {branch} again"
                                  f"{saved}"), []
    record = ctx.store.record.streams[name]
    base = record.base_commit or ctx.base_commit
    since = len(branch_log) - (record.reflog_start or 0)
    had = dict.fromkeys([base, record.head_commit, *branch_log[:max(since, 0)]])
    lost = [c for c in had if c and c != tip and not git.is_ancestor(ctx.repo, c, tip)]
    if not lost:
        off_branch = f"the agent made commits off its branch{saved}"
        return None, [{"kind": "history", "message": off_branch}] if pinned else []
    kept = set(git.changed_paths(ctx.repo, base, tip))
    dropped = sorted({p for c in lost for p in git.changed_paths(ctx.repo, base, c)} - kept)
    if dropped:
        return Failure("history", f"the agent rewrote its branch and dropped its changes to "
                                  f"{', '.join(dropped[:10])}{saved}", dropped), []
    rewritten = (f"the agent rewrote its branch ({plural(len(lost), 'commit')} it had are no "
                 f"longer on it; their files are still changed){saved}")
    return None, [{"kind": "history", "message": rewritten}]
