"""The command group and what every command shares: --repo, --run, errors to exit codes.

The only place, with its sibling modules, that imports click. Each command imports what
only it needs inside its body: every agent's ``wtr progress`` and ``wtr lock`` pays the
start-up of this package, and rich, yaml and the merge stage are not needed there.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem

from worktree_runner import __version__, git
from worktree_runner.errors import (
    EXIT_INTERRUPTED,
    BadInput,
    WtrError,
)
from worktree_runner.logs import configure_logging
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore

# The module under worktree_runner.cli that defines each command. Only the module of the
# command given is imported (all of them for --help): each command pays for its own imports.
# A command missing here still runs, after every module is imported (slowly: the startup
# test fails until it is added).
COMMAND_MODULES = {
    "accept": "run", "agent-file": "agents", "answer": "agents", "attach": "attach",
    "check": "plan", "clean": "clean", "diff": "review", "doctor": "agents", "events": "events",
    "hook": "hook", "init": "plan", "lock": "agents", "logs": "run", "mcp": "agents",
    "merge": "merge", "path": "review", "plan": "plan", "progress": "agents", "push": "push",
    "report": "report", "request": "agents", "resume": "run", "retry": "run", "run": "run",
    "runs": "run", "status": "run", "sync": "merge",
}


def _import_every_module() -> None:
    """Every module of this package: --help, completion and an unknown name see all."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"worktree_runner.cli.{module.name}")


class WtrGroup(click.Group):
    """Loads a command's module when the command is asked for; maps the project's errors to
    one line on stderr and its fixed exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        _import_every_module()
        return sorted(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"worktree_runner.cli.{COMMAND_MODULES[cmd_name]}")
        if cmd_name not in self.commands:  # a command the table misses is found all the same
            _import_every_module()
        return super().get_command(ctx, cmd_name)

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
    if repo_dir and fallback and repo_dir.resolve() != fallback.resolve():
        raise BadInput(f"--repo is given twice ({fallback} and {repo_dir})",
                       hint="give it once, before or after the command name")
    return git.open_repository(repo_dir or fallback)


def exclusive(**flags: object) -> None:
    """Refuse options that cannot go together: no option is silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name, value in flags.items() if value]
    if len(given) > 1:
        raise BadInput(f"{' and '.join(given)} cannot go together", hint="use one of them")


def plan_argument(func: Any) -> Any:
    return click.argument("plan_file", metavar="[PLAN]", required=False,
                          type=click.Path(dir_okay=False, path_type=Path))(func)


def plan_path(plan_file: Path | None, repo: git.Repository) -> Path:
    """PLAN as given, else worktree-plan.yaml at the repository root (where init writes it)."""
    from worktree_runner.plan.starter import DEFAULT_PLAN_FILE

    return plan_file if plan_file is not None else repo.toplevel / DEFAULT_PLAN_FILE


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
      wtr plan "GOAL"          or let an agent draft it, checked clean
      wtr check [PLAN]         validate it: waves, critical path, file ownership
      wtr run [PLAN]           each stream: own branch + worktree + agent, checked
      wtr status               what every stream is doing (--json, --markdown)
      wtr logs STREAM          an agent's output
      wtr diff STREAM          what it changed (cd "$(wtr path STREAM)" to look around)
      wtr merge                replay finished streams onto the target (--check first)
      wtr clean                remove worktrees and merged branches; never loses work
    After a crash or Ctrl-C: wtr resume. After a failure: wtr retry / wtr accept.
    To step in yourself: wtr attach STREAM (its agent's session, in its worktree).
    PLAN defaults to worktree-plan.yaml at the repository root.
    Exit codes: 0 ok, 1 work failed, 2 bad input, 3 halted for a human, 130 interrupted.
    Reference: docs/commands.md and docs/plan.md in the project.
    Shell completion: eval "$(_WTR_COMPLETE=bash_source wtr)" (zsh_source for zsh).
    """
    ctx.obj = {"repo_dir": repo_dir}
    configure_logging(verbose)


def _completion_repo(ctx: click.Context) -> git.Repository | None:
    root = ctx.find_root()
    folder = ctx.params.get("repo_dir") or root.params.get("repo_dir")
    try:
        return git.open_repository(folder)
    except WtrError:
        return None


def complete_runs(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    """Shell completion of --run: the ids of the repository's runs, newest first."""
    repo = _completion_repo(ctx)
    stores = registry.list_runs(repo) if repo is not None else []
    return [CompletionItem(s.run_id) for s in reversed(stores)
            if s.run_id.startswith(incomplete)]


def complete_streams(ctx: click.Context, param: click.Parameter,
                     incomplete: str) -> list[CompletionItem]:
    """Shell completion of a STREAM argument: the streams of the run --run names (or the
    most recent one)."""
    repo = _completion_repo(ctx)
    try:
        store = registry.open_run(repo, ctx.params.get("run_id")) if repo else None
    except WtrError:
        return []
    names = list(store.record.streams) if store is not None else []
    return [CompletionItem(name) for name in names if name.startswith(incomplete)]


def run_option(func: Any) -> Any:
    return click.option("--run", "run_id", metavar="ID", default=None,
                        shell_complete=complete_runs,
                        help="The run (default: the most recent one).")(func)


def open_store(repo_dir: Path | None, run_id: str | None) -> tuple[git.Repository, RunStore]:
    repo = open_repo(repo_dir)
    return repo, registry.open_run(repo, run_id)


def notify_option(func: Any) -> Any:
    return click.option(
        "--notify", "notify", multiple=True, metavar="TARGET", callback=_notify_targets,
        help="Also notify on needs-attention, finish and landing (with the plan's 'notify:'): "
             "'desktop', 'webhook=URL' (the event POSTed as JSON) or 'command=CMD' (the "
             "event as JSON on its stdin). Repeatable. A notification never stops the run.",
    )(func)


def _notify_targets(ctx: click.Context, param: click.Parameter,
                    values: tuple[str, ...]) -> tuple[Any, ...]:
    from worktree_runner.plan.load import notify_entries

    entries: list[dict[str, Any]] = []
    for value in values:
        kind, sep, target = value.partition("=")
        if kind == "desktop" and not sep:
            entries.append({"desktop": True})
        elif kind in ("webhook", "command") and sep and target.strip():
            entries.append({kind: target})
        else:
            raise click.BadParameter(f"{value!r}: use desktop, webhook=URL or command=CMD")
    try:
        return notify_entries(entries)
    except ValueError as exc:
        raise click.BadParameter(str(exc).replace("entry ", "--notify ")) from None
