"""Can the plan's agents run here? Each preset's program, version and variables.

``startable`` is the cheap part (no program is run): ``wtr check`` and ``wtr run`` refuse a
plan whose preset cannot start. ``examine`` is ``wtr doctor``: it also asks each program
its version and compares it with the range the preset was proven with.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner.errors import PlanProblem
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.presets import PRESETS, Preset

VERSION_TIMEOUT = 30.0


@dataclass
class AgentCheck:
    """What ``wtr doctor`` found about one agent."""

    name: str  # the preset, or the program of a command agent
    program: str
    streams: list[str] = field(default_factory=list)
    path: str | None = None
    version: str | None = None
    tested: tuple[str, str] | None = None
    variables_set: list[str] = field(default_factory=list)
    variables_missing: list[list[str]] = field(default_factory=list)  # groups none of is set
    problems: list[str] = field(default_factory=list)  # it cannot run
    warnings: list[str] = field(default_factory=list)  # it may run, untested or unconfigured
    mcp: str | None = None  # how its CLI is given `wtr mcp`, or None when it is not
    mcp_only: str = ""  # when not always: "under sandbox: true"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "program": self.program, "streams": self.streams,
                "found": self.path is not None, "path": self.path, "version": self.version,
                "tested": list(self.tested) if self.tested else None,
                "in_tested_range": self.in_range, "variables_set": self.variables_set,
                "variables_missing": self.variables_missing, "ok": self.ok,
                "problems": self.problems, "warnings": self.warnings, "mcp": self.mcp}

    @property
    def in_range(self) -> bool | None:
        if self.tested is None or self.version is None:
            return None
        return within(self.version, self.tested)


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def within(version: str, tested: tuple[str, str]) -> bool:
    """``tested[0] <= version < tested[1]``, comparing the numbers in each."""
    low, high = tested
    return version_key(low) <= version_key(version) < version_key(high)


def install_hint(preset: Preset) -> str:
    kind, package = preset.package.split(":", 1)
    if kind == "npm":
        return f"npm install -g {package}@{preset.pinned}"
    return f"pipx install {package}=={preset.pinned}"


def _agents_of(plan: Plan | None) -> dict[str, tuple[str, list[Stream]]]:
    """name -> (program, streams using it): presets by name, command agents by program."""
    if plan is None:
        return {name: (preset.program, []) for name, preset in PRESETS.items()}
    found: dict[str, tuple[str, list[Stream]]] = {}
    for stream in plan.streams:
        for agent in stream.agents_used():  # (a best-of-N stream's candidates may differ)
            if agent.command is None and agent.preset:
                key, program = agent.preset, PRESETS[agent.preset].program
            else:
                template = agent.argv_template()
                if isinstance(template, str):
                    continue  # shell text: what it runs is the shell's business
                key = program = template[0]
            found.setdefault(key, (program, []))[1].append(stream)
    return found


def startable(plan: Plan, path: str | None = None) -> list[PlanProblem]:
    """Preset agents that cannot start here: their program is not on PATH, or the plan
    gives them arguments their tested version refuses. Runs nothing."""
    if plan.executor.kind != "local":
        return []  # the agents start on the workers, whose PATH this machine cannot see
    search = path if path is not None else os.environ.get("PATH", "")
    problems = []
    for stream, agent in ((s, a) for s in plan.streams for a in s.agents_used()):
        if agent.command is not None or not agent.preset:
            continue
        preset = PRESETS[agent.preset]
        where = f"streams.{stream.name}.agent"
        line = plan.line_of(f"streams.{stream.name}.agent") or plan.line_of("agent")
        if shutil.which(preset.program, path=search) is None:
            problems.append(PlanProblem(
                f"{where}.preset", f"stream '{stream.name}': the {preset.name} preset runs "
                f"'{preset.program}', which is not on PATH; install it ({install_hint(preset)}) "
                "or see 'wtr doctor'", line))
        for arg in agent.args:
            flag = arg.split("=", 1)[0]
            if flag in preset.refused:
                problems.append(PlanProblem(
                    f"{where}.args", f"stream '{stream.name}': {preset.program} "
                    f"{preset.pinned} refuses {flag}: {preset.refused[flag]}", line))
    return problems


def examine(plan: Plan | None, env: Mapping[str, str] | None = None,
            home: Path | None = None) -> list[AgentCheck]:
    """``wtr doctor``: every agent the plan needs (every preset without a plan)."""
    env = dict(os.environ if env is None else env)
    home = home if home is not None else Path(env.get("HOME") or Path.home())
    checks = []
    for name, (program, streams) in _agents_of(plan).items():
        extra: dict[str, str] = {}
        for stream in streams:
            extra.update(stream.agent.env)
        check = AgentCheck(name, program, [s.name for s in streams])
        check.path = shutil.which(program, path=env.get("PATH", ""))
        preset = PRESETS.get(name) if (not streams or any(
            a.command is None and a.preset == name for a in streams[0].agents_used())) else None
        check.mcp = _mcp(preset, streams)
        if check.mcp and preset is not None and not streams and not preset.gets_mcp(False):
            check.mcp_only = "under sandbox: true"
        if check.path is None:
            hint = install_hint(preset) if preset else "install it or change the agent"
            check.problems.append(f"'{program}' is not on PATH ({hint})")
        elif preset is not None:
            _check_version(check, preset, {**env, **extra})
            _check_variables(check, preset, {**env, **extra}, home)
        checks.append(check)
    return checks


def _mcp(preset: Preset | None, streams: list[Stream]) -> str | None:
    """How the preset's CLI gets ``wtr mcp``: for the plan's streams when there is a plan
    (None when none of them gets it: ``mcp: false``, a sandbox it needs...)."""
    if preset is None or not preset.mcp_config:
        return None
    if streams and not any(s.mcp and preset.gets_mcp(s.sandbox) for s in streams):
        return None
    return preset.mcp_config


def _check_version(check: AgentCheck, preset: Preset, env: Mapping[str, str]) -> None:
    check.tested = preset.tested
    try:
        done = subprocess.run([str(check.path), *preset.version_argv], env=dict(env),
                              capture_output=True, text=True, timeout=VERSION_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
        said = done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        check.problems.append(f"'{check.program} {' '.join(preset.version_argv)}' failed: {exc}")
        return
    check.version = preset.version_of(said)
    if check.version is None:
        check.warnings.append(f"could not read its version from: {said.strip()[:120]!r}")
    elif check.version in preset.broken:
        check.problems.append(f"version {check.version} is known broken: "
                              f"{preset.broken[check.version]}")
    elif not within(check.version, preset.tested):
        check.warnings.append(f"version {check.version} is outside the tested range "
                              f"{preset.tested[0]} to below {preset.tested[1]} "
                              f"({install_hint(preset)} installs the tested one)")


def _check_variables(check: AgentCheck, preset: Preset, env: Mapping[str, str],
                     home: Path) -> None:
    logged_in = any((home / path).exists() for path in preset.credentials)
    for group in preset.needs_env:
        present = [name for name in group if env.get(name)]
        check.variables_set += present
        if not present and not logged_in:
            check.variables_missing.append(list(group))
            check.warnings.append(f"none of {', '.join(group)} is set" + (
                f" and no login was found ({', '.join('~/' + c for c in preset.credentials)})"
                if preset.credentials else "") + ": it may not reach a model")
