"""The run report: one self-contained HTML page (``wtr report``), kept in the run's folder.

``write_run_report`` is what the runner and the merge stage call when a run ends and when
a merge lands, halts or is undone: a report that cannot be written is logged and never
breaks the run or the merge.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from worktree_runner import logs
from worktree_runner.errors import WtrError
from worktree_runner.files import write_text_atomic
from worktree_runner.run.state import RunStore

REPORT_NAME = "report.html"


def report_path(store: RunStore) -> Path:
    return store.dir / REPORT_NAME


def render_run_report(store: RunStore) -> str:
    """The page's HTML. Reads the run through its own ``RunStore``: the caller's may be the
    runner's, whose record in memory must not be swapped for one read back from disk."""
    from worktree_runner.report.content import gather

    html: str = template().render(r=gather(RunStore(store.dir)))
    return html


@functools.cache
def template() -> Any:
    """Compiled once per process: the runner rewrites the page while the run goes."""
    import jinja2  # here, not at the top: commands that never report do not pay for it

    from worktree_runner.run.budget import describe as describe_budget
    from worktree_runner.run.usage import describe_usage

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("worktree_runner", "data"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        # compiled once per machine, not once per command (keyed on the template's source)
        bytecode_cache=jinja2.FileSystemBytecodeCache(),
    )
    env.filters["usage"] = describe_usage
    env.filters["budget"] = describe_budget
    return env.get_template("report.html.j2")


def save_run_report(store: RunStore, output: Path | None = None) -> Path:
    """Render and write the page atomically (readers never see half); returns its path."""
    target = output or report_path(store)
    html = render_run_report(store)
    try:
        write_text_atomic(target, html)
    except OSError as exc:
        raise WtrError(f"could not write the report to {target}: {exc.strerror or exc}",
                       hint="pass another file with -o") from None
    return target


def write_run_report(store: RunStore) -> Path | None:
    """Refresh the report in the run's folder; a failure is logged, never raised."""
    try:
        return save_run_report(store)
    except Exception as exc:  # the report is a view: it must never break a run or a merge
        logs.debug("run report not written", run=store.run_id, error=repr(exc))
        with suppress(Exception):
            store.event("report_failed", error=repr(exc)[:500])
        return None


@contextmanager
def kept_up_to_date(store: RunStore, every: float = 5.0) -> Iterator[None]:
    """While the body runs, rewrite the report every few seconds when something happened
    (never more than a tenth of the time: a 200-stream page costs a moment to render);
    write it once more at the end, whatever the end."""
    stop = threading.Event()

    def refresh() -> None:
        seen, pause = -1, every
        while not stop.wait(pause):
            size = store.events_path.stat().st_size if store.events_path.exists() else 0
            if size != seen:
                started = time.monotonic()
                write_run_report(store)
                seen, pause = size, max(every, 10 * (time.monotonic() - started))

    thread = threading.Thread(target=refresh, name="run-report", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        write_run_report(store)
