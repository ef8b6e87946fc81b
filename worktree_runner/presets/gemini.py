"""The gemini preset: Gemini CLI run unattended in a stream's worktree.

``gemini -p PROMPT`` is its headless mode. A fresh worktree is a folder gemini has never
seen: folder trust being on by default, it stops at once with exit 55 ("not running in a
trusted directory") unless ``--skip-trust`` trusts it for the session. ``--approval-mode
yolo`` lets its tools (shell, file edits) run without asking.

``-o stream-json`` prints one JSON event a line: ``message`` (the final text arrives as
``delta`` chunks), ``tool_use``, ``tool_result`` and a last ``result`` whose ``stats``
hold the session's input and output tokens (its routing side requests included). Gemini
says nothing of cost, and counts tool calls, not turns: both are unknown (None).

Gemini keeps its session records in ``~/.gemini`` (``projects.json``, ``tmp/<project>/``,
``history/<project>/``), one project per worktree path; nothing in the worktree. 0.61.0
cannot start without writing there: with ``~/.gemini`` read-only (``sandbox: true``) it
waits for ever on a lock of ``projects.json``, so a sandboxed plan lists ``~/.gemini`` in
``writable``. Per-run settings are not possible in 0.61.0 without hiding the user's own
(its system settings files are read only when root owns them and every folder above;
``GEMINI_CLI_HOME`` moves the user's settings and login too), so everything here is a flag.
"""

from __future__ import annotations

from typing import Any

from worktree_runner.presets.base import Preset, json_lines, text_of, usage_record


class _Gemini(Preset):
    name = "gemini"
    program = "gemini"
    package = "npm:@google/gemini-cli"
    pinned = "0.61.0"
    tested = ("0.61.0", "0.61.1")
    needs_env = (("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI",
                  "GOOGLE_GENAI_USE_GCA", "GOOGLE_CLOUD_PROJECT"),)
    credentials = (".gemini/oauth_creds.json", ".gemini/.env")
    argv = ("gemini", "--skip-trust", "--approval-mode", "yolo", "--output-format",
            "stream-json", "--prompt", "{prompt}")
    leftovers = (
        "nothing in the worktree",
        "~/.gemini/tmp/<worktree name>/ and ~/.gemini/history/<worktree name>/: its session "
        "records, and the worktree's entry in ~/.gemini/projects.json (as for any folder "
        "gemini runs in)",
    )
    cannot = (
        "start under sandbox: true unless the plan lists ~/.gemini in writable (with it "
        "read-only it waits for ever)",
        "refuse an edit outside the stream's files as it makes it: its BeforeTool hooks "
        "live only in settings files, none of them per run",
        "say what it cost, or how many turns it took",
    )
    permissions = ("--approval-mode yolo runs every tool call (shell commands, file writes, "
                   "web fetches) without asking, and --skip-trust trusts the worktree (its "
                   ".gemini/ settings, commands and MCP servers load): pair it with "
                   "sandbox: true")

    def usage(self, output: str) -> dict[str, float | None] | None:
        stats = None
        for record in json_lines(output):
            if record.get("type") == "result" and isinstance(record.get("stats"), dict):
                stats = record["stats"]
        if stats is None:
            return None
        return usage_record(stats.get("input_tokens"), stats.get("output_tokens"))

    def final_message(self, output: str) -> str | None:
        """The assistant's text after its last tool call (its chunks joined)."""
        chunks: list[str] = []
        for record in json_lines(output):
            if record.get("type") in ("tool_use", "tool_result"):
                chunks = []
            elif _assistant_text(record) is not None:
                chunks.append(_assistant_text(record) or "")
        return text_of("".join(chunks))


def _assistant_text(record: dict[str, Any]) -> str | None:
    if record.get("type") != "message" or record.get("role") != "assistant":
        return None
    content = record.get("content")
    return content if isinstance(content, str) else None


GEMINI = _Gemini()
