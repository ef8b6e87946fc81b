"""Warnings about a plan that is valid but not ready to run: an agent program that is not
installed, a prompt still holding the placeholder ``wtr init`` wrote."""

from __future__ import annotations

import os
import shutil

from worktree_runner.plan.model import Plan
from worktree_runner.plan.starter import PLACEHOLDER_PROMPT


def readiness_warnings(plan: Plan, path: str | None = None) -> list[str]:
    return [*_missing_programs(plan, path), *_placeholder_prompts(plan)]


def _missing_programs(plan: Plan, path: str | None) -> list[str]:
    """Programs of command agents run by name (a list command) that PATH does not hold; a
    shell command or a program given by its path is left alone: it may come from setup.
    (A preset that cannot start is an error: worktree_runner/doctor.py.)"""
    users: dict[str, list[str]] = {}
    for stream in plan.streams:
        if stream.agent.command is None:
            continue
        template = stream.agent.argv_template()
        if isinstance(template, str) or "/" in template[0]:
            continue
        users.setdefault(template[0], []).append(stream.name)
    search = path if path is not None else os.environ.get("PATH", "")
    return [
        f"agent program '{program}' (streams: {', '.join(names)}) is not on PATH; install "
        "it, or change the agent's command or preset"
        for program, names in users.items() if shutil.which(program, path=search) is None
    ]


def _placeholder_prompts(plan: Plan) -> list[str]:
    names = [s.name for s in plan.streams if s.prompt.strip().startswith(PLACEHOLDER_PROMPT)]
    return [f"stream '{name}' still has the placeholder prompt 'wtr init' wrote; say what "
            "its agent should do" for name in names]
