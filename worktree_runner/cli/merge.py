"""The merge command: --check, land, --continue, --abort, --undo."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from worktree_runner import git
from worktree_runner.cli.base import cli, emit_json, open_store, repo_option, run_option
from worktree_runner.errors import (
    EXIT_HALTED,
    EXIT_OK,
    BadInput,
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
