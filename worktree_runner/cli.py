"""The command line: parses, dispatches, prints. The only module that imports click.

Each command imports what only it needs inside its body: every agent's ``wtr progress``
and ``wtr lock`` pays the start-up of this module, and rich, yaml and the merge stage
are not needed there.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from worktree_runner import __version__, git
from worktree_runner.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_HALTED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    BadInput,
    PlanInvalid,
    PlanProblem,
    WtrError,
)
from worktree_runner.logs import configure_logging
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, Status
from worktree_runner.run.status import status_document


class WtrGroup(click.Group):
    """Maps the project's errors to one line on stderr and the SPEC's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WtrError as exc:
            first, *rest = exc.lines()
            click.echo(f"wtr: {first}", err=True)
            for line in rest:
                click.echo(line, err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("wtr: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def repo_option(func: Any) -> Any:
    return click.option(
        "--repo",
        "repo_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The repository (default: the one containing the current directory).",
    )(func)


def open_repo(repo_dir: Path | None) -> git.Repository:
    """The repository named by the command's --repo, else the group's, else the cwd's."""
    ctx = click.get_current_context()
    fallback = (ctx.find_root().obj or {}).get("repo_dir")
    return git.open_repository(repo_dir or fallback)


@click.group(cls=WtrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wtr")
@click.option("-v", "--verbose", is_flag=True, help="Log every step (git commands included).")
@repo_option
@click.pass_context
def cli(ctx: click.Context, verbose: bool, repo_dir: Path | None) -> None:
    """Run many coding agents on one repository at once, each in its own git worktree.

    \b
    A plan (YAML) names work streams: the files each owns, its agent, its prompt,
    what it depends on. Typical session:
      wtr init                 write a starter plan for this repository
      wtr check PLAN           validate it: waves, critical path, file ownership
      wtr run PLAN             each stream: own branch + worktree + agent, checked
      wtr status               what every stream is doing (--json, --markdown)
      wtr logs STREAM          an agent's output
      wtr merge                replay finished streams onto the target (--check first)
      wtr clean                remove worktrees and merged branches; never loses work
    After a crash or Ctrl-C: wtr resume. After a failure: wtr retry / wtr accept.
    Exit codes: 0 ok, 1 work failed, 2 bad input, 3 halted for a human, 130 interrupted.
    """
    ctx.obj = {"repo_dir": repo_dir}
    configure_logging(verbose)


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--from-dirs", is_flag=True,
              help="One stream per top-level folder (what init does without --streams).")
@click.option("--streams", "stream_list", metavar="LIST", default=None,
              help="Streams from a quick list: 'api:src/api/**,ui:src/ui/**|tests/ui/**'.")
def init(path: Path | None, repo_dir: Path | None, from_dirs: bool,
         stream_list: str | None) -> None:
    """Write a commented starter plan (default: worktree-plan.yaml at the repository root).

    It suggests one stream per top-level folder (or the streams of --streams), the
    checked-out branch as base and target, and the claude preset as agent. Never
    overwrites an existing file.
    """
    from worktree_runner.plan.starter import (
        DEFAULT_PLAN_FILE,
        parse_stream_list,
        write_starter_plan,
    )

    if from_dirs and stream_list:
        raise BadInput("use --from-dirs or --streams, not both")
    repo = open_repo(repo_dir)
    streams = parse_stream_list(stream_list) if stream_list is not None else None
    target = path if path is not None else repo.toplevel / DEFAULT_PLAN_FILE
    written = write_starter_plan(repo, target, streams)
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


@cli.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as one JSON document.")
def check(plan_file: Path, repo_dir: Path | None, as_json: bool) -> None:
    """Validate PLAN against the repository and show its analysis.

    \b
    Reports the waves (streams that can run at the same time, in order), the critical
    path (the longest dependency chain), which tracked files each stream owns, files
    owned by two streams that may run together (an error), files no stream owns
    (a note) and patterns that match nothing (a warning). Exit 0 valid, 2 invalid.
    """
    from worktree_runner import render
    from worktree_runner.plan.analysis import analyze
    from worktree_runner.plan.load import load_plan

    try:
        plan = load_plan(plan_file)
        analysis = analyze(plan, open_repo(repo_dir))
    except WtrError as exc:
        if not as_json:
            raise
        problems = exc.problems if isinstance(exc, PlanInvalid) else [PlanProblem("", exc.message)]
        emit_json({"plan": str(plan_file), "valid": False,
                   "errors": [p.to_json() for p in problems]})
        sys.exit(exc.exit_code)
    if as_json:
        emit_json(analysis.to_json())
        if analysis.overlaps:
            sys.exit(EXIT_BAD_INPUT)
        return
    click.echo(render.check_report(analysis))
    analysis.raise_if_invalid()


def run_option(func: Any) -> Any:
    return click.option("--run", "run_id", metavar="ID", default=None,
                        help="The run (default: the most recent one).")(func)


def open_store(repo_dir: Path | None, run_id: str | None) -> tuple[git.Repository, RunStore]:
    repo = open_repo(repo_dir)
    return repo, registry.open_run(repo, run_id)


@cli.command()
@click.argument("plan_file", metavar="PLAN", type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--max-parallel", type=click.IntRange(min=1), default=None,
              help="Agents running at once (default: the plan's max_parallel).")
@click.option("--dry-run", is_flag=True, help="Print what would happen; create nothing.")
def run(plan_file: Path, repo_dir: Path | None, max_parallel: int | None, dry_run: bool) -> None:
    """Run PLAN: every stream in its own branch and worktree, agents in parallel.

    \b
    A stream starts once its dependencies have succeeded, nothing it conflicts with
    is running, and fewer than --max-parallel agents run. When its agent exits 0,
    leftovers are committed, every changed file must be inside its files, and its
    verify commands must pass. Dependents of a failed stream are blocked; the rest
    go on. Exit 0 when every stream succeeded, 1 otherwise, 130 on Ctrl-C.
    """
    from worktree_runner import render
    from worktree_runner.run import runner

    prepared = runner.prepare(open_repo(repo_dir), plan_file, max_parallel)
    if dry_run:
        run_id, planned = runner.dry_run(prepared)
        click.echo(render.dry_run_report(prepared, run_id, planned))
        return
    store = runner.create_run(prepared)
    click.echo(f"run {store.run_id}: {len(prepared.plan.streams)} streams, state in {store.dir}",
               err=True)
    _drive(store, lambda: runner.run_plan(prepared.repo, store, prepared.plan))


def _drive(store: RunStore, work: Any) -> None:
    """Run ``work`` holding the run's lock, with the live display; exit as the SPEC says."""
    from worktree_runner import render
    from worktree_runner.live import run_with_display

    with registry.hold_run(store), _sigterm_as_interrupt():
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
@click.option("--retry-failed", is_flag=True, help="Also re-run failed streams (and then "
              "their blocked dependents).")
def resume(repo_dir: Path | None, run_id: str | None, retry_failed: bool) -> None:
    """Continue a run that was interrupted or whose runner died.

    \b
    Agents still running are adopted and waited for; agents that ended while no
    runner watched get their checks; streams whose agent vanished without a result
    get a new attempt in the same worktree, keeping their commits; a worktree that
    vanished is recreated from its branch. Finished streams are never redone.
    """
    from worktree_runner.run import runner

    repo, store = open_store(repo_dir, run_id)
    _drive(store, lambda: runner.resume_run(repo, store, retry_failed))


@cli.command()
@click.argument("streams", nargs=-1, required=True)
@repo_option
@run_option
def retry(streams: tuple[str, ...], repo_dir: Path | None, run_id: str | None) -> None:
    """Re-run failed STREAMS (new attempts, same worktrees, commits kept), then their dependents."""
    from worktree_runner.run import runner

    repo, store = open_store(repo_dir, run_id)
    _drive(store, lambda: runner.retry_streams(repo, store, list(streams)))


@cli.command()
@click.argument("stream")
@repo_option
@run_option
@click.option("--reason", default="", help="Why the work is good (kept in the status).")
def accept(stream: str, repo_dir: Path | None, run_id: str | None, reason: str) -> None:
    """Declare a failed STREAM's work good; its dependents may then run ('wtr resume')."""
    from worktree_runner.run import recover

    repo, store = open_store(repo_dir, run_id)
    with registry.hold_run(store):
        record = recover.accept(repo, store, stream, reason)
    click.echo(f"accepted {stream} ({len(record.changed_files)} changed file(s)) by "
               f"{(record.accepted or {}).get('by')}; run 'wtr resume' to start what waits on it")


@cli.command()
@repo_option
@run_option
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Also delete unmerged stream branches (their tips "
              "pinned under refs/worktree-runner/archive/ first).")
@click.option("--all", "every_run", is_flag=True, help="Clean every finished run.")
def clean(repo_dir: Path | None, run_id: str | None, dry_run: bool, force: bool,
          every_run: bool) -> None:
    """Remove a run's worktrees and the branches whose work is in the target.

    Uncommitted changes in a worktree are saved under refs/worktree-runner/rescue/
    before it is removed; branches with work found nowhere else are kept and listed.
    """
    from worktree_runner.clean import clean_run

    repo = open_repo(repo_dir)
    if every_run:
        stores = [s for s in registry.list_runs(repo)
                  if s.load().state == "finished" and not s.record.cleaned_at]
    else:
        stores = [registry.open_run(repo, run_id)]
    if not stores:
        click.echo("no finished run to clean")
    for store in stores:
        report = clean_run(repo, store, dry_run, force)
        click.echo(f"run {report.run}:" + (" (dry run, nothing changed)" if dry_run else ""))
        for line in [*report.rescued, *report.done, *report.kept]:
            click.echo(f"  {line}")


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@repo_option
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds to wait for the lock.")
def lock(name: str, command: tuple[str, ...], repo_dir: Path | None, timeout: float) -> None:
    """For agents: run COMMAND holding lock NAME, shared by every worktree.

    \b
    Example:  wtr lock db-migrations --timeout 300 -- npm run migrate
    Waits with exponential backoff; past the timeout exits 1 naming the holder.
    A holder that dies (even by SIGKILL) releases the lock.
    """
    from worktree_runner.locks import run_locked

    sys.exit(run_locked(open_repo(repo_dir), name, timeout, command, os.environ))


@cli.command()
@repo_option
@run_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document (see SPEC).")
@click.option("--markdown", is_flag=True, help="A Markdown report.")
def status(repo_dir: Path | None, run_id: str | None, as_json: bool, markdown: bool) -> None:
    """Show a run's status: counts, every stream, the merge state."""
    from worktree_runner import render

    _, store = open_store(repo_dir, run_id)
    doc = status_document(store)
    if as_json:
        emit_json(doc)
    elif markdown:
        click.echo(render.status_markdown(doc), nl=False)
    else:
        render.print_status(doc)


@cli.command()
@click.argument("stream")
@repo_option
@run_option
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the agent writes.")
def logs(stream: str, repo_dir: Path | None, run_id: str | None, follow: bool) -> None:
    """Print the output of STREAM's agent (and its setup and verify commands)."""
    _, store = open_store(repo_dir, run_id)
    if stream not in store.record.streams:
        raise registry.unknown_stream(store, stream)
    for chunk in registry.read_log(store, stream, follow):
        click.echo(chunk, nl=False)


@cli.command()
@repo_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
def runs(repo_dir: Path | None, as_json: bool) -> None:
    """List the runs of this repository, oldest first."""
    repo = open_repo(repo_dir)
    docs = [registry.summary(store) for store in registry.list_runs(repo)]
    if as_json:
        emit_json({"runs": docs})
        return
    if not docs:
        click.echo("no runs yet; start one with 'wtr run PLAN'")
    for doc in docs:
        counts = ", ".join(f"{n} {k}" for k, n in doc["counts"].items() if n)
        click.echo(f"{doc['run']:<24} {doc['state']:<12} {doc['created_at']}  {counts}")


@cli.command()
@repo_option
@run_option
@click.option("--check", "predict_only", is_flag=True,
              help="Predict conflicts; change no worktree, index or ref. Exit 3 on a conflict.")
@click.option("--continue", "resume", is_flag=True, help="Go on after resolving a halt.")
@click.option("--abort", is_flag=True, help="Drop the halted merge; nothing stays changed.")
@click.option("--undo", is_flag=True, help="Move the target back to where the last merge found it.")
@click.option("--json", "as_json", is_flag=True, help="With --check: one JSON document.")
def merge(repo_dir: Path | None, run_id: str | None, predict_only: bool, resume: bool,
          abort: bool, undo: bool, as_json: bool) -> None:
    """Merge the run's succeeded streams onto the plan's target.

    \b
    In dependency order, each stream's own commits are rebased onto the integration
    tip inside a detached worktree of the run; stream branches never move. On a
    conflict it halts (exit 3) and says where to resolve; then --continue or --abort.
    The plan's verify commands run on the result; then the target moves once, as a
    fast-forward, only if it has not moved since the merge began.
    """
    from worktree_runner import render
    from worktree_runner.merge.stage import MergeStage
    from worktree_runner.run import runner

    if sum((predict_only, resume, abort, undo)) > 1:
        raise BadInput("use at most one of --check, --continue, --abort, --undo")
    repo, store = open_store(repo_dir, run_id)
    plan = runner.load_run_plan(store)
    if predict_only:
        _merge_check(repo, store, plan, as_json)
        return
    with registry.hold_run(store):
        stage = MergeStage(repo, store, plan)
        if abort:
            click.echo(stage.abort())
        elif undo:
            click.echo(stage.undo())
        else:
            landed = stage.resume() if resume else stage.start()
            click.echo(render.landed_report(landed))


def _merge_check(repo: git.Repository, store: RunStore, plan: Any, as_json: bool) -> None:
    from worktree_runner import render
    from worktree_runner.merge.order import merge_order
    from worktree_runner.merge.predict import predict

    order = merge_order(plan, store.record)
    predictions = predict(repo, store.record, order)
    conflict = any(not p.clean for p in predictions)
    if as_json:
        emit_json({"run": store.run_id, "target": store.record.target, "clean": not conflict,
                   "streams": [asdict(p) for p in predictions], "left_out": order.left_out})
    else:
        click.echo(render.prediction_report(store.record.target, predictions, order.left_out))
    sys.exit(EXIT_HALTED if conflict else EXIT_OK)


@cli.command("agent-file")
@click.option("--plan", "plan_path", metavar="PATH", default=None,
              help="The plan the files run (default: worktree-plan.yaml).")
@click.option("--command", "with_command", is_flag=True,
              help="Also write the slash command .claude/commands/parallel-run.md.")
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
@repo_option
def agent_file(plan_path: str | None, with_command: bool, force: bool,
               repo_dir: Path | None) -> None:
    """Write a Claude Code subagent (and slash command) that runs a plan.

    \b
    .claude/agents/parallel-worker.md is the subagent Claude delegates a plan to:
    wtr check, wtr run, wtr status --json, wtr logs, wtr merge --check, wtr merge,
    then a report; it stops at anything that needs a human. --command adds the
    slash command /parallel-run. Written in the repository's main worktree;
    an existing file is kept unless --force.
    """
    from worktree_runner.agentfile import write_agent_files

    repo = open_repo(repo_dir)
    for path in write_agent_files(repo.root, plan_path, with_command, force):
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("message")
@click.option("--percent", type=click.IntRange(0, 100), default=None, help="How far, 0-100.")
@click.option("--blocked", is_flag=True, help="Say the agent cannot go on (MESSAGE says why).")
@repo_option
def progress(message: str, percent: int | None, blocked: bool, repo_dir: Path | None) -> None:
    """For agents: record the progress of the stream named by WTR_STREAM and WTR_RUN.

    \b
    Example:  wtr progress "tests written, fixing the last one" --percent 80
              wtr progress "the API spec is missing" --blocked ; exit 1
    """
    from worktree_runner.run.progress import report_progress

    report_progress(os.environ, message, percent, blocked, lambda: open_repo(repo_dir))


def main() -> None:
    cli(prog_name="wtr")
