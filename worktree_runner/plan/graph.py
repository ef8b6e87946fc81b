"""Small graph algorithms over stream names: cycles, ancestry, levels, longest chains.

Every walk is iterative and visits each edge a bounded number of times: a plan of
thousands of streams chained one after another must neither exhaust Python's recursion
limit nor cost time or memory quadratic in its length.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

Graph = Mapping[str, Iterable[str]]  # node -> the nodes it waits for


def find_cycle(graph: Graph) -> list[str] | None:
    """A cycle as a list of names whose first and last are the same, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in graph:
        if root in state:
            continue
        path: list[str] = [root]
        on_path: dict[str, int] = {root: 0}
        todo = [iter(graph.get(root, ()))]
        state[root] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                done = path.pop()
                del on_path[done]
                state[done] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[on_path[nxt]:], nxt]
            elif nxt in graph and nxt not in state:
                state[nxt] = 1
                on_path[nxt] = len(path)
                path.append(nxt)
                todo.append(iter(graph.get(nxt, ())))
    return None


def topological(graph: Graph) -> list[str]:
    """Every node after all the nodes it waits for, and of the nodes free at one time the
    earliest in ``graph``'s order first (graph must be acyclic; names outside it are
    ignored)."""
    waiting = {node: sum(1 for d in set(graph[node]) if d in graph) for node in graph}
    dependents: dict[str, list[str]] = {node: [] for node in graph}
    for node, deps in graph.items():
        for dep in set(deps):
            if dep in graph:
                dependents[dep].append(node)
    position = {node: i for i, node in enumerate(graph)}
    ready = [i for i, node in enumerate(graph) if waiting[node] == 0]
    names = list(graph)
    order: list[str] = []
    while ready:
        node = names[heapq.heappop(ready)]
        order.append(node)
        for dependent in dependents[node]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    if len(order) != len(waiting):
        raise ValueError("the graph has a cycle")
    return order


class Ancestry:
    """What waits for what, directly or not, kept as one bit set per node: a chain of
    5,000 nodes costs about 3 MB, where sets of names would cost hundreds."""

    def __init__(self, graph: Graph) -> None:
        self.names = list(graph)
        self.bit = {name: 1 << i for i, name in enumerate(self.names)}
        self.mask: dict[str, int] = {}
        for node in topological(graph):
            mask = 0
            for dep in graph[node]:
                if dep in self.bit:
                    mask |= self.bit[dep] | self.mask[dep]
            self.mask[node] = mask

    def bits(self, names: Iterable[str]) -> int:
        """One bit set holding ``names``, to test against ``mask``."""
        result = 0
        for name in names:
            result |= self.bit[name]
        return result

    def waits_for(self, node: str, other: str) -> bool:
        """True when ``node`` waits for ``other``, directly or not."""
        return bool(self.mask[node] & self.bit[other])

    def ordered(self, a: str, b: str) -> bool:
        """True when one of the two waits for the other."""
        return self.waits_for(a, b) or self.waits_for(b, a)

    def of(self, node: str) -> list[str]:
        """Everything ``node`` waits for, in the graph's order."""
        mask = self.mask[node]
        return [name for name in self.names if mask & self.bit[name]]


def levels(graph: Graph) -> dict[str, int]:
    """Level 0 waits for nothing; every other node is one above the highest it waits for."""
    level: dict[str, int] = {}
    for node in topological(graph):
        level[node] = 1 + max((level[d] for d in graph[node] if d in graph), default=-1)
    return {node: level[node] for node in graph}


def longest_chain(graph: Graph, order: list[str]) -> list[str]:
    """The longest chain of waits, earliest first; ties go to the earlier node in ``order``."""
    rank = {name: i for i, name in enumerate(order)}
    length: dict[str, int] = {}
    previous: dict[str, str | None] = {}
    for node in topological(graph):
        best: str | None = None
        for dep in sorted((d for d in graph[node] if d in graph), key=rank.__getitem__):
            if best is None or length[dep] > length[best]:
                best = dep
        previous[node] = best
        length[node] = 1 + (length[best] if best is not None else 0)
    end = None
    for node in order:
        if end is None or length[node] > length[end]:
            end = node
    chain: list[str] = []
    while end is not None:
        chain.append(end)
        end = previous[end]
    return chain[::-1]


def chain_below(graph: Graph) -> dict[str, int]:
    """For each node, the length of the longest chain of nodes that wait on it, itself included."""
    below: dict[str, int] = {node: 1 for node in graph}
    for node in reversed(topological(graph)):
        for dep in graph[node]:
            if dep in below:
                below[dep] = max(below[dep], below[node] + 1)
    return below
