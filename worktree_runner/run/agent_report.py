"""A stream's report: the Markdown an agent writes to ``WTR_REPORT`` when it is done.

An agent that writes none still has a last word when its program ends with a final
message the runner can find in its output: each preset reads its own CLI's output
(``Preset.final_message``); a ``command`` agent's JSON lines are read for claude's
``result`` record or codex's last ``agent_message``. That message is filled in as the
report, marked as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worktree_runner import statefs
from worktree_runner.presets.base import Preset, json_lines
from worktree_runner.run.state import RunStore

FILLED_MARK = "_Filled in by wtr from the agent's final message._"
SHOWN_CHARS = 4000  # of a report, in status --json
_KEPT_CHARS = 64 * 1024  # of a final message, in the report file


def fill_from_final_message(store: RunStore, name: str, output: str,
                            preset: Preset | None) -> bool:
    """Write the agent's final message as its report when it wrote none of its own."""
    path = store.report_path(name)
    if _written_by_agent(path):
        return False
    message = preset.final_message(output) if preset is not None else final_message(output)
    if not message:
        return False
    replaced = statefs.write_text(path, f"{FILLED_MARK}\n\n{message[:_KEPT_CHARS].strip()}\n")
    if replaced is not None:  # a symlink, a FIFO...: replaced, never written through
        store.event("state_file_replaced", stream=name, file=path.name, was=replaced)
    return True


def _written_by_agent(path: Path) -> bool:
    try:
        text = statefs.read_text(path)
    except OSError:
        return False
    return bool(text.strip()) and not text.startswith(FILLED_MARK)


def final_message(output: str) -> str | None:
    """The last final message a ``command`` agent printed as JSON lines (claude's result
    record, codex's agent message), or None."""
    for record in reversed(list(json_lines(output))):
        text = _message_of(record)
        if text:
            return text
    return None


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
        text = statefs.read_text(path)
    except OSError:  # none, or not a regular file (never followed nor waited on)
        return None
    return {"path": str(path), "text": text[:limit], "truncated": len(text) > limit,
            "filled": text.startswith(FILLED_MARK)}
