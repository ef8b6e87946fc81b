"""Files in a folder an agent can write: its stream's folder in the run's state.

An agent can put anything there in place of a file the runner reads or writes: a symlink
to a file outside its sandbox, a FIFO that blocks whoever opens it, a folder, a hard link
to a file of someone else's. So nothing here follows a symlink or opens what is not a
regular file of its own. Reading such a thing fails as an ``OSError`` (:class:`NotAFile`),
as a missing file does, and never blocks. Writing replaces it: a whole file by a temporary
file renamed over the name (the rename replaces a symlink, it never writes through it); an
append opens the name without following it and checks what it got, and anything else there
is replaced by a new file whose first line says what it replaced. The folders from the
agent's folder down to the file are opened the same way (a symlink or a file in the place
of one is replaced by a new folder when writing); the folders above it are the runner's
own, and read-only to a sandboxed agent.

The supervisor (supervise.py) runs on the standard library alone and has its own small
copy of the append.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_FOLDER = (errno.ELOOP, errno.ENOTDIR)


class NotAFile(OSError):
    """Something other than a regular file of its own where the runner expects one."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(errno.EINVAL, f"{what}, not a regular file: not opened", str(path))
        self.what = what


def what_is(info: os.stat_result) -> str | None:
    """What ``info`` (an lstat or fstat) describes when it is not a regular file of its own."""
    kinds = ((stat.S_ISLNK, "a symlink"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    found = next((name for test, name in kinds if test(info.st_mode)), None)
    if found is None and info.st_nlink > 1:
        return "a hard link to another file"
    return found


def kind(path: Path) -> str | None:
    """What lies at ``path`` when it is not a regular file of its own; None for a regular
    file, or for nothing at all."""
    try:
        return what_is(os.lstat(path))
    except OSError:
        return None


def is_file(path: Path) -> bool:
    """A regular file of its own lies at ``path`` (a symlink to one does not count)."""
    try:
        return what_is(os.lstat(path)) is None
    except OSError:
        return False


def size(path: Path) -> int:
    """The size of the regular file at ``path``; 0 for anything else or nothing."""
    try:
        info = os.lstat(path)
    except OSError:
        return 0
    return info.st_size if what_is(info) is None else 0


# -- reading ---------------------------------------------------------------------------------


def open_read(path: Path, below: Path | None = None) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file of its own; else ``OSError``
    (FileNotFoundError, or :class:`NotAFile`). ``below``: the agent's folder, when the
    file lies deeper than directly in it."""
    with _folder(path.parent, below, create=False) as folder:
        fd = os.open(path.name, _READ, dir_fd=folder)
    try:
        _check(fd, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_text(path: Path, below: Path | None = None) -> str:
    """The text of the regular file at ``path`` (undecodable bytes replaced); ``OSError``
    as :func:`open_read`."""
    with open_read(path, below) as handle:
        return handle.read().decode("utf-8", errors="replace")


# -- writing ---------------------------------------------------------------------------------


def write_text(path: Path, text: str, mode: int = 0o644, below: Path | None = None) -> str | None:
    """Write ``path`` whole, by a temporary file renamed over it: what was there is replaced,
    never written through. What it replaced when that was not a regular file of its own."""
    with _folder(path.parent, below, create=True) as folder:
        return _replace(folder, path.name, text.encode(), mode)


def open_append(path: Path, below: Path | None = None) -> int:
    """A descriptor that appends to the regular file at ``path``, made if missing; anything
    else there is first replaced by a new file that says so in its first line."""
    with _folder(path.parent, below, create=True) as folder:
        for _ in range(3):
            was = _kind_in(folder, path.name)
            if was is not None:
                _replace(folder, path.name, _replaced_note(path.name, was).encode(), 0o644)
            fd = os.open(path.name, _APPEND, 0o644, dir_fd=folder)
            try:
                _check(fd, path)
            except NotAFile:  # swapped between the look and the open
                os.close(fd)
                continue
            os.set_blocking(fd, True)
            return fd
    raise NotAFile(path, "something that keeps changing")


def append_text(path: Path, text: str, below: Path | None = None) -> None:
    """Append ``text`` to ``path`` as :func:`open_append` does."""
    fd = open_append(path, below)
    with os.fdopen(fd, "ab") as out:
        out.write(text.encode())


def ensure_folder(path: Path, below: Path | None = None) -> None:
    """``path`` is a real folder (made if missing; a symlink, or anything else, in its place
    replaced by a new one)."""
    with _folder(path, below, create=True):
        pass


def _replaced_note(name: str, was: str) -> str:
    return (f"[wtr: {name} was {was}, not a file; the runner did not follow or open it and "
            "put this new file in its place]\n")


def _replace(folder: int, name: str, data: bytes, mode: int) -> str | None:
    was = _kind_in(folder, name)
    if was == "a folder":
        shutil.rmtree(name, dir_fd=folder)
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(temporary, _NEW, mode, dir_fd=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=folder)
        raise
    return was


def _kind_in(folder: int, name: str) -> str | None:
    try:
        return what_is(os.stat(name, dir_fd=folder, follow_symlinks=False))
    except FileNotFoundError:
        return None


def _check(fd: int, path: Path) -> None:
    was = what_is(os.fstat(fd))
    if was is not None:
        raise NotAFile(path, was)


# -- the folders -----------------------------------------------------------------------------


@contextlib.contextmanager
def _folder(path: Path, below: Path | None, create: bool) -> Iterator[int]:
    """``path`` opened as a folder, each part from ``below`` (default: ``path`` itself) down
    never through a symlink."""
    top = path if below is None else below
    if create:
        top.parent.mkdir(parents=True, exist_ok=True)
    fd = _step(None, str(top), create)
    try:
        for part in path.relative_to(top).parts:
            inner = _step(fd, part, create)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


def _step(at: int | None, name: str, create: bool) -> int:
    """Folder ``name`` (in the folder ``at``) opened without following a symlink; with
    ``create``, made, or put in the place of whatever else is there."""
    try:
        return os.open(name, _FOLDER, dir_fd=at)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if not create or exc.errno not in _NOT_A_FOLDER:
            raise
        os.unlink(name, dir_fd=at)
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=at)
    return os.open(name, _FOLDER, dir_fd=at)
