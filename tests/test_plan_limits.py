"""Plans that are huge or hostile: refused quickly with one clear problem, or analysed
without recursion limits or quadratic costs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.gitrepo import Repo, run_wtr
from worktree_runner.plan import graph
from worktree_runner.plan.yamlsource import MAX_ALIAS_VALUES, MAX_PLAN_BYTES

HEAD = 'version: 1\nagent: {command: ["python3", "agent.py", "{prompt_file}"]}\n'


def alias_bomb(levels: int) -> str:
    """Each level a list of nine aliases of the one above: 9**levels values from ~400 bytes."""
    lines = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, levels):
        items = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"l{level}: &l{level} [{items}]")
    return "version: 1\n" + "\n".join(lines) + "\nstreams: {a: {files: [x]}}\n"


def test_an_alias_bomb_is_refused_with_one_clear_problem(repo: Repo) -> None:
    text = alias_bomb(8)
    assert len(text.encode()) < 500
    path = repo.write_plan(text)
    result = run_wtr("check", path, cwd=repo.path, timeout=60)
    lines = result.error_lines()
    assert lines[0] == f"wtr: plan {path} is invalid (1 problem); fix them and run " \
                       "'wtr check' again"
    assert lines[1] == (
        f"  {path}:2: YAML aliases ('*name') expand to more than {MAX_ALIAS_VALUES} values; "
        "write the repeated parts out, or use fewer nested aliases")


def test_a_few_reused_anchors_are_fine(repo: Repo) -> None:
    streams = "".join(f"  s{i}: {{files: [area{i}/**], agent: *agent}}\n" for i in range(50))
    text = ("version: 1\nagent: &agent {command: [python3, agent.py], timeout: 60}\n"
            "streams:\n" + streams)
    result = run_wtr("check", "--json", repo.write_plan(text), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert len(result.json()["streams"]) == 50


def test_a_plan_file_over_the_size_limit_is_refused(repo: Repo) -> None:
    filler = "# " + "x" * 1000 + "\n"
    text = HEAD + filler * (MAX_PLAN_BYTES // len(filler) + 1) + "streams: {a: {files: [x]}}\n"
    path = repo.write_plan(text)
    lines = run_wtr("check", path, cwd=repo.path).error_lines()
    assert lines[1:] == [f"  {path}: the plan is larger than 8 MB, the most a plan may be; "
                         "split it or trim it"]


def chain(count: int, last_first: bool) -> str:
    """``count`` streams, each depending on the next (last_first) or on the previous one."""
    lines = [HEAD.rstrip("\n"), "port_range: '40000-49999'", "streams:"]
    for i in range(count):
        lines.append(f"  s{i}: {{files: ['area{i}/**']")
        before = i + 1 if last_first else i - 1
        if 0 <= before < count:
            lines[-1] += f", depends_on: [s{before}]"
        lines[-1] += "}"
    return "\n".join(lines) + "\n"


def test_a_chain_of_thousands_declared_last_first_is_analysed(repo: Repo) -> None:
    # Declared so that each stream names one not yet seen: recursive walks overflowed here.
    count = 1500  # past Python's recursion limit of 1000
    result = run_wtr("check", "--json", repo.write_plan(chain(count, True)), cwd=repo.path)
    assert result.returncode == 0, result.stderr[-2000:]
    doc = result.json()
    assert doc["valid"] is True
    assert doc["critical_path"] == [f"s{i}" for i in reversed(range(count))]
    assert doc["waves"] == [[f"s{i}"] for i in reversed(range(count))]


def test_a_long_chain_with_conflicts_keeps_its_waits(repo: Repo) -> None:
    count = 1200
    text = chain(count, False).replace("s1199: {", "s1199: {conflicts_with: [s0, s700], ")
    text = text.replace("  s5: {", "  s5: {conflicts_with: [s1100], ")
    result = run_wtr("check", "--json", repo.write_plan(text), cwd=repo.path)
    assert result.returncode == 0, result.stderr[-2000:]
    streams = result.json()["streams"]
    # Ordered by the chain already: no wait is added.
    assert streams["s1199"]["waits_for"] == []
    assert streams["s1100"]["waits_for"] == []


# -- the graph helpers against plain definitions --------------------------------------------

dags = st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.lists(st.lists(st.integers(0, n - 1), max_size=4), min_size=n, max_size=n)
).map(lambda deps: {f"n{i}": tuple(f"n{d}" for d in ds if d < i) for i, ds in enumerate(deps)})


def closure(dag: dict[str, tuple[str, ...]], node: str) -> set[str]:
    found: set[str] = set()
    todo = list(dag[node])
    while todo:
        item = todo.pop()
        if item not in found:
            found.add(item)
            todo.extend(dag[item])
    return found


@settings(max_examples=200, deadline=None)
@given(dags)
def test_ancestry_and_levels_match_their_definitions(dag: dict[str, tuple[str, ...]]) -> None:
    ancestry = graph.Ancestry(dag)
    level = graph.levels(dag)
    order = graph.topological(dag)
    for node in dag:
        above = closure(dag, node)
        assert set(ancestry.of(node)) == above
        assert all(ancestry.waits_for(node, a) for a in above)
        assert level[node] == 1 + max((level[d] for d in dag[node]), default=-1)
        assert all(order.index(d) < order.index(node) for d in dag[node])
    reversed_dag = {n: tuple(m for m in dag if n in dag[m]) for n in dag}
    below = graph.chain_below(dag)
    for node in dag:
        assert below[node] == 1 + max((below[m] for m in reversed_dag[node]), default=0)


def test_a_cycle_is_named_without_recursion() -> None:
    count = 5000
    ring = {f"n{i}": (f"n{(i + 1) % count}",) for i in range(count)}
    cycle = graph.find_cycle(ring)
    assert cycle is not None
    assert cycle[0] == cycle[-1] and len(cycle) == count + 1
