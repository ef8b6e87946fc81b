"""Commands about a plan: init, check, plan."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from worktree_runner import git
from worktree_runner.cli.base import (
    cli,
    emit_json,
    open_repo,
    plan_argument,
    plan_path,
    repo_option,
)
from worktree_runner.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    PlanInvalid,
    PlanProblem,
    WtrError,
)

if TYPE_CHECKING:
    from worktree_runner.architect.session import Watching


@cli.command()
@click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
@repo_option
@click.option("--from-dirs", is_flag=True,
              help="One stream per top-level folder (what init does without --streams).")
@click.option("--streams", "stream_list", metavar="LIST|N", default=None,
              help="Streams from a quick list: 'api:src/api/**,ui:src/ui/**|tests/ui/**'; "
                   "with --suggest, the number of streams wanted.")
@click.option("--suggest", is_flag=True,
              help="Propose streams from the history, file by file: a module with its tests, "
                   "files that change together in one stream, hot files shared.")
@click.option("--commits", type=click.IntRange(min=1), default=1000, show_default=True,
              help="With --suggest: how many recent changes to learn from (commits of the "
                   "branch's first-parent line, a merged branch counting as one).")
@click.option("--since", metavar="DATE", default=None,
              help="With --suggest: only changes after DATE (2024-05-01, 6.months).")
def init(path: Path | None, repo_dir: Path | None, from_dirs: bool,
         stream_list: str | None, suggest: bool, commits: int, since: str | None) -> None:
    """Write a commented starter plan (default: worktree-plan.yaml at the repository root).

    It suggests one stream per top-level folder (or the streams of --streams), the
    checked-out branch as base and target, and the claude preset as agent. Never
    overwrites an existing file.

    \b
    With --suggest the streams come from the branch's history (the last --commits
    changes of its first-parent line, a merged branch counting as one, changes of over
    50 files left out), file by file: a module goes with the tests named after it,
    files that change together land in one stream, CI and tool configs at the top
    level (.github/, noxfile.py, pyproject.toml...) in one 'tooling' stream, as many
    streams as the history supports (at most --streams N). Only paths of the base are
    proposed; the stream holding the top level also owns what is created there later. Changelogs,
    lockfiles, news fragments and registries changed with several streams become
    shared, with the reason (a changelog as its kind: CHANGES.*); streams that still
    change together get conflicts_with.
      wtr init --suggest
      wtr init --suggest --streams 4
    """
    from worktree_runner.plan.starter import (
        DEFAULT_PLAN_FILE,
        parse_stream_list,
        write_starter_plan,
    )

    if from_dirs and (stream_list or suggest):
        raise BadInput("use --from-dirs alone, without --streams or --suggest")
    source = click.get_current_context().get_parameter_source
    given = [f"--{name}" for name in ("commits", "since")
             if source(name) == click.core.ParameterSource.COMMANDLINE]
    if given and not suggest:
        raise BadInput(f"{' and '.join(given)} only work with --suggest",
                       hint="add --suggest, or leave them out")
    repo = open_repo(repo_dir)
    target = path if path is not None else repo.toplevel / DEFAULT_PLAN_FILE
    if suggest:
        _init_suggested(repo, target, _stream_count(stream_list), commits, since)
        return
    streams = parse_stream_list(stream_list) if stream_list is not None else None
    written = write_starter_plan(repo, target, streams)
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


def _stream_count(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise BadInput(f"--streams '{text}': with --suggest, give the number of streams",
                       hint="for example: wtr init --suggest --streams 4")
    return int(text)


def _init_suggested(repo: git.Repository, target: Path, streams: int | None, commits: int,
                    since: str | None) -> None:
    from worktree_runner.plan.starter import refuse_existing, write_plan_text
    from worktree_runner.plan.suggest import suggest_plan

    refuse_existing(target)  # before reading history, which can take a moment
    suggestion = suggest_plan(repo, target, streams, commits, since)
    written = write_plan_text(target, suggestion.text)
    if suggestion.note:
        click.echo(f"note: {suggestion.note}")
    else:
        count = len(suggestion.streams)
        click.echo(f"{count} stream{'' if count == 1 else 's'} suggested from "
                   f"{suggestion.commits} changes")
    click.echo(f"wrote {written}; edit it, then run: wtr check {written}")


@cli.command()
@plan_argument
@repo_option
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as one JSON document.")
def check(plan_file: Path | None, repo_dir: Path | None, as_json: bool) -> None:
    """Validate PLAN (default: worktree-plan.yaml) and show its analysis.

    \b
    Reports the waves (streams that can run at the same time, in order), the critical
    path (the longest dependency chain), which tracked files each stream owns, files
    owned by two streams that may run together (an error), files no stream owns
    (a note) and patterns that match nothing (a warning). Also warns about patterns
    of streams that may run together reaching the same paths though no tracked file
    matches yet (both list NOTES.md; scripts/** beside scripts/common.sh), and about
    a stream whose several predecessors overlap. Exit 0 valid, 2 invalid.
    """
    from worktree_runner import render, sandbox
    from worktree_runner.plan.analysis import analyze
    from worktree_runner.plan.load import load_plan

    try:
        repo = open_repo(repo_dir)
        plan_file = plan_path(plan_file, repo)
        plan = load_plan(plan_file)
        analysis = analyze(plan, repo, history=True)
        sandbox.require(plan.sandboxed)
    except WtrError as exc:
        if not as_json:
            raise
        problems = exc.problems if isinstance(exc, PlanInvalid) else [PlanProblem("", exc.message)]
        emit_json({"plan": str(plan_file or "worktree-plan.yaml"), "valid": False,
                   "errors": [p.to_json() for p in problems]})
        sys.exit(exc.exit_code)
    if as_json:
        emit_json(analysis.to_json())
        if not analysis.valid:
            sys.exit(EXIT_BAD_INPUT)
        return
    click.echo(render.check_report(analysis))
    analysis.raise_if_invalid()


@cli.command("plan")
@click.argument("goal")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the plan (default: worktree-plan.yaml at the repository "
                   "root). Never replaced without --force.")
@click.option("--agent", "preset", metavar="PRESET", default=None,
              help="The preset that drafts: claude (default), codex, gemini, aider, opencode.")
@click.option("--command", "command", metavar="CMD", default=None,
              help="Draft with this shell command instead ({prompt_file}, {prompt} are filled; "
                   "it writes $WTR_PLAN_DRAFT and reads the problems in $WTR_FEEDBACK).")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True, metavar="N",
              help="Drafts the agent may write before wtr gives up.")
@click.option("--timeout", metavar="DURATION", default="30m", show_default=True,
              help="How long one round of the agent may take (90s, 30m, 1h).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@repo_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome as one JSON document: the plan's analysis, every "
                   "round and its problems.")
def plan_command(goal: str, output: Path | None, preset: str | None, command: str | None,
                 rounds: int, timeout: str, force: bool, repo_dir: Path | None,
                 as_json: bool) -> None:
    """Draft a plan for GOAL with an agent, checked clean by 'wtr check'.

    \b
    wtr gathers what the agent needs from the checked-out branch: the tracked
    files with sizes and languages, each module with its tests, files the
    history changes together, hot files, and the repository's own test and lint
    commands. The agent works in a scratch checkout (removed after) and writes
    its draft outside the repository; wtr checks the draft as 'wtr check' does
    (errors and coupling warnings) and hands every problem back, in the same
    session when the agent's CLI can continue one, until the draft is clean or
    --rounds run out. Then it prints the
    waves, the critical path and each stream's reason, writes the plan, and
    runs nothing else.
      wtr plan "Add an /orders API with its tests and docs"
      wtr plan "Split the parser" --agent codex --rounds 5 -o parser-plan.yaml
    Exit 0 written; 1 the drafts never came clean (the last problems are listed
    and the drafts kept); 2 bad input.
    """
    from worktree_runner import render
    from worktree_runner.architect import Request, draft_plan
    from worktree_runner.cli.base import exclusive
    from worktree_runner.plan.durations import parse_duration
    from worktree_runner.plan.starter import DEFAULT_PLAN_FILE

    exclusive(agent=preset, command=command)
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise BadInput(f"--timeout {timeout}: {exc}", hint="write 90s, 30m or 1h") from None
    repo = open_repo(repo_dir)
    target = output if output is not None else repo.toplevel / DEFAULT_PLAN_FILE
    request = Request(goal, target.absolute(), preset, command, rounds, force, seconds)
    with _Progress(request.agent if command is None else "the command") as progress:
        outcome = draft_plan(repo, request, progress.show)
    if as_json:
        emit_json(outcome.to_json())
    else:
        click.echo(render.architect_report(outcome))
    for change in outcome.changed:
        click.echo(f"warning: the agent changed your repository: {change}", err=True)
    if not outcome.ok:
        if not as_json:
            click.echo(render.architect_failure(outcome), err=True)
        sys.exit(1)


class _Progress:
    """Which round, and the agent's last line of output: a spinner on a terminal, a line
    per round otherwise (on stderr, so that --json stays one document)."""

    def __init__(self, agent: str) -> None:
        from rich.console import Console

        self.agent = agent
        self.console = Console(stderr=True)
        self.status: Any = None
        self.announced = 0

    def __enter__(self) -> _Progress:
        if self.console.is_terminal:
            self.status = self.console.status(f"{self.agent} is drafting the plan")
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def show(self, seen: Watching) -> None:
        from worktree_runner import render

        if seen.phase == "checked":
            verdict = (f"{seen.problems} problems, fed back" if seen.problems else "clean")
            self.console.print(f"round {seen.round_number}: checked: {verdict}",
                               highlight=False)
        elif seen.phase == "checking" and self.status is not None:
            self.status.update(f"round {seen.round_number}: checking the draft")
        elif self.status is not None:
            tail = render.printable(_last_line(seen.log))[:70]
            self.status.update(f"round {seen.round_number}: {self.agent} is drafting "
                               f"({seen.seconds:.0f}s) {tail}")
        elif self.announced < seen.round_number:
            self.announced = seen.round_number
            click.echo(f"round {seen.round_number}: {self.agent} is drafting (output: "
                       f"{seen.log})", err=True)


def _last_line(log: Path) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 2048))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    return _described(last) if last.startswith("{") else last


def _described(line: str) -> str:
    """A JSON event line (claude's stream-json, codex's --json) as a few words: the tool
    it calls or the text it says."""
    import json

    try:
        record = json.loads(line)
    except ValueError:
        return ""
    message = record.get("message") if isinstance(record, dict) else None
    blocks = message.get("content") if isinstance(message, dict) else None
    for block in reversed(blocks if isinstance(blocks, list) else []):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use":
            given = block.get("input")
            detail = (given.get("command") or given.get("file_path") or ""
                      if isinstance(given, dict) else "")
            return f"{block.get('name')}: {str(detail).splitlines()[0] if detail else ''}"
        if block.get("type") == "text":
            return str(block.get("text") or "")
    return str(record.get("type") or "") if isinstance(record, dict) else ""
