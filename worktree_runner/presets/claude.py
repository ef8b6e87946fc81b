"""The claude preset: Claude Code run unattended in a stream's worktree.

``-p`` runs one prompt and exits. Its own approvals are bypassed (``bypassPermissions``):
under ``acceptEdits`` every shell command but a few read-only ones is denied, so the agent
could neither run the tests nor commit, and still said it had. Claude Code refuses that
mode as root unless ``IS_SANDBOX=1``, set only then. ``--settings`` adds, for this run
only, a PreToolUse hook (``wtr hook claude-pre-tool-use``) that refuses a Write or Edit
outside the stream's files; the user's own settings files are left as they are.
``stream-json`` output ends with a ``result`` record: usage, cost, turns, final message,
and the tool calls that were denied. ``--mcp-config`` gives it ``wtr mcp`` for this run
(``alwaysLoad``: ``-p`` does not wait for an MCP server otherwise, and its first turns
would find the tools still connecting).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from worktree_runner.editguard import WRITING_TOOLS, Scope
from worktree_runner.presets.base import (
    MCP_NAME,
    MCP_START_SECONDS,
    Launch,
    Preset,
    StreamFacts,
    json_lines,
    session_id,
    text_of,
    usage_record,
)

SETTINGS_FILE = "claude-settings.json"
MCP_FILE = "claude-mcp.json"  # --mcp-config: this run's MCP server (wtr mcp)
SCOPE_FILE = "claude-scope.json"
CONFIG_DIR = "claude-config"  # CLAUDE_CONFIG_DIR under sandbox: true (HOME is read-only)


class _Claude(Preset):
    name = "claude"
    program = "claude"
    package = "npm:@anthropic-ai/claude-code"
    pinned = "2.1.197"
    tested = ("2.1.197", "2.1.198")
    needs_env = (("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX"),)
    credentials = (".claude/.credentials.json",)
    argv = ("claude", "-p", "{prompt}", "--output-format", "stream-json", "--verbose",
            "--permission-mode", "bypassPermissions")
    leftovers = ("none in the worktree: its sessions go to ~/.claude/projects (to the "
                 "stream's state folder under sandbox: true)",)
    cannot = ("under sandbox: true, use a login kept in ~/.claude (its config folder is then "
              "the stream's state folder): give ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN",)
    permissions = ("bypassPermissions: every tool runs without asking, shell commands "
                   "included (tests, git commit, wtr progress/lock); a PreToolUse hook still "
                   "refuses file edits outside the stream's files, but a shell command can "
                   "write anywhere the user can: pair it with sandbox: true. As root, "
                   "IS_SANDBOX=1 is set (Claude Code refuses the mode as root otherwise).")
    broken = MappingProxyType({})
    mcp_config = ("--mcp-config with this run's file (the user's own MCP servers stay; "
                  "--strict-mcp-config in args keeps only wtr's)")

    def launch(self, facts: StreamFacts) -> Launch:
        settings = facts.state_dir / SETTINGS_FILE
        env = {"DISABLE_AUTOUPDATER": "1"}
        if facts.as_root:
            env["IS_SANDBOX"] = "1"
        if facts.sandbox:
            env["CLAUDE_CONFIG_DIR"] = str(facts.state_dir / CONFIG_DIR)
        files = {SETTINGS_FILE: self.settings(facts), SCOPE_FILE: scope_of(facts).dump()}
        if facts.mcp is not None:
            # alwaysLoad: -p waits for it before the first request (else the first turns
            # find "wtr still connecting"), at most MCP_CONNECT_TIMEOUT_MS (5 s unless set:
            # too short for a busy machine); the user's servers are not waited for.
            files[MCP_FILE] = json.dumps({"mcpServers": {MCP_NAME: {
                "type": "stdio", **facts.mcp.to_json(), "alwaysLoad": True}}}, indent=1)
            env["MCP_TIMEOUT"] = env["MCP_CONNECT_TIMEOUT_MS"] = str(MCP_START_SECONDS * 1000)
        return Launch((*self.argv, *self._mcp_flags(facts), "--settings", str(settings)),
                      env, files)

    def _mcp_flags(self, facts: StreamFacts) -> tuple[str, ...]:
        """--mcp-config takes several files: the option after it ends the list."""
        if facts.mcp is None:
            return ()
        return ("--mcp-config", str(facts.state_dir / MCP_FILE))

    def settings(self, facts: StreamFacts) -> str:
        """This run's settings: the hook that refuses writes outside the stream's files."""
        command = " ".join(shlex.quote(a) for a in (
            str(facts.wtr_bin / "wtr"), "hook", "claude-pre-tool-use",
            "--scope", str(facts.state_dir / SCOPE_FILE)))
        hook = {"matcher": "|".join(WRITING_TOOLS), "hooks": [
            {"type": "command", "command": command, "timeout": 60}]}
        return json.dumps({"hooks": {"PreToolUse": [hook]}}, indent=1)

    def usage(self, output: str) -> dict[str, float | None] | None:
        result = _result(output)
        if result is None:
            return None
        tokens = _mapping(result.get("usage"))
        return usage_record(tokens.get("input_tokens"), tokens.get("output_tokens"),
                            result.get("total_cost_usd"), result.get("num_turns"))

    def live_usage(self, output: str) -> dict[str, float | None] | None:
        """Before its result record, the usage each assistant message carries in stream-json
        (one message comes in several records: the last of each id counts); no cost yet."""
        if _result(output) is not None:
            return self.usage(output)
        messages: dict[str, dict[str, Any]] = {}
        for record in json_lines(output):
            message = _mapping(record.get("message"))
            if record.get("type") == "assistant" and isinstance(message.get("usage"), dict):
                messages[str(message.get("id") or len(messages))] = message["usage"]
        if not messages:
            return None
        used = list(messages.values())
        return usage_record(_sum(u.get("input_tokens") for u in used),
                            _sum(u.get("output_tokens") for u in used), None, len(used))

    def final_message(self, output: str) -> str | None:
        result = _result(output)
        if result is not None and not result.get("is_error"):
            return text_of(result.get("result"))
        return None

    def session(self, output: str) -> str | None:
        """The ``session_id`` its stream-json output carries (first the init record, last
        the result)."""
        found = None
        for record in json_lines(output):
            found = session_id(record.get("session_id")) or found
        return found

    def resume(self, facts: StreamFacts, session: str) -> Launch:
        """``--resume`` continues the session kept under its config folder, with the same
        settings (the hook) as the attempt that started it."""
        first = self.launch(facts)
        return Launch((*first.argv, "--resume", session), first.env, first.files)

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch:
        """Claude Code's terminal interface (no ``-p``) with this run's settings and
        permission mode; ``--resume`` opens the stream's conversation."""
        first = self.launch(facts)
        argv = ("claude", "--permission-mode", "bypassPermissions", *self._mcp_flags(facts),
                "--settings", str(facts.state_dir / SETTINGS_FILE))
        return Launch((*argv, *(("--resume", session) if session else ())), first.env,
                      first.files)

    def denials(self, output: str) -> list[str]:
        """The tool calls Claude Code denied in the attempt, one line each ("Bash: git
        commit -m x"): work the agent may claim it did."""
        return [_denial_line(d) for d in _denied(output)]


def scope_of(facts: StreamFacts) -> Scope:
    return Scope(facts.stream, facts.worktree, facts.scope, (facts.state_dir,))


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sum(values: Iterator[Any]) -> int | None:
    counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return sum(counts) if counts else None


def _result(output: str) -> dict[str, Any] | None:
    found = None
    for record in json_lines(output):
        if record.get("type") == "result":
            found = record
    return found


def _denied(output: str) -> Iterator[dict[str, Any]]:
    result = _result(output) or {}
    denials = result.get("permission_denials")
    for denial in denials if isinstance(denials, list) else ():
        if isinstance(denial, dict):
            yield denial


def _denial_line(denial: dict[str, Any]) -> str:
    tool = str(denial.get("tool_name") or "a tool")
    given = _mapping(denial.get("tool_input"))
    detail = given.get("command") or given.get("file_path") or given.get("notebook_path")
    return f"{tool}: {detail}" if isinstance(detail, str) else tool


CLAUDE = _Claude()
