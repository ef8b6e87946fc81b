"""The stream a ``wtr mcp`` server serves, found from its environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from worktree_runner import git
from worktree_runner.errors import BadInput
from worktree_runner.plan.model import Plan, Stream
from worktree_runner.run import registry
from worktree_runner.run.state import RunStore

# What the server needs of the agent's environment; a CLI that starts its MCP servers with
# a reduced environment (codex) is given these in its config.
VARIABLES = ("WTR_RUN", "WTR_STREAM", "WTR_STATE_DIR", "WTR_WORKTREE", "WTR_REPORT")


@dataclass(frozen=True)
class Binding:
    store: RunStore
    stream: str
    worktree: Path
    repo: git.Repository
    plan: Plan

    @property
    def env(self) -> dict[str, str]:
        """The variables ``wtr progress`` reads, naming this stream."""
        return {"WTR_RUN": self.store.run_id, "WTR_STREAM": self.stream,
                "WTR_STATE_DIR": str(self.store.dir)}

    @property
    def spec(self) -> Stream:
        return self.plan.stream(self.stream)


def bind(env: Mapping[str, str]) -> Binding:
    """The stream named by ``env``; BadInput when it names none (not started by a run)."""
    stream, state_dir, worktree = (env.get(k) for k in ("WTR_STREAM", "WTR_STATE_DIR",
                                                        "WTR_WORKTREE"))
    if not stream or not state_dir or not worktree:
        raise BadInput("wtr mcp serves an agent started by 'wtr run': WTR_STREAM, "
                       "WTR_STATE_DIR and WTR_WORKTREE are not all set",
                       hint="a preset agent gets it in its MCP config; see docs/agents.md")
    store = RunStore(Path(state_dir))
    if not store.state_path.exists():
        raise BadInput(f"WTR_STATE_DIR {state_dir} is not the folder of a run")
    if stream not in store.load().streams:
        raise registry.unknown_stream(store, stream)
    return Binding(store, stream, Path(worktree), git.open_repository(worktree),
                   _run_plan(store))


def _run_plan(store: RunStore) -> Plan:
    """The plan as the run started with it (its copy in the run's folder)."""
    from worktree_runner.plan.load import parse_plan

    try:
        text = store.plan_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"run {store.run_id} has no copy of its plan ({exc.strerror})") from None
    return parse_plan(text, Path(store.record.plan))
