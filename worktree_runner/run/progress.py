"""``wtr progress``: an agent reports how far it got, or that it is blocked."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path

from worktree_runner import git
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore, now, read_json, write_json_atomic


def report_progress(env: Mapping[str, str], message: str, percent: int | None,
                    blocked: bool, find_repo: Callable[[], git.Repository]) -> Path:
    """Record the progress of the stream named by WTR_STREAM, in the run at WTR_STATE_DIR
    or else the run named by WTR_RUN in the repository ``find_repo`` gives."""
    stream, state_dir, run = env.get("WTR_STREAM"), env.get("WTR_STATE_DIR"), env.get("WTR_RUN")
    if not stream or not (state_dir or run):
        raise BadInput(
            "wtr progress is for agents started by 'wtr run': WTR_STREAM and WTR_RUN "
            "are not set",
        )
    store = RunStore(Path(state_dir)) if state_dir else registry.open_run(find_repo(), run)
    if not store.state_path.exists():
        raise BadInput(f"WTR_STATE_DIR {state_dir} is not the folder of a run")
    if stream not in store.load().streams:
        raise registry.unknown_stream(store, stream)
    path = store.progress_path(stream)
    previous = read_json(path)
    if percent is None and isinstance(previous, dict):
        percent = previous.get("percent")
    try:
        write_json_atomic(path, {"percent": percent, "message": message, "blocked": blocked,
                                 "at": now()})
    except OSError as exc:
        raise WtrError(f"cannot record progress in {path.parent}: {exc.strerror}",
                       hint="the run's state folder is not writable from where the agent "
                            "runs (a sandbox?); the runner still sees its output") from None
    with contextlib.suppress(OSError):  # a sandboxed agent may write only its own folder
        store.event("progress", stream=stream, percent=percent, message=message,
                    blocked=blocked)
    return path
