"""The merge command: --check, land, --continue, --abort, --undo."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from worktree_runner import git
from worktree_runner.cli.base import (
    cli,
    emit_json,
    notify_option,
    open_store,
    repo_option,
    run_option,
)
from worktree_runner.errors import (
    EXIT_HALTED,
    EXIT_OK,
    BadInput,
    WtrError,
)
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore


@cli.command()
@repo_option
@run_option
@click.option("--check", "predict_only", is_flag=True,
              help="Predict conflicts; change no worktree, index or ref. Exit 3 on a conflict.")
@click.option("--continue", "resume", is_flag=True, help="Go on after resolving a halt.")
@click.option("--abort", is_flag=True, help="Drop the halted merge; nothing stays changed.")
@click.option("--undo", is_flag=True,
              help="Move the target back to where the last landing found it.")
@click.option("--skip", "skip_stream", metavar="STREAM", default=None,
              help="After a verify failure bisected to STREAM: leave it (and what depends on "
                   "it) out; then --continue lands the rest.")
@click.option("--resolve-with", "resolver", metavar="PRESET|COMMAND", default=None,
              help="On a conflict, let an agent propose a resolution in the integration "
                   "worktree (a preset such as claude, or a shell command; {prompt_file} is "
                   "filled in). Kept only if no conflict marker remains, only the conflicted "
                   "files changed and verify passes; else it halts as usual.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document: with --check the prediction, else the merge "
                   "section of 'wtr status --json' after the action (also when it halts).")
@notify_option
def merge(repo_dir: Path | None, run_id: str | None, predict_only: bool, resume: bool,
          abort: bool, undo: bool, skip_stream: str | None, resolver: str | None,
          as_json: bool, notify: tuple[Any, ...]) -> None:
    """Land the run's succeeded streams on the plan's target.

    \b
    Takes every stream that succeeded and whose dependencies have landed (during a
    run too: the runner does it; the rest wait for a later 'wtr merge', and the report
    says why). In dependency order, each stream's own commits are replayed onto the
    integration tip in git's object database; a detached integration worktree of the
    run is made only for a conflict or for the plan's verify. Stream branches never
    move. On a conflict it halts (exit 3) and says where to resolve; then --continue
    or --abort. When verify fails, the streams are bisected and the halt names the
    first one that breaks it (--skip it, then --continue). Then the target moves
    once, by compare-and-swap, only if it has not moved since the landing began.
    Examples:  wtr merge --check ; wtr merge ; wtr merge --json ; wtr merge --undo
    """
    from worktree_runner import render, report
    from worktree_runner.merge.stage import MergeStage
    from worktree_runner.notify import notifying
    from worktree_runner.run import runner

    if sum((predict_only, resume, abort, undo, skip_stream is not None)) > 1:
        raise BadInput("use at most one of --check, --continue, --abort, --undo, --skip")
    if resolver is not None and (predict_only or abort or undo or skip_stream):
        raise BadInput("--resolve-with goes with a merge or --continue")
    repo, store = open_store(repo_dir, run_id)
    plan = runner.load_run_plan(store)
    if predict_only:
        _merge_check(repo, store, plan, as_json)
        return
    if _runner_holds(store):
        action = ("abort" if abort else "undo" if undo else "continue" if resume
                  else f"skip:{skip_stream}" if skip_stream else "start")
        _through_the_runner(store, action, resolver, as_json)
        return
    # The report is rewritten when the merge lands, halts or is undone (it subscribes).
    with registry.hold_run(store), report.kept_up_to_date(store, final=False), \
            notifying(store, (*plan.notify, *notify)):
        stage = MergeStage(repo, store, plan, resolver)
        try:
            if skip_stream:
                message = stage.skip(skip_stream)
            elif abort:
                message = stage.abort()
            elif undo:
                message = stage.undo()
            else:
                message = render.landed_report(stage.resume() if resume else stage.start())
        except WtrError:
            if as_json:
                emit_json(merge_document(store))
            raise
    if as_json:
        emit_json(merge_document(store))
    else:
        click.echo(message)


def _runner_holds(store: RunStore) -> bool:
    """A runner (run, resume, retry) holds the run: it has a desk for merge requests."""
    from worktree_runner.locks import HeldLock

    lock = HeldLock(store.dir / "runner.lock")
    if not lock.busy():
        return False
    words = str(lock.holder().get("command", "")).split()
    return any(word in ("run", "resume", "retry") for word in words)


def _through_the_runner(store: RunStore, action: str, resolver: str | None,
                        as_json: bool) -> None:
    """The runner holds the run: it does the merge on its lander thread (merge/desk.py)."""
    from worktree_runner.merge.desk import ask

    click.echo(f"run {store.run_id} is running: its runner does this merge", err=True)
    reply = ask(store, action, resolver, lambda: registry.run_is_active(store))
    if as_json:
        emit_json(reply.merge)
    elif reply.out:
        click.echo(reply.out)
    for line in reply.err:
        click.echo(line, err=True)
    sys.exit(reply.code)


def merge_document(store: RunStore) -> dict[str, Any]:
    from worktree_runner.run.status import status_document

    document: dict[str, Any] = status_document(store)["merge"]
    return document


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


@cli.command()
@click.argument("stream", required=False)
@repo_option
@run_option
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON document.")
def sync(stream: str | None, repo_dir: Path | None, run_id: str | None, as_json: bool) -> None:
    """Bring a stream up to date with the target's current tip.

    \b
    Rebases the stream's own commits (its base commit to its tip) onto the tip of the
    plan's target, which may hold streams landed since it started. When that replay
    conflicts on a commit, or the branch holds merge commits, the target is merged into
    the branch instead (a later commit that fixed an earlier one's conflict counts). A
    branch that already merged the target's tip just takes it as its new base. Inside an
    agent's worktree STREAM defaults to the agent's own (WTR_STREAM). All of it is tried
    in git's object database first: on a conflict nothing in the worktree changes, the
    conflicting hunks are printed, the stream is marked blocked with the conflicting
    files (see 'wtr status'), and the exit code is 3. Refuses while the worktree has
    uncommitted changes.
    Example (an agent, before finishing):  git commit -am wip && wtr sync
    Example (settling a conflict):  git merge main; (edit); git commit -a --no-edit; wtr sync
    """
    import os

    from worktree_runner.merge.sync import SyncConflict, record_conflict, sync_stream

    name = stream or os.environ.get("WTR_STREAM")
    if not name:
        raise BadInput("name the stream: wtr sync STREAM (inside an agent, WTR_STREAM names it)")
    repo, store = open_store(repo_dir, run_id or os.environ.get("WTR_RUN"))
    if name not in store.record.streams:
        raise registry.unknown_stream(store, name)
    from worktree_runner.run.runner import load_run_plan
    from worktree_runner.run.state import Status

    starts_from = load_run_plan(store).ordering_graph()[name]
    unlanded = [p for p in starts_from
                if store.record.streams[p].status == Status.SUCCEEDED.value]
    if unlanded:
        raise WtrError(f"stream '{name}' starts from the work of {', '.join(unlanded)}, which "
                       f"has not landed on {store.record.target}; a sync would take it away",
                       hint="land it first ('wtr merge'), then sync")
    holds = not registry.run_is_active(store)
    try:
        if holds:
            with registry.hold_run(store):
                done = sync_stream(repo, store, name, holds_run=True)
        else:
            done = sync_stream(repo, store, name, holds_run=False)
    except SyncConflict as conflict:
        record_conflict(store, conflict)
        if as_json:
            emit_json({"stream": name, "synced": False, "conflicted_files": conflict.files,
                       "hunks": conflict.hunks})
        else:
            click.echo(conflict.hunks, err=True)
        raise
    if as_json:
        emit_json({"stream": name, "synced": True, "onto": done.onto, "old_head": done.old_head,
                   "head": done.new_head, "commits": done.commits, "how": done.how})
    elif done.how in ("up to date", "contained"):
        click.echo(f"{name} is up to date with {store.record.target} ({done.onto[:12]})")
    elif done.how == "merged":
        click.echo(f"{name}: {store.record.target} ({done.onto[:12]}) merged into its branch; "
                   "its commits stay as they were")
    else:
        click.echo(f"{name}: {done.commits} commit(s) replayed onto {store.record.target} "
                   f"({done.onto[:12]}); the old tip {done.old_head[:12]} stays pinned")
