"""The agent's supervisor: ``python -I -S .../worktree_runner/supervise.py EXIT_FILE
[--log PATH --log-limit BYTES] [--parent PID] [--lock FD] -- CMD...``.

It leads the agent's process group, runs the agent, and writes the agent's exit code to
EXIT_FILE before exiting with the same code. The runner may die meanwhile (kill -9): the
code is not lost, and ``wtr resume`` reads it. Standard library only, so it starts fast.

With ``--log``, the agent's output comes through a pipe and this process appends it to
PATH, keeping the file under BYTES: past it, the middle of the log is dropped (its start
and its end are kept) and a marker line says how much went. Being the only writer of the
log while the agent runs, it can cut the file without losing what is being written.

On Linux it is a child subreaper: whatever the agent started, ``setsid`` or double-forked
daemons included, stays below it, and is stopped before it exits, so no process of a
stream outlives the stream. SIGTERM (the runner stopping the stream) is passed to every
descendant at once; what is left after most of the grace period is killed. EXIT_FILE
``-`` records nothing (setup and verify commands). With ``--parent``, the death of that
process (the runner) stops the agent the same way (a Dask worker's agents end with it).
``--lock FD``: an inherited descriptor holding the stream's agent lock (procs.py), held
until this process exits and never passed on to the agent.
"""

from __future__ import annotations

# Only what starts fast: one supervisor starts per agent, setup and verify command, so no
# subprocess or typing (they would nearly double its start-up).
import contextlib
import os
import select
import signal
import stat
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import io

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
GRACE_SECONDS = float(os.environ.get("WTR_KILL_GRACE", "5"))
# The runner kills the whole group after its grace: finish before it does.
OWN_GRACE_SHARE = 0.6


class _Stop:
    at: float | None = None  # when the runner asked us to stop
    child: int | None = None  # the agent, while it runs


def become_subreaper() -> bool:
    """Orphans of our descendants come to us, not to init (Linux; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def follow_parent(parent: int) -> bool:
    """SIGTERM to us (and so to the agent) when ``parent`` dies: for a runner whose agents
    must not outlive it (a Dask worker's stream gets its next attempt elsewhere). False if
    it is gone already. Linux; elsewhere, only the check."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == parent  # (it may have died before the prctl)


def _processes() -> list[tuple[int, int, str]]:
    """(pid, parent pid, state) of every process, read from /proc."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        state, ppid = stat[stat.rindex(")") + 2:].split()[:2]
        found.append((int(entry), int(ppid), state))
    return found


def descendants(root: int) -> list[int]:
    """Living (not zombie) processes below ``root``."""
    below = _tree_below(root)
    if below is not None:
        return [pid for pid, _, state in below if state not in ("Z", "X")]
    children: dict[int, list[int]] = {}
    for pid, ppid, state in _processes():
        if state not in ("Z", "X"):
            children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _tree_below(root: int) -> list[tuple[int, int, str]] | None:
    """(pid, parent pid, state) of every process below ``root``, walked through the kernel's list of
    each thread's children: a cost in the size of the tree, not of the whole machine (every
    stream's supervisor looks several times). None where the kernel has no such list."""
    if not os.path.exists(f"/proc/{root}/task/{root}/children"):
        return None
    found: list[tuple[int, int, str]] = []
    todo, seen = [root], {root}
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # it ended meanwhile; its children (if any) came to us
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
                    kids = [int(kid) for kid in handle.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    todo.append(kid)
                    found.append((kid, pid, _state(kid)))
    return found


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return "X"
    return stat[stat.rindex(")") + 2:].split()[0]


def signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def reap_orphans() -> None:
    """Collect the exit of adopted orphans that ended. Never the agent itself: its code
    is read by ``Agent.poll``."""
    me = os.getpid()
    below = _tree_below(me)
    for pid, ppid, state in below if below is not None else _processes():
        if ppid == me and state == "Z" and pid != _Stop.child:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def end_descendants(grace: float) -> None:
    """SIGTERM everything below us, SIGKILL what is left after ``grace``; reap it all."""
    me = os.getpid()
    signal_all(descendants(me), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while descendants(me) and time.monotonic() < deadline:
        reap_orphans()
        time.sleep(0.05)
    for _ in range(50):  # stopped first, so that none can fork while the others die
        left = descendants(me)
        if not left:
            break
        signal_all(left, signal.SIGSTOP)
        signal_all(left, signal.SIGKILL)
        reap_orphans()
        time.sleep(0.02)
    reap_orphans()


def _on_stop(signum: int, frame: object) -> None:
    """The group got the signal too; pass it to descendants in other sessions as well."""
    if _Stop.at is None:
        _Stop.at = time.monotonic()
    signal_all(descendants(os.getpid()), signal.SIGTERM)


USAGE = ("usage: python supervise.py EXIT_FILE [--log PATH --log-limit N] [--parent PID] "
         "[--lock FD] -- CMD...")
# After the agent exits, what it left running may hold the pipe open: read on this long.
DRAIN_SECONDS = 2.0


def main(argv: list[str]) -> int:
    try:
        split = argv.index("--")
        exit_file, options, command = argv[0], argv[1:split], argv[split + 1:]
        log = dict(zip(options[::2], options[1::2], strict=True))
        if not command or set(log) - {"--log", "--log-limit", "--parent", "--lock"}:
            raise ValueError
        limit = int(log.get("--log-limit", "0"))
        parent = int(log.get("--parent", "0"))
        lock = int(log.get("--lock", "-1"))
    except (ValueError, IndexError):
        print(USAGE, file=sys.stderr)
        return 2
    if lock >= 0:  # kept open (held) to the end; the agent must not hold it after us
        with contextlib.suppress(OSError):
            os.set_inheritable(lock, False)
    become_subreaper()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_stop)
    exit_at = Place.of(exit_file)  # (before the agent starts: see Place)
    log_at = Place.of(log.get("--log", "-"))
    if parent and not follow_parent(parent):
        _record(Place.of(exit_file), -signal.SIGTERM)
        return 128 + signal.SIGTERM
    try:
        child = Agent(command, piped="--log" in log)
    except OSError as exc:
        print(f"wtr: cannot start the agent {command[0]!r}: {exc.strerror}", flush=True)
        code = 127
    else:
        _Stop.child = child.pid
        if child.output is not None:
            with CappedLog(log_at, limit) as out:
                _pump(child, child.output, out)
            os.close(child.output)
        code = _wait(child)
        _Stop.child = None
    end_descendants(0.0 if _Stop.at is not None else min(2.0, GRACE_SECONDS))
    # On a full disk the runner, our parent, still gets the code from our exit status.
    with contextlib.suppress(OSError):
        _record(exit_at, code)
    return code if code >= 0 else 128 - code


# Python ignores these; the agent gets them back at their defaults (as subprocess does).
_DEFAULTED = (signal.SIGPIPE, signal.SIGXFSZ)


class Agent:
    """The agent's process, started with ``posix_spawn`` (its output, when ``piped``, into
    a pipe whose read end is ``output``); its end is seen through a pidfd, without
    polling, where the kernel has them."""

    def __init__(self, command: list[str], piped: bool) -> None:
        self.output: int | None = None
        self.code: int | None = None
        if piped:
            self.output, write_end = os.pipe()
            try:
                self.pid = os.posix_spawnp(
                    command[0], command, os.environ, setsigdef=_DEFAULTED,
                    file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1),
                                  (os.POSIX_SPAWN_DUP2, write_end, 2)])
            except BaseException:
                os.close(self.output)
                raise
            finally:
                os.close(write_end)
        else:
            self.pid = os.posix_spawnp(command[0], command, os.environ, setsigdef=_DEFAULTED)
        try:
            self.ended: int | None = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # an older kernel: poll
            self.ended = None

    def poll(self) -> int | None:
        """The exit code (negative: the signal that ended it), None while it runs."""
        if self.code is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float) -> int | None:
        """``poll`` once the agent has ended or ``timeout`` seconds have passed."""
        if self.poll() is None:
            if self.ended is not None:
                select.select([self.ended], [], [], timeout)
            else:
                time.sleep(min(timeout, 0.05))
        return self.poll()


def _pump(child: Agent, fd: int, out: CappedLog) -> None:
    """Copy the agent's output to the log until the pipe closes, or shortly after the agent
    exited (descendants it left may keep the pipe open; the runner stops them)."""
    deadline: float | None = None
    while deadline is None or time.monotonic() < deadline:
        _kill_when_overdue()
        # (the agent's pidfd only while it runs: once it ended, it is always ready)
        watched = [fd] if deadline is not None or child.ended is None else [fd, child.ended]
        ready, _, _ = select.select(watched, [], [], 0.2)
        if fd in ready:
            data = os.read(fd, 65536)
            if not data:
                return
            out.write(data)
        if deadline is None and child.poll() is not None:
            deadline = time.monotonic() + DRAIN_SECONDS


class CappedLog:
    """An append-only log file kept under ``limit`` bytes (0: no limit)."""

    def __init__(self, place: Place | None, limit: int) -> None:
        self.place = place
        self.limit = limit
        self.dropped = 0
        try:
            fd = place.open_log() if place is not None else os.dup(1)
        except OSError:  # kept changing under us: the runner's own descriptor (our stdout)
            fd = os.dup(1)
        self.handle = open(fd, "ab", buffering=0)  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> CappedLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
            if self.limit and self.handle.tell() > self.limit:
                self._trim()
        except OSError:  # a full disk must not stop the agent's pipe
            pass

    def _reopened(self) -> int:
        """Our log file opened again to read and write it: through /proc the file itself,
        whatever its name now is; else by its name, if that is still the same file."""
        own = self.handle.fileno()
        if os.path.isdir("/proc/self/fd"):
            return os.open(f"/proc/self/fd/{own}", os.O_RDWR | os.O_CLOEXEC)
        if self.place is None:
            raise OSError("no log file to cut")
        fd = self.place.open(os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        now, ours = os.fstat(fd), os.fstat(own)
        if (now.st_dev, now.st_ino) != (ours.st_dev, ours.st_ino):
            os.close(fd)
            raise OSError("the log's name is no longer the log")
        return fd

    def _trim(self) -> None:
        """Keep the first quarter of the limit and the last half, cut at line ends."""
        with open(self._reopened(), "r+b") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(0)
            head = log.read(self.limit // 4)
            head = head[: head.rfind(b"\n") + 1]
            tail_start = size - self.limit // 2
            log.seek(tail_start)
            first_line = log.readline()
            tail_start += len(first_line) if first_line.endswith(b"\n") else 0
            self.dropped += tail_start - len(head)
            marker = (f"[wtr: {self.dropped} bytes of output dropped here; a stream's log "
                      f"keeps at most {self.limit} bytes (log_limit), its start and its "
                      "end]\n").encode()
            _move(log, tail_start, len(head) + len(marker), size - tail_start)
            log.seek(len(head))
            log.write(marker)
            log.truncate(len(head) + len(marker) + size - tail_start)


def _move(log: io.BufferedRandom, source: int, target: int, length: int) -> None:
    """Copy ``length`` bytes from ``source`` down to ``target`` (< source) in chunks."""
    done = 0
    while done < length:
        log.seek(source + done)
        chunk = log.read(min(1 << 20, length - done))
        log.seek(target + done)
        log.write(chunk)
        done += len(chunk)


def _wait(child: Agent) -> int:
    """The child's exit code; once stopped, the child and its tree are killed before the
    runner's grace runs out."""
    while (code := child.wait(0.1)) is None:
        _kill_when_overdue()
    return code


def _kill_when_overdue() -> None:
    if _Stop.at is not None and time.monotonic() - _Stop.at > GRACE_SECONDS * OWN_GRACE_SHARE:
        end_descendants(0.0)


# The log and the exit file lie in a folder the agent can write: it may put a symlink (to a
# file outside its sandbox), a FIFO or a folder in their place, or move the folder itself
# and put a symlink there. The folder is opened before the agent starts, and a name in it
# is never followed nor opened unless it is a regular file of its own: a new file is put in
# the place of anything else (the runner's statefs.py does the same).
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Place:
    """A file's name in its folder, the folder held open."""

    def __init__(self, path: str) -> None:
        self.name = os.path.basename(path)
        self.folder = os.open(os.path.dirname(path) or ".", _FOLDER)

    @classmethod
    def of(cls, path: str) -> Place | None:
        """The place of ``path``; None for ``-`` (nothing to write) or a folder that is not
        one (then the runner still has the exit code, from our own exit status)."""
        if path == "-":
            return None
        try:
            return cls(path)
        except OSError:
            return None

    def open(self, flags: int, mode: int = 0o644) -> int:
        return os.open(self.name, flags, mode, dir_fd=self.folder)

    def open_log(self) -> int:
        """A descriptor appending to the regular file (made if missing)."""
        for _ in range(3):
            with contextlib.suppress(OSError):
                fd = self.open(_APPEND)
                info = os.fstat(fd)
                if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                    os.set_blocking(fd, True)
                    return fd
                os.close(fd)
            self.put_new(b"[wtr: the log was not a regular file; a new one was put in its "
                         b"place]\n")
        raise OSError(f"{self.name}: not a regular file")

    def put_new(self, data: bytes) -> None:
        """A new file holding ``data`` renamed over the name (whatever is there replaced)."""
        tmp = f".{self.name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.folder)
        fd = os.open(tmp, _NEW, 0o644, dir_fd=self.folder)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.name, src_dir_fd=self.folder, dst_dir_fd=self.folder)


def _record(place: Place | None, code: int) -> None:
    if place is not None:  # JSON, without importing json
        place.put_new(f'{{"exit_code": {int(code)}, "ended_at": {time.time()!r}}}'.encode())

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
