"""``wtr report``: the run as one self-contained HTML page, or served live."""

from __future__ import annotations

from pathlib import Path

import click

from worktree_runner.cli.base import cli, exclusive, open_store, repo_option, run_option
from worktree_runner.errors import EXIT_INTERRUPTED, BadInput
from worktree_runner.run.state import RunStore


@cli.command()
@repo_option
@run_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: report.html in the run's state folder).")
@click.option("--open", "open_it", is_flag=True, help="Open the page in a browser afterwards.")
@click.option("--serve", is_flag=True,
              help="Serve the page on 127.0.0.1, updated live as the run goes, until Ctrl-C.")
@click.option("--port", type=click.IntRange(0, 65535), default=None, metavar="P",
              help="With --serve: the port (default: a free one).")
def report(repo_dir: Path | None, run_id: str | None, output: Path | None,
           open_it: bool, serve: bool, port: int | None) -> None:
    """Write the run report, one HTML file, and print its path; or serve it live.

    \b
    The page needs nothing else (no network, no script): a header with the run's
    facts and counts; a timeline of every stream (waiting, each attempt, checks,
    outcome, the critical path); the dependency graph in waves; per stream its
    failure, changes, report, progress and verify output; and the merge. The
    runner also keeps it in the run's folder: rewritten while the run goes (the
    page then reloads itself), when it ends, and when a merge lands, halts or is
    undone.

    \b
    --serve prints a URL on 127.0.0.1 with a secret token in it (anything asked
    without the token gets nothing) and serves the page there, with each stream's
    output and diff. The page follows the run's event log: a stream that starts,
    progresses or ends changes the page without a reload. It keeps serving after
    the run ends (a merge or a resume still shows); Ctrl-C stops it.
    Example:  wtr report --serve --open
              wtr report --serve --port 8765 --run checkout-2
    """
    exclusive(serve=serve, output=output)
    if port is not None and not serve:
        raise BadInput("--port goes with --serve", hint="add --serve, or drop --port")
    _, store = open_store(repo_dir, run_id)
    if serve:
        _serve(store, port or 0, open_it)
        return
    from worktree_runner.report import save_run_report

    path = save_run_report(store, output.resolve() if output else None)
    click.echo(str(path))
    if open_it:
        click.launch(str(path))


def _serve(store: RunStore, port: int, open_it: bool) -> None:
    from worktree_runner.report.serve import serve

    server = serve(store, port)
    click.echo(f"Serving the report of run {store.run_id} at {server.url}")
    click.echo("Only this machine can reach it, and only with the token. Ctrl-C stops it.")
    if open_it:
        click.launch(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"wtr: stopped serving the report of run {store.run_id}", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
    finally:
        server.stop()
