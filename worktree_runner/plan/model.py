"""A plan as typed, immutable values (docs/plan.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import MappingProxyType

from worktree_runner.plan.executor import Executor
from worktree_runner.presets import PRESETS

DEFAULT_MAX_PARALLEL = 4
DEFAULT_TIMEOUT = 3600.0
DEFAULT_PORT_RANGE = (41000, 41999)
POOL_PER_AGENT = 4
DEFAULT_LOG_LIMIT = 50 * 1024 * 1024
MIN_LOG_LIMIT = 64 * 1024
# Rounds in which a failed verify or ownership check is told to the same agent session
# before the stream fails (``feedback:``). A preset's CLI keeps a conversation to tell it
# in; a ``command`` agent gets them only when the plan asks (a script may not read them).
DEFAULT_FEEDBACK = 2
MAX_FEEDBACK = 20


@dataclass(frozen=True)
class Agent:
    """How a stream's agent is started; ``command`` (list or shell text) or ``preset``."""

    command: tuple[str, ...] | str | None = None
    preset: str | None = None
    args: tuple[str, ...] = ()
    timeout: float | None = DEFAULT_TIMEOUT
    stall_timeout: float | None = None
    retries: int = 0
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def argv_template(self) -> tuple[str, ...] | str:
        """The command before placeholders are filled: ``command``, else the preset's argv."""
        if self.command is not None:
            return self.command
        if self.preset is None:
            raise ValueError("agent has neither command nor preset")
        return (*PRESETS[self.preset].argv, *self.args)


def agent_name(agent: Agent) -> str:
    if agent.command is None:
        return agent.preset or "?"
    return agent.command if isinstance(agent.command, str) else " ".join(agent.command)


@dataclass(frozen=True)
class Budget:
    """The most a stream's agent, or a whole run, may spend: dollars as the agents report
    them, tokens as input plus output. None: no limit on that measure."""

    usd: float | None = None
    tokens: int | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return {"usd": self.usd, "tokens": self.tokens}


@dataclass(frozen=True)
class Coupling:
    """When ``wtr check`` warns about files that history says change together.

    ``min_support``: commits that changed both paths; ``min_confidence``: the share of
    the commits touching either path that touched both; ``hot_share``: the share of
    commits a hot file is changed by; ``commits`` and ``since`` bound the history read.
    """

    min_support: int = 5
    min_confidence: float = 0.5
    hot_share: float = 0.1
    commits: int = 1000
    since: str | None = None


CHOOSE_KINDS = ("first", "smallest", "command")
MAX_ATTEMPTS = 16


@dataclass(frozen=True)
class Choose:
    """How the kept candidate of a best-of-N stream is picked (docs/best-of-n.md):
    ``first`` to pass its gates, the ``smallest`` passing diff, or a judge ``command``."""

    kind: str = "first"
    command: tuple[str, ...] | str | None = None


NOTIFY_KINDS = ("command", "desktop", "webhook")
NOTIFY_ON = ("attention", "finished", "landed")


@dataclass(frozen=True)
class Notify:
    """Where to tell a person about the run: a command (the event as JSON on its stdin),
    a desktop notification, or a webhook (the event POSTed as JSON); ``on`` which news."""

    kind: str  # command | desktop | webhook
    target: tuple[str, ...] | str = ""  # the command (a list: exec'd; a string: sh -c), the URL
    on: tuple[str, ...] = NOTIFY_ON

    def describe(self) -> str:
        if self.kind == "desktop":
            return "desktop"
        target = self.target if isinstance(self.target, str) else " ".join(self.target)
        return f"{self.kind} {target}"


@dataclass(frozen=True)
class Stream:
    name: str
    files: tuple[str, ...]
    agent: Agent
    prompt: str = ""
    description: str = ""
    depends_on: tuple[str, ...] = ()
    conflicts_with: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    on_failure: str = "continue"
    sparse: bool | None = None  # None: the plan's ``sparse``
    context: tuple[str, ...] = ()  # paths a sparse stream reads or builds with
    # How its worktree gets its files: auto | overlay | reflink | full (checkout.py).
    checkout: str = "auto"
    # False: an agent that exits 0 having changed nothing fails (no_changes), not a warning.
    allow_empty: bool = True
    feedback: int | None = None  # None: DEFAULT_FEEDBACK for a preset, 0 for a command
    sandbox: bool = False  # run the agent under bubblewrap (worktree_runner/sandbox.py)
    mcp: bool = True  # give a preset agent whose CLI speaks MCP the server ``wtr mcp``
    writable: tuple[str, ...] = ()  # more paths writable in the sandbox (~ allowed)
    budget: Budget | None = None
    # Streams declared earlier that this one may not run beside (conflicts_with or a
    # shared path in common) and that no dependency already orders: it waits for them.
    waits_for: tuple[str, ...] = ()
    attempts: int = 1  # candidates run side by side; the one kept is chosen by ``choose``
    choose: Choose = field(default_factory=Choose)
    agents: tuple[Agent, ...] = ()  # the candidates' agents, cycled; empty: ``agent``

    def agents_used(self) -> tuple[Agent, ...]:
        """Every agent the stream starts: its own, or its candidates' (each once)."""
        if self.attempts < 2:
            return (self.agent,)
        used: list[Agent] = []  # (not a set: an Agent's env makes it unhashable)
        for agent in map(self.candidate_agent, range(1, self.attempts + 1)):
            if agent not in used:
                used.append(agent)
        return tuple(used)

    def candidate_names(self) -> list[str]:
        """Each candidate's agent in a word: its preset, else its command."""
        return [agent_name(self.candidate_agent(k)) for k in range(1, self.attempts + 1)]

    def candidate_agent(self, attempt: int) -> Agent:
        """The agent of candidate ``attempt`` (1-based)."""
        return self.agents[(attempt - 1) % len(self.agents)] if self.agents else self.agent

    @property
    def feedback_rounds(self) -> int:
        """Rounds of feedback this stream's agent gets: ``feedback`` as the plan says, else
        DEFAULT_FEEDBACK for a preset (a CLI session to continue) and none for a command."""
        if self.feedback is not None:
            return self.feedback
        return DEFAULT_FEEDBACK if self.agent.command is None else 0

    @property
    def scope(self) -> tuple[str, ...]:
        """Every pattern this stream may change: its files and its shared paths."""
        return (*self.files, *self.shared)


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    streams: tuple[Stream, ...]
    base: str | None = None
    target: str | None = None
    max_parallel: int = DEFAULT_MAX_PARALLEL
    worktrees_dir: str | None = None
    setup: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    copy: tuple[str, ...] = ()
    verify: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE
    log_limit: int = DEFAULT_LOG_LIMIT  # bytes of agent output kept per stream
    executor: Executor = field(default_factory=Executor)
    coupling: Coupling | None = field(default_factory=Coupling)  # None: 'coupling: off'
    pool: int | None = None  # None: POOL_PER_AGENT x max_parallel
    keep_ignored: tuple[str, ...] = ()
    sparse: bool = False
    checkout: str = "auto"  # the streams' default
    budget: Budget | None = None  # the whole run's
    notify: tuple[Notify, ...] = ()
    warnings: tuple[str, ...] = ()
    lines: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def pool_size(self, max_parallel: int | None = None) -> int:
        """How many clean worktrees ``wtr clean`` keeps for reuse (0: none)."""
        if self.pool is not None:
            return self.pool
        return POOL_PER_AGENT * (max_parallel or self.max_parallel)

    def is_sparse(self, stream: Stream) -> bool:
        return self.sparse if stream.sparse is None else stream.sparse

    def line_of(self, dotted_key: str) -> int | None:
        return self.lines.get(dotted_key)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.streams]

    @cached_property
    def _index(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.streams)}

    def port(self, name: str, attempt: int | None = None) -> int:
        """The stream's own port (WTR_PORT): distinct for every stream of the plan; with
        ``attempt``, candidate ``attempt`` of a best-of-N stream's. Streams take the range
        from its start, candidates from its end: a stream added while the run runs (a
        follow-up, at the plan's end) never takes a running candidate's port."""
        index = self._index[name]
        if attempt is None:
            return self.port_range[0] + index
        before = sum(candidate_ports(s) for s in self.streams[:index])
        return self.port_range[1] - before - (attempt - 1)

    def stream(self, name: str) -> Stream:
        return self.streams[self._index[name]]

    @property
    def sandboxed(self) -> list[str]:
        return [s.name for s in self.streams if s.sandbox]

    def dependency_graph(self) -> dict[str, tuple[str, ...]]:
        return {s.name: s.depends_on for s in self.streams}

    def ordering_graph(self) -> dict[str, tuple[str, ...]]:
        """What each stream must wait for: its dependencies and the conflicts declared before it."""
        return {s.name: (*s.depends_on, *s.waits_for) for s in self.streams}

    def worktrees_root(self, repo_root: Path) -> Path:
        if self.worktrees_dir is None:
            return repo_root.parent / f"{repo_root.name}.worktrees"
        return (repo_root / self.worktrees_dir).resolve()


def candidate_ports(stream: Stream) -> int:
    """Ports a stream's candidates take beside the stream's own (none for one agent)."""
    return stream.attempts if stream.attempts > 1 else 0


def ports_needed(streams: Sequence[Stream]) -> int:
    """Ports a plan hands out: one a stream, one a candidate of a best-of-N stream."""
    return len(streams) + sum(map(candidate_ports, streams))
