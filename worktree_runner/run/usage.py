"""What an agent's attempt used (tokens, cost, turns), when the agent says so.

A preset reads its own CLI's output (``Preset.usage``). A ``command`` agent is read the
generic way: the last ``{"type": "result", ...}`` line it printed (the shape of
``claude -p --output-format stream-json``), so a wrapper script around such a CLI is
still counted. Anything not said is ``None``, never a made-up 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worktree_runner import statefs
from worktree_runner.presets.base import json_lines, usage_record

# CLIs that report usage per model reply (codex, opencode, aider) print it all along the
# attempt, between tool outputs: the whole attempt is read, not a tail (the log itself is
# kept under the plan's log_limit, 50 MiB by default).
_TAIL_BYTES = 64 * 1024 * 1024
Usage = dict[str, float | None]
ATTEMPT_OPENING = "--- attempt {number} at "  # the runner's line opening an attempt's output


def attempt_output(log_path: Path, since: int) -> str | None:
    """What the log holds after byte offset ``since`` (its last 64 MiB at most)."""
    read = _tail(log_path, since)
    return read[1].decode("utf-8", errors="replace") if read is not None else None


def attempt_start(log_path: Path, number: int) -> int:
    """Where attempt ``number``'s output starts in the log: just after the line that opens
    it (for an agent whose runner died before it could note the offset); 0 when the log no
    longer holds that line (cut to its limit meanwhile)."""
    read = _tail(log_path, 0)
    if read is None:
        return 0
    start, tail = read
    if start == 0:  # (the first line too)
        tail, start = b"\n" + tail, -1
    found = tail.rfind(b"\n" + ATTEMPT_OPENING.format(number=number).encode())
    if found < 0:
        return 0
    end = tail.find(b"\n", found + 1)
    return start + (end + 1 if end >= 0 else len(tail))


def _tail(log_path: Path, since: int) -> tuple[int, bytes] | None:
    """The log from byte offset ``since`` (from its start if it was cut below that since:
    log_limit), its last 64 MiB at most, with the offset it was read from; None if it
    cannot be read."""
    try:
        with statefs.open_read(log_path) as handle:
            size = handle.seek(0, 2)
            start = max(since if since <= size else 0, size - _TAIL_BYTES)
            handle.seek(start)
            return start, handle.read()
    except OSError:
        return None


def generic_usage(output: str) -> Usage | None:
    """The last result record in ``output``, or None."""
    record = None
    for line in json_lines(output):
        if line.get("type") == "result":
            record = line
    if record is None:
        return None
    tokens: Any = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    return usage_record(tokens.get("input_tokens"), tokens.get("output_tokens"),
                        record.get("total_cost_usd"), record.get("num_turns"))


def add_usage(total: Usage | None, more: Usage | None) -> Usage | None:
    """Usage summed over attempts (a retry costs too); a field stays None only while no
    attempt said it."""
    if more is None:
        return total
    if total is None:
        return dict(more)
    keys = dict.fromkeys([*total, *more])
    return {key: _plus(total.get(key), more.get(key)) for key in keys}


def _plus(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else a + b


def total_usage(used: list[Usage | None]) -> Usage | None:
    """Usage summed over streams (as over attempts)."""
    total: Usage | None = None
    for usage in used:
        total = add_usage(total, usage)
    return total


def describe_usage(usage: Usage | None) -> str | None:
    """"1,200 input tokens, 34 output tokens, $0.25, 6 turns": what is known of it."""
    if not usage:
        return None
    parts = []
    for key, label in (("input_tokens", "input tokens"), ("output_tokens", "output tokens")):
        if usage.get(key) is not None:
            parts.append(f"{usage[key]:,.0f} {label}")
    if usage.get("cost_usd") is not None:
        parts.append(f"${usage['cost_usd']:.2f}")
    if usage.get("turns") is not None:
        parts.append(f"{usage['turns']:.0f} turns")
    return ", ".join(parts) or "nothing said"
