"""The codex preset: Codex CLI (``codex exec``) run unattended in a stream's worktree.

``--json`` prints one event a line: ``turn.completed`` carries the turn's token usage
(summed over its model requests), ``item.completed`` items of type ``agent_message`` the
agent's words, the last of them its final message. Codex does not say what a run cost.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from worktree_runner.presets.base import Preset, json_lines, text_of, usage_record


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
    leftovers = ("none in the worktree: sessions, logs and state go to ~/.codex "
                 "($CODEX_HOME)",)
    cannot = ("start under sandbox: true unless its home (~/.codex, or $CODEX_HOME) is in "
              "the plan's writable paths: codex opens files there for writing at start",)
    permissions = ("--dangerously-bypass-approvals-and-sandbox: codex asks for no approval "
                   "and runs the agent's commands without its own sandbox, with the rights of "
                   "the user running wtr. Pair it with sandbox: true (writable: [\"~/.codex\"]).")

    def usage(self, output: str) -> dict[str, float | None] | None:
        """Tokens summed over the attempt's ``turn.completed`` events; turns = their count
        (codex's turn: one prompt worked to its end, however many model requests it took)."""
        used = [record["usage"] for record in json_lines(output)
                if record.get("type") == "turn.completed" and isinstance(record.get("usage"),
                                                                         dict)]
        if not used:
            return None
        return usage_record(_total(used, "input_tokens"), _total(used, "output_tokens"),
                            None, len(used))

    def final_message(self, output: str) -> str | None:
        last = None
        for record in json_lines(output):
            item = record.get("item")
            if (record.get("type") == "item.completed" and isinstance(item, dict)
                    and item.get("type") == "agent_message"):
                last = text_of(item.get("text")) or last
        return last


def _total(used: list[dict[str, Any]], key: str) -> int | None:
    """The sum of ``key`` over the turns; None when a turn did not give it as a count."""
    values = [turn.get(key) for turn in used]
    counts = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return sum(counts) if len(counts) == len(values) else None


CODEX = _Codex()
