"""Turns and cost of an agent's attempt, when the agent reports them.

``claude -p --output-format stream-json --verbose`` (``agent.args`` on the claude preset)
ends its output with a ``{"type": "result", "num_turns": ..., "total_cost_usd": ...}``
line. The runner reads it from the stream's log after each attempt; other agents simply
have no usage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

_TAIL_BYTES = 256 * 1024


def log_since(log_path: Path, since: int) -> str | None:
    """What the log holds after byte offset ``since`` (its last 256 KiB at most)."""
    try:
        with log_path.open("rb") as handle:
            size = handle.seek(0, 2)
            since = since if since <= size else 0  # the log was cut (log_limit) meanwhile
            handle.seek(max(since, size - _TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None


def attempt_usage(log_path: Path, since: int) -> dict[str, float] | None:
    """The last result record written to the log after byte offset ``since``."""
    tail = log_since(log_path, since)
    if tail is None:
        return None
    for line in reversed(tail.splitlines()):
        record = result_record(line.strip())
        if record is not None:
            return {"turns": _number(record.get("num_turns")),
                    "cost_usd": _number(record.get("total_cost_usd"))}
    return None


def _number(value: Any) -> float:
    """A count or cost the agent reported; 0 when it wrote something else ("many")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    try:
        number = float(value)
    except OverflowError:
        return 0.0
    return number if math.isfinite(number) and number >= 0 else 0.0


def result_record(line: str) -> dict[str, Any] | None:
    if not (line.startswith("{") and '"result"' in line):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and record.get("type") == "result" else None


def add_usage(total: dict[str, float] | None, more: dict[str, float] | None
              ) -> dict[str, float] | None:
    """Usage summed over attempts (a retry costs too)."""
    if more is None:
        return total
    if total is None:
        return dict(more)
    return {key: total.get(key, 0.0) + value for key, value in more.items()}
