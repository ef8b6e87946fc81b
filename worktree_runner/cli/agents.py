"""Commands for agents and their hosts: progress, request, answer, lock, mcp, agent-file,
doctor."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from worktree_runner.cli.base import (
    cli,
    emit_json,
    open_repo,
    open_store,
    plan_argument,
    plan_path,
    repo_option,
    run_option,
)
from worktree_runner.errors import EXIT_FAILED, EXIT_HALTED, BadInput

if TYPE_CHECKING:
    from worktree_runner.plan.model import Plan


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
    from worktree_runner.run import registry
    from worktree_runner.run.progress import report_progress

    state_dir = os.environ.get("WTR_STATE_DIR")
    if repo_dir is not None and state_dir:
        runs = registry.runs_root(open_repo(repo_dir)).resolve()
        if not Path(state_dir).resolve().is_relative_to(runs):
            raise BadInput(f"--repo {repo_dir} is not the repository of this agent's run "
                           f"(WTR_STATE_DIR is {state_dir})", hint="leave --repo out")
    report_progress(os.environ, message, percent, blocked, lambda: open_repo(repo_dir))


@cli.command()
@click.argument("path")
@click.option("--what", required=True, metavar="TEXT", help="The change you need, in a sentence.")
@click.option("--why", required=True, metavar="TEXT", help="What you need it for.")
@click.option("--wait", is_flag=True, help="Wait for the answer (the owner's work with the "
              "change, a follow-up stream's end, or a person's answer).")
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="With --wait: seconds to wait before a person is asked instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as one JSON document.")
@repo_option
def request(path: str, what: str, why: str, wait: bool, timeout: float, as_json: bool,
            repo_dir: Path | None) -> None:
    """For agents: ask the stream that owns PATH for a change you may not make.

    \b
    PATH is relative to the repository's root (your worktree's root). It goes to the
    owner's prompt if it has not started, into its session when its turn ends if it
    is running, to a follow-up stream your stream then depends on (and builds on) if
    it has finished, or to a person if PATH is shared or owned by no stream.
    Exit codes: 0 recorded (or answered, with --wait); 1 no answer within --timeout
    (a person was asked; go on or report being blocked); 2 bad input, e.g. PATH is
    yours (change it yourself); 3 stop: waiting would close a cycle of streams
    waiting on each other (report being blocked and exit non-zero).
    Example:  wtr request src/db/models.py --what "add a 'paid' column to Order" \\
                  --why "the API returns it" --wait
    """
    from worktree_runner.coordinate import caller_from_env, request_change

    caller = caller_from_env(os.environ, lambda: open_repo(repo_dir))
    answer = request_change(caller, path, what, why, wait, timeout)
    if as_json:
        emit_json(answer.to_json())
    else:
        click.echo(answer.message)
    if answer.halted:
        sys.exit(EXIT_HALTED)
    if answer.state == "timed_out":
        sys.exit(EXIT_FAILED)


@cli.command()
@click.argument("request_id", metavar="ID")
@click.argument("text")
@repo_option
@run_option
def answer(request_id: str, text: str, repo_dir: Path | None, run_id: str | None) -> None:
    """Answer an agent's change request ID (listed by 'wtr status') with TEXT.

    \b
    For requests that went to a person: a shared or unowned path, a request that
    timed out, one whose owner failed, or a cycle of waiting streams. An agent
    waiting for the request gets TEXT as its answer.
    Example:  wtr answer r3 "leave package.json alone; vendor the helper instead"
    """
    from worktree_runner.coordinate import answer_request

    _, store = open_store(repo_dir, run_id)
    found = answer_request(store, request_id, text)
    click.echo(f"answered request {found.id} of '{found.requester}' ({found.path})")


@cli.command()
def mcp() -> None:
    """For agents: an MCP server (stdio) serving the stream of WTR_STREAM.

    \b
    Tools: progress, report, lock, unlock, owner, streams, request_change
    (docs/agents.md, docs/coordination.md).
    A preset agent whose CLI speaks MCP is given this server in its own config
    for the run (claude, codex, opencode; gemini under sandbox: true); 'mcp:
    false' in the plan turns that off. Started by the agent's CLI, bound to the
    stream its environment names (WTR_STATE_DIR, WTR_STREAM, WTR_WORKTREE).
    It ends when the CLI closes its stdin or exits, and gives back its locks.
    """
    from worktree_runner.mcp.binding import bind

    binding = bind(os.environ)  # (before the SDK loads: a wrong start says so at once)
    from worktree_runner.mcp.server import serve

    serve(binding)


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
@plan_argument
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
def doctor(plan_file: Path | None, repo_dir: Path | None, as_json: bool) -> None:
    """Can the agents of PLAN run here? (Without a plan: every preset.)

    \b
    For each agent: its program on PATH, its version against the range the preset
    was tested with (a known broken version cannot run), and the variables it needs
    to reach a model (names only, never values). One line each. Exit 0 when every
    agent can start, 1 when one cannot. PLAN defaults to worktree-plan.yaml when
    that exists in the repository; outside a repository, every preset is examined.
    Example:  wtr doctor            wtr doctor plan.yaml --json
    """
    from worktree_runner import render
    from worktree_runner.doctor import examine

    plan = _doctor_plan(plan_file, repo_dir)
    checks = examine(plan)
    if as_json:
        emit_json({"plan": str(plan.path) if plan else None, "ok": all(c.ok for c in checks),
                   "agents": [c.to_json() for c in checks]})
    else:
        click.echo(render.doctor_report(checks))
    if not all(c.ok for c in checks):
        sys.exit(EXIT_FAILED)


def _doctor_plan(plan_file: Path | None, repo_dir: Path | None) -> Plan | None:
    """The plan to examine: PLAN, else the repository's worktree-plan.yaml if any."""
    from worktree_runner.errors import NotARepository
    from worktree_runner.plan.load import load_plan

    if plan_file is None:
        try:
            plan_file = plan_path(None, open_repo(repo_dir))
        except NotARepository:
            if repo_dir is not None:
                raise
            return None
        if not plan_file.exists():
            return None
    return load_plan(plan_file)
