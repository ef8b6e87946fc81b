"""The opencode preset: ``opencode run`` unattended in a stream's worktree.

opencode works in the folder ``--dir`` names, else in ``$PWD`` (not its cwd): left to the
caller's ``PWD`` it edited and committed in the user's checkout. ``--dir {worktree}``
names the worktree whatever the environment says.

Its approvals come from a config file of this run (``OPENCODE_CONFIG``, in the stream's
state folder; the user's own config is read, never written): edits, shell commands and
paths outside the worktree are allowed, since ``opencode run`` rejects what would need
asking. The repository's own ``opencode.json`` and ``.opencode/`` are not loaded
(``OPENCODE_DISABLE_PROJECT_CONFIG``): opencode writes ``.gitignore`` into every
``.opencode/`` folder it loads and installs ``@opencode-ai/plugin`` there from npm. That
switch also drops the repository's ``AGENTS.md``, so the run config names ``AGENTS.md`` and
``CLAUDE.md`` at the worktree's root as instructions. Update checks, sharing, the
models.dev fetch (its bundled model list is used), LSP downloads, the formatters and the
undo snapshots are off; ``--title`` spares the title request. Each
stream keeps its sessions in its own database (``OPENCODE_DB``): two opencode starting at
once on a new shared database both create its tables, and one fails.

``--format json`` prints one event a line; each ``step_finish`` is one model reply with
its tokens and cost, the last ``text`` is the final message, and a ``tool_use`` whose
state is an error "... this specific tool call" was refused by a permission rule (one the
user's own config can still set). opencode prices a reply from its model list and writes
cost 0 for a model it has no price for, so a total of 0 for tokens used is unknown, not
free.

Under ``sandbox: true`` HOME is read-only and opencode cannot start without writing its
log, locks and cache there: its data, state and cache folders
(``XDG_DATA_HOME``, ``XDG_STATE_HOME``, ``XDG_CACHE_HOME``) are then in the stream's state
folder, for the commands the agent runs too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from worktree_runner.presets.base import (
    MCP_NAME,
    MCP_START_SECONDS,
    Launch,
    Preset,
    StreamFacts,
    json_lines,
    number,
    session_id,
    text_of,
    usage_record,
)

CONFIG_FILE = "opencode.json"
INSTRUCTIONS = ("AGENTS.md", "CLAUDE.md")  # at the worktree's root, named in the run config
DATABASE = "opencode.db"  # OPENCODE_DB: the stream's own sessions
DENIED = "this specific tool call"  # in both of opencode's refusals: a rule, a rejection
DATA_DIR = "opencode-data"  # XDG_DATA_HOME under sandbox: true
STATE_DIR = "opencode-state"  # XDG_STATE_HOME under sandbox: true
CACHE_DIR = "opencode-cache"  # XDG_CACHE_HOME under sandbox: true
QUIET = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
}
RUN_CONFIG = {
    "$schema": "https://opencode.ai/config.json",
    "autoupdate": False,
    "share": "disabled",
    "snapshot": False,
    "lsp": False,
    "formatter": False,
    "permission": {"edit": "allow", "bash": "allow", "external_directory": "allow"},
}


class _Opencode(Preset):
    name = "opencode"
    program = "opencode"
    package = "npm:opencode-ai"
    pinned = "1.18.33"
    tested = ("1.18.33", "1.18.34")
    argv = ("opencode", "run", "--dir", "{worktree}", "--format", "json",
            "--title", "wtr {stream}", "{prompt}")
    # Nothing required: opencode's own provider has free models, and a provider's key may
    # be a variable, a login (`opencode auth login`) or a line of the user's config.
    needs_env = ()
    credentials = ()
    leftovers = ("none in the worktree: the repository's opencode.json and .opencode/ are "
                 "not loaded (opencode would write .opencode/.gitignore and install "
                 "@opencode-ai/plugin there); its sessions go to the stream's state folder "
                 "(opencode.db), its log and locks to ~/.local/share/opencode and "
                 "~/.local/state/opencode (to the stream's state folder under sandbox: true)",)
    cannot = ("use the repository's own opencode.json or .opencode/ (commands, agents, "
              "plugins), or the AGENTS.md of its subfolders (those at the root are read): put "
              "what the streams need in the user's config or the plan's args",
              "under sandbox: true, use a login kept by `opencode auth login` (its data "
              "folder is then in the stream's state folder): give the provider's key by "
              "variable or in ~/.config/opencode/opencode.json",
              "under sandbox: true, start without a ~/.config/opencode it has started with "
              "before: it creates the folder and writes .gitignore there first (run opencode "
              "once, or add the folder to the plan's writable)")
    refused = MappingProxyType({
        "--dir": "the preset names the stream's worktree with --dir, and opencode fails at "
                 "start when it is given twice",
        "--attach": "the agent would run on another opencode server, not in the worktree",
        "--format": "the preset reads usage and the final message from --format json "
                    "(given twice, opencode fails at start)",
        "-i": "interactive mode waits for a person",
        "--interactive": "interactive mode waits for a person",
    })
    mcp_config = "the mcp entry of this run's config file (OPENCODE_CONFIG)"
    permissions = ("edits, shell commands and paths outside the worktree are allowed without "
                   "asking (permission: allow in this run's config): the agent runs its tests, "
                   "git commit, wtr progress and wtr lock, and a shell command can write "
                   "anywhere the user can: pair it with sandbox: true.")

    def launch(self, facts: StreamFacts) -> Launch:
        env = {**QUIET, "OPENCODE_CONFIG": str(facts.state_dir / CONFIG_FILE),
               "OPENCODE_DB": str(facts.state_dir / DATABASE)}
        if facts.sandbox:
            env["XDG_DATA_HOME"] = str(facts.state_dir / DATA_DIR)
            env["XDG_STATE_HOME"] = str(facts.state_dir / STATE_DIR)
            env["XDG_CACHE_HOME"] = str(facts.state_dir / CACHE_DIR)
        config: dict[str, Any] = {
            **RUN_CONFIG, "instructions": [str(facts.worktree / n) for n in INSTRUCTIONS]}
        if facts.mcp is not None:
            config["mcp"] = {MCP_NAME: {
                "type": "local", "command": [facts.mcp.command, *facts.mcp.args],
                "environment": dict(facts.mcp.env), "enabled": True,
                "timeout": MCP_START_SECONDS * 1000}}
        return Launch(self.argv, env, {CONFIG_FILE: json.dumps(config, indent=1)})

    def session(self, output: str) -> str | None:
        """The ``sessionID`` its json events carry."""
        found = None
        for record in json_lines(output):
            found = session_id(record.get("sessionID")) or found
        return found

    def resume(self, facts: StreamFacts, session: str) -> Launch:
        """``run --session <id>``: the session, kept in the database in the stream's state
        folder (``OPENCODE_DB``), goes on with its whole conversation."""
        first = self.launch(facts)
        prompt = first.argv.index("{prompt}")
        argv = (*first.argv[:prompt], "--session", session, *first.argv[prompt:])
        return Launch(argv, first.env, first.files)

    def interactive(self, facts: StreamFacts, session: str | None) -> Launch:
        """opencode's terminal interface on the worktree, with this run's config and session
        database (``--session`` continues the stream's session)."""
        first = self.launch(facts)
        argv = ("opencode", "{worktree}", *(("--session", session) if session else ()))
        return Launch(argv, first.env, first.files)

    def usage(self, output: str) -> dict[str, float | None] | None:
        steps = [_mapping(e.get("part")) for e in _events(output, "step_finish")]
        if not steps:
            return None
        tokens = [_mapping(step.get("tokens")) for step in steps]
        spent = _total(t.get("input") for t in tokens) + _total(
            _mapping(t.get("cache")).get(k) for t in tokens for k in ("read", "write"))
        said = _total(t.get("output") for t in tokens) + _total(
            t.get("reasoning") for t in tokens)
        cost = _total(step.get("cost") for step in steps)
        return usage_record(_known(tokens, "input", spent), _known(tokens, "output", said),
                            cost if cost > 0 else None, len(steps))

    def final_message(self, output: str) -> str | None:
        texts = [_mapping(e.get("part")).get("text") for e in _events(output, "text")]
        return text_of(texts[-1]) if texts else None

    def denials(self, output: str) -> list[str]:
        found = []
        for event in _events(output, "tool_use"):
            part = _mapping(event.get("part"))
            state = _mapping(part.get("state"))
            if state.get("status") == "error" and DENIED in str(state.get("error")):
                found.append(f"{part.get('tool')}: {_what(_mapping(state.get('input')))}")
        return found


def _what(tool_input: dict[str, Any]) -> str:
    """What a tool call was about: its command or file, else its input."""
    for key in ("command", "filePath", "path", "url"):
        if isinstance(tool_input.get(key), str):
            return str(tool_input[key])
    return json.dumps(tool_input, sort_keys=True)


def _events(output: str, kind: str) -> Iterator[dict[str, Any]]:
    return (e for e in json_lines(output) if e.get("type") == kind)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _total(values: Iterator[Any]) -> float:
    return sum(n for n in map(number, values) if n is not None)


def _known(tokens: list[dict[str, Any]], key: str, total: float) -> float | None:
    """``total`` when at least one reply said ``key``, else unknown."""
    return total if any(number(t.get(key)) is not None for t in tokens) else None


OPENCODE = _Opencode()
