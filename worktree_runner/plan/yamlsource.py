"""YAML to plain values, remembering the line of every key and refusing duplicate keys."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from worktree_runner.errors import PlanProblem

KeyPath = tuple[str, ...]

_MAX_DEPTH = 50
# A plan of 5,000 streams is well under 2 MB; a bigger file is a mistake or an attack.
MAX_PLAN_BYTES = 8 * 1024 * 1024
# Values reached again through aliases ('*name'): a few anchors reused by many streams
# stay far below this; nested aliases that multiply ("billion laughs") hit it at once.
MAX_ALIAS_VALUES = 100_000
# libyaml when PyYAML was built with it: the pure-Python parser takes seconds on big plans.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooManyAliases(Exception):
    pass


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


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be a file name, an argument or an environment value, or None."""
    if "\0" in text:
        return "holds a NUL character (\\0), which no file name, argument or variable can hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"holds {exc.object[exc.start:exc.end]!a}, a lone surrogate that is not "
                "valid Unicode text")
    return None


def too_big() -> PlanProblem:
    return PlanProblem("", f"the plan is larger than {MAX_PLAN_BYTES // 1024 // 1024} MB, "
                           "the most a plan may be; split it or trim it")


def parse_yaml(text: str) -> Document:
    doc = Document()
    if len(text) > MAX_PLAN_BYTES:
        doc.problems.append(too_big())
        return doc
    node = _compose(text, doc)
    if node is None:
        return doc
    doc.lines[()] = node.start_mark.line + 1
    walker = _Walker(doc)
    try:
        doc.value = walker.convert(node, ())
    except _TooManyAliases:
        doc.value = None
        doc.problems.append(PlanProblem(
            "", f"YAML aliases ('*name') expand to more than {MAX_ALIAS_VALUES} values; "
                "write the repeated parts out, or use fewer nested aliases",
            walker.alias_line))
    return doc


def _compose(text: str, doc: Document) -> yaml.Node | None:
    """The document's node tree; None, with a problem recorded, when it is not YAML."""
    try:
        return yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError:
        pass  # the pure-Python parser below says what is wrong more precisely
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        doc.problems.append(PlanProblem("", f"invalid YAML: {reason}", line))
    except RecursionError:
        # PyYAML's composer recurses once per nesting level: '[[[[...' runs out of stack.
        doc.problems.append(PlanProblem("", "invalid YAML: nested too deeply"))
    return None


class _Walker:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.constructor = yaml.constructor.SafeConstructor()
        self.active: set[int] = set()
        self.seen: set[int] = set()
        self.visits = 0
        self.alias_line: int | None = None

    def convert(self, node: yaml.Node, path: KeyPath) -> Any:
        if id(node) in self.active or len(path) > _MAX_DEPTH:
            self.doc.problem(path, "recursive or too deeply nested YAML")
            return None
        self._count(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return [self.convert(item, (*path, str(i))) for i, item in enumerate(node.value)]
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _count(self, node: yaml.Node) -> None:
        """Stop once values met a second time (through an alias) pass the limit."""
        self.visits += 1
        if id(node) in self.seen:
            if self.alias_line is None:
                self.alias_line = node.start_mark.line + 1
            if self.visits - len(self.seen) > MAX_ALIAS_VALUES:
                raise _TooManyAliases
        else:
            self.seen.add(id(node))

    def _scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            value = self.constructor.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self.doc.problem(path, f"unreadable value: {exc}")
            return None
        return self._usable_text(value, path) if isinstance(value, str) else value

    def _usable_text(self, text: str, path: KeyPath) -> str:
        """``text``, or, when no file, argument or variable could hold it, a problem and
        the text with the offending characters replaced (so later rules see text)."""
        problem = text_problem(text)
        if problem is None:
            return text
        self.doc.problem(path, problem)
        return text.replace("\0", "\ufffd").encode("utf-8", "replace").decode("utf-8")

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
            if isinstance(value, str):
                return value
            if isinstance(value, int | float | bool) or value is None:
                # As written: a stream called 'yes' or 'null' is not True or None.
                return str(node.value)
        self.doc.problems.append(
            PlanProblem(dotted(path), "keys must be plain names (no lists, maps or '<<')", line)
        )
        return None
