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


@dataclass(frozen=True)
class Binding:
    store: RunStore  # the stream's state (a best-of-N candidate's own)
    run: RunStore  # the run's: its plan and every stream
    stream: str
    worktree: Path
    repo: git.Repository
    plan: Plan

    @property
    def env(self) -> dict[str, str]:
        """The variables ``wtr progress`` reads, naming this stream."""
        return {"WTR_RUN": self.run.run_id, "WTR_STREAM": self.stream,
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
    run = RunStore(_run_folder(store.dir))
    return Binding(store, run, stream, Path(worktree), git.open_repository(worktree),
                   _run_plan(run))


def _run_folder(state_dir: Path) -> Path:
    """A best-of-N candidate's state folder lies in its stream's folder of the run
    (``streams/<name>/candidates/<K>``): the run's is the nearest holding the plan."""
    for folder in (state_dir, *list(state_dir.parents)[:4]):
        if (folder / "plan.yaml").is_file() and (folder / "state.json").is_file():
            return folder
    return state_dir


def _run_plan(store: RunStore) -> Plan:
    """The plan as the run started with it (its copy in the run's folder)."""
    from worktree_runner.plan.load import parse_plan

    try:
        text = store.plan_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"run {store.run_id} has no copy of its plan ({exc.strerror})") from None
    return parse_plan(text, Path(store.record.plan))
