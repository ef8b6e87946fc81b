"""Claude Code integration: a subagent and a slash command that drive a plan through ``wtr``.

The files are Markdown with YAML front matter, as Claude Code reads them from
``.claude/agents/`` and ``.claude/commands/``. Values that YAML could misread (a ``[...]``
hint is a list, a ``: `` starts a mapping) are written as double-quoted strings.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from worktree_runner.errors import BadInput
from worktree_runner.plan.starter import DEFAULT_PLAN_FILE

AGENT_NAME = "parallel-worker"
AGENT_FILE = Path(".claude/agents/parallel-worker.md")
COMMAND_FILE = Path(".claude/commands/parallel-run.md")

_AGENT_DESCRIPTION = (
    "Runs a multi-stream plan of parallel coding agents with worktree_runner: checks the "
    "plan, runs every stream in its own git branch and worktree, watches their status, "
    "prepares and performs the merge, and reports. Delegate to it when asked to run, "
    "resume or merge a worktree plan, or to carry out work split into parallel streams."
)

_COMMAND_DESCRIPTION = (
    "Run a worktree_runner plan of parallel agents: check, run, status, merge prediction, "
    "then a summary"
)

_REPORT = """\
## Report

End with one consolidated summary, with these sections:

- **Completed**: the run id, `counts`, the streams that succeeded or were merged, and the
  merge outcome (`merge.state`, the target branch).
- **Modified files**: for each stream, its `changed_files`.
- **Blockers**: each failed or blocked stream with its `failure.kind`, `failure.message`,
  the telling lines of its log and the command that would move it on; a halted merge with
  its stream, conflicted files and integration worktree; anything you could not do.
- **Test results (verify)**: a succeeded stream passed its own verify commands; list the
  streams that failed with kind `verify` and what their logs show, and the outcome of the
  plan's verify on the merged result (it passed if the merge landed; if the merge halted
  on it, the failing command).
"""


def _quoted(text: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(text, ensure_ascii=False)


def _front_matter(fields: dict[str, str]) -> str:
    return "\n".join(["---", *(f"{key}: {value}" for key, value in fields.items()), "---", ""])


def _plan_argument(plan_path: str | None) -> str:
    return shlex.quote(plan_path or DEFAULT_PLAN_FILE)


def subagent_text(plan_path: str | None) -> str:
    """The subagent definition: when Claude should delegate to it, and the flow it follows."""
    header = _front_matter({
        "name": AGENT_NAME,
        "description": _quoted(_AGENT_DESCRIPTION),
        "tools": "Bash, Read, Grep, Glob",
    })
    return "\n".join([header, _agent_body(_plan_argument(plan_path)), _REPORT])


def _agent_body(plan: str) -> str:
    return "\n".join([
        _agent_intro(plan), _check_step(plan), _run_step(plan), _status_step(),
        _failure_step(), _merge_step(),
    ])


def _agent_intro(plan: str) -> str:
    return f"""\
You run the worktree_runner plan `{plan}` (or the plan file your task names) and report
what happened. Each stream of the plan runs its own coding agent in its own git branch and
worktree; you drive the runner, watch it and report. Do not edit files in the streams'
worktrees yourself.

Exit codes of every command below: 0 ok, 1 the work failed, 2 bad input (plan, arguments,
repository, unknown run or stream), 3 halted for a human, 130 interrupted.
"""


def _check_step(plan: str) -> str:
    return f"""\
## 1. Check the plan

    wtr check {plan}

Exit 2: the plan is invalid, or two streams that may run at the same time own the same
file. Stop there: report the problems it printed (`wtr check --json {plan}` lists them
under `errors`) and run nothing.
"""


def _run_step(plan: str) -> str:
    return f"""\
## 2. Run it

    wtr run {plan}

It returns once no stream can start or run, which can take as long as the agents do (up
to their timeouts). Start it with the Bash tool's `run_in_background` option, or with a
Bash timeout longer than the plan's agent timeouts: killing it stops the agents. Its exit
code: 0 every stream succeeded; 1 some stream failed or is blocked (the others went on);
130 interrupted (the state is saved; `wtr resume` continues the run); 2 the plan or the
repository is wrong (report it and stop). Never start a second run of the same plan while
one is running.
"""


def _status_step() -> str:
    return """\
## 3. Read the status

    wtr status --json

Read it while the run goes on (every minute or so) and once it has ended:
- `run`: the run id (pass `--run ID` to later commands if another run may have started
  since) and `state`: `running`, `finished` or `interrupted`;
- `counts`: how many streams are pending, running, succeeded, failed, blocked, merged;
- for each entry of `streams`: `name`, `status`, `progress` (`percent`, `message`,
  `blocked`), `failure` (null, or `kind`, `message`, `files`), `changed_files`, `branch`,
  `worktree` and `blocked_by`;
- `merge.state`: `none`, `halted`, `landed`, `aborted` or `undone`.

If `wtr run` ran in the background, it has ended when `state` is no longer `running`.
"""


def _failure_step() -> str:
    return """\
## 4. Failures

For each stream whose `status` is `failed`, read its agent's output:

    wtr logs STREAM

Report its `failure.kind` (`exit_code`, `timeout`, `stalled`, `setup`, `ownership`,
`verify`, `interrupted` or `error`), its `failure.message` and the telling end of the log.
For `ownership`, `failure.files` lists the files it changed outside its patterns. A
`blocked` stream waits on a failed one (`blocked_by`). Do not retry or accept work on your
own; say which command fits and let the user decide:
- `wtr retry STREAM`: a new attempt in the same worktree, its commits kept, then its
  dependents;
- `wtr accept STREAM --reason "why the work is good"`: a human declares the work good;
- `wtr resume`: continue an interrupted run (`wtr resume --retry-failed` also re-runs the
  failed streams).
"""


def _merge_step() -> str:
    return """\
## 5. Merge

Predict first; this changes no worktree, index or ref:

    wtr merge --check

Exit 0: the succeeded streams replay cleanly onto the target. Exit 3: a conflict is
predicted; `wtr merge --check --json` gives, for each entry of `streams`, its `conflicts`.
Report them and stop there unless the user tells you to merge anyway. Then merge:

    wtr merge

Exit 0: the target branch moved forward once, with the merged streams; report what it
printed (the streams merged and left out; `wtr merge --undo` takes it back). Exit 1:
nothing to merge, or the target moved during the merge (nothing was changed); report it.
Exit 3: halted for a human, on a conflict while replaying a stream or on the plan's verify
failing on the merged result. Report the stream (`merge.stream`), the conflicted files
(`merge.conflicted_files`), the integration worktree (`merge.worktree`) and the commands
it printed. Do NOT resolve the conflict, and do not run `wtr merge --continue` or
`wtr merge --abort`, unless the user asks you to. Do not run `wtr clean` either: removing
the worktrees is the user's call.
"""


def command_text(plan_path: str | None) -> str:
    """The ``/parallel-run [plan file]`` slash command: the same flow, up to the merge check."""
    header = _front_matter({
        "description": _quoted(_COMMAND_DESCRIPTION),
        "argument-hint": _quoted("[plan file]"),
        "allowed-tools": "Bash(wtr:*)",
    })
    return "\n".join([header, _command_body(_plan_argument(plan_path))])


def _command_body(plan: str) -> str:
    return f"""\
Run the worktree_runner plan `$ARGUMENTS` (when no argument was given: `{plan}`) the way the
{AGENT_NAME} subagent does. Below, PLAN stands for that file.

1. `wtr check PLAN`. On exit 2, stop and show the problems it printed.
2. `wtr run PLAN`. It returns once no stream can start or run, which can take as long as
   the agents do: start it with the Bash tool's `run_in_background` option or a long
   timeout. Exit 0 every stream succeeded, 1 some failed or are blocked, 130 interrupted
   (`wtr resume` continues).
3. `wtr status --json`: read `counts`, and for each entry of `streams` its `status`,
   `progress`, `failure` and `changed_files`, and `merge.state`. For each failed stream,
   read `wtr logs STREAM`.
4. `wtr merge --check`: predicts conflicts and changes nothing (exit 3: a conflict is
   predicted). Do not run `wtr merge` itself unless the user asks.

Then summarise under the headings Completed, Modified files, Blockers and Test results
(verify), and give the next command: `wtr merge` when the prediction is clean, otherwise
`wtr retry STREAM` or `wtr accept STREAM --reason "..."` for what failed.
"""


def write_agent_files(root: Path, plan_path: str | None, command: bool,
                      force: bool) -> list[Path]:
    """Write the subagent (and, with ``command``, the slash command) under ``root``.

    Every file is checked before any is written: an existing one stops everything
    unless ``force``.
    """
    files = {root / AGENT_FILE: subagent_text(plan_path)}
    if command:
        files[root / COMMAND_FILE] = command_text(plan_path)
    existing = [path for path in files if path.exists()]
    if existing and not force:
        names = ", ".join(str(path) for path in existing)
        raise BadInput(f"{names} already exist{'s' if len(existing) == 1 else ''}",
                       hint="pass --force to overwrite")
    for path, text in files.items():
        _write(path, text)
    return list(files)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None
