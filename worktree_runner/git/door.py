"""The door itself: every git command runs through ``run_git`` (a cleaned environment,
no hooks, and in a linked worktree pinned to what git registered for it), ``Repository``
(a repository seen from one of its worktrees), the identity for the runner's own commits,
and the lock that serialises writes to the shared repository."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from filelock import FileLock

from worktree_runner import logs
from worktree_runner.errors import GitFailed, GitMissing, NotARepository

# Inherited GIT_* variables that say who the user is or how to reach remotes; every
# other one (GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE, ...) would point a command at the
# wrong repository or index, so it is dropped.
_KEPT_GIT_PREFIXES = (
    "GIT_AUTHOR_",
    "GIT_COMMITTER_",
    "GIT_CONFIG_",
    "GIT_SSH",
    "GIT_ASKPASS",
    "GIT_SSL_",
    "GIT_HTTP_",
    "GIT_TERMINAL_PROMPT",
    "GIT_ALLOW_PROTOCOL",
    "GIT_EXEC_PATH",
    "GIT_TRACE",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment without GIT_* variables that redirect git, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GIT_") or key.startswith(_KEPT_GIT_PREFIXES)
    }
    env.pop("GIT_CONFIG_PARAMETERS", None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    if extra:
        env.update(extra)
    return env


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def git_executable() -> str:
    found = _which_git(os.environ.get("PATH", ""))
    if found is None:
        raise GitMissing("git was not found on PATH", hint="install git 2.38 or newer")
    return found


@functools.lru_cache(maxsize=8)
def _which_git(path: str) -> str | None:
    """Looked up once per PATH: a run starts hundreds of git commands."""
    return shutil.which("git", path=path)


# An agent can write the shared .git/hooks or .git/config: the runner's own git commands
# run no hook and no fsmonitor command, so nothing an agent planted runs as the runner.
NO_HOOKS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    check: bool = True,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    hooks_off: bool = True,
) -> GitResult:
    """Run ``git args`` in ``cwd``; raise GitFailed on a non-zero exit when ``check``.
    In a linked worktree, git is pinned to what it registered (see ``_pinned``)."""
    pinned, pin_env = _pinned(cwd)
    command = [git_executable(), *(NO_HOOKS if hooks_off else ()), *pinned, *args]
    started = time.perf_counter()
    completed = subprocess.run(
        command,
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        env=clean_env({**(env or {}), **pin_env}),
        check=False,
    )
    logs.debug(
        "git",
        args=list(args),
        cwd=str(cwd),
        returncode=completed.returncode,
        seconds=round(time.perf_counter() - started, 4),
    )
    result = GitResult(completed.returncode, completed.stdout, completed.stderr)
    if check and not result.ok:
        raise GitFailed(args, result.returncode, result.stderr or result.stdout)
    return result


# An agent can rewrite its worktree's ``.git`` file to name a git dir it made (whose config
# runs any program), and writes its own git dir (``<common>/worktrees/<id>``), where git
# reads ``config.worktree``. So every command run in a linked worktree names the git dir,
# common dir and work tree git registered for it (found from the registrations, never from
# ``.git``), with the settings that start a program switched off, and every filter or
# diff/merge driver the worktree's own config defines blanked. Drivers of the user's own
# config (git-lfs's filter, say) still run: no agent can write that.

WORKTREE_SAFE = ("-c", "commit.gpgSign=false", "-c", "tag.gpgSign=false",
                 "-c", "log.showSignature=false", "-c", "core.editor=:",
                 "-c", "sequence.editor=:", "-c", "credential.helper=",
                 "-c", "gc.auto=0", "-c", "maintenance.auto=false",
                 "-c", "sparse.expectFilesOutsideOfPatterns=false")


# what each program-naming key of a driver becomes: nothing runs (a merge driver "false"
# answers "conflict", never a silent result)
_BLANKED = {"clean": "", "smudge": "", "process": "", "required": "false", "textconv": "",
            "driver": "false"}


_DRIVER_KEY = re.compile(r"(filter|diff|merge)\.(.+)\.([a-z]+)")


_KNOWN_COMMON_DIRS: dict[Path, None] = {}  # of every Repository made (an ordered set)


_REGISTERED: dict[Path, tuple[Path, Path]] = {}  # worktree -> (git dir, common dir)


_OWN_CONFIG: dict[tuple[Path, int, int, int], tuple[str, ...]] = {}


def _pinned(cwd: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """The config arguments and environment that pin a command in ``cwd`` to its
    registration, when ``cwd`` is a linked worktree of a repository this process knows."""
    found = registration(cwd)
    if found is None:
        return (), {}
    git_dir, common = found
    env = {"GIT_DIR": str(git_dir), "GIT_COMMON_DIR": str(common), "GIT_WORK_TREE": str(cwd)}
    return (*WORKTREE_SAFE, *_own_config_blanked(git_dir, env)), env


def registration(worktree: Path) -> tuple[Path, Path] | None:
    """(git dir, common dir) git registered for the linked worktree at ``worktree``, in a
    repository this process opened; None for a main worktree or an unknown folder."""
    wanted = str(worktree / ".git")
    known = _REGISTERED.get(worktree)
    if known is not None and _read_small(known[0] / "gitdir") == wanted:
        return known
    for common in list(_KNOWN_COMMON_DIRS):
        records = common / "worktrees"
        if worktree == common.parent or not records.is_dir():
            continue
        for gitdir in records.glob("*/gitdir"):
            if _read_small(gitdir) == wanted:
                _REGISTERED[worktree] = (gitdir.parent, common)
                return gitdir.parent, common
    return None


def _read_small(path: Path) -> str | None:
    """A registration file's text; None unless it is a regular file (never a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, 1 << 16).decode(errors="replace").strip()
    finally:
        os.close(fd)


def _own_config_blanked(git_dir: Path, pinned: Mapping[str, str]) -> tuple[str, ...]:
    """``-c`` overrides blanking every program a filter or diff/merge driver defined in the
    worktree's own config (``config.worktree`` and what it includes) would run."""
    own = git_dir / "config.worktree"
    try:
        seen = os.lstat(own)
    except FileNotFoundError:
        return ()
    if not stat.S_ISREG(seen.st_mode):  # a link, FIFO or folder: never git's own file
        with contextlib.suppress(OSError):
            own.unlink()
        return ()
    key = (own, seen.st_ino, seen.st_mtime_ns, seen.st_size)
    if key in _OWN_CONFIG:
        return _OWN_CONFIG[key]
    # (read as the worktree: a conditional include is decided as git decides it there)
    listed = subprocess.run([git_executable(), "config", "--file", str(own), "--includes",
                             "--name-only", "--list"], capture_output=True, text=True,
                            cwd=pinned["GIT_WORK_TREE"], env=clean_env(pinned), check=False,
                            stdin=subprocess.DEVNULL).stdout
    names = listed.split()
    blanked: list[str] = []
    for name in names:
        match = _DRIVER_KEY.fullmatch(name.lower())
        if match and match.group(3) in _BLANKED:
            blanked += ["-c", f"{name}={_BLANKED[match.group(3)]}"]
    if not any(name.lower().startswith("include") for name in names):
        _OWN_CONFIG[key] = tuple(blanked)  # (an included file may change unseen)
    return tuple(blanked)


@dataclass(frozen=True)
class Repository:
    """A non-bare repository, seen from one of its worktrees.

    ``toplevel`` is the worktree the user is in; ``root`` is the main worktree, whose
    location anchors relative paths in a plan; ``common_dir`` holds what every worktree
    shares, so the runner's state lives there.
    """

    root: Path
    toplevel: Path
    common_dir: Path
    git_dir: Path

    def __post_init__(self) -> None:
        _KNOWN_COMMON_DIRS.setdefault(self.common_dir)  # its worktrees' registrations trusted

    @property
    def state_dir(self) -> Path:
        return self.common_dir / "worktree-runner"

    def git(self, *args: str, check: bool = True, cwd: Path | None = None) -> GitResult:
        # The main worktree, not the user's: the user may stand in a worktree we remove.
        return run_git(args, cwd or self.root, check=check)

    def out(self, *args: str, cwd: Path | None = None) -> str:
        return self.git(*args, cwd=cwd).stdout.strip()


def open_repository(path: Path | str | None = None) -> Repository:
    """Find the repository containing ``path`` (default: the current directory).

    Asked of git itself, with the cleaned environment: an inherited GIT_DIR or
    GIT_COMMON_DIR must not make us act on another repository.
    """
    git_executable()
    start = Path(path or Path.cwd()).resolve()
    if not start.exists():
        raise NotARepository(f"{start} does not exist", hint="pass --repo with a repository path")
    where = start if start.is_dir() else start.parent
    result = run_git(["rev-parse", "--path-format=absolute", "--is-bare-repository",
                      "--git-common-dir", "--git-dir", "--show-toplevel"], where, check=False)
    lines = result.stdout.splitlines()
    if lines and lines[0] == "true":
        raise NotARepository(
            f"{lines[1] if len(lines) > 1 else start} is a bare repository",
            hint="worktree_runner needs a repository with a working tree; clone it first",
        )
    if not result.ok or len(lines) < 4:
        raise NotARepository(
            f"{start} is not inside a git repository",
            hint="run this inside a repository or pass --repo DIR",
        )
    common_dir, git_dir, toplevel = (Path(line).resolve() for line in lines[1:4])
    root = common_dir.parent if common_dir.name == ".git" else toplevel
    return Repository(root=root, toplevel=toplevel, common_dir=common_dir, git_dir=git_dir)


def _nul_tokens(args: Sequence[str], cwd: Path) -> Generator[str, None, None]:
    """The NUL-separated output of ``git args``, token by token, while git still writes it.
    Closing the iterator early stops git."""
    proc = subprocess.Popen([git_executable(), *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=clean_env())
    stdout, stderr = cast(IO[bytes], proc.stdout), cast(IO[bytes], proc.stderr)
    try:
        rest = b""
        while chunk := stdout.read(1 << 16):
            *tokens, rest = (rest + chunk).split(b"\0")
            for token in tokens:
                yield token.decode("utf-8", errors="replace")
        if rest:
            yield rest.decode("utf-8", errors="replace")
        if proc.wait() != 0:
            raise GitFailed(args, proc.returncode, stderr.read().decode(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()


_THREAD_LOCK = threading.Lock()


FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "worktree-runner",
    "GIT_AUTHOR_EMAIL": "worktree-runner@localhost",
    "GIT_COMMITTER_NAME": "worktree-runner",
    "GIT_COMMITTER_EMAIL": "worktree-runner@localhost",
}


@contextmanager
def repository_lock(repo: Repository) -> Iterator[None]:
    """Serialise ref and worktree creation between threads and between runner processes.

    ``git worktree add`` and ``git branch`` take ``.lock`` files in the common git dir;
    two of them at once can fail with "File exists" instead of waiting.
    """
    repo.state_dir.mkdir(parents=True, exist_ok=True)
    with _THREAD_LOCK, FileLock(str(repo.state_dir / "git.lock")):
        yield


def _is_lock_contention(exc: BaseException) -> bool:
    return isinstance(exc, GitFailed) and ".lock" in exc.stderr and "exists" in exc.stderr


_T = TypeVar("_T")


def retry_on_lock(function: Callable[..., _T]) -> Callable[..., _T]:
    """A user's own git command can hold a lock we do not know of: wait and try again.
    (tenacity is imported only then: it imports tornado when that is installed.)"""

    @functools.wraps(function)
    def retried(*args: Any, **kwargs: Any) -> _T:
        try:
            return function(*args, **kwargs)
        except GitFailed as exc:
            if not _is_lock_contention(exc):
                raise
        from tenacity import (
            Retrying,
            retry_if_exception,
            stop_after_attempt,
            wait_random_exponential,
        )

        for attempt in Retrying(retry=retry_if_exception(_is_lock_contention),
                                wait=wait_random_exponential(multiplier=0.05, max=2),
                                stop=stop_after_attempt(7), reraise=True):
            with attempt:
                result = function(*args, **kwargs)
        return result

    return retried


def identity_env(repo: Repository) -> dict[str, str]:
    """A fallback identity for the runner's own commits when git has none configured."""
    return dict(_identity_env(repo.root))


@functools.cache
def _identity_env(root: Path) -> tuple[tuple[str, str], ...]:
    if run_git(["var", "GIT_COMMITTER_IDENT"], root, check=False).ok:
        return ()
    return tuple(FALLBACK_IDENTITY.items())
