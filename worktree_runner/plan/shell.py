"""Placeholders a shell would read as code.

In a shell-string command, wtr replaces ``{prompt}`` with the value quoted for the shell
(``shlex.quote``): one word, never code. Inside quotes the plan wrote, that quoting
breaks: in ``"{prompt}"`` the value's own ``$(...)`` runs, and in ``'{prompt}'`` a quote
in the value ends the string. The prompt carries the commit subjects of the streams a
stream starts from, so one agent's commit message could run commands in its dependant.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PLACEHOLDER = re.compile(r"(?<!\$)\{(prompt_file|prompt|stream|worktree|branch)\}")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ash"})


def quoted_placeholder(command: str) -> str | None:
    """Why a placeholder of shell text ``command`` is unsafe (it sits inside quotes the
    command wrote), or None."""
    inside = _quote_state(command)
    for match in _PLACEHOLDER.finditer(command):
        quote = inside[match.start()]
        if quote:
            return (f"the placeholder {match.group(0)} is inside {quote} quotes; write it "
                    "bare: wtr quotes the value for the shell itself, and within quotes a "
                    "value such as a commit message in the prompt could run commands "
                    "(command injection)")
    return None


def _quote_state(text: str) -> list[str]:
    """For each character of shell text: 'single', 'double' or '' (outside quotes). A
    command substitution ``$(...)`` inside double quotes starts unquoted again."""
    states: list[str] = []
    stack = [""]  # "", "(", "single", "double"
    i = 0
    while i < len(text):
        char, top = text[i], stack[-1]
        step = 1
        if top == "single":
            if char == "'":
                stack.pop()
        elif char == "\\":
            step = 2
        elif char == "$" and text[i + 1:i + 2] == "(":
            stack.append("(")
            step = 2
        elif top == "double":
            if char == '"':
                stack.pop()
        elif char in "'\"":
            stack.append("single" if char == "'" else "double")
        elif char == "(":
            stack.append("(")
        elif char == ")" and top == "(":
            stack.pop()
        shown = stack[-1] if stack[-1] in ("single", "double") else ""
        states.extend([top if top in ("single", "double") else shown] * step)
        i += step
    return states[:len(text)]


def shell_script_placeholder(argv: Sequence[str]) -> str | None:
    """Why a list command that runs a shell script (``sh -c SCRIPT``) with a placeholder
    in the script is unsafe, or None: in a list, values are put in as they are."""
    if len(argv) < 3 or argv[0].rsplit("/", 1)[-1] not in _SHELLS:
        return None
    try:
        script = argv[argv.index("-c") + 1]
    except (ValueError, IndexError):
        return None
    match = _PLACEHOLDER.search(script)
    if match is None:
        return None
    return (f"the placeholder {match.group(0)} is put unquoted into the script of "
            f"'{argv[0]} -c': a value such as a commit message in the prompt would run as "
            "commands (command injection); give the command as one string instead (wtr "
            "then quotes each value for the shell), or pass the value as an argument "
            "after the script and use \"$1\"")
