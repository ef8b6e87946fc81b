"""Commands about a run: run, resume, retry, accept, status, logs, runs."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worktree_runner.cli.base import (
    cli,
    complete_streams,
    emit_json,
    exclusive,
    notify_option,
    open_repo,
    open_store,
    plan_argument,
    plan_path,
    repo_option,
    run_option,
)
from worktree_runner.errors import EXIT_FAILED, EXIT_OK, BadInput
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, Status, StreamRecord
from worktree_runner.run.status import status_document
from worktree_runner.words import plural

if TYPE_CHECKING:
    from worktree_runner.plan.model import Notify, Plan


def budget_options(func: Any) -> Any:
    usd = click.option("--budget-usd", type=click.FloatRange(min=0, min_open=True),
                       default=None, metavar="X", help=_BUDGET_HELP.format(what="dollars"))
    tokens = click.option("--budget-tokens", type=click.IntRange(min=1), default=None,
                          metavar="N", help=_BUDGET_HELP.format(what="tokens (input + output)"))
    return usd(tokens(func))


_BUDGET_HELP = ("The most the run's agents may spend together, in {what} (replaces the plan's "
                "budget of the run; past it, agents are stopped and no stream starts).")


@cli.command()
@plan_argument
@repo_option
@budget_options
@click.option("--max-parallel", type=click.IntRange(min=1), default=None,
              help="Agents running at once (default: the plan's max_parallel).")
@click.option("--dry-run", is_flag=True, help="Print what would happen; create nothing.")
@click.option("--executor", type=click.Choice(["local", "dask"]), default=None,
              help="Where streams run (default: the plan's executor, else local).")
@click.option("--scheduler", metavar="ADDR", default=None,
              help="With --executor dask: tcp://HOST:PORT, or local:N to start N workers here.")
@click.option("--remote", metavar="URL", default=None,
              help="With --executor dask: a git URL every worker can fetch from and push to.")
@click.option("--merge", "auto_merge", is_flag=True,
              help="Land each stream on the target as soon as it (and what it depends on) "
                   "succeeded, one landing at a time; a stream that would conflict is held "
                   "for a later 'wtr merge' while the others go on.")
@notify_option
def run(plan_file: Path | None, repo_dir: Path | None, max_parallel: int | None,
        dry_run: bool, executor: str | None, scheduler: str | None,
        remote: str | None, auto_merge: bool, budget_usd: float | None,
        budget_tokens: int | None, notify: tuple[Notify, ...]) -> None:
    """Run PLAN (default: worktree-plan.yaml): each stream in its own branch and worktree.

    \b
    A stream starts once its dependencies have succeeded, nothing it conflicts with
    is running, and fewer than --max-parallel agents run. When its agent exits 0,
    leftovers are committed, every changed file must be inside its files, and its
    verify commands must pass. Dependents of a failed stream are blocked; the rest
    go on. Exit 0 when every stream succeeded, 1 otherwise, 130 on Ctrl-C.
    With --executor dask, streams run on Dask workers and reach them through the
    git remote --remote; state and logs stay here.
    """
    from worktree_runner import render
    from worktree_runner.run import runner

    chosen = _executor(executor, scheduler, remote)
    repo = open_repo(repo_dir)
    prepared = runner.prepare(repo, plan_path(plan_file, repo), max_parallel, chosen)
    if dry_run:
        run_id, planned = runner.dry_run(prepared)
        click.echo(render.dry_run_report(prepared, run_id, planned))
        return
    store = runner.create_run(prepared)
    runner.raise_budget(store, budget_usd, budget_tokens)
    click.echo(f"run {store.run_id}: {len(prepared.plan.streams)} streams, state in {store.dir}",
               err=True)
    watched = _watched(repo, store, prepared.plan, auto_merge, notify)
    _drive(store, lambda: runner.run_plan(prepared.repo, store, prepared.plan), watched)


def _executor(kind: str | None, scheduler: str | None, remote: str | None) -> Any:
    """The executor the command line asks for, or None to keep the plan's."""
    from worktree_runner.plan.executor import checked_executor

    if kind is None:
        if scheduler or remote:
            raise BadInput("--scheduler and --remote go with --executor dask")
        return None
    try:
        return checked_executor(kind, scheduler, remote)
    except ValueError as exc:
        raise BadInput(f"--executor {kind}: {exc}") from None


@contextmanager
def _watched(repo: Any, store: RunStore, plan: Plan, auto_merge: bool,
             notify: tuple[Notify, ...]) -> Iterator[None]:
    """The subscribers of a run: the report in its folder, the lander (``--merge``, and
    ``wtr merge`` asked of this runner), notifications. Ended in reverse: the last
    notifications, then the lander, then the final report."""
    from worktree_runner import report
    from worktree_runner.merge import auto
    from worktree_runner.notify import notifying

    with report.kept_up_to_date(store), auto.attach(repo, store, plan, auto_merge), \
            notifying(store, (*plan.notify, *notify)):
        yield


def _drive(store: RunStore, work: Any, watched: AbstractContextManager[None]) -> None:
    """Run ``work`` holding the run's lock, watched, with the live display; exit with the
    documented code."""
    from worktree_runner import render
    from worktree_runner.cli.live import run_with_display

    with registry.hold_run(store), _sigterm_as_interrupt(), watched:
        record = run_with_display(work, store, sys.stdout.isatty())
    doc = status_document(store)
    click.echo(render.counts_line(doc))
    unfinished = [s for s in record.streams.values()
                  if s.status not in (Status.SUCCEEDED, Status.MERGED)]
    if unfinished:
        click.echo(f"see 'wtr status --run {store.run_id}' and 'wtr logs STREAM'", err=True)
    sys.exit(EXIT_FAILED if unfinished else EXIT_OK)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill PID`` stops a run as Ctrl-C does: agents stopped, state saved."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@cli.command()
@repo_option
@run_option
@budget_options
@click.option("--retry-failed", is_flag=True, help="Also re-run failed streams (and then "
              "their blocked dependents).")
@click.option("--merge", "auto_merge", is_flag=True,
              help="Land streams as they succeed, as 'wtr run --merge' does.")
@notify_option
def resume(repo_dir: Path | None, run_id: str | None, retry_failed: bool, auto_merge: bool,
           budget_usd: float | None, budget_tokens: int | None,
           notify: tuple[Notify, ...]) -> None:
    """Continue a run that was interrupted or whose runner died.

    \b
    Agents still running are adopted and waited for; agents that ended while no
    runner watched get their checks; streams whose agent vanished without a result
    get a new attempt in the same worktree, keeping their commits; a worktree that
    vanished is recreated from its branch. Finished streams are never redone.
    A run stopped by its budget goes on with --budget-usd/--budget-tokens and
    --retry-failed.
    """
    from worktree_runner.run import runner

    repo, store = open_store(repo_dir, run_id)

    def work() -> Any:
        runner.raise_budget(store, budget_usd, budget_tokens)
        return runner.resume_run(repo, store, retry_failed)

    watched = _watched(repo, store, runner.load_run_plan(store), auto_merge, notify)
    _drive(store, work, watched)


@cli.command()
@click.argument("streams", nargs=-1, required=True, shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--message", "-m", metavar="TEXT",
              help="Continue each stream's agent session with TEXT (what to do differently) "
                   "instead of starting a new agent.")
@click.option("--budget-usd", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="X", help="The most each of STREAMS may spend, in dollars (replaces "
                                "its budget in the plan).")
@click.option("--budget-tokens", type=click.IntRange(min=1), default=None, metavar="N",
              help="The most each of STREAMS may spend, in tokens (input + output).")
@notify_option
def retry(streams: tuple[str, ...], repo_dir: Path | None, run_id: str | None,
          message: str | None, budget_usd: float | None, budget_tokens: int | None,
          notify: tuple[Notify, ...]) -> None:
    """Re-run failed STREAMS (new attempts, same worktrees, commits kept), then their dependents.

    \b
    With --message, the agent's own session goes on with your words: it still has
    its conversation, and is told what you wrote. A command agent, or a CLI that
    cannot continue a session, gets a new agent whose prompt holds the stream's
    prompt and your message (WTR_MESSAGE has it too); wtr says so.
    \b
    Example:
      wtr retry api --message "The tests need a running db: use the fixture in conftest.py"
    """
    from worktree_runner.run import runner

    if message is not None and not message.strip():
        raise BadInput("--message is empty", hint="say what the agent should do, or leave "
                                                  "--message out to start a new attempt")
    repo, store = open_store(repo_dir, run_id)
    if message is not None:
        for name in runner.fresh_starts(store, list(streams)):
            click.echo(f"{name}: no agent session to continue (a command agent, a CLI that "
                       "cannot resume, or none recorded); a new agent gets the prompt and "
                       "your message", err=True)
    watched = _watched(repo, store, runner.load_run_plan(store), False, notify)
    _drive(store, lambda: runner.retry_streams(repo, store, list(streams), message,
                                               budget_usd, budget_tokens), watched)


@cli.command()
@click.argument("stream", shell_complete=complete_streams)
@repo_option
@run_option
@click.option("--reason", default="", help="Why the work is good (kept in the status).")
def accept(stream: str, repo_dir: Path | None, run_id: str | None, reason: str) -> None:
    """Declare a failed STREAM's work good; its dependents may then run ('wtr resume')."""
    from worktree_runner.run import recover

    repo, store = open_store(repo_dir, run_id)
    with registry.hold_run(store):
        record = recover.accept(repo, store, stream, reason)
    waiting = [s.name for s in store.record.streams.values()
               if stream in s.depends_on and s.status == Status.PENDING]
    next_step = (f"'wtr resume' starts {', '.join(waiting)}" if waiting
                 else "nothing waits on it")
    click.echo(f"accepted {stream} ({plural(len(record.changed_files), 'changed file')}) by "
               f"{(record.accepted or {}).get('by')}; {next_step}")


@cli.command()
@repo_option
@run_option
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document (its fields: docs/commands.md).")
@click.option("--markdown", is_flag=True, help="A Markdown report.")
def status(repo_dir: Path | None, run_id: str | None, as_json: bool, markdown: bool) -> None:
    """Show a run's status: counts, every stream, the merge state."""
    from worktree_runner import render

    exclusive(json=as_json, markdown=markdown)
    _, store = open_store(repo_dir, run_id)
    doc = status_document(store, disk=True)
    if as_json:
        emit_json(doc)
    elif markdown:
        click.echo(render.status_markdown(doc), nl=False)
    elif sys.stdout.isatty():
        render.print_status(doc)
    else:
        click.echo(render.status_text(doc))


@cli.command()
@click.argument("stream", shell_complete=complete_streams)
@repo_option
@run_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the agent writes.")
@click.option("--attempt", type=click.IntRange(min=1), metavar="K",
              help="The log of candidate K of a best-of-N stream (attempts: N).")
def logs(stream: str, repo_dir: Path | None, run_id: str | None, follow: bool,
         attempt: int | None) -> None:
    """Print the output of STREAM's agent (and its setup and verify commands).

    The log is read in pieces, however long it is. An agent's output is kept under the
    plan's log_limit (default 50MB): past it, the middle is dropped and a marker line says
    how much; the start and the end are always kept. A best-of-N stream's own log says
    how each candidate ended; --attempt K shows candidate K's agent.
    """
    _, store = open_store(repo_dir, run_id)
    if stream not in store.record.streams:
        raise registry.unknown_stream(store, stream)
    if attempt is not None:
        from worktree_runner.run.candidates import candidate_store

        store = candidate_store(store, stream, attempt)
    printed = False
    for chunk in registry.read_log(store, stream, follow):
        click.echo(chunk, nl=False)
        printed = True
    if not printed:
        click.echo(_why_no_log(store.record.streams[stream]))


def _why_no_log(record: StreamRecord) -> str:
    name = record.name
    if record.failure is not None:
        return (f"{name} never started an agent: {record.failure.kind}: "
                f"{record.failure.message}")
    if record.status == Status.BLOCKED:
        return f"{name} never started: it depends on '{record.blocked_by}', which did not succeed"
    if record.status == Status.PENDING:
        waits = ", ".join(f"'{d}'" for d in record.depends_on)
        return f"{name} has not started yet" + (f"; it waits for {waits}" if waits else "")
    return f"{name} has written no output yet"


@cli.command()
@repo_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.option("--prune", is_flag=True, help="Delete finished, cleaned runs' state and merge pins.")
@click.option("--older-than", metavar="AGE", default=None,
              help="With --prune: only runs finished at least AGE ago (e.g. 30d, 12h).")
@click.option("--include-rescue", is_flag=True,
              help="With --prune: also delete the runs' rescue and archive refs.")
def runs(repo_dir: Path | None, as_json: bool, prune: bool, older_than: str | None,
         include_rescue: bool) -> None:
    """List the runs of this repository, oldest first; or --prune the old ones.

    \b
    --prune forgets runs that finished and were cleaned ('wtr clean'): their state
    folder and their merge pins. Rescue and archive refs (work that exists nowhere
    else) are kept unless --include-rescue.
    """
    repo = open_repo(repo_dir)
    if prune:
        _prune(repo, older_than, include_rescue, as_json)
        return
    if older_than is not None or include_rescue:
        raise BadInput("--older-than and --include-rescue go with --prune")
    docs = [registry.summary(store) for store in registry.list_runs(repo)]
    if as_json:
        emit_json({"runs": docs})
        return
    if not docs:
        click.echo("no runs yet; start one with 'wtr run PLAN'")
    for doc in docs:
        counts = ", ".join(f"{n} {k}" for k, n in doc["counts"].items() if n)
        detail = doc.get("error") or counts
        click.echo(f"{doc['run']:<24} {doc['state']:<12} {doc['created_at']}  {detail}")


def _prune(repo: Any, older_than: str | None, include_rescue: bool, as_json: bool) -> None:
    from worktree_runner.plan.durations import parse_duration
    from worktree_runner.run.prune import prune_runs

    try:
        age = parse_duration(older_than) if older_than is not None else None
    except ValueError as exc:
        raise BadInput(f"--older-than: {exc}") from None
    pruned = prune_runs(repo, age, include_rescue)
    if as_json:
        emit_json({"pruned": list(pruned)})
        return
    for line in pruned.values() or ["no finished, cleaned run to prune"]:
        click.echo(line)
