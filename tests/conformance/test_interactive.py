"""Every preset's ``interactive()`` (what ``wtr attach`` opens) against the real pinned CLI:
each option it passes is one that CLI's own help offers, in the mode it is given to.

The claude one is opened for real in tmux (``test_claude_attach.py``); the others need a
session id their presets cannot read yet, or a terminal interface that waits for a
person: their options at least must exist, so that the person is not met by a usage error.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conformance.harness import cli_bin_dir
from worktree_runner.presets import PRESETS, StreamFacts


def _facts(tmp_path: Path) -> StreamFacts:
    return StreamFacts("api", tmp_path / "wt", tmp_path / "state", tmp_path / "wt/.git",
                       tmp_path / "wt/.git", ("src/api/**",), tmp_path / "bin", tmp_path,
                       tmp_path / "locks", verify=("pytest -q",))


def _help(name: str, argv: tuple[str, ...], home: Path) -> str:
    """The help of the CLI (of its subcommand, for ``codex resume``)."""
    program = cli_bin_dir(name) / argv[0]
    sub = ["resume"] if argv[1:2] == ("resume",) else []
    done = subprocess.run([str(program), *sub, "--help"], capture_output=True, text=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL,
                          env={**os.environ, "HOME": str(home)})
    return done.stdout + done.stderr


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("session", ["S-1234", None])
def test_every_option_attach_passes_is_one_the_cli_offers(name: str, session: str | None,
                                                          tmp_path: Path) -> None:
    launch = PRESETS[name].interactive(_facts(tmp_path), session)
    assert launch is not None
    assert launch.argv[0] == PRESETS[name].program
    assert ("-p" not in launch.argv and "run" not in launch.argv[:2]
            and "exec" not in launch.argv[:2])  # a person's session, not a headless one
    offered = _help(name, launch.argv, tmp_path)
    options = [a.split("=")[0] for a in launch.argv[1:] if a.startswith("-")]
    missing = [o for o in options if not _offers(offered, o)]
    assert not missing, (name, missing, offered[-3000:])
    if session is not None and name != "aider":
        assert session in launch.argv


def _offers(help_text: str, option: str) -> bool:
    """The option appears as one (not inside a longer one) in the help."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None
