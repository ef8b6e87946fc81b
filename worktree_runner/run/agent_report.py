"""A stream's report: the Markdown an agent writes to ``WTR_REPORT`` when it is done.

An agent that writes none still has a last word when its program ends with a final
message the runner can find in its output: claude's ``result`` record
(``--output-format stream-json``), the last ``agent_message`` of ``codex exec --json``, or,
for the claude preset in its plain text mode, the whole output (``claude -p`` prints only
its final answer there). That message is filled in as the report, marked as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worktree_runner.run.state import RunStore
from worktree_runner.run.usage import log_since

FILLED_MARK = "_Filled in by wtr from the agent's final message._"
SHOWN_CHARS = 4000  # of a report, in status --json
_KEPT_CHARS = 64 * 1024  # of a final message, in the report file


def fill_from_final_message(store: RunStore, name: str, since: int, preset: str | None) -> bool:
    """Write the agent's final message as its report when it wrote none of its own."""
    path = store.report_path(name)
    if _written_by_agent(path):
        return False
    output = log_since(store.log_path(name), since)
    message = final_message(output or "", preset)
    if not message:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{FILLED_MARK}\n\n{message[:_KEPT_CHARS].strip()}\n", encoding="utf-8")
    return True


def _written_by_agent(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(text.strip()) and not text.startswith(FILLED_MARK)


def final_message(output: str, preset: str | None) -> str | None:
    """The last final message in an attempt's output, or None."""
    saw_json = False
    for line in reversed(output.splitlines()):
        record = _json_line(line.strip())
        if record is None:
            continue
        saw_json = True
        text = _message_of(record)
        if text:
            return text
    if preset == "claude" and not saw_json and output.strip():
        return output.strip()
    return None


def _json_line(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _message_of(record: dict[str, Any]) -> str | None:
    if record.get("type") == "result":  # claude's stream-json
        return _text(record.get("result"))
    item = record.get("item")
    if record.get("type") == "item.completed" and isinstance(item, dict):  # codex --json
        return _text(item.get("text")) if item.get("type") == "agent_message" else None
    msg = record.get("msg")
    if isinstance(msg, dict):
        if msg.get("type") == "agent_message":
            return _text(msg.get("message"))
        if msg.get("type") == "task_complete":
            return _text(msg.get("last_agent_message"))
    return None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def report_document(store: RunStore, name: str, limit: int = SHOWN_CHARS) -> dict[str, Any] | None:
    """``report`` of a stream in ``status --json``: its text (cut at ``limit``), its path."""
    path = store.report_path(name)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return {"path": str(path), "text": text[:limit], "truncated": len(text) > limit,
            "filled": text.startswith(FILLED_MARK)}
