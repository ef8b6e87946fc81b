"""YAML to plain values, remembering the line of every key and refusing duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from worktree_runner.errors import PlanProblem

KeyPath = tuple[str, ...]

_MAX_DEPTH = 50


def dotted(path: KeyPath) -> str:
    return ".".join(path)


@dataclass
class Document:
    """A parsed YAML document: its value, the line of each key path, and its faults."""

    value: Any = None
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[PlanProblem] = field(default_factory=list)

    def line(self, path: KeyPath) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def problem(self, path: KeyPath, message: str) -> None:
        self.problems.append(PlanProblem(dotted(path), message, self.line(path)))


def parse_yaml(text: str) -> Document:
    doc = Document()
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        doc.problems.append(PlanProblem("", f"invalid YAML: {reason}", line))
        return doc
    except RecursionError:
        # PyYAML's composer recurses once per nesting level: '[[[[...' runs out of stack.
        doc.problems.append(PlanProblem("", "invalid YAML: nested too deeply"))
        return doc
    if node is None:
        return doc
    doc.lines[()] = node.start_mark.line + 1
    doc.value = _Walker(doc).convert(node, ())
    return doc


class _Walker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self.active or len(path) > _MAX_DEPTH:
            self.doc.problem(path, "recursive or too deeply nested YAML")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, str(i))) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.doc.problem(path, f"unreadable value: {exc}")
            return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            key = self._key(key_node, path, line)
            if key is None:
                continue
            key_path = (*path, key)
            if key in result:
                first = self.doc.lines.get(key_path)
                self.doc.problems.append(
                    PlanProblem(dotted(key_path), f"duplicate key (first at line {first})", line)
                )
                continue
            self.doc.lines[key_path] = line
            result[key] = self.convert(value_node, key_path)
        return result

    def _key(self, node: yaml.Node, path: KeyPath, line: int) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag != "tag:yaml.org,2002:merge":
            value = self._scalar(node, path)
            if isinstance(value, str | int | float | bool) or value is None:
                return str(value) if not isinstance(value, str) else value
        self.doc.problems.append(
            PlanProblem(dotted(path), "keys must be plain names (no lists, maps or '<<')", line)
        )
        return None
