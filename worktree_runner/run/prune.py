"""``wtr runs --prune``: forget finished, cleaned runs (their state and merge pins).

Rescue and archive refs hold work that exists nowhere else; they go only when asked
(``include_rescue``). A run still running, interrupted, or not yet cleaned is never pruned.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from worktree_runner import git
from worktree_runner.errors import BadInput
from worktree_runner.run import registry
from worktree_runner.run.state import RunRecord, RunState, RunStore


def prune_runs(repo: git.Repository, older_than: float | None,
               include_rescue: bool) -> dict[str, str]:
    """Prune every finished, cleaned run older than ``older_than`` seconds (any age if
    None); run id -> one line saying what went."""
    pruned: dict[str, str] = {}
    for store in registry.list_runs(repo):
        try:
            record = store.load()
        except BadInput:  # a damaged run is left for a human to look at
            continue
        if _prunable(store, record, older_than):
            pruned[store.run_id] = _prune(repo, store, include_rescue)
    return pruned


def _prunable(store: RunStore, record: RunRecord, older_than: float | None) -> bool:
    if record.state != RunState.FINISHED.value or not record.cleaned_at:
        return False
    if registry.run_is_active(store):
        return False
    if older_than is None:
        return True
    ended = datetime.fromisoformat(record.finished_at or record.created_at)
    return (datetime.now(UTC) - ended).total_seconds() >= older_than


def _prune(repo: git.Repository, store: RunStore, include_rescue: bool) -> str:
    run = store.run_id
    kinds = ["merge", *(["rescue", "archive"] if include_rescue else [])]
    with registry.hold_run(store):
        refs = 0
        for kind in kinds:
            prefix = f"refs/worktree-runner/{kind}/{run}"
            refs += len(git.refs_under(repo, prefix))
            git.delete_refs_under(repo, prefix)
        shutil.rmtree(store.dir)
    kept = "" if include_rescue else _kept_note(repo, run)
    return f"pruned run {run}: its state and {refs} ref{'' if refs == 1 else 's'}{kept}"


def _kept_note(repo: git.Repository, run: str) -> str:
    kept = sum(len(git.refs_under(repo, f"refs/worktree-runner/{kind}/{run}"))
               for kind in ("rescue", "archive"))
    return (f" (kept {kept} rescue/archive ref{'' if kept == 1 else 's'}; --include-rescue "
            f"deletes them)") if kept else ""
