"""The one door to git: every git command and repository query goes through here.

Commands run as plain ``git`` subprocesses with a cleaned environment (STYLE 2-3).
GitPython is not used: its ``Git.execute`` always merges ``os.environ`` and its ``Repo``
honours an inherited ``GIT_COMMON_DIR``, so neither can keep a leaked ``GIT_DIR`` or
``GIT_INDEX_FILE`` from pointing a command at the wrong repository or index.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar, cast

from filelock import FileLock

from worktree_runner import faults, logs
from worktree_runner.errors import GitFailed, GitMissing, NotARepository, UnknownRef, WtrError
from worktree_runner.files import write_text_atomic

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


# -- git in a worktree an agent can write ------------------------------------------------
#
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
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # short name, without refs/heads/
    bare: bool = False
    detached: bool = False
    locked: bool = False
    prunable: bool = False


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


def resolve_commit(repo: Repository, ref: str) -> str:
    result = repo.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                      check=False)
    if not result.ok or not result.stdout.strip():
        raise UnknownRef(
            f"'{ref}' does not name a commit in {repo.toplevel}",
            hint="check the spelling, or fetch it first",
        )
    return result.stdout.strip()


def current_branch(repo: Repository, cwd: Path | None = None) -> str | None:
    """The branch checked out in ``cwd`` (default: the user's worktree); None if detached."""
    result = repo.git("symbolic-ref", "--quiet", "--short", "HEAD", check=False,
                      cwd=cwd or repo.toplevel)
    return result.stdout.strip() or None


def branch_exists(repo: Repository, branch: str) -> bool:
    return repo.git("show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).ok


def tracked_files(repo: Repository, commit: str) -> list[str]:
    """Every file path in ``commit``'s tree, in git's order."""
    out = repo.git("ls-tree", "-r", "-z", "--name-only", "--full-tree", commit).stdout
    return [name for name in out.split("\0") if name]


def parse_worktree_porcelain(text: str) -> list[Worktree]:
    """Parse ``git worktree list --porcelain`` output (records separated by blank lines)."""
    worktrees: list[Worktree] = []
    for record in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in record.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        worktrees.append(
            Worktree(
                path=Path(fields["worktree"]),
                head=fields.get("HEAD"),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                bare="bare" in fields,
                detached="detached" in fields,
                locked="locked" in fields,
                prunable="prunable" in fields,
            )
        )
    return worktrees


def list_worktrees(repo: Repository) -> list[Worktree]:
    return parse_worktree_porcelain(repo.out("worktree", "list", "--porcelain"))


def worktree_of_branch(repo: Repository, branch: str) -> Worktree | None:
    return next((w for w in list_worktrees(repo) if w.branch == branch), None)


def changed_paths(repo: Repository, old: str, new: str) -> list[str]:
    """Paths that differ between two commits (renames count as delete + add)."""
    out = repo.git("diff", "--name-only", "-z", "--no-renames", old, new).stdout
    return [name for name in out.split("\0") if name]


_COMMIT_MARK = "\x01\x02wtr "


def commit_changes(repo: Repository, commit: str, limit: int) -> Iterator[tuple[int, list[str]]]:
    """(commit time, paths changed) of the last ``limit`` non-merge commits reachable from
    ``commit``, newest first, read as git writes them (one pass, never all held at once).
    Renames count as delete + add; a root commit lists every file it added."""
    args = ["log", f"--max-count={limit}", "--no-merges", "--no-renames", "--name-only", "-z",
            "--format=%x01%x02wtr %ct", commit, "--"]
    when: int | None = None
    paths: list[str] = []
    for token in _nul_tokens(args, repo.root):
        if token.startswith(_COMMIT_MARK):
            if when is not None:
                yield when, paths
            when, paths = int(token[len(_COMMIT_MARK):]), []
        elif token.strip("\n"):
            paths.append(token.removeprefix("\n"))
    if when is not None:
        yield when, paths


def _nul_tokens(args: Sequence[str], cwd: Path) -> Iterator[str]:
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


def approxidate(repo: Repository, text: str) -> int | None:
    """The time (seconds since the epoch) git reads in ``text`` ("2024-05-01", "3.months"),
    or None when git cannot read it (git then answers with the current time)."""
    out = repo.out("rev-parse", f"--since={text}")
    stamp = int(out.removeprefix("--max-age=")) if out.startswith("--max-age=") else None
    if stamp is None or (abs(stamp - time.time()) < 2 and text.strip().lower() != "now"):
        return None
    return stamp



# -- writing: everything that creates refs or worktrees in the shared repository ---------

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


@retry_on_lock
def add_worktree(repo: Repository, path: Path, branch: str, commit: str | None) -> None:
    """Register an empty worktree at ``path`` on ``branch``, created at ``commit`` if given.

    Only this step takes the repository lock; ``populate_worktree`` fills it afterwards.
    """
    refuse_occupied(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    where = ["-b", branch, str(path), commit] if commit else [str(path), branch]
    with repository_lock(repo):
        repo.git("worktree", "add", "--quiet", "--no-checkout", *where)


def refuse_occupied(path: Path) -> None:
    """A new worktree never goes over something that is already there."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise WtrError(f"cannot create a worktree at {path}: something is already there "
                       "(another repository's worktree, or files left by hand)",
                       hint="move it away, or point 'worktrees_dir' elsewhere")


# Checkouts write many files: more of them at once than there are cores only makes
# each slower (seen: 20 parallel checkouts of 2,000 files, 16 s each on 2 cores).
_CHECKOUTS = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


def populate_worktree(path: Path) -> None:
    """Check out a worktree registered with --no-checkout; its own index only, so no lock."""
    admin = linked_git_dir(path)
    index = admin / "index" if admin is not None else (
        path / run_git(["rev-parse", "--git-path", "index"], path).stdout.strip())
    if not index.exists():
        with _CHECKOUTS:
            run_git(["reset", "--quiet", "--hard"], path)
            _settle_index(path)


def _settle_index(path: Path) -> None:
    """Make a fresh checkout's index trustworthy by its timestamps.

    git trusts a file's recorded size and mtime only when the file is older than the index
    (to the second); files written in the index's own second are "racy" and every later
    command (the agent's ``git add`` and ``commit``, the checks after it) reads and hashes
    them all again, until an index is written in a later second. Backdating the files just
    checked out by two seconds and refreshing once settles that. A file changed afterwards
    gets a new mtime, so nothing is hidden: the refresh itself compares every file's
    content before it records the new times."""
    folder = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _backdate(folder, time.time_ns() - 2_000_000_000)
    finally:
        os.close(folder)
    run_git(["update-index", "-q", "--refresh"], path, check=False)


def _backdate(folder: int, then: int) -> None:
    """Set the times of every file below ``folder`` (links themselves, not what they point
    at) to ``then``; never inside git's own files nor a nested repository."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name == ".git":
                continue
            if not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(OSError):  # (gone meanwhile: nothing to settle)
                    os.utime(entry.name, ns=(then, then), dir_fd=folder, follow_symlinks=False)
                continue
            try:
                below = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW,
                                dir_fd=folder)
            except OSError:  # unreadable, or gone: left as it is
                continue
            try:
                if not _holds_git(below):
                    _backdate(below, then)
            finally:
                os.close(below)


def _holds_git(folder: int) -> bool:
    try:
        os.stat(".git", dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


@retry_on_lock
def move_worktree(repo: Repository, source: Path, target: Path, locked: bool = False) -> None:
    """Move a registered worktree (a rename: no file is rewritten); ``locked``: the caller
    holds the repository lock already."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext() if locked else repository_lock(repo):
        repo.git("worktree", "move", str(source), str(target))


def linked_git_dir(worktree: Path) -> Path | None:
    """A linked worktree's metadata folder, read from its ``.git`` file without a git
    process; None when there is no such file or it names a relative path."""
    try:
        text = (worktree / ".git").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # missing, or a folder (a main worktree)
        return None
    found = text.removeprefix("gitdir: ")
    return Path(found) if found != text and os.path.isabs(found) else None


def dot_git_intact(worktree: Path) -> bool:
    """Whether the worktree's ``.git`` is the file git wrote, naming its registration (an
    agent may have pointed it elsewhere: such a worktree is never handed on)."""
    found = registration(worktree)
    if found is None or not (worktree / ".git").is_file() or (worktree / ".git").is_symlink():
        return False
    named = linked_git_dir(worktree)
    return named is not None and named.resolve() == found[0].resolve()


def detached_at(git_dir: Path) -> str | None:
    """The commit a worktree's HEAD names directly, read from its HEAD file; None when HEAD
    names a branch or cannot be read."""
    try:
        head = (git_dir / "HEAD").read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return head if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", head) else None


def rename_worktree(source: Path, target: Path) -> bool:
    """Move a linked worktree as ``git worktree move`` does (rename its folder, point its
    metadata at the new place), without the listing of every worktree that makes git's own
    move need the repository lock. False, with nothing moved, when ``source`` is not a plain
    worktree registered there (locked, with submodules, relative paths): then use
    ``move_worktree``."""
    admin = linked_git_dir(source)
    if admin is None or (admin / "locked").exists() or (admin / "modules").exists():
        return False
    try:
        registered = Path((admin / "gitdir").read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False
    if not registered.is_absolute() or registered.resolve() != (source / ".git").resolve():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    faults.point("worktree_renamed", target.name)
    # Killed here, the folder is at its new place while git still names the old one:
    # ``git worktree repair`` mends that (the pool does, for a path it finds taken).
    write_text_atomic(admin / "gitdir", f"{target.resolve() / '.git'}\n")
    return True


def switch_worktree(path: Path, branch: str, old: str, commit: str) -> None:
    """Put ``path``, a clean worktree whose HEAD is detached at ``old``, on a new ``branch``
    at ``commit``: a two-tree read-tree writes only the files that differ, and refuses
    when one of them has a change."""
    if old != commit:  # (a pooled worktree is mostly at the commit a run starts from)
        with _CHECKOUTS:
            run_git(["read-tree", "-m", "-u", old, commit], path)
    # HEAD names the branch before it exists: killed in between, the worktree is on no
    # commit, so the pool sees it unfit and removes it, never hands it on half switched.
    run_git(["symbolic-ref", "HEAD", f"refs/heads/{branch}"], path)
    run_git(["update-ref", "-m", f"branch: Created from {commit}", f"refs/heads/{branch}",
             commit, "0" * len(commit)], path)


@retry_on_lock
def add_detached_worktree(repo: Repository, path: Path, commit: str) -> None:
    refuse_occupied(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with repository_lock(repo):
        repo.git("worktree", "add", "--quiet", "--detach", str(path), commit)


def identity_env(repo: Repository) -> dict[str, str]:
    """A fallback identity for the runner's own commits when git has none configured."""
    return dict(_identity_env(repo.root))


@functools.cache
def _identity_env(root: Path) -> tuple[tuple[str, str], ...]:
    if run_git(["var", "GIT_COMMITTER_IDENT"], root, check=False).ok:
        return ()
    return tuple(FALLBACK_IDENTITY.items())


def ref_commit(repo: Repository, ref: str) -> str | None:
    result = repo.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return result.stdout.strip() or None


def independent(repo: Repository, commits: Sequence[str]) -> list[str]:
    """The commits none of the others contain, in the given order."""
    unique = list(dict.fromkeys(commits))
    if len(unique) < 2:
        return unique
    kept = set(repo.out("merge-base", "--independent", *unique).split())
    return [c for c in unique if c in kept]


@dataclass(frozen=True)
class TreeMerge:
    tree: str | None
    conflicts: list[str]
    written: str | None = None  # the tree merge-tree wrote, conflict markers included


def merge_trees(repo: Repository, ours: str, theirs: str) -> TreeMerge:
    """Merge two commits without touching any worktree or index (git merge-tree)."""
    result = run_git(
        ["merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", ours, theirs],
        repo.root,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise GitFailed(["merge-tree", ours, theirs], result.returncode, result.stderr)
    tree, _, rest = result.stdout.partition("\0")
    conflicts = [name for name in rest.split("\0") if name] if result.returncode == 1 else []
    return TreeMerge(tree=tree if result.returncode == 0 else None, conflicts=conflicts,
                     written=tree or None)


def commit_tree(repo: Repository, tree: str, parents: Sequence[str], message: str) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return run_git([*args, "-m", message], repo.root, env=identity_env(repo)).stdout.strip()


def _status_paths(worktree: Path, untracked: str) -> list[str]:
    # --no-renames: a rename would add a second, unprefixed entry (its old path).
    # The untracked cache (kept in the worktree's index) lets the next look skip every
    # folder whose mtime has not changed: the check before clean then costs a stat per file.
    # git 2.39 uses it for "all" only when "all" is the configured default, not a flag.
    args = ["-c", "core.untrackedCache=true", "-c", f"status.showUntrackedFiles={untracked}",
            "status", "--porcelain", "-z", "--no-renames"]
    out = run_git(args, worktree).stdout
    return [entry[3:] for entry in out.split("\0") if len(entry) > 3]


def worktree_dirty(worktree: Path) -> list[str]:
    """Paths with uncommitted or untracked changes in a runner's ``worktree`` (ignored files
    aside), hidden ones included: the index flags that hide a file are cleared first."""
    unhide(worktree)
    return _status_paths(worktree, "all")


def unhide(worktree: Path) -> list[str]:
    """Clear the index flags that make git look away from a file of a runner's worktree
    (skip-worktree, assume-unchanged: ``ls-files -v`` tags ``S`` and lower case), so that
    status, add, reset and read-tree see every file as it is; the paths cleared. A sparse
    worktree keeps skip-worktree on the files it leaves out (those not on disk)."""
    out = run_git(["ls-files", "-v", "-z"], worktree).stdout
    flagged = [entry for entry in out.split("\0")
               if len(entry) > 2 and (entry[0] == "S" or entry[0].islower())]
    absent = [e for e in flagged if e[0] in "Ss" and not os.path.lexists(worktree / e[2:])]
    if absent and run_git(["config", "--type=bool", "core.sparseCheckout"], worktree,
                          check=False).stdout.strip() == "true":
        flagged = [entry for entry in flagged if entry not in absent]
    paths = [entry[2:] for entry in flagged]
    for flag in ("--no-assume-unchanged", "--no-skip-worktree") if paths else ():
        # (one flag per call: update-index applies only the first it is given)
        run_git(["update-index", flag, "-z", "--stdin"], worktree,
                stdin="".join(f"{path}\0" for path in paths))
    return paths


def strip_worktree(worktree: Path) -> list[str]:
    """Take from a runner's worktree what it holds for itself: its own config
    (``config.worktree``), its own refs (``refs/worktree/``, ``refs/bisect/``,
    ``refs/rewritten/``) and the index flags that hide a file. A pooled worktree carries
    nothing of one run into the next. The paths that were hidden."""
    found = registration(worktree)
    if found is None:
        return []
    own = found[0] / "config.worktree"
    if own.is_dir() and not own.is_symlink():
        shutil.rmtree(own)
    else:
        own.unlink(missing_ok=True)
    refs = run_git(["for-each-ref", "--format=%(refname)", "refs/worktree/", "refs/bisect/",
                    "refs/rewritten/"], worktree).stdout.split()
    if refs:
        run_git(["update-ref", "--stdin"], worktree,
                stdin="".join(f"delete {ref}\n" for ref in refs))
    return unhide(worktree)


def commit_all(repo: Repository, worktree: Path, message: str, exclude: Sequence[str] = ()) -> bool:
    """Commit everything left in ``worktree`` except ``exclude``; False if nothing was left."""
    # A status first: mostly nothing is left, and it leaves the untracked cache warm for clean.
    if not set(worktree_dirty(worktree)) - set(exclude):
        return False
    # --sparse: in a sparse worktree, a file written outside the sparse set is committed
    # too (and then refused by the ownership check), not left behind with an error.
    run_git(["add", "--all", "--sparse"], worktree)
    if exclude:  # (an exclude pathspec naming an ignored file makes 'git add' fail)
        run_git(["--literal-pathspecs", "reset", "--quiet", "--", *exclude], worktree)
    if run_git(["diff", "--cached", "--quiet"], worktree, check=False).ok:
        return False
    run_git(["commit", "--quiet", "--no-verify", "-m", message], worktree,
            env=identity_env(repo))
    return True


def subjects(repo: Repository, old: str, new: str, limit: int = 20) -> list[str]:
    out = repo.out("log", f"--max-count={limit}", "--format=%s", f"{old}..{new}")
    return [line for line in out.splitlines() if line]


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int | None  # None for a binary file
    deleted: int | None


def diffstat(repo: Repository, old: str, new: str) -> list[FileStat]:
    """Lines added and deleted per file between two commits (``git diff --numstat``)."""
    out = repo.git("diff", "--numstat", "-z", "--no-renames", old, new, check=False).stdout
    stats = []
    for entry in filter(None, out.split("\0")):
        added, deleted, path = entry.split("\t", 2)
        stats.append(FileStat(path, None if added == "-" else int(added),
                              None if deleted == "-" else int(deleted)))
    return stats


def oneline_log(repo: Repository, old: str, new: str, limit: int = 100) -> list[str]:
    """``<short id> <subject>`` of the commits in ``old..new``, newest first."""
    out = repo.git("log", f"--max-count={limit}", "--format=%h %s", f"{old}..{new}",
                   check=False).stdout
    return [line for line in out.splitlines() if line]


def untracked_files(repo: Repository) -> list[str]:
    """Untracked files of the main worktree, ignored ones included (for ``copy``)."""
    out = run_git(["ls-files", "--others", "-z"], repo.root).stdout
    return [name for name in out.split("\0") if name]


# -- the merge stage ---------------------------------------------------------------------

REBASE_CONFIG = ("-c", "rerere.enabled=true", "-c", "rerere.autoupdate=true",
                 "-c", "core.editor=true", "-c", "advice.mergeConflict=false")


def rebase_onto(repo: Repository, worktree: Path, onto: str, base: str, head: str) -> GitResult:
    """Replay ``base..head`` onto ``onto`` in ``worktree`` (detached); never moves a branch."""
    return run_git([*REBASE_CONFIG, "rebase", "--quiet", "--onto", onto, base, head], worktree,
                   check=False, env=identity_env(repo))


def rebase_continue(repo: Repository, worktree: Path, remember: bool = True) -> GitResult:
    """Go on with a stopped rebase; ``remember=False``: rerere records no resolution (one an
    agent proposed must not be replayed later as if a human had made it)."""
    config = REBASE_CONFIG if remember else (*REBASE_CONFIG, "-c", "rerere.enabled=false")
    return run_git([*config, "rebase", "--continue"], worktree, check=False,
                   env=identity_env(repo))


def show_diff(repo: Repository, base: str, head: str, stat: bool) -> int:
    """``git diff base head`` printed by git itself to our stdout: its pager and colours
    apply as they would to the user's own ``git diff``. Returns git's exit code."""
    args = [git_executable(), "diff", *(["--stat"] if stat else []), base, head, "--"]
    return subprocess.run(args, cwd=repo.root, env=clean_env(), check=False).returncode


def diff_text(repo: Repository, base: str, head: str, limit: int) -> tuple[str, bool]:
    """``git diff base head`` as text for a page: no colour, no external diff or textconv
    (the repository's config must not run programs), undecodable bytes replaced, at most
    ``limit`` characters; and whether it was cut."""
    args = [git_executable(), *NO_HOOKS, "diff", "--no-color", "--no-ext-diff", "--no-textconv",
            base, head, "--"]
    out = subprocess.run(args, cwd=repo.root, env=clean_env(), capture_output=True,
                         check=False).stdout.decode("utf-8", errors="replace")
    return out[:limit], len(out) > limit


def merge_in_worktree(repo: Repository, worktree: Path, commit: str, message: str) -> GitResult:
    """Merge ``commit`` into the branch checked out in ``worktree``; on a conflict the merge
    is left in progress there for a human (a non-zero exit is an answer)."""
    return run_git(["-c", "core.editor=true", "-c", "advice.mergeConflict=false", "merge",
                    "--no-ff", "--quiet", "-m", message, commit], worktree, check=False,
                   env=identity_env(repo))


def merge_in_progress(worktree: Path) -> bool:
    return run_git(["rev-parse", "--verify", "--quiet", "MERGE_HEAD"], worktree,
                   check=False).ok


def rebase_in_progress(worktree: Path) -> bool:
    for name in ("rebase-merge", "rebase-apply"):
        path = run_git(["rev-parse", "--git-path", name], worktree).stdout.strip()
        if (worktree / path).exists():
            return True
    return False


def rebase_stopped_at(worktree: Path) -> str | None:
    result = run_git(["rev-parse", "--verify", "--quiet", "REBASE_HEAD"], worktree, check=False)
    return result.stdout.strip() or None


def unmerged_files(worktree: Path) -> list[str]:
    out = run_git(["diff", "--name-only", "-z", "--diff-filter=U"], worktree).stdout
    return sorted({name for name in out.split("\0") if name})


def head_of(worktree: Path) -> str:
    return run_git(["rev-parse", "HEAD"], worktree).stdout.strip()


def is_ancestor(repo: Repository, older: str, newer: str) -> bool:
    return repo.git("merge-base", "--is-ancestor", older, newer, check=False).ok


def update_ref(repo: Repository, ref: str, new: str, old: str | None = None,
               message: str = "worktree-runner") -> bool:
    """Point ``ref`` at ``new``, only if it still points at ``old`` (compare-and-swap)."""
    args = ["update-ref", "-m", message, ref, new]
    if old is not None:
        args.append(old)
    return repo.git(*args, check=False).ok


def delete_refs_under(repo: Repository, prefix: str) -> None:
    refs = repo.out("for-each-ref", "--format=%(refname)", prefix).split()
    if refs:
        run_git(["update-ref", "--stdin"], repo.root,
                stdin="".join(f"delete {ref}\n" for ref in refs))


def remove_worktree(repo: Repository, path: Path, prune: bool = True) -> bool:
    """Remove a worktree of this repository, even if it has changes; False if ``path`` is
    not one (then nothing is touched). ``prune`` forgets worktrees that vanished."""
    with repository_lock(repo):
        if path.exists():
            if not owns_worktree(repo, path):
                return False
            record = admin_dir(repo, path)
            repo.git("worktree", "remove", "--force", "--force", str(path), check=False)
            if path.exists():  # e.g. it holds a submodule, or an earlier removal was cut short,
                shutil.rmtree(path)  # or its .git names another git dir (git refuses then)
            if record is not None and record.is_dir():
                shutil.rmtree(record)  # (what 'worktree prune' does for a vanished worktree)
        if prune:
            repo.git("worktree", "prune")
    return True


def admin_dir(repo: Repository, path: Path) -> Path | None:
    """This repository's record of the worktree at ``path`` (``<common>/worktrees/<id>``)."""
    records = repo.common_dir / "worktrees"
    wanted = str(path / ".git")
    for gitdir in records.glob("*/gitdir") if records.is_dir() else ():
        try:
            if gitdir.read_text(errors="replace").strip() == wanted:
                return gitdir.parent
        except OSError:
            continue
    return None


def owns_worktree(repo: Repository, path: Path) -> bool:
    """True if ``path`` is registered as a worktree of this repository, whatever its
    ``.git`` now says (an agent can rewrite that file, or remove it)."""
    return admin_dir(repo, path) is not None


REMOVING_MARK = "wtr-removing"


def mark_removing(repo: Repository, path: Path) -> None:
    """Note, in the worktree's registration, that its removal began (its work is saved)."""
    record = admin_dir(repo, path)
    if record is not None:
        (record / REMOVING_MARK).write_text("")


def removal_started(repo: Repository, path: Path) -> bool:
    """True if an earlier removal of this worktree began (and was cut short). (Not a
    missing ``.git``: an agent can remove that, and its work is still rescued.)"""
    record = admin_dir(repo, path)
    return record is None or (record / REMOVING_MARK).exists()


def commits_between(repo: Repository, base: str, head: str) -> list[str]:
    """The commits a rebase of ``base..head`` replays, oldest first (merges are dropped)."""
    out = repo.out("rev-list", "--reverse", "--no-merges", f"{base}..{head}")
    return out.split()


def tree_of(repo: Repository, commit: str) -> str:
    if FULL_SHA.fullmatch(commit):
        return _tree_of_commit(repo, commit)
    return repo.out("rev-parse", f"{commit}^{{tree}}")


FULL_SHA = re.compile(r"[0-9a-f]{40}")


@functools.lru_cache(maxsize=4096)
def _tree_of_commit(repo: Repository, commit: str) -> str:
    """A commit's tree never changes: asked once per process."""
    return repo.out("rev-parse", f"{commit}^{{tree}}")


def first_parent(repo: Repository, commit: str) -> str:
    return repo.out("rev-parse", f"{commit}^")


def merge_ff_only(repo: Repository, worktree: Path, commit: str) -> GitResult:
    return run_git(["merge", "--ff-only", "--quiet", commit], worktree, check=False)


def reset_keep(worktree: Path, commit: str) -> GitResult:
    return run_git(["reset", "--keep", "--quiet", commit], worktree, check=False)


def tracked_changes(worktree: Path) -> list[str]:
    """Uncommitted changes to tracked files (staged or not) in ``worktree``."""
    return _status_paths(worktree, "no")


# -- cleaning up without losing work ---------------------------------------------------------


def snapshot_worktree(repo: Repository, worktree: Path, message: str,
                      exclude: Sequence[str] = ()) -> str | None:
    """A commit holding everything uncommitted in ``worktree`` (untracked files included,
    ignored ones and ``exclude`` not), on top of its HEAD; made through a temporary index,
    so the worktree itself is not touched. None if that leaves nothing to save."""
    head = head_of(worktree)
    unhide(worktree)  # (the temporary index starts as a copy of the worktree's own)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _seed_index(worktree, head, env)
        run_git(["add", "--all", "--sparse"], worktree, env=env)
        if exclude:  # back to HEAD's version: a copied secret never enters a commit
            run_git(["--literal-pathspecs", "reset", "--quiet", head, "--", *exclude],
                    worktree, env=env)
        tree = run_git(["write-tree"], worktree, env=env).stdout.strip()
    if tree == tree_of(repo, head):
        return None
    return commit_tree(repo, tree, [head], message)


def create_ref(repo: Repository, ref: str, commit: str) -> bool:
    """Create ``ref`` at ``commit``; False (and nothing changed) if it exists already."""
    return update_ref(repo, ref, commit, old="0" * 40)


def refs_under(repo: Repository, prefix: str) -> dict[str, str]:
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


def reflog(worktree: Path, ref: str = "HEAD") -> list[str]:
    """Every commit ``ref`` pointed at, newest first, as seen from ``worktree`` (HEAD is
    that worktree's own); [] when there is no reflog."""
    result = run_git(["reflog", "show", "--format=%H", ref, "--"], worktree, check=False)
    return result.stdout.split() if result.ok else []


# Refs that keep commits for good; merge pins are pruned with their run, so they do not count.
DURABLE_REFS = ("--branches", "--tags", "--remotes", "--glob=refs/worktree-runner/rescue",
                "--glob=refs/worktree-runner/archive")


def unreachable_tips(repo: Repository, commits: Sequence[str]) -> list[str]:
    """The newest of ``commits``' history that no branch, tag or rescue ref reaches."""
    if not commits:
        return []
    out = repo.out("rev-list", "--parents", "--ignore-missing", *commits, "--not", *DURABLE_REFS)
    lost = [line.split() for line in out.splitlines() if line]
    parents = {parent for _, *rest in lost for parent in rest}
    return [commit for commit, *_ in lost if commit not in parents]


def contains_change(repo: Repository, target: str, base: str, head: str) -> bool:
    """True if ``target``'s tree already holds the net change ``base`` -> ``head``: merging
    that change into it (three-way, from ``base``) would change nothing."""
    if tree_of(repo, base) == tree_of(repo, head):
        return True
    target_tree = tree_of(repo, target)
    ours = _probe(repo, target_tree, base, "wtr: target, for a content check")
    theirs = _probe(repo, tree_of(repo, head), base, "wtr: stream, for a content check")
    merged = merge_trees(repo, ours, theirs)
    return merged.tree == target_tree


@functools.lru_cache(maxsize=256)
def _probe(repo: Repository, tree: str, parent: str, message: str) -> str:
    """A throwaway commit of ``tree`` on ``parent`` (one per pair and process: clean checks
    every stream of a run against the same target)."""
    return commit_tree(repo, tree, [parent], message)


def _seed_index(worktree: Path, head: str, env: Mapping[str, str]) -> None:
    """Start a temporary index from the worktree's own (a sparse worktree's files outside
    its sparse set are absent on purpose, not deleted: its index says so), else from HEAD."""
    own = worktree / run_git(["rev-parse", "--git-path", "index"], worktree).stdout.strip()
    if own.is_file():
        shutil.copyfile(own, env["GIT_INDEX_FILE"])
    else:
        run_git(["read-tree", head], worktree, env=env)


def unique_commits(repo: Repository, upstream: str, head: str, base: str) -> list[str]:
    """Commits of ``base..head`` with no patch-equivalent in ``upstream`` (git cherry)."""
    out = repo.out("cherry", upstream, head, base)
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def delete_branch(repo: Repository, branch: str, expected: str) -> bool:
    """Delete ``branch`` only if it still points at ``expected``."""
    return repo.git("update-ref", "-d", f"refs/heads/{branch}", expected, check=False).ok


# -- what a run must leave alone: the user's refs, checkout, hooks and config ----------------


def user_refs(repo: Repository) -> dict[str, str]:
    """Every branch and tag, by full name, with the object it points at."""
    out = repo.out("for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def main_checkout_head(repo: Repository) -> str:
    """What HEAD of the main checkout is: the branch it names, else the commit. Read from
    its file (the guard looks after every stream; git writes HEAD by rename, so a reader
    sees the old or the new content)."""
    try:
        text = (repo.common_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        text = ""
    if text.startswith("ref: "):
        return text.removeprefix("ref: ").strip()
    if FULL_SHA.fullmatch(text):
        return text
    result = run_git(["symbolic-ref", "--quiet", "HEAD"], repo.root, check=False)
    if result.ok:
        return result.stdout.strip()
    return run_git(["rev-parse", "--verify", "--quiet", "HEAD"], repo.root,
                   check=False).stdout.strip()


def status_entries(worktree: Path) -> list[tuple[str, str]]:
    """(two-letter code, path) of each uncommitted or untracked path of ``worktree``."""
    # --no-optional-locks: this looks at the user's own checkout; never take its index lock
    # (a commit the user makes meanwhile would fail) nor rewrite its index.
    args = ["--no-optional-locks", "status", "--porcelain", "-z", "--no-renames",
            "--untracked-files=all"]
    out = run_git(args, worktree).stdout
    return [(entry[:2], entry[3:]) for entry in out.split("\0") if len(entry) > 3]


def hooks_dir(repo: Repository) -> Path:
    """Where git looks for hooks in this repository (core.hooksPath honoured)."""
    path = run_git(["rev-parse", "--path-format=absolute", "--git-path", "hooks"],
                   repo.root, check=False, hooks_off=False).stdout.strip()
    return Path(path) if path else repo.common_dir / "hooks"


# -- remotes ----------------------------------------------------------------------------------


def remote_names(repo: Repository) -> list[str]:
    return repo.out("remote").split()


def remote_url(repo: Repository, remote: str) -> str:
    return repo.out("remote", "get-url", "--", remote)


def upstream_remote(repo: Repository, branch: str) -> str | None:
    """The remote ``branch`` tracks (``branch.<name>.remote``), if it is set."""
    result = repo.git("config", "--get", f"branch.{branch}.remote", check=False)
    remote = result.stdout.strip()
    return remote if result.ok and remote and remote != "." else None


def remote_branch_commit(repo: Repository, remote: str, branch: str) -> str | None:
    """Where ``branch`` points on ``remote`` now (one round trip), None if it is not there."""
    out = run_git(["ls-remote", "--heads", "--", remote, f"refs/heads/{branch}"], repo.root).stdout
    for line in out.splitlines():
        commit, _, ref = line.partition("\t")
        if ref == f"refs/heads/{branch}":
            return commit
    return None


def push_branch(repo: Repository, remote: str, branch: str, commit: str | None,
                expected: str | None, also: Sequence[str] = ()) -> GitResult:
    """Set (or with ``commit`` None, delete) ``branch`` on ``remote``, only if it is still at
    ``expected`` there (None: only if it does not exist): a lease, never a blind force.
    ``also``: more refspecs, pushed in the same (atomic) push: all or none of them land.
    Hooks are not run: a pre-push hook may have been planted by an agent."""
    ref = f"refs/heads/{branch}"
    return repo.git("push", "--porcelain", "--no-verify", *(["--atomic"] if also else []),
                    f"--force-with-lease={ref}:{expected or ''}",
                    "--", remote, f"{commit or ''}:{ref}", *also, check=False)


def has_commit(repo: Repository, commit: str) -> bool:
    """Whether the commit is in the repository's object store (no network)."""
    return repo.git("cat-file", "-e", f"{commit}^{{commit}}", check=False).ok


# -- git's own lock files, left behind by a killed command ----------------------------------

STALE_LOCK_SECONDS = 5.0


def clear_stale_locks(repo: Repository, ref_folders: Sequence[str], worktrees: Sequence[Path],
                      timeout: float = 120.0) -> list[Path]:
    """Wait for git lock files (``*.lock``) under ``ref_folders``, ``packed-refs.lock`` and
    the registrations of ``worktrees`` while a live process holds them open; remove the
    ones no process holds that are older than a few seconds (their git was killed).
    Returns what was removed. Without /proc nothing is removed, only waited for."""
    deadline = time.monotonic() + timeout
    removed: list[Path] = []
    can_tell = Path("/proc/self/fd").is_dir()
    while locks := _lock_files(repo, ref_folders, worktrees):
        held = _held_open({str(lock) for lock in locks}) if can_tell else set()
        for lock in locks:
            if can_tell and str(lock) not in held and _age(lock) >= STALE_LOCK_SECONDS:
                lock.unlink(missing_ok=True)
                removed.append(lock)
                logs.debug("removed stale git lock", path=str(lock))
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return removed


def _lock_files(repo: Repository, ref_folders: Sequence[str],
                worktrees: Sequence[Path]) -> list[Path]:
    common = repo.common_dir
    found = [common / "packed-refs.lock"]
    for folder in ref_folders:
        found += (common / folder).rglob("*.lock") if (common / folder).is_dir() else []
    for path in worktrees:
        record = admin_dir(repo, path)
        found += record.glob("*.lock") if record is not None else []
    return [lock for lock in found if lock.is_file()]


def _held_open(paths: set[str]) -> set[str]:
    """Which of ``paths`` some process has open (every /proc/<pid>/fd we may read)."""
    held: set[str] = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            entries = list(fd_dir.iterdir())
        except OSError:
            continue
        for entry in entries:
            try:
                target = os.readlink(entry)
            except OSError:
                continue
            if target in paths:
                held.add(target)
    return held


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


# -- faithful replays --------------------------------------------------------------------


def has_merge_commits(repo: Repository, base: str, head: str) -> bool:
    return bool(repo.out("rev-list", "--merges", "--max-count=1", f"{base}..{head}"))


def commit_author_env(repo: Repository, commit: str) -> dict[str, str]:
    """The author of ``commit`` as GIT_AUTHOR_* variables (for a commit made in its name)."""
    name, email, date = repo.out("log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw",
                                 commit).split("\0")
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}


def squash_commit(repo: Repository, base: str, head: str, message: str) -> str:
    """One commit on ``base`` holding ``head``'s tree: the net change of ``base..head``."""
    env = {**identity_env(repo), **commit_author_env(repo, head)}
    args = ["commit-tree", tree_of(repo, head), "-p", base, "-F", "-"]
    return run_git(args, repo.root, stdin=message, env=env).stdout.strip()


def net_merge(repo: Repository, onto: str, base: str, head: str) -> TreeMerge:
    """``base..head``'s net change applied to ``onto``: a three-way merge whose base is
    ``base`` (git 2.39's merge-tree takes no --merge-base, so a stand-in commit with
    ``onto``'s tree and ``base`` as parent makes ``base`` the merge base)."""
    stand_in = commit_tree(repo, tree_of(repo, onto), [base], "wtr: stand-in")
    return merge_trees(repo, stand_in, head)


def update_checkout(worktree: Path, old: str, new: str) -> GitResult:
    """Bring the index and files of a clean checkout from ``old``'s tree to ``new``'s
    (its branch already points at ``new``); refuses to overwrite untracked files."""
    return run_git(["read-tree", "-m", "-u", old, new], worktree, check=False)


# -- recorded resolutions (rerere) -----------------------------------------------------------


def rerere_dir(repo: Repository) -> Path:
    return repo.common_dir / "rr-cache"


def exists_at(repo: Repository, commit: str, path: str) -> bool:
    """Whether ``path`` is in ``commit``'s tree."""
    return repo.git("cat-file", "-e", f"{commit}:{path}", check=False).ok


def blob_at(repo: Repository, tree: str, path: str) -> bytes | None:
    result = subprocess.run([git_executable(), "cat-file", "blob", f"{tree}:{path}"],
                            cwd=repo.root, capture_output=True, env=clean_env(), check=False)
    return result.stdout if result.returncode == 0 else None


def merge_file(current: bytes, base: bytes, other: bytes) -> bytes | None:
    """A three-way merge of file contents (git merge-file -p); None on a conflict."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for name, data in (("current", current), ("base", base), ("other", other)):
            (Path(tmp) / name).write_bytes(data)
            paths.append(str(Path(tmp) / name))
        result = subprocess.run([git_executable(), "merge-file", "-p", *paths], cwd=tmp,
                                capture_output=True, env=clean_env(), check=False)
    return result.stdout if result.returncode == 0 else None


def replace_files(repo: Repository, tree: str, files: Mapping[str, bytes]) -> str:
    """``tree`` with the given files' contents replaced (through a temporary index)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run_git(["read-tree", tree], repo.root, env=env)
        for path, data in files.items():
            (Path(tmp) / "blob").write_bytes(data)
            blob = run_git(["hash-object", "-w", "--", str(Path(tmp) / "blob")],
                           repo.root).stdout.strip()
            mode = run_git(["ls-files", "-s", "--", path], repo.root, env=env).stdout.split()
            run_git(["update-index", "--cacheinfo", f"{mode[0] if mode else '100644'},{blob},"
                     f"{path}"], repo.root, env=env)
        return run_git(["write-tree"], repo.root, env=env).stdout.strip()


# -- reading and writing objects in one process (the in-memory replay) -------------------------


class ObjectReader:
    """Many objects read through one persistent ``git cat-file --batch``.

    GitPython's object database does the reading (imported here, on first use: never on
    the start-up path of a command an agent runs). Its parser knows SHA-1 object ids
    only, so a SHA-256 repository is read through a ``cat-file --batch`` of our own.
    """

    def __init__(self, repo: Repository) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._gitpython: Any = None
        if object_format(repo) == "sha1":
            import git as gitpython  # GitPython

            self._gitpython = gitpython.Git(str(repo.root))
            wanted = clean_env()
            self._gitpython.update_environment(
                GIT_TERMINAL_PROMPT="0",
                **{key: None for key in os.environ if key not in wanted})
        else:
            self._proc = subprocess.Popen(
                [git_executable(), "cat-file", "--batch"], cwd=repo.root, env=clean_env(),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

    def read(self, name: str) -> tuple[str, bytes]:
        """The type and content of object ``name`` (UnknownRef if there is none)."""
        if self._gitpython is not None:
            try:
                _, kind, _, data = self._gitpython.get_object_data(name)
            except ValueError:
                raise UnknownRef(f"no object {name}") from None
            return kind.decode() if isinstance(kind, bytes) else str(kind), bytes(data)
        assert self._proc is not None and self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(name.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:
            raise UnknownRef(f"no object {name}")
        data = self._proc.stdout.read(int(header[2]) + 1)[:-1]
        return header[1].decode(), data

    def close(self) -> None:
        if self._gitpython is not None:
            self._gitpython.clear_cache()  # ends its cat-file processes
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def object_format(repo: Repository) -> str:
    return _object_format(repo.root)


@functools.cache
def _object_format(root: Path) -> str:
    result = run_git(["rev-parse", "--show-object-format"], root, check=False)
    return result.stdout.strip() or "sha1"


def update_refs(repo: Repository, refs: Mapping[str, str]) -> None:
    """Point several refs at once (one transaction, one process)."""
    if refs:
        run_git(["update-ref", "--stdin"], repo.root,
                stdin="".join(f"update {ref} {oid}\n" for ref, oid in refs.items()))


def write_commit_object(repo: Repository, data: bytes) -> str:
    """Store a commit object as a loose object, as git itself does (zlib, then rename)."""
    import hashlib
    import zlib

    if object_format(repo) != "sha1":
        return run_git(["hash-object", "-t", "commit", "-w", "--stdin"], repo.root,
                       stdin=data.decode("utf-8", "surrogateescape")).stdout.strip()
    raw = b"commit %d\0" % len(data) + data
    oid = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    folder = repo.common_dir / "objects" / oid[:2]
    path = folder / oid[2:]
    if not path.exists():
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="tmp_obj_")
        with os.fdopen(fd, "wb") as handle:
            handle.write(zlib.compress(raw))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    return oid


def committer_ident(repo: Repository) -> str:
    """``Name <email> seconds zone``: who commits now (GIT_COMMITTER_* and config honoured)."""
    return run_git(["var", "GIT_COMMITTER_IDENT"], repo.root,
                   env=identity_env(repo)).stdout.strip()

def global_excludes(repo: Repository) -> str:
    """The text of the user's own ignore file (``core.excludesFile``, else git's default)."""
    configured = repo.git("config", "--get", "--path", "core.excludesFile", check=False)
    if configured.ok and configured.stdout.strip():
        path = Path(configured.stdout.strip())
    else:
        config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        path = Path(config_home) / "git" / "ignore"
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def literal_pattern(path: str) -> str:
    """A gitignore line that matches exactly ``path`` (from the repository root)."""
    escaped = re.sub(r"([\\*?\[])", r"\\\1", path)
    stripped = escaped.rstrip(" ")
    return "/" + stripped + "\\ " * (len(escaped) - len(stripped))


def git_dir_of(worktree: Path) -> Path:
    """The git metadata folder of a worktree (``.git/worktrees/<name>`` for a linked one)."""
    return Path(run_git(["rev-parse", "--absolute-git-dir"], worktree).stdout.strip())
