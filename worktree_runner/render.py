"""Human-readable text for reports; the CLI prints what these return."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from worktree_runner.events import Event, Kind
from worktree_runner.plan.durations import format_duration
from worktree_runner.words import plural

# rich and the plan's analysis are imported where they are used: `wtr status` to a pipe
# (agents and scripts) needs neither.
if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from worktree_runner.architect import Outcome
    from worktree_runner.doctor import AgentCheck
    from worktree_runner.merge.predict import StreamPrediction
    from worktree_runner.merge.stage import Landed
    from worktree_runner.plan.analysis import Analysis
    from worktree_runner.run.runner import PlannedStream, Prepared

_SHOWN_UNOWNED = 10

# Control characters as escapes (a tab, a newline or an escape sequence may be part of a
# file name): a printed line is never cut, moved about or recoloured by a name.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7f, 0xa0))}
_ESCAPES.update({ord("\t"): "\\t", ord("\n"): "\\n", ord("\r"): "\\r"})


def printable(text: str) -> str:
    return text.translate(_ESCAPES)


def check_report(analysis: Analysis) -> str:
    plan = analysis.plan
    refs = analysis.refs
    lines = [
        f"plan {plan.name}: {len(plan.streams)} streams, base {refs.base} "
        f"({refs.base_commit[:12]}), target {refs.target}, max_parallel {plan.max_parallel}",
        "",
        "waves (streams that can run at the same time, in order):",
    ]
    lines += [f"  {i}. {', '.join(wave)}" for i, wave in enumerate(analysis.waves, 1)]
    lines += ["", f"critical path: {' -> '.join(analysis.critical_path)}", "", "ownership:"]
    width = max(len(name) for name in plan.names)
    for stream in plan.streams:
        owned = analysis.owned[stream.name]
        lines.append(f"  {stream.name:<{width}}  {len(owned):>5} files  {', '.join(stream.files)}")
    lines += _best_of(analysis)
    lines += _unowned(analysis)
    lines += _coupling(analysis)
    lines += [f"warning: {w}" for w in analysis.warnings]
    lines += [f"error: {p.where}: {p.message}" for p in analysis.problems]
    verdict = "plan is valid" if analysis.valid else "plan is invalid"
    lines += ["", verdict]
    return "\n".join(map(printable, lines))


def _best_of(analysis: Analysis) -> list[str]:
    streams = [s for s in analysis.plan.streams if s.attempts > 1]
    if not streams:
        return []
    lines = ["", "best of N (candidates side by side, one kept):"]
    for stream in streams:
        how = stream.choose.kind if stream.choose.kind != "command" else "by a judge command"
        lines.append(f"  {stream.name}: {stream.attempts} candidates, kept: {how}; agents: "
                     f"{', '.join(stream.candidate_names())}")
    return lines


def _unowned(analysis: Analysis) -> list[str]:
    unowned = analysis.unowned
    if not unowned:
        return [f"  every one of the {analysis.tracked_count} tracked files has an owner"]
    shown = ", ".join(unowned[:_SHOWN_UNOWNED])
    more = f" and {len(unowned) - _SHOWN_UNOWNED} more" if len(unowned) > _SHOWN_UNOWNED else ""
    return [f"note: {len(unowned)} tracked files have no owning stream: {shown}{more}"]


def _coupling(analysis: Analysis) -> list[str]:
    report = analysis.coupling
    if report is None:
        return []
    note = [f"note: {report.note}"] if report.note else []
    return [f"coupling: {report.summary}", *note]


# -- runs and their streams -----------------------------------------------------------------

def _elapsed(stream: dict[str, Any]) -> str:
    start, end = stream.get("started_at"), stream.get("finished_at")
    if not start:
        return ""
    finish = datetime.fromisoformat(end) if end else datetime.now(UTC)
    return format_duration((finish - datetime.fromisoformat(start)).total_seconds())


def _note(stream: dict[str, Any]) -> str:
    if stream.get("accepted") and stream["status"] in ("succeeded", "merged"):
        return f"accepted: {stream['accepted'].get('reason') or 'no reason given'}"
    failure = stream.get("failure")
    if failure:
        return f"{failure['kind']}: {failure['message']}{_rounds_note(stream)}"
    if stream.get("blocked_by"):
        return f"waits on failed '{stream['blocked_by']}'"
    progress = stream["progress"]
    note = progress.get("message") or ""
    return f"BLOCKED: {note}" if progress.get("blocked") else note


def _rounds_note(stream: dict[str, Any]) -> str:
    """How often the agent was told a failure (or a person's message) before this one."""
    kinds = [entry.get("kind") for entry in stream.get("attempt_log") or []]
    said = [f"{plural(kinds.count(kind), word)}" for kind, word in
            (("feedback", "feedback round"), ("message", "message")) if kind in kinds]
    return f" (after {' and '.join(said)})" if said else ""


def _percent(stream: dict[str, Any]) -> float:
    value = stream["progress"].get("percent")
    return float(value) if isinstance(value, int | float) else 0.0


def counts_line(doc: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {status}" for status, n in doc["counts"].items() if n)
    return f"run {doc['run']} ({doc['state']}): {counts or 'no streams'}"


def status_table(doc: dict[str, Any], bars: bool = False) -> Table:
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title=counts_line(doc), title_justify="left", expand=False)
    for column in ("stream", "status", "progress", "message", "elapsed", "branch", "worktree"):
        table.add_column(column, overflow="fold")
    for stream in doc["streams"]:
        percent = _percent(stream)
        progress: Any = (
            ProgressBar(total=100, completed=percent, width=20) if bars
            else f"{percent:.0f}%"
        )
        # Text, not str: rich would read '[/bold]' in an agent's message as markup.
        table.add_row(Text(stream["name"]), _styled(stream["status"]), progress,
                      Text(str(_note(stream))), _elapsed(stream), Text(stream["branch"]),
                      Text(stream.get("worktree") or ""))
    return table


def status_text(doc: dict[str, Any]) -> str:
    """The status for a pipe or a file: whole lines, never wrapped, no trailing spaces;
    the free-text message last on each stream's line."""
    header = ("stream", "status", "progress", "elapsed", "branch", "worktree", "message")
    rows = [header] + [
        (s["name"], s["status"], f"{_percent(s):.0f}%", _elapsed(s), s["branch"],
         s.get("worktree") or "-", _note(s))
        for s in doc["streams"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [counts_line(doc), ""]
    lines += ["  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
              .rstrip() for row in rows]
    attention = _attention(doc, markdown=False)
    lines += ["", "Needs attention:", *(attention or ["  nothing: every stream is fine so far"])]
    lines += [line.rstrip() for line in [*candidate_lines(doc), *eta_lines(doc),
                                         *spend_lines(doc), *merge_lines(doc), *disk_lines(doc),
                                         *isolation_lines(doc), *notification_lines(doc),
                                         *request_lines(doc)]]
    return "\n".join(lines)

def candidate_lines(doc: dict[str, Any]) -> list[str]:
    """Every candidate of the best-of-N streams: how it ended, and which one was kept."""
    lines: list[str] = []
    for stream in doc["streams"]:
        for c in stream.get("candidates") or []:
            if not lines:
                lines.append("candidates (best of N; 'wtr diff STREAM --attempt K'):")
            stat = c.get("diff_stat")
            size = f"+{stat['insertions']} -{stat['deletions']}" if stat else "no diff"
            failure = c.get("failure")
            said = f"{failure['kind']}: {failure['message']}" if failure else c["status"]
            where = "kept" if c.get("chosen") else (c.get("archive") or c["branch"])
            lines.append(printable(f"  {stream['name']} {c['attempt']} ({c['agent']}): {said}; "
                                   f"{size}; {where}"))
    return lines


def spend_lines(doc: dict[str, Any]) -> list[str]:
    """What the agents said they spent, in all and per stream, against the budgets."""
    from worktree_runner.run.budget import describe
    from worktree_runner.run.usage import describe_usage

    def spent(usage: Any, budget: Any) -> str:
        limit = describe(budget)
        return (describe_usage(usage) or "nothing said") + (f" (budget {limit})" if limit
                                                              else "")

    streams = [s for s in doc["streams"] if s.get("usage") or s.get("budget")]
    if not (doc.get("usage") or doc.get("budget") or streams):
        return []
    return [f"spend: {spent(doc.get('usage'), doc.get('budget'))}",
            *(f"  {s['name']}: {spent(s.get('usage'), s.get('budget'))}" for s in streams)]


def notification_lines(doc: dict[str, Any]) -> list[str]:
    failed = (doc.get("notifications") or {}).get("failed") or []
    if not failed:
        return []
    last = failed[-1]
    return [printable(f"notifications: {len(failed)} failed; last: {last['topic']} to "
                      f"{last['to']}: {last['error']}")]


def request_lines(doc: dict[str, Any]) -> list[str]:
    """Every change request between streams: who asked, for what, where it went."""
    requests = doc.get("requests") or []
    if not requests:
        return []
    lines = ["requests (change requests between streams; 'wtr answer ID TEXT'):"]
    for r in requests:
        where = f" ({r['target']})" if r["target"] else ""
        said = f": {r['answer']}" if r.get("answer") else ""
        lines.append(printable(f"  {r['id']} from {r['from']} about {r['path']}: {r['what']} "
                               f"-> {r['route']}{where}, {r['state']}{said}"))
    return lines


def disk_lines(doc: dict[str, Any]) -> list[str]:
    if "disk_bytes" not in doc:
        return []
    return [f"disk: {doc['disk_bytes'] / 2**20:.1f} MiB in the run's worktrees"]


_STYLES = {"succeeded": "green", "merged": "green", "failed": "red", "blocked": "yellow",
           "running": "cyan", "pending": "dim"}


def _styled(status: str) -> Text:
    from rich.text import Text

    return Text(status, style=_STYLES.get(status, ""))


def merge_lines(doc: dict[str, Any]) -> list[str]:
    merge = doc["merge"]
    if merge["state"] == "none":
        return []
    lines = [f"merge: {merge['state']} onto {merge['target']}"]
    if merge.get("stream"):
        lines.append(f"  halted at stream {merge['stream']}: "
                     + ", ".join(merge.get("conflicted_files") or []))
    if merge.get("merged"):
        lines.append(f"  merged: {', '.join(merge['merged'])}")
    if merge.get("left_out"):
        why = merge.get("left_out_reasons") or {}
        lines.append("  left out: " + ", ".join(f"{n} ({why[n]})" if n in why else n
                                                for n in merge["left_out"]))
    if merge.get("broke_verify"):
        lines.append(f"  verify breaks with stream {merge['broke_verify']}: 'wtr merge --skip "
                     f"{merge['broke_verify']}' then 'wtr merge --continue' lands the rest")
    for made in merge.get("agent_resolutions") or []:
        lines.append(f"  {made['stream']}: conflict in {', '.join(made['files'])} resolved by "
                     f"an agent ({made['resolver']})")
    for stream, files in (merge.get("resolved_by_rerere") or {}).items():
        lines.append(f"  {stream}: resolved from a recorded resolution: {', '.join(files)}")
    return lines


def isolation_lines(doc: dict[str, Any]) -> list[str]:
    """What changed outside the run's worktrees while it ran, and who could have done it."""
    lines = []
    for breach in doc.get("isolation") or []:
        who = (f"by {breach['stream']}" if breach.get("stream")
               else f"by hand in {', '.join(breach['by_hand'])} (no agent's doing)"
               if breach.get("by_hand")
               else f"while {', '.join(breach.get('suspects') or []) or 'no agent'} ran")
        lines.append(printable(f"outside the worktrees, {who}: "
                               + "; ".join(breach.get("changes") or [])))
    return lines


def status_markdown(doc: dict[str, Any]) -> str:
    lines = [f"# Run `{doc['run']}`", "",
             f"- state: **{doc['state']}**", f"- plan: `{doc['plan']}`",
             f"- base: `{doc['base']}` (`{doc['base_commit'][:12]}`), target `{doc['target']}`",
             *_usage_line(doc), *(f"- {line}" for line in eta_lines(doc)),
             "", "## Overview", "", "| status | streams |", "| --- | --- |"]
    lines += [f"| {status} | {n} |" for status, n in doc["counts"].items()]
    lines += ["", "## Streams", "",
              "| stream | status | progress | message | elapsed | branch |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in doc["streams"]:
        note = _note(s).replace("|", "\\|")
        lines.append(f"| {s['name']} | {s['status']} | {_percent(s):.0f}% | {note} | "
                     f"{_elapsed(s)} | `{s['branch']}` |")
    attention = _attention(doc, markdown=True)
    lines += ["", "## Needs attention", ""]
    lines += attention or ["Nothing: every stream is fine so far."]
    if candidates := candidate_lines(doc):
        lines += ["", "## Candidates", "", *(f"- {line.strip()}" for line in candidates[1:])]
    if merge := merge_lines(doc):
        lines += ["", "## Merge", "", *(f"- {line.strip()}" for line in merge)]
    if breaches := isolation_lines(doc):
        lines += ["", "## Isolation", "", *(f"- {line}" for line in breaches)]
    if asked := request_lines(doc):
        lines += ["", "## Coordination", "", *(f"- {line.strip()}" for line in asked[1:])]
    lines += _reports_markdown(doc)
    return "\n".join(lines) + "\n"


def _reports_markdown(doc: dict[str, Any]) -> list[str]:
    """Each stream's own report, quoted so that its headings stay inside its section."""
    reports = [(s["name"], s["report"]) for s in doc["streams"] if s.get("report")]
    if not reports:
        return []
    lines = ["", "## Stream reports"]
    for name, report in reports:
        text = report["text"].rstrip()
        cut = f"\n\n(cut; the whole report: `{report['path']}`)" if report["truncated"] else ""
        lines += ["", f"### {name}", "", *(f"> {line}".rstrip() for line in
                                           (text + cut).splitlines())]
    return lines


def _usage_line(doc: dict[str, Any]) -> list[str]:
    from worktree_runner.run.usage import describe_usage, total_usage

    said = describe_usage(total_usage([s.get("usage") for s in doc["streams"]]))
    return [f"- agents reported: {said}"] if said else []


def _attention(doc: dict[str, Any], markdown: bool) -> list[str]:
    """What a human should do next; Markdown list items, or indented plain lines."""
    def name(text: str) -> str:
        return f"**{text}**" if markdown else text

    def cmd(text: str) -> str:
        return f"`{text}`" if markdown else f"'{text}'"

    items = []
    if doc["state"] == "interrupted":  # its runner is gone (kill -9, a crash)
        items.append(f"run {name(doc['run'])} was interrupted: no wtr is working on it; "
                     f"{cmd('wtr resume --run ' + doc['run'])} continues it")
    for s in doc["streams"]:
        if s["status"] == "failed" and s.get("start_conflict"):
            items.append(f"{name(s['name'])} cannot start: {s['failure']['message']}")
        elif s["status"] == "failed":
            files = s["failure"].get("files") or []
            # the message names the first ten out-of-scope files already
            extra = f" (all of them: {', '.join(files)})" if len(files) > 10 else ""
            items.append(f"{name(s['name'])} failed — {_note(s)}{extra}; "
                         f"see {cmd('wtr logs ' + s['name'])}, then "
                         f"{cmd('wtr retry ' + s['name'])} or {cmd('wtr accept ' + s['name'])}")
        elif s["status"] == "blocked":
            items.append(f"{name(s['name'])} is blocked: it depends on "
                         f"{cmd(s['blocked_by'])}, which did not succeed")
        elif s["progress"].get("blocked"):
            items.append(f"{name(s['name'])} reports being blocked: {s['progress']['message']}")
        items += [f"{name(s['name'])} {s['status']} with a warning — {w['kind']}: {w['message']}"
                  for w in s.get("warnings") or []]
    for r in doc.get("requests") or []:
        if r["state"] in ("escalated", "timed_out"):
            items.append(f"request {name(r['id'])} of {r['from']} about {r['path']} needs a "
                         f"person ({r['answer']}): {r['what']} — answer with "
                         f"{cmd('wtr answer ' + r['id'] + ' TEXT')}")
    return [f"- {item}" if markdown else f"  {item}" for item in items]


def transition_line(event: Event, announced: dict[str, int] | None = None) -> str | None:
    """One line per stream transition, for runs without a terminal. ``announced`` keeps,
    per stream, the attempt already named, so a retry is announced once."""
    stream = str(event.stream)
    seen = announced if announced is not None else {}
    if event.kind in (Kind.STREAM_STARTED, Kind.STREAM_RESUMED):
        attempt = int(event.get("attempt") or 0) + 1
        seen[stream] = attempt
        verb = "started" if event.kind == Kind.STREAM_STARTED else "resumed"
        return f"{stream}: {verb}" + (f" (attempt {attempt})" if attempt > 1 else "")
    if event.kind == Kind.ATTEMPT_STARTED and event.get("attempt", 1) > seen.get(stream, 1):
        seen[stream] = event.get("attempt")
        kind = {"feedback": " (its failure told to the agent)",
                "message": " (your message told to the agent)"}.get(
                    str(event.get("attempt_kind")), "")
        return f"{stream}: attempt {event.get('attempt')}{kind}"
    if event.kind == Kind.STREAM_BLOCKED:
        return f"{stream}: blocked (depends on '{event.get('blocked_by')}', which did not succeed)"
    if event.kind == Kind.STREAM_FAILED:
        failure = event.get("failure") or {}
        return f"{stream}: failed ({failure.get('kind')}: {failure.get('message')})"
    if event.kind == Kind.STREAM_SUCCEEDED:
        return f"{stream}: succeeded"
    return None


def event_line(event: Event) -> str:
    """``wtr events``: one line an event, for a person."""
    facts = {k: v for k, v in event.facts.items() if k not in ("status", "attempt")}
    told = transition_line(event) if event.stream else None
    if told is None:
        told = " ".join(f"{k}={_short(v)}" for k, v in facts.items())
        told = f"{event.stream}: {told}" if event.stream else told
    try:
        when = local_time(event.time)
    except ValueError:
        when = "--:--:--"
    return f"{event.seq:>5} {when} {event.kind:<26} {told}".rstrip()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."


def print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    console.print(status_table(doc))
    if doc["state"] == "interrupted":
        console.print(_attention(doc, markdown=False)[0].strip(), markup=False,
                      highlight=False, style="yellow")
    for line in [*candidate_lines(doc), *eta_lines(doc), *spend_lines(doc), *merge_lines(doc),
                 *disk_lines(doc), *notification_lines(doc), *request_lines(doc)]:
        console.print(line, markup=False, highlight=False)
    for line in isolation_lines(doc):
        console.print(line, markup=False, highlight=False, style="yellow")


def local_time(at: str) -> str:
    return datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S")


def eta_lines(doc: dict[str, Any]) -> list[str]:
    """Estimated completion and the next milestone, while the run goes."""
    if doc.get("state") != "running":
        return []
    if not doc.get("eta"):
        return [f"estimated completion: unknown ({doc.get('eta_basis')})"]
    left = (datetime.fromisoformat(doc["eta"]) - datetime.now(UTC)).total_seconds()
    lines = [f"estimated completion: {local_time(doc['eta'])} (in about "
             f"{format_duration(max(left, 0))}; {doc['eta_basis']})"]
    following = doc.get("next_milestone")
    if following:
        lines.append(f"next milestone: {following['stream']} expected to end around "
                     f"{local_time(following['at'])}")
    return lines


def dry_run_report(prepared: Prepared, run_id: str, planned: list[PlannedStream]) -> str:
    refs = prepared.analysis.refs
    lines = [
        f"dry run: would create run {run_id} from {refs.base} ({refs.base_commit[:12]}), "
        f"max_parallel {prepared.max_parallel}; nothing was created",
        f"streams would run {prepared.executor.where()}",
        *(f"warning: {w}" for w in prepared.analysis.warnings),
    ]
    for wave in sorted({p.wave for p in planned}):
        lines.append(f"wave {wave}:")
        for item in (p for p in planned if p.wave == wave):
            command = item.command if isinstance(item.command, str) else shlex.join(item.command)
            lines += [
                f"  {item.name}",
                f"    branch:   {item.branch}",
                f"    worktree: {item.worktree}",
                f"    base:     {item.base}",
                f"    command:  {command}",
            ]
            stream = prepared.plan.stream(item.name)
            if stream.attempts > 1:
                lines.append(f"    best of {stream.attempts}: candidates on {item.branch}"
                             f"+attempt-1.. ({', '.join(stream.candidate_names())}), kept: "
                             f"{stream.choose.kind}")
    return "\n".join(map(printable, lines))


def landed_report(landed: Landed) -> str:
    lines = [f"merged {plural(len(landed.merged), 'stream')} onto {landed.target}: "
             f"{landed.old[:12]} -> {landed.new[:12]}"]
    if landed.merged:
        lines.append(f"  in order: {', '.join(landed.merged)}")
    for stream, files in landed.resolved_by_rerere.items():
        lines.append(f"  {stream}: conflicts resolved from a recorded resolution (rerere): "
                     f"{', '.join(files)}")
    if landed.squashed:
        lines.append(f"  landed as their net change in one commit (their history has merge "
                     f"commits a replay would lose): {', '.join(landed.squashed)}")
    if landed.left_out:
        why = [f"{name} ({landed.reasons[name]})" if name in landed.reasons else name
               for name in landed.left_out]
        lines.append(f"  left out: {', '.join(why)}")
    if landed.verified:
        lines.append(f"  verify: {plural(landed.verified, 'command')} passed on the merged "
                     f"result (output: {landed.log})")
    else:
        lines.append("  verify: the plan has no verify commands; nothing was run")
    lines.append("  undo with: wtr merge --undo")
    return "\n".join(lines)


def prediction_report(target: str, predictions: list[StreamPrediction],
                      left_out: list[str]) -> str:
    lines = [f"merge prediction onto {target} (nothing was changed):"]
    for p in predictions:
        if p.clean and p.resolved_by_rerere:
            lines.append(f"  {p.stream}: conflict, resolved by a recorded resolution in "
                         f"{', '.join(p.resolved_by_rerere)} ({plural(p.commits, 'commit')})")
        elif p.clean:
            lines.append(f"  {p.stream}: clean ({plural(p.commits, 'commit')})")
        else:
            lines.append(f"  {p.stream}: CONFLICT at {(p.conflict_commit or '')[:12]} in "
                         + ", ".join(p.conflicts))
    if not predictions:
        lines.append("  no stream to merge")
    if left_out:
        lines.append(f"  left out: {', '.join(left_out)}")
    conflicts = sum(1 for p in predictions if not p.clean)
    lines.append(f"{plural(conflicts, 'stream')} would conflict" if conflicts else "clean")
    return "\n".join(lines)


def doctor_report(checks: list[AgentCheck]) -> str:
    """One line per agent (``ok``, ``warn`` or ``FAIL``), its problems and warnings after."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        mark = "FAIL" if not check.ok else "warn" if check.warnings else "ok"
        facts = [check.path or "not found"]
        if check.version:
            facts.append(f"version {check.version}")
        if check.tested:
            facts.append(f"tested {check.tested[0]}")
        if check.variables_set:
            facts.append("set: " + ", ".join(check.variables_set))
        if check.mcp:
            facts.append(" ".join(filter(None, ("gets wtr mcp", check.mcp_only))))
        used = f" (streams: {', '.join(check.streams)})" if check.streams else ""
        lines.append(f"{mark:<4} {check.name:<{width}}  {'; '.join(facts)}{used}")
        lines += [f"     {' ' * width}  - {text}" for text in [*check.problems, *check.warnings]]
    failing = [c.name for c in checks if not c.ok]
    lines.append(f"{plural(len(failing), 'agent')} cannot run: {', '.join(failing)}" if failing
                 else "every agent can start")
    return "\n".join(lines)


# -- wtr plan ----------------------------------------------------------------------------------

def architect_report(outcome: Outcome) -> str:
    """The drafted plan: where it went, its waves, critical path and each stream's reason."""
    rounds = len(outcome.rounds)
    analysis = outcome.analysis
    if analysis is None or outcome.written is None:
        return f"no plan written: no clean draft after {plural(rounds, 'round')}"
    plan = analysis.plan
    lines = [f"wrote {outcome.written}: clean after {plural(rounds, 'round')}; "
             f"{plural(len(plan.streams), 'stream')}, base {analysis.refs.base} "
             f"({analysis.refs.base_commit[:12]})", "", "waves (streams that run together):"]
    lines += [f"  {i}. {', '.join(wave)}" for i, wave in enumerate(analysis.waves, 1)]
    lines += ["", f"critical path: {' -> '.join(analysis.critical_path)}", "", "streams:"]
    width = max(len(name) for name in plan.names)
    for stream in plan.streams:
        owned = len(analysis.owned[stream.name])
        lines.append(f"  {stream.name:<{width}}  {owned:>4} files  {stream.description}")
        order = [f"after {', '.join(stream.depends_on)}"] if stream.depends_on else []
        order += [f"never beside {', '.join(stream.conflicts_with)}"] \
            if stream.conflicts_with else []
        if order:
            lines.append(f"  {'':<{width}}              {'; '.join(order)}")
    notes = [n for r in outcome.rounds[-1:] for n in r.notes]
    lines += [f"note: {n}" for n in notes]
    lines += ["", f"next: wtr check {outcome.written}, then wtr run {outcome.written}"]
    return "\n".join(map(printable, lines))


def architect_failure(outcome: Outcome) -> str:
    """Why no plan was written: the last problems, and where the drafts are."""
    if outcome.stopped:
        lines = [f"wtr: {outcome.stopped}"]
    else:
        lines = [f"wtr: the draft still has {plural(len(outcome.problems), 'problem')} after "
                 f"{plural(len(outcome.rounds), 'round')}; nothing written. The last ones:"]
        lines += [f"  {p.line()}" for p in outcome.problems]
    if outcome.kept:
        lines.append(f"drafts, prompts and the agent's output are kept in {outcome.kept}; "
                     "try again with more --rounds or a narrower goal")
    return "\n".join(map(printable, lines))
