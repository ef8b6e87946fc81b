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
cannot start without writing there: with ``~/.gemini`` read-only it waits for ever on a
lock of ``projects.json``. Under ``sandbox: true`` (where HOME is read-only) its home is
therefore moved into the stream's state folder (``GEMINI_CLI_HOME``), carrying a copy of
the user's ``settings.json`` and ``GEMINI.md``: the agent can change neither the user's
settings nor a later gemini session's, but a Google login (``oauth_creds.json``),
extensions and custom commands stay behind. Per-run settings are not possible in 0.61.0
without hiding the user's own (its system settings files are read only when root owns
them and every folder above), so everything else here is a flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worktree_runner.presets.base import (
    MCP_CALL_SECONDS,
    MCP_NAME,
    Launch,
    McpServer,
    Preset,
    StreamFacts,
    json_lines,
    session_id,
    text_of,
    usage_record,
)

SANDBOX_HOME = "gemini-home"  # in the stream's state folder, under sandbox: true
CARRIED = ("settings.json", "GEMINI.md")  # of ~/.gemini, copied into that home


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
        "gemini runs in); under sandbox: true the same in the stream's state folder "
        "(gemini-home/), ~/.gemini untouched",
    )
    cannot = (
        "use a Google login (oauth_creds.json), extensions or custom commands under "
        "sandbox: true: its home there is a copy of ~/.gemini's settings.json and GEMINI.md",
        "refuse an edit outside the stream's files as it makes it: its BeforeTool hooks "
        "live only in settings files, none of them per run",
        "say what it cost, or how many turns it took",
        "be kept from sending usage statistics to Google (play.googleapis.com) by a flag or "
        "variable: only privacy.usageStatisticsEnabled: false in ~/.gemini/settings.json",
    )
    permissions = ("--approval-mode yolo runs every tool call (shell commands, file writes, "
                   "web fetches) without asking, and --skip-trust trusts the worktree (its "
                   ".gemini/ settings, commands and MCP servers load): pair it with "
                   "sandbox: true")

    mcp_config = ("under sandbox: true only, the mcpServers of the settings.json in its home "
                  "of the run (0.61.0 reads no per-run settings otherwise)")

    def gets_mcp(self, sandbox: bool) -> bool:
        return sandbox

    def launch(self, facts: StreamFacts) -> Launch:
        home = self.home_of_its_own(facts, "GEMINI_CLI_HOME", SANDBOX_HOME,
                                    Path.home() / ".gemini", CARRIED, inside=".gemini")
        if facts.mcp is None or not facts.sandbox:
            return home
        name = f"{SANDBOX_HOME}/.gemini/settings.json"
        settings = with_mcp_server(home.files.get(name, "{}"), facts.mcp)
        return Launch(home.argv, home.env, {**home.files, name: settings})

    def session(self, output: str) -> str | None:
        """The ``session_id`` of its stream-json ``init`` record."""
        found = None
        for record in json_lines(output):
            if record.get("type") == "init":
                found = session_id(record.get("session_id")) or found
        return found

    def resume(self, facts: StreamFacts, session: str) -> Launch:
        """``--resume <session id>`` (0.61.0 takes the id as well as "latest" or an index):
        the session is kept under its home per project folder, the stream's worktree."""
        first = self.launch(facts)
        prompt = first.argv.index("--prompt")
        argv = (*first.argv[:prompt], "--resume", session, *first.argv[prompt:])
        return Launch(argv, first.env, first.files)

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch:
        """Gemini's terminal interface with the headless run's approval mode; ``--resume``
        takes a session of this folder ("latest", an index or, where known, its id)."""
        home = self.launch(facts)
        argv = ("gemini", "--skip-trust", "--approval-mode", "yolo")
        return Launch((*argv, *(("--resume", session) if session else ())), home.env,
                      home.files)

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
            elif (text := _assistant_text(record)) is not None:
                chunks.append(text)
        return text_of("".join(chunks))


def with_mcp_server(settings: str, server: McpServer) -> str:
    """The user's settings (a copy) with ``wtr mcp`` among its ``mcpServers``; settings that
    cannot be read as a JSON object are kept as they are, without it."""
    try:
        document = json.loads(settings)
    except ValueError:
        return settings
    if not isinstance(document, dict):
        return settings
    servers = document.get("mcpServers")
    servers = dict(servers) if isinstance(servers, dict) else {}
    servers[MCP_NAME] = {**server.to_json(), "timeout": MCP_CALL_SECONDS * 1000}
    return json.dumps({**document, "mcpServers": servers}, indent=1)


def _assistant_text(record: dict[str, Any]) -> str | None:
    if record.get("type") != "message" or record.get("role") != "assistant":
        return None
    content = record.get("content")
    return content if isinstance(content, str) else None


GEMINI = _Gemini()
