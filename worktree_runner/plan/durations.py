"""Durations in plans: a number of seconds, or text such as ``90``, ``30s``, ``10m``, ``1h30m``."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """Seconds, > 0. Raises ValueError with a message fit for a plan error."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '30s', '10m' or '2h'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int with hundreds of digits
            seconds = float("inf")
    elif isinstance(value, str) and value.strip():
        seconds = _parse_text(value.strip().lower())
    else:
        raise ValueError("expected a duration such as 90, '30s', '10m' or '2h'")
    if seconds == float("inf"):
        raise ValueError("a duration must be a finite number of seconds")
    if not seconds > 0:
        raise ValueError("a duration must be greater than zero")
    return seconds


def _parse_text(text: str) -> float:
    total, pos = 0.0, 0
    while pos < len(text):
        match = _PART.match(text, pos)
        # A bare number is seconds only on its own: '1h30' is more likely 1h30m than 1h30s.
        if match is None or (match.group(2) == "" and (pos or match.end() != len(text))):
            raise ValueError(f"'{text}' is not a duration; write 90, '30s', '10m' or '2h'")
        total += float(match.group(1)) * _UNIT[match.group(2)]
        pos = match.end()
        while pos < len(text) and text[pos] == " ":
            pos += 1
    return total


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
