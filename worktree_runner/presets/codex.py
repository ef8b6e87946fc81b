"""The codex preset: Codex CLI (``codex exec``) run unattended in a stream's worktree.

``--json`` prints one event a line: ``turn.completed`` carries the turn's token usage
(summed over its model requests), ``item.completed`` items of type ``agent_message`` the
agent's words, the last of them its final message. Codex does not say what a run cost.

Codex opens files in its home (``$CODEX_HOME``, else ``~/.codex``) for writing as it
starts. Under ``sandbox: true`` (HOME read-only) its home is a folder in the stream's state
holding a copy of the user's ``config.toml`` and ``AGENTS.md``; a login (``auth.json``) is
not copied, the model provider's key comes from the environment there.

``wtr mcp`` is given as ``-c mcp_servers.wtr.*`` options, for this run only; codex offers
an MCP server's tools to the model in a namespace (``mcp__wtr``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from worktree_runner.presets.base import (
    MCP_CALL_SECONDS,
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

SANDBOX_HOME = "codex-home"  # CODEX_HOME in the stream's state folder, under sandbox: true
CARRIED = ("config.toml", "AGENTS.md")
# What codex logs (stderr) when it refuses a command even with approvals bypassed (its
# built-in rules, e.g. `rm -f`, or the user's .rules): --json shows no item for it.
REFUSED = re.compile(r'codex_core::tools::router: error=.*?Rejected\(\\"`(?P<command>.*?)` '
                     r'rejected: (?P<why>.*?)\\"\)')


class _Codex(Preset):
    name = "codex"
    program = "codex"
    package = "npm:@openai/codex"
    pinned = "0.171.0"
    tested = ("0.171.0", "0.171.0.post1")
    needs_env = (("OPENAI_API_KEY", "CODEX_API_KEY"),)
    credentials = (".codex/auth.json",)
    argv = (
        "codex", "exec", "--json",
        # Codex's own sandbox (workspace-write) keeps a linked worktree's git metadata
        # read-only, so the agent cannot commit, and it cannot nest inside wtr's bubblewrap.
        "--dangerously-bypass-approvals-and-sandbox",
        "--skip-git-repo-check", "--cd", "{worktree}",
        # bash -lc runs /etc/profile, which resets PATH (as root on Debian): no `wtr` there.
        "-c", "allow_login_shell=false",
        "{prompt}",
    )
    refused = MappingProxyType({
        "--full-auto": "no longer an option of codex exec (exit 2); the preset already runs "
                       "unattended",
        "-a": "codex exec has no approval option (exit 2); the preset asks for none",
        "--ask-for-approval": "codex exec has no approval option (exit 2); the preset asks "
                              "for none",
        "-s": "ignored: the preset's --dangerously-bypass-approvals-and-sandbox wins; "
              "use agent.command to run codex in its own sandbox",
        "--sandbox": "ignored: the preset's --dangerously-bypass-approvals-and-sandbox wins; "
                     "use agent.command to run codex in its own sandbox",
    })
    leftovers = ("none in the worktree: sessions, logs and state go to codex's home "
                 "(~/.codex or $CODEX_HOME; the stream's state folder under sandbox: true)",)
    cannot = ("use a ChatGPT login (auth.json) under sandbox: true: its home there is a "
              "copy of config.toml and AGENTS.md; give the key in the environment "
              "(OPENAI_API_KEY, CODEX_API_KEY or the provider's env_key)",
              "run what its own rules forbid even with approvals bypassed (0.171.0: `rm -f` "
              "style commands; the user's .rules): the refusal is read from its log and "
              "reported, the agent is told to find another way",
              "say what it cost",)
    permissions = ("--dangerously-bypass-approvals-and-sandbox: codex asks for no approval "
                   "and runs the agent's commands without its own sandbox, with the rights of "
                   "the user running wtr: pair it with sandbox: true. (Codex's own "
                   "workspace-write sandbox keeps a linked worktree's git metadata read-only, "
                   "and it does not nest inside bubblewrap.)")

    mcp_config = ("-c mcp_servers.wtr.* options on its command line (the user's "
                  "config.toml is not touched)")

    def launch(self, facts: StreamFacts) -> Launch:
        home = self.home_of_its_own(facts, "CODEX_HOME", SANDBOX_HOME, _user_home(), CARRIED)
        prompt = home.argv.index("{prompt}")
        argv = (*home.argv[:prompt], *mcp_options(facts), *home.argv[prompt:])
        return Launch(argv, home.env, home.files)

    def session(self, output: str) -> str | None:
        """The ``thread_id`` of its ``thread.started`` event (a resumed thread keeps its id)."""
        found = None
        for record in json_lines(output):
            if record.get("type") == "thread.started":
                found = session_id(record.get("thread_id")) or found
        return found

    def resume(self, facts: StreamFacts, session: str) -> Launch:
        """``codex exec ... resume <thread> PROMPT`` (0.171.0): the thread, kept in codex's
        home (the same home as the attempt that started it), goes on with the whole
        conversation; ``exec``'s own options (``--cd``, ``--json``, the bypass) still apply."""
        first = self.launch(facts)
        prompt = first.argv.index("{prompt}")
        argv = (*first.argv[:prompt], "resume", session, *first.argv[prompt:])
        return Launch(argv, first.env, first.files)

    def usage(self, output: str) -> dict[str, float | None] | None:
        """Tokens summed over the attempt's ``turn.completed`` events. Turns stay unknown:
        codex's turn is one prompt worked to its end, however many model round trips it
        took, and ``turns`` counts round trips (as claude's ``num_turns`` does)."""
        used = [record["usage"] for record in json_lines(output)
                if record.get("type") == "turn.completed" and isinstance(record.get("usage"),
                                                                         dict)]
        if not used:
            return None
        return usage_record(_total(used, "input_tokens"), _total(used, "output_tokens"),
                            None, None)

    def denials(self, output: str) -> list[str]:
        return [f"codex refused `{found['command']}`: {found['why']}"
                for found in REFUSED.finditer(output)]

    def final_message(self, output: str) -> str | None:
        last = None
        for record in json_lines(output):
            item = record.get("item")
            if (record.get("type") == "item.completed" and isinstance(item, dict)
                    and item.get("type") == "agent_message"):
                last = text_of(item.get("text")) or last
        return last

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch:
        """Codex's terminal interface (``codex resume <id>`` for the stream's session) in the
        worktree, with the approvals the headless run had."""
        home = self.launch(facts)
        flags = ("--dangerously-bypass-approvals-and-sandbox", "--cd", "{worktree}",
                 "-c", "allow_login_shell=false", *mcp_options(facts))
        argv = ("codex", "resume", *flags, session) if session else ("codex", *flags)
        return Launch(argv, home.env, home.files)


def mcp_options(facts: StreamFacts) -> tuple[str, ...]:
    """``-c`` overrides (TOML values) that give codex ``wtr mcp`` for this run only. Codex
    starts an MCP server with a few variables of its own (PATH, HOME...), so the stream's
    are given in ``env``. ``codex exec`` sends its first request without waiting for an
    optional server unless given a grace period (a ``required`` one that fails would fail
    the whole attempt); a server that never answers costs that grace once, no more."""
    if facts.mcp is None:
        return ()
    key = f"mcp_servers.{MCP_NAME}"
    env = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in facts.mcp.env.items())
    values = {f"{key}.command": json.dumps(facts.mcp.command),
              f"{key}.args": json.dumps(list(facts.mcp.args)), f"{key}.env": f"{{ {env} }}",
              f"{key}.startup_timeout_sec": str(MCP_START_SECONDS),
              f"{key}.tool_timeout_sec": str(MCP_CALL_SECONDS),
              "mcp_optional_startup_grace_ms": str(MCP_START_SECONDS * 1000)}
    return tuple(part for name, value in values.items() for part in ("-c", f"{name}={value}"))


def _user_home() -> Path:
    configured = os.environ.get("CODEX_HOME")
    return Path(configured) if configured else Path.home() / ".codex"


def _total(used: list[dict[str, Any]], key: str) -> int | None:
    """The sum of ``key`` over the turns; None when a turn did not give it as a count."""
    values = [turn.get(key) for turn in used]
    counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return sum(counts) if len(counts) == len(values) else None


CODEX = _Codex()
