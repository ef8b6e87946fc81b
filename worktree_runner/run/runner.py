"""``wtr run``: check the plan, create the run, drive the scheduler, record the end."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from worktree_runner import git, logs, procs, sandbox, sparse
from worktree_runner.coordinate.desk import Desk
from worktree_runner.coordinate.routing import extend_plan
from worktree_runner.errors import BadInput, Interrupted, WtrError
from worktree_runner.executors.local import local_streams
from worktree_runner.plan.analysis import Analysis, analyze
from worktree_runner.plan.executor import Executor, connect_timeout
from worktree_runner.plan.load import load_plan, parse_plan, worktree_include
from worktree_runner.plan.model import Plan
from worktree_runner.pool import Pool
from worktree_runner.run import recover, registry
from worktree_runner.run.guard import Guard
from worktree_runner.run.prompt import render_command
from worktree_runner.run.scheduler import Hooks, Scheduler
from worktree_runner.run.state import RunRecord, RunState, RunStore, Status, StreamRecord, now
from worktree_runner.run.stream import RunContext, preset_of


@dataclass(frozen=True)
class Prepared:
    """A checked plan and what it resolves to in the repository; nothing created yet."""

    repo: git.Repository
    plan: Plan
    analysis: Analysis
    max_parallel: int
    executor: Executor = field(default_factory=Executor)

    @property
    def worktrees_root(self) -> Path:
        return self.plan.worktrees_root(self.repo.root)


def prepare(repo: git.Repository, plan_file: Path, max_parallel: int | None = None,
            executor: Executor | None = None) -> Prepared:
    plan = load_plan(plan_file)
    analysis = analyze(plan, repo)
    analysis.raise_if_invalid()
    worktree_include(repo.root)  # a bad .worktreeinclude stops the run before it starts
    sandbox.require(plan.sandboxed)
    executor = executor or plan.executor
    best_of = [s.name for s in plan.streams if s.attempts > 1]
    if best_of and executor.kind != "local":
        raise BadInput(f"stream '{best_of[0]}' has 'attempts' above 1, which runs only on "
                       "this machine, not on Dask workers",
                       hint="remove 'attempts' or run without --executor dask")
    if max_parallel is not None and max_parallel < 1:
        raise BadInput("--max-parallel must be at least 1")
    if executor.kind == "dask" and executor.local_workers is None:
        connect_timeout()  # (a bad WTR_DASK_CONNECT_TIMEOUT stops the run before it starts)
    return Prepared(repo, plan, analysis, max_parallel or plan.max_parallel, executor)


@dataclass(frozen=True)
class PlannedStream:
    name: str
    wave: int
    branch: str
    worktree: Path
    base: str
    command: list[str] | str


def dry_run(prepared: Prepared) -> tuple[str, list[PlannedStream]]:
    """What ``wtr run`` would do, computed without creating anything."""
    run_id = registry.next_run_id(prepared.repo, prepared.plan.name,
                                 prepared.worktrees_root)
    wave_of = {name: i for i, wave in enumerate(prepared.analysis.waves, 1) for name in wave}
    planned = []
    for stream in prepared.plan.streams:
        branch = f"wtr/{run_id}/{stream.name}"
        worktree = prepared.worktrees_root / run_id / stream.name
        starts = (*stream.depends_on, *stream.waits_for)
        base = (f"the result of {', '.join(starts)}" if starts
                else f"{prepared.analysis.refs.base} ({prepared.analysis.refs.base_commit[:12]})")
        prompt_file = str(RunStore(registry.runs_root(prepared.repo) / run_id)
                          .prompt_path(stream.name))
        values = {"prompt_file": prompt_file, "prompt": f"<contents of {prompt_file}>",
                  "stream": stream.name, "worktree": str(worktree), "branch": branch}
        command = render_command(stream.agent.argv_template(), values)
        planned.append(PlannedStream(stream.name, wave_of[stream.name], branch, worktree, base,
                                     command))
    return run_id, planned


def create_run(prepared: Prepared) -> RunStore:
    """Claim the run folder and write the first state: every stream pending."""
    plan, refs = prepared.plan, prepared.analysis.refs
    try:
        prepared.worktrees_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the worktrees folder {prepared.worktrees_root}: "
                       f"{exc.strerror}", hint="set 'worktrees_dir' to a writable folder") from None
    store = registry.create_run_dir(prepared.repo, plan.name, prepared.worktrees_root)
    store.plan_path.write_bytes(plan.path.read_bytes())
    record = RunRecord(
        run=store.run_id,
        plan=str(plan.path),
        repo=str(prepared.repo.root),
        base=refs.base,
        base_commit=refs.base_commit,
        target=refs.target,
        worktrees_root=str(prepared.worktrees_root),
        max_parallel=prepared.max_parallel,
        streams={
            s.name: StreamRecord(
                name=s.name,
                branch=f"wtr/{store.run_id}/{s.name}",
                worktree=None,
                depends_on=list(s.depends_on),
                budget=s.budget.to_json() if s.budget else None,
            )
            for s in plan.streams
        },
        budget=plan.budget.to_json() if plan.budget else None,
        runner_pid=os.getpid(),
        executor=None if prepared.executor.kind == "local" else prepared.executor.to_json(),
    )
    for name in plan.names:
        store.stream_dir(name).mkdir(parents=True)
    store.save(record)
    store.event("run_created", base=refs.base, base_commit=refs.base_commit,
                streams=plan.names, max_parallel=prepared.max_parallel)
    return store


def run_plan(repo: git.Repository, store: RunStore, plan: Plan,
             recovered: dict[str, procs.Agent] | None = None) -> RunRecord:
    """Run every stream that can run; returns the final record. Ctrl-C raises Interrupted.

    The runner only publishes (``store.event``); what watches a run (the report, the live
    view, the lander of ``run --merge``, notifications) subscribes to the store before.
    ``run.streams_settled`` comes when no stream can start or run any more, before
    ``run.finished``: a subscriber that must finish its work first (the lander) does so
    while it handles that event."""
    record = store.record
    ctx = RunContext(
        repo=repo,
        plan=plan,
        store=store,
        base_commit=record.base_commit,
        worktrees_root=Path(record.worktrees_root),
        bin_dir=procs.write_wtr_shim(store.dir / "bin"),
        recovered=dict(recovered or {}),
        copy_patterns=(*plan.copy, *worktree_include(repo.root)),
        guard=Guard(repo, store, contained=frozenset(plan.sandboxed)),
        pool=Pool(repo, Path(record.worktrees_root), plan.pool_size(record.max_parallel),
                  plan.keep_ignored, note=lambda message: _note(store, message)),
    )
    sparse.enable(repo, plan)  # (a shared config change: before the guard looks)
    ctx.guard.start_soon()
    if ctx.copy_patterns:
        store.update_run(copied=sorted({*record.copied, *ctx.copied()}))
    statuses = {name: Status(s.status) for name, s in record.streams.items()}

    def kill_all() -> None:
        for agent in list(ctx.agents.values()):
            agent.stop(grace=0)

    ctx.desk = Desk(repo, store, plan)

    def poll() -> Plan | None:
        """Change requests agents made: routed, delivered; the plan if follow-ups came."""
        assert ctx.desk is not None
        try:
            changed = ctx.desk.poll()
        except Exception as exc:  # coordination must never take the run down
            logs.debug("change requests could not be handled", error=repr(exc))
            return None
        if changed is not None:
            ctx.plan = changed
        return changed

    hooks = Hooks(blocked=lambda name, by: _blocked(store, name, by), kill_all=kill_all,
                  poll=poll)
    store.update_run("run_started", state=RunState.RUNNING.value, runner_pid=os.getpid())
    _publish_missing_ends(store)
    store.reserve_space()
    store.on_full = ctx.stop.set  # a full disk stops the run: no stream starts into it
    try:
        with _stream_work(ctx, record) as work, ThreadPoolExecutor(
                max_workers=record.max_parallel, thread_name_prefix="stream") as executor:
            Scheduler(plan, statuses, work, hooks, record.max_parallel, ctx.stop).run(executor)
        if store.out_of_space:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        store.event("run_streams_settled")
        ctx.guard.close()
        return store.update_run("run_finished", state=RunState.FINISHED.value,
                                finished_at=now(), runner_pid=None)
    except KeyboardInterrupt:
        store.update_run("run_interrupted", state=RunState.INTERRUPTED.value, runner_pid=None)
        raise Interrupted("interrupted; the agents were stopped",
                          hint=f"'wtr resume --run {store.run_id}' continues") from None
    except OSError as exc:
        raise _stopped_by_system(store, exc) from None
    finally:
        store.on_full = None
        store.release_space()


def _note(store: RunStore, message: str) -> None:
    store.event("pool", message=message)


def _publish_missing_ends(store: RunStore) -> None:
    """A runner killed between saving a stream's end and publishing it left the log
    showing the stream running: publish that end now, marked as recovered."""
    ended = {Status.SUCCEEDED.value, Status.FAILED.value, Status.MERGED.value}
    for name in sorted(store.log.open_streams()):
        stream = store.record.streams.get(name)
        if stream is not None and stream.status in ended:
            store.event("stream_finished", stream=name, status=stream.status,
                        attempt=stream.attempts, recovered=True,
                        failure=None if stream.failure is None else vars(stream.failure))


def _stopped_by_system(store: RunStore, exc: OSError) -> WtrError:
    """The machine refused a write the run needed (a full disk, a folder gone read-only):
    the agents have been stopped; record the run as interrupted, as far as the disk lets."""
    with contextlib.suppress(OSError):
        store.update_run("run_interrupted", state=RunState.INTERRUPTED.value, runner_pid=None)
    where = f" ({exc.filename})" if exc.filename else ""
    return WtrError(f"the run stopped: {exc.strerror or exc}{where}; the agents were stopped",
                    hint=f"fix that (free some disk space), then 'wtr resume --run "
                         f"{store.run_id}' continues")


@contextmanager
def _stream_work(ctx: RunContext, record: RunRecord) -> Iterator[Callable[[str], bool]]:
    """What runs one stream: its life here, or the same life on a Dask worker."""
    if not record.executor or record.executor.get("kind") == "local":
        with local_streams(ctx) as work:
            yield work
        return
    from worktree_runner.executors import dask

    with dask.remote_streams(ctx, Executor(**record.executor),
                             record.max_parallel) as work:
        yield work


def _blocked(store: RunStore, name: str, by: str) -> None:
    store.update_stream(name, "stream_blocked", status=Status.BLOCKED.value, blocked_by=by)


def resume_run(repo: git.Repository, store: RunStore, retry_failed: bool) -> RunRecord:
    """Continue a run after a crash, a Ctrl-C or a stop: adopt, check, re-run what is unfinished."""
    plan = load_run_plan(store)
    recovered = recover.reconcile(store, plan, retry_failed)
    return run_plan(repo, store, plan, recovered)


def raise_budget(store: RunStore, usd: float | None, tokens: int | None,
                 streams: list[str] | None = None) -> None:
    """Set the run's budget (or, with ``streams``, theirs) to what is given, keeping the
    measure not given; the budgets in force are those of the run's state."""
    given = {k: v for k, v in (("usd", usd), ("tokens", tokens)) if v is not None}
    if not given:
        return
    if streams is None:
        store.update_run("budget_set", budget={**(store.record.budget or {}), **given})
        return
    for name in streams:
        budget = store.record.streams[name].budget or {"usd": None, "tokens": None}
        store.update_stream(name, "budget_set", budget={**budget, **given})


def retry_streams(repo: git.Repository, store: RunStore, names: list[str],
                  message: str | None = None, usd: float | None = None,
                  tokens: int | None = None) -> RunRecord:
    """Re-run failed streams; ``usd``/``tokens``: their new budgets."""
    plan = load_run_plan(store)
    recover.requeue(store, names, message)
    raise_budget(store, usd, tokens, names)
    return run_plan(repo, store, plan)


def fresh_starts(store: RunStore, names: list[str]) -> list[str]:
    """Of ``names``, the streams whose agent session cannot be continued (a ``command``
    agent, a CLI that cannot resume, or no session recorded): a message starts a new agent."""
    plan = load_run_plan(store)
    fresh = []
    for name in names:
        preset = preset_of(plan.stream(name)) if name in plan.names else None
        session = store.record.streams[name].session if name in store.record.streams else None
        if preset is None or session is None or not preset.can_resume:
            fresh.append(name)
    return fresh


def load_run_plan(store: RunStore) -> Plan:
    """The plan as it was when the run started (a copy kept in the run folder), with the
    follow-up streams change requests added since (coordinate/)."""
    text = store.plan_path.read_text(encoding="utf-8")
    return extend_plan(parse_plan(text, Path(store.record.plan)), store.record.follow_ups)
