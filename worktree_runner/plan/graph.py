"""Small graph algorithms over stream names: cycles, ancestry, levels, longest chains."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache

Graph = Mapping[str, Iterable[str]]  # node -> the nodes it waits for


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as a list of names whose first and last are the same, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt in graph and nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state and (found := visit(node)):
            return found
    return None


def ancestors(graph: Graph) -> dict[str, frozenset[str]]:
    """For each node, everything it waits for directly or not (graph must be acyclic)."""

    @cache
    def of(node: str) -> frozenset[str]:
        direct = frozenset(graph.get(node, ()))
        return direct.union(*(of(d) for d in direct))

    return {node: of(node) for node in graph}


def levels(graph: Graph) -> dict[str, int]:
    """Level 0 waits for nothing; every other node is one above the highest it waits for."""

    @cache
    def of(node: str) -> int:
        return 1 + max((of(d) for d in graph.get(node, ())), default=-1)

    return {node: of(node) for node in graph}


def longest_chain(graph: Graph, order: list[str]) -> list[str]:
    """The longest chain of waits, earliest first; ties go to the earlier node in ``order``."""
    rank = {name: i for i, name in enumerate(order)}

    @cache
    def chain_to(node: str) -> tuple[str, ...]:
        best: tuple[str, ...] = ()
        for dep in sorted(graph.get(node, ()), key=rank.__getitem__):
            candidate = chain_to(dep)
            if len(candidate) > len(best):
                best = candidate
        return (*best, node)

    longest: tuple[str, ...] = ()
    for node in order:
        if len(chain := chain_to(node)) > len(longest):
            longest = chain
    return list(longest)


def chain_below(graph: Graph) -> dict[str, int]:
    """For each node, the length of the longest chain of nodes that wait on it, itself included."""
    dependents: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in deps:
            dependents.setdefault(dep, []).append(node)

    @cache
    def of(node: str) -> int:
        return 1 + max((of(d) for d in dependents.get(node, ())), default=0)

    return {node: of(node) for node in graph}
