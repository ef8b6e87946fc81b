"""Property tests of the plan loader: whatever the text, a Plan or a PlanInvalid, and a Plan
that comes back keeps the documented promises."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from worktree_runner.errors import EXIT_BAD_INPUT, PlanInvalid
from worktree_runner.plan import graph
from worktree_runner.plan.analysis import waves
from worktree_runner.plan.durations import parse_duration
from worktree_runner.plan.load import (
    AGENT_KEYS,
    STREAM_KEYS,
    TOP_KEYS,
    name_problem,
    parse_plan,
    pattern_problem,
)
from worktree_runner.plan.model import Plan

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PLAN_PATH = Path("p.yaml")


def plan_or_none(text: str) -> Plan | None:
    """The plan in ``text``, or None when it is invalid; any other exception fails."""
    try:
        return parse_plan(text, PLAN_PATH)
    except PlanInvalid as exc:
        assert exc.problems, "an invalid plan must say why"
        assert exc.exit_code == EXIT_BAD_INPUT
        assert all(p.message for p in exc.problems)
        return None


def dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True)


# -- (1) any document ----------------------------------------------------------------------

KNOWN_KEYS = sorted(TOP_KEYS | STREAM_KEYS | AGENT_KEYS)
scalars = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(KNOWN_KEYS)
)
keys = st.text(max_size=8) | st.integers() | st.booleans() | st.sampled_from(KNOWN_KEYS)
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
TOKENS = [
    "version", "streams", "agent", "files", "depends_on", ": ", ":", " ", "\n", "  ", "- ",
    "[", "]", "{", "}", ", ", "&a ", "*a", "!!str ", "!!binary ", "!!python/object ", "'",
    '"', "# ", "1", "0x1f", "1e999", "<<: ", "? ", "|\n", ">", "\t", "---\n", "...", "%YAML 1.1\n",
    "\\", "é", "\x00", "\ufeff", "~", "null", "yes", "2001-02-03", ".nan", "*", "a", "-x",
]
yamlish_text = st.lists(st.sampled_from(TOKENS), max_size=30).map("".join)


@SETTINGS
@given(documents)
def test_any_yaml_document_gives_a_plan_or_plan_invalid(value: Any) -> None:
    plan_or_none(dump(value))


@SETTINGS
@given(st.text(max_size=200) | yamlish_text)
def test_any_text_gives_a_plan_or_plan_invalid(text: str) -> None:
    plan_or_none(text)


@SETTINGS
@given(documents)
def test_any_document_as_the_streams_gives_a_plan_or_plan_invalid(value: Any) -> None:
    plan_or_none(dump({"version": 1, "agent": {"command": "run"}, "streams": value}))


# -- (2) plan-shaped documents -------------------------------------------------------------
# Two flavours: "tame" plans draw every value from valid choices, so only the relations
# between streams (cycles, self-references, conflicts that loop) make them invalid; "wild"
# plans mix in a bad value anywhere. Small alphabets make both collide often.

GOOD_NAMES = ["a", "b", "c", "d", "api"]
BAD_NAMES = ["-x", "a..b", "e.lock", "../x"]
GOOD_PATTERNS = ["src/**", "src/api/**", "docs/*", "*.md", "**", "!src/x"]
BAD_PATTERNS = ["/abs", "../up", "", "a/../../b"]
SHARED = ["package.json", "README.md"]
GOOD_AGENT = {"command": ["python3", "agent.py", "{prompt_file}"]}

good_durations = st.sampled_from([30, 90, "30s", "10m", "1h30m", "2h", 1.5, None])
any_durations = (
    good_durations
    | st.sampled_from(["soon", 0, -1, "", "1h30", True, 10**400])
    | st.integers()
    | st.floats()
)


def agents(durations: st.SearchStrategy[Any], presets: list[str],
           commands: st.SearchStrategy[Any], extra: dict[str, Any]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries({}, optional={
        "command": commands,
        "preset": st.sampled_from(presets),
        "timeout": durations,
        "stall_timeout": durations,
        "retries": st.integers(0, 3),
        "env": st.dictionaries(st.sampled_from(["A", "B_2"]), st.text(max_size=3), max_size=2),
        **extra,
    })


good_commands = st.sampled_from([GOOD_AGENT["command"], "run {prompt} in {worktree}"])
tame_agents = agents(good_durations, ["claude", "codex"], good_commands, {})
wild_agents = agents(
    any_durations,
    ["claude", "codex", "aider", "gemini", "opencode", "nope"],
    good_commands | st.sampled_from(["", [], ["{nope}"], "echo ${HOME}", [1]])
    | st.lists(st.text(max_size=6), max_size=3),
    {"retries": st.integers(-1, 3), "timout": st.just(5),
     "env": st.dictionaries(st.sampled_from(["A", "1x"]), st.integers() | st.booleans())},
)


def without(required: dict[str, Any], optional: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in required.items() if key not in optional}


def plan_documents(names: list[str], patterns: list[str], stream_agents: st.SearchStrategy[Any],
                   default_agents: st.SearchStrategy[Any], extra_top: dict[str, Any],
                   extra_stream: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Plans over these alphabets; an ``extra_*`` key is optional and replaces a required one."""
    references = st.lists(st.sampled_from(names), max_size=2)
    stream = st.fixed_dictionaries(
        without({"files": st.lists(st.sampled_from(patterns), min_size=1, max_size=3)},
                extra_stream),
        optional={
            "depends_on": references,
            "conflicts_with": references,
            "shared": st.lists(st.sampled_from(SHARED), max_size=2),
            "on_failure": st.sampled_from(["continue", "stop"]),
            "prompt": st.text(max_size=10),
            "agent": stream_agents,
            "verify": st.lists(st.just("pytest -q"), max_size=1),
            **extra_stream,
        },
    )
    return st.fixed_dictionaries(
        without({
            "version": st.just(1),
            "agent": default_agents,
            "streams": st.dictionaries(st.sampled_from(names), stream, min_size=1, max_size=5),
        }, extra_top),
        optional={
            "max_parallel": st.integers(1, 8),
            "shared": st.just(SHARED),
            "base": st.just("main"),
            "name": st.just("p"),
            **extra_top,
        },
    )


def known_references(document: dict[str, Any]) -> dict[str, Any]:
    """Keep only references to other streams of the plan: cycles remain possible."""
    names = set(document["streams"])
    for name, spec in document["streams"].items():
        for key in ("depends_on", "conflicts_with"):
            if key in spec:
                spec[key] = [other for other in spec[key] if other in names - {name}]
    return document


tame_plans = plan_documents(
    GOOD_NAMES, GOOD_PATTERNS, tame_agents, st.just(GOOD_AGENT), {}, {}
).map(known_references)
wild_plans = plan_documents(
    GOOD_NAMES + BAD_NAMES,
    GOOD_PATTERNS + BAD_PATTERNS,
    wild_agents,
    st.just(GOOD_AGENT) | wild_agents,
    {
        "version": st.sampled_from([1, 2, "1", None]),
        "max_parallel": st.integers(-1, 8),
        "shared": st.lists(st.sampled_from([*SHARED, "/etc"]), max_size=2),
        "base": st.sampled_from(["main", "-x"]),
        "name": st.sampled_from(["p", "bad..name"]),
        "worktrees_dir": st.sampled_from(["../wt", 5]),
        "stream": st.just({}),
    },
    {
        "on_failure": st.sampled_from(["continue", "maybe"]),
        "verify": st.sampled_from([[""], "pytest"]),
        "dependson": st.just(["a"]),
        "files": st.sampled_from([[], "src/**", None]),
        "depends_on": st.sampled_from(GOOD_NAMES + BAD_NAMES) | st.just([1]),
    },
)
plans = tame_plans | wild_plans


def assert_keeps_the_rules(plan: Plan) -> None:
    names = plan.names
    assert len(set(names)) == len(names)
    assert all(name_problem(name) is None for name in names)
    for stream in plan.streams:
        assert stream.files and all(pattern_problem(p) is None for p in stream.files)
        assert set(stream.shared) <= set(plan.shared)
        for other in (*stream.depends_on, *stream.conflicts_with):
            assert other in names and other != stream.name
        assert set(stream.waits_for) <= set(names[: names.index(stream.name)])
        assert stream.agent.command is not None or stream.agent.preset is not None
        assert stream.agent.argv_template()
        assert stream.agent.timeout is None or stream.agent.timeout > 0
        assert stream.on_failure in ("continue", "stop")
    assert graph.find_cycle(plan.dependency_graph()) is None
    assert graph.find_cycle(plan.ordering_graph()) is None
    assert plan.max_parallel >= 1


def assert_waves_respect_the_order(plan: Plan) -> None:
    grouped = waves(plan)
    position = {name: i for i, wave in enumerate(grouped) for name in wave}
    assert sorted(position) == sorted(plan.names)
    assert sum(len(wave) for wave in grouped) == len(plan.names)
    for name, before in plan.ordering_graph().items():
        assert all(position[b] < position[name] for b in before)
    chain = graph.longest_chain(plan.dependency_graph(), plan.names)
    for earlier, later in pairwise(chain):
        assert earlier in plan.stream(later).depends_on


@SETTINGS
@given(plans)
def test_plan_shaped_documents_give_a_plan_that_keeps_the_rules(document: dict[str, Any]) -> None:
    plan = plan_or_none(dump(document))
    if plan is not None:
        assert plan.names == list(document["streams"])
        assert_keeps_the_rules(plan)
        assert_waves_respect_the_order(plan)


def test_the_plan_strategy_reaches_valid_plans_with_dependencies() -> None:
    """Guards the property above against a strategy that only ever makes invalid plans, or
    plans too plain to test the ordering rules: a fair share must be valid and rich."""

    def rich_and_valid(document: dict[str, Any]) -> bool:
        plan = plan_or_none(dump(document))
        return (plan is not None and any(s.depends_on for s in plan.streams)
                and any(s.waits_for for s in plan.streams))

    outcomes: list[bool] = []

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate])
    @given(tame_plans)
    def sample(document: dict[str, Any]) -> None:
        outcomes.append(rich_and_valid(document))

    sample()
    assert len(outcomes) >= 200
    assert sum(outcomes) >= len(outcomes) // 50, f"{sum(outcomes)} of {len(outcomes)}"


# -- durations -----------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(st.integers(), st.floats(), st.text(max_size=12), st.none(), st.booleans(),
                 st.from_regex(r"\A(\d{1,3}(\.\d)?[hms] ?){1,3}\Z")))
def test_a_duration_is_positive_seconds_or_a_value_error(value: object) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert str(exc)
    else:
        assert 0 < seconds < float("inf")
