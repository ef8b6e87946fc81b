"""The run report: one self-contained HTML page (``wtr report``), kept in the run's folder.

The page in the run's folder is kept by a subscriber of the run's events
(``kept_up_to_date``), attached where a command that runs or merges is assembled: it is
rewritten as the run goes, at once when a landing ends, and when the command ends. A
report that cannot be written is logged and never breaks the run or the merge.
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
from worktree_runner.events import LANDING_ENDS, RUN_ENDS, Event
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
def kept_up_to_date(store: RunStore, every: float = 5.0, final: bool = True) -> Iterator[None]:
    """While the body runs, rewrite the report every few seconds when something happened
    (never more than a tenth of the time: a 200-stream page costs a moment to render), at
    once when a landing or the run ends; once more at the end, whatever the end (without
    ``final``: only when an event came)."""
    stop, urgent = threading.Event(), threading.Event()
    published = threading.Event()

    def note(event: Event) -> None:
        published.set()
        if event.kind in LANDING_ENDS or event.kind in RUN_ENDS:
            urgent.set()

    def refresh() -> None:
        # The log's size also counts what other processes publish (an agent's progress).
        seen, pause = -1, every
        while not stop.is_set():
            urgent.wait(pause)
            urgent.clear()
            size = _size(store.events_path)
            if size != seen and not stop.is_set():
                started = time.monotonic()
                write_run_report(store)
                seen, pause = size, max(every, 10 * (time.monotonic() - started))

    store.subscribers.append(note)
    thread = threading.Thread(target=refresh, name="run-report", daemon=True)
    thread.start()
    try:
        yield
    finally:
        store.subscribers.remove(note)
        stop.set()
        urgent.set()
        thread.join()
        if final or published.is_set():
            write_run_report(store)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
