"""Read a plan file and check every rule of docs/plan.md, collecting all problems."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from worktree_runner.errors import BadInput, PlanInvalid, PlanProblem
from worktree_runner.plan import graph
from worktree_runner.plan.durations import parse_duration
from worktree_runner.plan.executor import Executor, executor_from
from worktree_runner.plan.model import (
    DEFAULT_LOG_LIMIT,
    DEFAULT_MAX_PARALLEL,
    DEFAULT_PORT_RANGE,
    DEFAULT_TIMEOUT,
    MAX_ATTEMPTS,
    MAX_FEEDBACK,
    MIN_LOG_LIMIT,
    NOTIFY_KINDS,
    NOTIFY_ON,
    Agent,
    Budget,
    Choose,
    Coupling,
    Notify,
    Plan,
    Stream,
    ports_needed,
)
from worktree_runner.plan.patterns import pattern_error
from worktree_runner.plan.shell import quoted_placeholder, shell_script_placeholder
from worktree_runner.plan.yamlsource import (
    MAX_PLAN_BYTES,
    Document,
    KeyPath,
    parse_yaml,
    too_big,
)
from worktree_runner.presets import PLACEHOLDERS, PRESETS

T = TypeVar("T")

TOP_KEYS = frozenset(
    {"version", "name", "base", "target", "max_parallel", "worktrees_dir", "agent", "setup",
     "teardown", "copy", "verify", "shared", "streams", "port_range", "executor",
     "coupling", "pool", "keep_ignored", "sparse",
     "allow_empty", "log_limit", "sandbox", "writable", "feedback", "budget", "notify", "mcp",
     "checkout"}
)
AGENT_KEYS = frozenset({"command", "preset", "args", "timeout", "stall_timeout", "retries", "env"})
COUPLING_KEYS = frozenset({"min_support", "min_confidence", "hot_share", "commits", "since"})
STREAM_KEYS = frozenset(
    {"description", "files", "prompt", "depends_on", "conflicts_with", "shared", "verify",
     "on_failure", "agent", "sparse", "context", "allow_empty", "sandbox", "writable",
     "attempts", "choose", "agents", "feedback", "budget", "mcp", "checkout"}
)
BUDGET_KEYS = frozenset({"usd", "tokens"})
ON_FAILURE = ("continue", "stop")
CHECKOUTS = ("auto", "overlay", "reflink", "full")

_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_PLACEHOLDER = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING = object()
_INVALID = object()
NO_TEXTS: tuple[str, ...] = ()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a stream (or plan) name, or None if it can."""
    if not _NAME_CHARS.fullmatch(name):
        return (
            f"'{name}' is not a valid name: use 1-64 of A-Z a-z 0-9 . _ - "
            "starting with a letter or digit"
        )
    if ".." in name or name.endswith((".lock", ".")):
        return f"'{name}' is not a valid name: no '..', and no '.lock' or '.' at the end"
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why a gitignore-style pattern would reach outside the repository, or None."""
    body = pattern[1:] if pattern.startswith("!") else pattern
    if not body.strip():
        return "empty pattern"
    # A leading backslash is Windows' root, unless it escapes a character as gitignore allows.
    if re.match(r"/|\\(?![#!*?\[\] ])|[A-Za-z]:[\\/]", body):
        return (
            f"'{pattern}' is an absolute path; patterns are relative to the repository root"
            " (a pattern with a '/' inside is already anchored there)"
        )
    if ".." in re.split(r"[\\/]", body):
        return f"'{pattern}' has a '..' segment; patterns must stay inside the repository"
    if (error := pattern_error(pattern)) is not None:
        return f"'{pattern}' is not a valid pattern: {error}"
    return None


def default_plan_name(path: Path) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip(".-_")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)[:64].rstrip(".")
    if cleaned.endswith(".lock"):
        cleaned = cleaned[: -len(".lock")]
    return cleaned or "plan"


def load_plan(path: Path | str) -> Plan:
    """The plan in ``path``; raises PlanInvalid listing every problem found."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except FileNotFoundError:
        raise BadInput(
            f"plan file {path} does not exist", hint="create one with 'wtr init'"
        ) from None
    except OSError as exc:
        raise BadInput(f"cannot read plan file {path}: {exc.strerror}") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanInvalid(str(path), [too_big()])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanInvalid(str(path), [PlanProblem("", f"not UTF-8 text ({exc.reason})")]) from None
    return parse_plan(text, path)


def parse_plan(text: str, path: Path) -> Plan:
    doc = parse_yaml(text)
    syntax_error = doc.problems and doc.value is None
    plan = None if syntax_error else _Reader(doc, path).plan()
    if doc.problems or plan is None:
        raise PlanInvalid(str(path), sorted(doc.problems, key=lambda p: p.line or 0))
    return plan


DASK_BUDGET_WARNING = (
    "the run's 'budget' with the Dask executor: a stream on a worker counts its own spend "
    "and what the run had spent when it was handed to the worker, not what streams running "
    "on other workers meanwhile spend; the run can pass its budget by that much")


class _Reader:
    """Turns a parsed document into a Plan, recording a problem for each broken rule."""

    def __init__(self, doc: Document, path: Path) -> None:
        self.doc = doc
        self.path = path
        self.warnings: list[str] = []
        self.allow_empty = True
        self.feedback: int | None = None
        self.mcp = True
        self.checkout = "auto"

    def fail(self, path: KeyPath, message: str) -> None:
        self.doc.problem(path, message)

    # -- typed getters -------------------------------------------------------------

    def get(self, mapping: dict[str, Any], path: KeyPath, key: str,
            convert: Callable[[Any], T], default: T) -> T:
        value = mapping.get(key, _MISSING)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            self.fail((*path, key), str(exc))
            return default

    def check_keys(self, mapping: dict[str, Any], path: KeyPath, allowed: frozenset[str]) -> None:
        for key in mapping:
            if key not in allowed:
                hint = _closest(key, allowed)
                extra = f" (did you mean '{hint}'?)" if hint else ""
                self.fail((*path, key), f"unknown key{extra}")

    def mapping(self, value: Any, path: KeyPath, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.fail(path, f"{what} must be a mapping of keys to values")
        return None

    # -- the plan ----------------------------------------------------------------------

    def plan(self) -> Plan | None:
        if self.doc.value is None:
            self.fail((), "the plan is empty; it needs at least 'version: 1' and 'streams'")
            return None
        top = self.mapping(self.doc.value, (), "the plan")
        if top is None:
            return None
        self.check_keys(top, (), TOP_KEYS)
        self._version(top)
        root: KeyPath = ()
        name = self.get(top, root, "name", _plan_name, default_plan_name(self.path))
        default_agent = self._agent_fields(top.get("agent", {}), ("agent",))
        shared = self.get(top, root, "shared", _patterns, NO_TEXTS)
        self.allow_empty = self.get(top, root, "allow_empty", _bool, True)
        self.feedback = self.get(top, root, "feedback", _feedback_rounds, None)
        self.mcp = self.get(top, root, "mcp", _bool, True)
        box = (self.get(top, root, "sandbox", _bool, False),
               self.get(top, root, "writable", _writable, NO_TEXTS))
        self.checkout = self.get(top, root, "checkout", _checkout, "auto")
        streams = self._streams(top, default_agent, shared, box)
        sparse = self.get(top, root, "sparse", _bool, False)
        self.warnings += [f"stream '{s.name}' lists 'context' but is not sparse; it has no "
                          "effect (add 'sparse: true')" for s in streams
                          if s.context and not (sparse if s.sparse is None else s.sparse)]
        executor = self.get(top, root, "executor", executor_from, Executor())
        budget = self._budget(top, root)
        if budget is not None and executor.kind == "dask":
            self.warnings.append(DASK_BUDGET_WARNING)
        return Plan(
            path=self.path.resolve(),
            name=name,
            streams=streams,
            base=self.get(top, root, "base", _ref, None),
            target=self.get(top, root, "target", _ref, None),
            max_parallel=self.get(top, root, "max_parallel", _positive_int, DEFAULT_MAX_PARALLEL),
            worktrees_dir=self.get(top, root, "worktrees_dir", _text, None),
            setup=self.get(top, root, "setup", _commands, NO_TEXTS),
            teardown=self.get(top, root, "teardown", _commands, NO_TEXTS),
            copy=self.get(top, root, "copy", _patterns, NO_TEXTS),
            verify=self.get(top, root, "verify", _commands, NO_TEXTS),
            shared=shared,
            port_range=self._port_range(top, ports_needed(streams)),
            log_limit=self.get(top, root, "log_limit", _byte_size, DEFAULT_LOG_LIMIT),
            executor=executor,
            coupling=self._coupling(top.get("coupling", _MISSING)),
            pool=self.get(top, root, "pool", _non_negative_int, None),
            keep_ignored=self.get(top, root, "keep_ignored", _patterns, NO_TEXTS),
            sparse=sparse,
            checkout=self.checkout,
            budget=budget,
            notify=self.get(top, root, "notify", notify_entries, ()),
            warnings=tuple(self.warnings),
            lines=MappingProxyType({".".join(k): v for k, v in self.doc.lines.items()}),
        )

    def _port_range(self, top: dict[str, Any], needed: int) -> tuple[int, int]:
        ports = self.get(top, (), "port_range", _port_range, DEFAULT_PORT_RANGE)
        if ports[1] - ports[0] + 1 < needed:
            self.fail(("port_range",), f"gives {ports[1] - ports[0] + 1} ports where {needed} "
                                       "are needed: each stream, and each candidate of a "
                                       "best-of-N stream, needs its own")
        return ports

    def _coupling(self, raw: Any) -> Coupling | None:
        if raw is _MISSING or raw is None:
            return Coupling()
        if raw is False or raw == "off":  # YAML 1.1 reads a bare 'off' as false
            return None
        path: KeyPath = ("coupling",)
        fields = self.mapping(raw, path, "'coupling' (or 'coupling: off')")
        if fields is None:
            return Coupling()
        self.check_keys(fields, path, COUPLING_KEYS)
        default = Coupling()
        return Coupling(
            min_support=self.get(fields, path, "min_support", _positive_int, default.min_support),
            min_confidence=self.get(fields, path, "min_confidence", _share,
                                    default.min_confidence),
            hot_share=self.get(fields, path, "hot_share", _share, default.hot_share),
            commits=self.get(fields, path, "commits", _positive_int, default.commits),
            since=self.get(fields, path, "since", _text, None),
        )

    def _version(self, top: dict[str, Any]) -> None:
        version = top.get("version", _MISSING)
        if version is _MISSING:
            self.fail(("version",), "missing; add 'version: 1' at the top of the plan")
        elif version != 1 or not isinstance(version, int) or isinstance(version, bool):
            self.fail(("version",), f"unsupported version {version!r}; only 1 exists")

    def _streams(self, top: dict[str, Any], default_agent: dict[str, Any],
                 shared: tuple[str, ...], box: tuple[bool, tuple[str, ...]]
                 ) -> tuple[Stream, ...]:
        raw = top.get("streams", _MISSING)
        if raw is _MISSING or raw is None or raw == {}:
            self.fail(("streams",), "the plan needs at least one stream under 'streams'")
            return ()
        specs = self.mapping(raw, ("streams",), "'streams'")
        if specs is None:
            return ()
        streams = [
            stream
            for name, spec in specs.items()
            if (stream := self._stream(name, spec, default_agent, shared, box)) is not None
        ]
        if not self._check_references(streams):
            return tuple(streams)
        ordered = _with_waits(streams)
        self._check_ordering(ordered)
        return ordered

    def _stream(self, name: str, spec: Any, default_agent: dict[str, Any],
                shared: tuple[str, ...], box: tuple[bool, tuple[str, ...]]) -> Stream | None:
        path: KeyPath = ("streams", name)
        if (problem := name_problem(name)) is not None:
            self.fail(path, problem)
        fields = self.mapping(spec if spec is not None else {}, path, f"stream '{name}'")
        if fields is None:
            return None
        self.check_keys(fields, path, STREAM_KEYS)
        files = self.get(fields, path, "files", _patterns, NO_TEXTS)
        if "files" not in fields:
            self.fail(path, "missing 'files': list the patterns of the files this stream owns")
        elif fields["files"] == []:
            self.fail((*path, "files"), "must list at least one pattern")
        own_shared = self.get(fields, path, "shared", _patterns, NO_TEXTS)
        for entry in own_shared:
            if entry not in shared:
                self.fail((*path, "shared"), f"'{entry}' is not listed in the plan's 'shared'")
        prompt = self.get(fields, path, "prompt", _text, "")
        if not prompt.strip():
            self.warnings.append(f"stream '{name}' has no prompt")
        own_agent = self._agent_fields(fields.get("agent", {}), (*path, "agent"))
        agent_fields = _over(default_agent, own_agent)
        attempts = self.get(fields, path, "attempts", _attempts, 1)
        return Stream(
            name=name,
            files=files,
            agent=self._agent(agent_fields, path),
            prompt=prompt,
            description=self.get(fields, path, "description", _text, ""),
            depends_on=self.get(fields, path, "depends_on", _names, NO_TEXTS),
            conflicts_with=self.get(fields, path, "conflicts_with", _names, NO_TEXTS),
            shared=own_shared,
            verify=self.get(fields, path, "verify", _commands, NO_TEXTS),
            on_failure=self.get(fields, path, "on_failure", _on_failure, "continue"),
            sparse=self.get(fields, path, "sparse", _bool, None),
            checkout=self.get(fields, path, "checkout", _checkout, self.checkout),
            context=self.get(fields, path, "context", _patterns, NO_TEXTS),
            allow_empty=self.get(fields, path, "allow_empty", _bool, self.allow_empty),
            feedback=self.get(fields, path, "feedback", _feedback_rounds, self.feedback),
            sandbox=self.get(fields, path, "sandbox", _bool, box[0]),
            mcp=self.get(fields, path, "mcp", _bool, self.mcp),
            writable=(*box[1], *self.get(fields, path, "writable", _writable, NO_TEXTS)),
            attempts=attempts,
            choose=self._choose(fields, path, attempts),
            agents=self._candidate_agents(fields, path, agent_fields, attempts),
            budget=self._budget(fields, path),
        )

    # -- best-of-N ---------------------------------------------------------------------

    def _choose(self, fields: dict[str, Any], path: KeyPath, attempts: int) -> Choose:
        if "choose" not in fields:
            return Choose()
        if attempts < 2:
            self.fail((*path, "choose"), "picks among candidates: set 'attempts' to 2 or more")
        return self.get(fields, path, "choose", _choose, Choose())

    def _candidate_agents(self, fields: dict[str, Any], path: KeyPath,
                          stream_agent: dict[str, Any], attempts: int) -> tuple[Agent, ...]:
        """``agents:``: a preset name or an agent mapping per candidate, each over the
        stream's own agent (cycled when there are fewer than ``attempts``)."""
        raw = fields.get("agents")
        if raw is None:
            return ()
        where = (*path, "agents")
        if not isinstance(raw, list) or not raw:
            self.fail(where, "must be a list of presets or agent mappings "
                             "(e.g. [claude, codex])")
            return ()
        if attempts < 2:
            self.fail(where, "gives the candidates' agents: set 'attempts' to 2 or more")
        elif len(raw) > attempts:
            self.fail(where, f"lists {len(raw)} agents for {attempts} attempts")
        agents = []
        for index, item in enumerate(raw):
            own = self._agent_fields({"preset": item} if isinstance(item, str) else item,
                                     (*where, str(index)))
            agents.append(self._agent(_over(stream_agent, own), (*where, str(index))))
        return tuple(agents)

    # -- budgets -----------------------------------------------------------------------

    def _budget(self, fields: dict[str, Any], path: KeyPath) -> Budget | None:
        """``budget: {usd: X, tokens: N}`` at ``path``, at least one of them."""
        if "budget" not in fields:
            return None
        where: KeyPath = (*path, "budget")
        given = self.mapping(fields["budget"], where, "'budget' ({usd: X, tokens: N})")
        if given is None:
            return None
        self.check_keys(given, where, BUDGET_KEYS)
        if not given:
            self.fail(where, "give 'usd', 'tokens' or both")
        return Budget(usd=self.get(given, where, "usd", _dollars, None),
                      tokens=self.get(given, where, "tokens", _positive_int, None))

    # -- agents ------------------------------------------------------------------------

    def _agent_fields(self, raw: Any, path: KeyPath) -> dict[str, Any]:
        """The agent keys given at ``path``, converted; problems recorded."""
        fields = self.mapping(raw if raw is not None else {}, path, "'agent'")
        if fields is None:
            return {}
        self.check_keys(fields, path, AGENT_KEYS)
        if "command" in fields and "preset" in fields:
            self.fail(path, "give either 'command' or 'preset', not both")
        converters: dict[str, Callable[[Any], Any]] = {
            "command": _command, "preset": _preset, "args": _strings,
            "timeout": _optional_duration, "stall_timeout": _optional_duration,
            "retries": _non_negative_int, "env": _env,
        }
        result: dict[str, Any] = {}
        for key, convert in converters.items():
            value = self.get(fields, path, key, convert, _MISSING)
            if value is not _MISSING:
                result[key] = value
            elif key in fields:
                result[key] = _INVALID
        return result

    def _agent(self, fields: dict[str, Any], path: KeyPath) -> Agent:
        """An agent from merged fields; keys already reported as invalid are dropped."""
        given = {key for key in ("command", "preset") if fields.get(key) is not None}
        fields = {key: value for key, value in fields.items() if value is not _INVALID}
        if not given:
            self.fail(path, "has no agent: give 'agent.command' or 'agent.preset' "
                            "(here or in the plan's default 'agent')")
        return Agent(
            command=fields.get("command"),
            preset=fields.get("preset"),
            args=fields.get("args", ()),
            timeout=fields.get("timeout", DEFAULT_TIMEOUT),
            stall_timeout=fields.get("stall_timeout"),
            retries=fields.get("retries", 0),
            env=MappingProxyType(dict(fields.get("env", {}))),
        )

    # -- rules between streams ---------------------------------------------------------

    def _check_references(self, streams: list[Stream]) -> bool:
        """Names in depends_on/conflicts_with exist and depends_on has no cycle."""
        before = len(self.doc.problems)
        names = {s.name for s in streams}
        for stream in streams:
            for key in ("depends_on", "conflicts_with"):
                for other in getattr(stream, key):
                    where = ("streams", stream.name, key)
                    if other == stream.name:
                        self.fail(where, f"stream '{other}' cannot name itself")
                    elif other not in names:
                        hint = _closest(other, names)
                        extra = f" (did you mean '{hint}'?)" if hint else ""
                        self.fail(where, f"unknown stream '{other}'{extra}")
        if len(self.doc.problems) > before:
            return False
        cycle = graph.find_cycle({s.name: s.depends_on for s in streams})
        if cycle:
            self.fail(("streams", cycle[0], "depends_on"),
                      f"dependency cycle: {' -> '.join(cycle)}")
        return cycle is None

    def _check_ordering(self, streams: tuple[Stream, ...]) -> None:
        """A later stream waits for an earlier one it conflicts with; with dependencies
        that can loop, and such a plan would never finish."""
        cycle = graph.find_cycle({s.name: (*s.depends_on, *s.waits_for) for s in streams})
        if cycle:
            self.fail(("streams", cycle[0], "conflicts_with"),
                      f"conflicts_with and depends_on cannot both be honoured: "
                      f"{' -> '.join(cycle)} (each waits for the next); drop a conflict")


def _over(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """Agent fields ``own`` over ``base``: a command or preset replaces both; env merges."""
    merged = {**base}
    if "command" in own or "preset" in own:
        merged.pop("command", None)
        merged.pop("preset", None)
    env = {**_env_or_empty(base), **_env_or_empty(own)}
    merged.update(own)
    merged["env"] = env
    return merged


def _attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS:
        raise ValueError(f"must be a whole number from 1 to {MAX_ATTEMPTS}")
    return value


def _choose(value: Any) -> Choose:
    if value in ("first", "smallest"):
        return Choose(str(value))
    if isinstance(value, dict) and set(value) == {"command"}:
        command = value["command"]
        if isinstance(command, str) and command.strip():
            return Choose("command", command)
        if isinstance(command, list) and command and all(
                isinstance(part, str) for part in command) and command[0].strip():
            return Choose("command", tuple(command))
        raise ValueError("'command' must be a command: text for sh -c, or a list of words")
    raise ValueError("must be first, smallest, or {command: ...} (a judge that prints the "
                     "number of the candidate to keep)")


def _env_or_empty(agent_fields: dict[str, Any]) -> dict[str, str]:
    """The agent's converted ``env``; {} when absent or already reported as invalid."""
    env = agent_fields.get("env", {})
    return env if isinstance(env, dict) else {}


def _with_waits(streams: list[Stream]) -> tuple[Stream, ...]:
    """Give each stream the earlier-declared streams it may not run beside."""
    ancestry = graph.Ancestry({s.name: s.depends_on for s in streams})
    position = {s.name: i for i, s in enumerate(streams)}
    partners = _exclusive_partners(streams)
    result: list[Stream] = []
    for index, stream in enumerate(streams):
        earlier = sorted(
            (other for other in partners[stream.name] if position[other] < index),
            key=position.__getitem__,
        )
        waits = tuple(other for other in earlier if not ancestry.ordered(stream.name, other))
        result.append(replace(stream, waits_for=waits))
    return tuple(result)


def _exclusive_partners(streams: list[Stream]) -> dict[str, set[str]]:
    """For each stream, the others it may not run beside: conflicts_with either way, or
    a shared path in common. Found through the names, not by trying every pair."""
    partners: dict[str, set[str]] = {s.name: set() for s in streams}
    sharing: dict[str, list[str]] = {}
    for stream in streams:
        for other in stream.conflicts_with:
            if other in partners and other != stream.name:
                partners[stream.name].add(other)
                partners[other].add(stream.name)
        for path in set(stream.shared):
            sharing.setdefault(path, []).append(stream.name)
    for names in sharing.values():
        for name in names:
            partners[name].update(n for n in names if n != name)
    return partners


# -- converters: each returns the typed value or raises ValueError with the reason ------


def _writable(value: Any) -> tuple[str, ...]:
    paths = _strings(value)
    for path in paths:
        if not path.startswith(("/", "~")):
            raise ValueError(f"'{path}' must be an absolute path or start with ~")
    return paths


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be text")
    return value


def _ref(value: Any) -> str:
    text = _text(value).strip()
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise ValueError(f"'{value}' is not a usable git ref")
    return text


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}


def _byte_size(value: Any) -> int:
    """A size in bytes: a whole number, or text such as '50MB', '512 KB', '1GB'."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        text = value if isinstance(value, str) else ""
        match = re.fullmatch(r"\s*(\d+)\s*([kmg]?b?)\s*", text, re.IGNORECASE)
        if not match:
            raise ValueError("write a size such as 50MB, 512KB or 1GB (or a number of bytes)")
        size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower() or ""]
    if size < MIN_LOG_LIMIT:
        raise ValueError(f"must be at least {MIN_LOG_LIMIT // 1024}KB")
    return size


def _port_range(value: Any) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", _text(value))
    if not match:
        raise ValueError("write it as 'FIRST-LAST', e.g. '41000-41999'")
    first, last = int(match.group(1)), int(match.group(2))
    if not 1024 <= first <= last <= 65535:
        raise ValueError("ports must be from 1024 to 65535, the first no greater than the last")
    return first, last


def worktree_include(root: Path) -> tuple[str, ...]:
    """Patterns of a ``.worktreeinclude`` file at the repository root (gitignore syntax)."""
    path = root / ".worktreeinclude"
    if not path.is_file():
        return ()
    patterns = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if (problem := pattern_problem(pattern)) is not None:
            raise BadInput(f"{path}:{number}: {problem}")
        patterns.append(pattern)
    return tuple(patterns)


def _plan_name(value: Any) -> str:
    problem = name_problem(_text(value))
    if problem:
        raise ValueError(problem)
    return str(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("must be a whole number of at least 1")
    return value


def _dollars(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e9:
        raise ValueError("must be an amount in dollars above 0, e.g. 2.5")
    return float(value)


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ValueError("must be a number above 0 and at most 1 (a share, e.g. 0.5)")
    return float(value)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("must be a whole number of at least 0")
    return value


def _feedback_rounds(value: Any) -> int:
    rounds = _non_negative_int(value)
    if rounds > MAX_FEEDBACK:
        raise ValueError(f"must be at most {MAX_FEEDBACK} (rounds of feedback to the agent)")
    return rounds


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list):
        raise ValueError("must be a list of text items")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("every item must be text (quote numbers and words like yes/no)")
    return tuple(value)


def _commands(value: Any) -> tuple[str, ...]:
    commands = _strings(value)
    if any(not command.strip() for command in commands):
        raise ValueError("a command cannot be empty")
    return commands


def _patterns(value: Any) -> tuple[str, ...]:
    patterns = _strings(value)
    problems = [p for pattern in patterns if (p := pattern_problem(pattern))]
    if problems:
        raise ValueError("; ".join(problems))
    return patterns


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    return tuple(dict.fromkeys(_strings(value)))


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _checkout(value: Any) -> str:
    if value not in CHECKOUTS:
        raise ValueError(f"must be one of {', '.join(CHECKOUTS)}")
    return str(value)


def _on_failure(value: Any) -> str:
    if value not in ON_FAILURE:
        raise ValueError(f"must be one of {', '.join(ON_FAILURE)}")
    return str(value)


def _optional_duration(value: Any) -> float | None:
    return None if value is None else parse_duration(value)


def _preset(value: Any) -> str:
    if not isinstance(value, str) or value not in PRESETS:
        raise ValueError(f"unknown preset {value!r}; known: {', '.join(PRESETS)}")
    return str(value)


def _command(value: Any) -> tuple[str, ...] | str:
    command: tuple[str, ...] | str
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("the command is empty")
        command, parts = value, [value]
    else:
        command = _strings(value)
        if not command or not command[0].strip():
            raise ValueError("the command list is empty")
        parts = list(command)
    unknown = {m for part in parts for m in _PLACEHOLDER.findall(part)} - set(PLACEHOLDERS)
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{sorted(unknown)[0]}}}; known: "
            + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
        )
    unsafe = (quoted_placeholder(command) if isinstance(command, str)
              else shell_script_placeholder(command))
    if unsafe:
        raise ValueError(unsafe)
    return command


def notify_entries(value: Any) -> tuple[Notify, ...]:
    """``notify:``: a list of ``{command: ...}``, ``{desktop: true}``, ``{webhook: URL}``,
    each with an optional ``on: [attention, finished, landed]``."""
    if not isinstance(value, list):
        raise ValueError("must be a list of entries such as '{webhook: URL}', "
                         "'{command: CMD}' or '{desktop: true}'")
    return tuple(_notify_entry(entry, i) for i, entry in enumerate(value, 1))


def _notify_entry(entry: Any, number: int) -> Notify:
    where = f"entry {number}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a mapping such as '{{webhook: URL}}'")
    for key in entry:
        if key not in {*NOTIFY_KINDS, "on"}:
            hint = _closest(str(key), frozenset({*NOTIFY_KINDS, "on"}))
            raise ValueError(f"{where}: unknown key '{key}'"
                             + (f" (did you mean '{hint}'?)" if hint else ""))
    kinds = [k for k in NOTIFY_KINDS if k in entry]
    if len(kinds) != 1:
        raise ValueError(f"{where} needs exactly one of {', '.join(NOTIFY_KINDS)}")
    kind, value = kinds[0], entry[kinds[0]]
    return Notify(kind, _notify_target(kind, value, where), _notify_on(entry.get("on"), where))


def _notify_target(kind: str, value: Any, where: str) -> tuple[str, ...] | str:
    if kind == "desktop":
        if value is not True:
            raise ValueError(f"{where}: write 'desktop: true'")
        return ""
    if kind == "webhook":
        if not isinstance(value, str) or not re.match(r"https?://[^\s/]+", value):
            raise ValueError(f"{where}: the webhook must be an http:// or https:// URL")
        return value
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value) and (
            value[0].strip()):
        return tuple(value)
    raise ValueError(f"{where}: the command is a string (run with sh -c) or a non-empty list")


def _notify_on(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return NOTIFY_ON
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(n in NOTIFY_ON for n in names):
        raise ValueError(f"{where}: 'on' lists some of {', '.join(NOTIFY_ON)}")
    return tuple(dict.fromkeys(names))


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of variable names to values")
    env: dict[str, str] = {}
    for key, item in value.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"'{key}' is not a valid environment variable name")
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"{key}: the value must be text or a number (quote yes/no/true)")
        env[key] = str(item)
    return env


def _closest(word: str, choices: frozenset[str] | set[str]) -> str | None:
    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.7)
    return found[0] if found else None
