"""The aider preset: aider run unattended in a stream's worktree.

Aider has no shell tool: it edits files through edit blocks in the model's text and
commits each edit itself. ``--yes-always`` never runs a shell command the model suggests,
so it cannot run ``wtr progress`` or ``wtr lock``; it runs the project's tests only through
``--test-cmd`` with ``--auto-test``: the stream's ``verify`` commands (or what ``args``
give), a failure fed back to the model.

Left to its defaults it writes into the worktree: ``.gitignore`` (``.aider*`` added), its
chat and input histories and its repo-map cache ``.aider.tags.cache.v4/``. The histories go
to the stream's state folder; the repo map is off (``--map-tokens 0``), as its cache can
only live at the repository's root.

Usage: with ``--analytics-log /dev/stdout`` (and analytics off: nothing is sent) aider
prints one ``message_send`` JSON line per model reply with its exact token counts and
cost; without it the ``Tokens: 1.2k sent, 34 received. Cost: ...`` lines are read, whose
counts above 999 are rounded to 100 (to 1000 above 9999). The cost is known only when
aider knows the model's prices (it prints ``Cost:``). Aider's commit-message requests to
its weak model are counted in neither.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any

from worktree_runner.presets.base import (
    Launch,
    Preset,
    StreamFacts,
    json_lines,
    number,
    usage_record,
)

CHAT_HISTORY = "aider.chat.history.md"
_BANNER = re.compile(r"^Aider v\d", re.MULTILINE)
INPUT_HISTORY = "aider.input.history"
_TOKENS = re.compile(r"^Tokens: (?P<sent>[\d.]+k?) sent,(?:.*?,)? (?P<received>[\d.]+k?) "
                     r"received\.(?: Cost: \$(?P<cost>[\d.]+) message)?", re.MULTILINE)
_COST = re.compile(r"^(?:Tokens: .*)?Cost: \$", re.MULTILINE)
# Lines aider prints just before a model reply: the end of its banner, a confirmation it
# answered itself (--yes-always), or the usage of the reply before.
_BEFORE_REPLY = re.compile(r"^(Repo-map: .*|.*\(Y\)es/\(N\)o.*|Tokens: .*|Cost: .*|\{.*\}"
                           r"|Added \d+ lines? of output to the chat\.)$")


class _Aider(Preset):
    name = "aider"
    program = "aider"
    package = "pypi:aider-chat"
    pinned = "0.86.2"
    tested = ("0.86.2", "0.86.2.post1")
    needs_env = (("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "DEEPSEEK_API_KEY",
                  "OPENROUTER_API_KEY", "AIDER_OPENAI_API_KEY", "AIDER_ANTHROPIC_API_KEY",
                  "AIDER_API_KEY"),)
    credentials = (".aider.conf.yml", ".env")
    argv = (
        "aider", "--message-file", "{prompt_file}", "--yes-always",
        "--no-stream", "--no-pretty", "--no-fancy-input",
        "--no-gitignore", "--map-tokens", "0",
        "--no-check-update", "--no-show-release-notes",
        "--no-analytics", "--analytics-log", "/dev/stdout",
        "--no-suggest-shell-commands", "--no-detect-urls", "--disable-playwright",
    )
    leftovers = (
        ".gitignore: aider adds .aider* to it; --no-gitignore",
        ".aider.chat.history.md, .aider.input.history: moved to the stream's state folder "
        "(--chat-history-file, --input-history-file)",
        ".aider.tags.cache.v4/: the repo map's cache, only at the repository's root; the "
        "repo map is off (--map-tokens 0); giving --map-tokens in args brings it back, and "
        "the stream then fails its ownership check",
        "the repository's own .git/config: with no user.name or user.email in git's config "
        "(GIT_AUTHOR_NAME and the like do not count), aider writes 'Your Name' and "
        "'you@example.com' there, for every worktree; under sandbox: true that write is "
        "refused and aider exits 1. Configure a git identity",
    )
    refused = MappingProxyType({
        "--gitignore": "aider then adds .aider* to the worktree's .gitignore, a file outside "
                       "the stream's files: the stream would fail its ownership check",
    })
    cannot = (
        "run shell commands the model suggests (--yes-always never runs them): no "
        "wtr progress, no wtr lock, no git beyond its own commits",
        "run tests other than the stream's verify commands (its --test-cmd, with "
        "--auto-test: a failure is fed back to the model; args may give another)",
        "write WTR_REPORT: the report is its last reply",
    )
    permissions = ("--yes-always answers aider's questions (create a file, add a file to "
                   "the chat, fix a failed test) with yes; it still never runs a shell "
                   "command, so nothing is bypassed beyond editing and committing in the "
                   "worktree")

    def launch(self, facts: StreamFacts) -> Launch:
        state = facts.state_dir
        files = ("--chat-history-file", str(state / CHAT_HISTORY),
                 "--input-history-file", str(state / INPUT_HISTORY))
        # Aider runs no shell command of the model's; the stream's verify is its test command,
        # run after each edit with the failures fed back to the model.
        tests = ("--test-cmd", " && ".join(facts.verify), "--auto-test") if facts.verify else ()
        return Launch((*self.argv, *files, *tests),
                      env={"LITELLM_LOCAL_MODEL_COST_MAP": "True"})

    def session(self, output: str) -> str | None:
        """Aider has no session id: its session is the chat history it keeps in the
        stream's state folder, there once it has started (its banner, ``Aider v...``)."""
        return CHAT_HISTORY if _BANNER.search(output) else None

    def resume(self, facts: StreamFacts, session: str) -> Launch:
        """``--restore-chat-history``: aider reads the chat history file back into the
        conversation (the Markdown transcript it wrote, not the exact model messages, and
        summarised past --max-chat-history-tokens) and goes on with the new message."""
        first = self.launch(facts)
        return Launch((*first.argv, "--restore-chat-history"), first.env, first.files)

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch:
        """aider's chat in the worktree. It has no session ids: ``--restore-chat-history``
        brings back the stream's conversation from its chat history file."""
        first = self.launch(facts)
        unattended = {"--message-file", "{prompt_file}", "--yes-always", "--no-stream",
                      "--no-pretty", "--no-fancy-input", "--analytics-log", "/dev/stdout"}
        kept = tuple(a for a in first.argv if a not in unattended)
        return Launch(("aider", *kept[1:], "--restore-chat-history"), first.env, first.files)

    def usage(self, output: str) -> dict[str, float | None] | None:
        sent = [r["properties"] for r in json_lines(output)
                if r.get("event") == "message_send" and isinstance(r.get("properties"), dict)]
        if sent:
            return _from_events(sent, priced=bool(_COST.search(output)))
        return _from_lines(output)

    def final_message(self, output: str) -> str | None:
        """Aider's last reply: the lines before its last ``Tokens:`` line, back to what
        aider itself printed before the reply."""
        lines = output.splitlines()
        ends = [i for i, line in enumerate(lines) if line.startswith("Tokens: ")]
        if not ends:
            return None
        start = ends[-1]
        while start > 0 and not _BEFORE_REPLY.match(lines[start - 1]):
            start -= 1
        return "\n".join(lines[start:ends[-1]]).strip() or None


def _from_events(sent: list[dict[str, Any]], priced: bool) -> dict[str, float | None]:
    return usage_record(_total(sent, "prompt_tokens"), _total(sent, "completion_tokens"),
                        _total(sent, "cost") if priced else None, len(sent))


def _total(records: list[dict[str, Any]], key: str) -> float | None:
    values = [number(r.get(key)) for r in records]
    known = [v for v in values if v is not None]
    return sum(known) if len(known) == len(values) else None


def _from_lines(output: str) -> dict[str, float | None] | None:
    found = list(_TOKENS.finditer(output))
    if not found:
        return None
    costs = [float(m["cost"]) for m in found if m["cost"]]
    return usage_record(sum(_count(m["sent"]) for m in found),
                        sum(_count(m["received"]) for m in found),
                        sum(costs) if len(costs) == len(found) else None, len(found))


def _count(text: str) -> int:
    """A count as aider prints it: ``834``, ``1.2k``, ``15k``."""
    return round(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


AIDER = _Aider()
