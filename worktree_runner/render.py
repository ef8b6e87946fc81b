"""Human-readable text for reports; the CLI prints what these return."""

from __future__ import annotations

from worktree_runner.plan.analysis import Analysis

_SHOWN_UNOWNED = 10


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
    lines += _unowned(analysis)
    lines += [f"warning: {w}" for w in analysis.warnings]
    lines += [f"error: {p.where}: {p.message}" for p in analysis.problems]
    verdict = "plan is invalid" if analysis.overlaps else "plan is valid"
    lines += ["", verdict]
    return "\n".join(lines)


def _unowned(analysis: Analysis) -> list[str]:
    unowned = analysis.unowned
    if not unowned:
        return [f"  every one of the {analysis.tracked_count} tracked files has an owner"]
    shown = ", ".join(unowned[:_SHOWN_UNOWNED])
    more = f" and {len(unowned) - _SHOWN_UNOWNED} more" if len(unowned) > _SHOWN_UNOWNED else ""
    return [f"note: {len(unowned)} tracked files have no owning stream: {shown}{more}"]
