"""The one error family: everything a user can cause or fix, with its fixed exit code."""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_HALTED = 3
EXIT_INTERRUPTED = 130


class WtrError(Exception):
    """A failure the user can act on; printed as one line, never as a traceback."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return [text]


class BadInput(WtrError):
    """Bad plan, arguments, repository, run or stream name (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class NotARepository(BadInput):
    pass


class UnknownRef(BadInput):
    pass


class GitMissing(BadInput):
    pass


class UnknownRun(BadInput):
    pass


class GitFailed(WtrError):
    """A git command that should have worked did not; carries the command and its output."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        detail = stderr.strip().splitlines()
        last = detail[-1] if detail else f"exit code {returncode}"
        super().__init__(f"git {' '.join(args)} failed: {last}")
        self.args_ = tuple(args)
        self.returncode = returncode
        self.stderr = stderr


class Halted(WtrError):
    """Stopped for a human: a merge conflict or a failed merge verify (exit 3)."""

    exit_code = EXIT_HALTED

    def __init__(self, message: str, details: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.details = list(details)

    def lines(self) -> list[str]:
        return [*super().lines(), *self.details]


class Interrupted(WtrError):
    exit_code = EXIT_INTERRUPTED


class PlanProblem:
    """One broken rule: where (file, line, key path or stream) and what."""

    __slots__ = ("line", "message", "where")

    def __init__(self, where: str, message: str, line: int | None = None) -> None:
        self.where = where
        self.message = message
        self.line = line

    def render(self, source: str) -> str:
        place = f"{source}:{self.line}" if self.line else source
        key = f" {self.where}:" if self.where else ""
        return f"{place}:{key} {self.message}"

    def to_json(self) -> dict[str, object]:
        return {"where": self.where, "line": self.line, "message": self.message}

    def __repr__(self) -> str:
        return f"PlanProblem({self.where!r}, {self.message!r}, line={self.line})"


class PlanInvalid(BadInput):
    """Every broken rule found in a plan, not only the first."""

    def __init__(self, source: str, problems: Sequence[PlanProblem]) -> None:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"plan {source} is invalid ({count} {noun})",
            hint="fix them and run 'wtr check' again",
        )
        self.source = source
        self.problems = list(problems)

    def lines(self) -> list[str]:
        return [*super().lines(), *("  " + p.render(self.source) for p in self.problems)]


def interrupted(exc: BaseException) -> bool:
    """True if ``exc`` is a Ctrl-C, or wraps one: Python turns a KeyboardInterrupt raised
    while a class is being made (a dataclass field's ``__set_name__``, as a module loads)
    into ``RuntimeError("Error calling __set_name__ ...")`` with the interrupt as cause."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
