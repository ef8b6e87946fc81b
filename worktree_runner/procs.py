"""The one place child processes start: agents, setup and verify commands.

Each child gets a clean environment (no inherited GIT_DIR & co, see git.clean_env), runs
in its own process group so that it and everything it spawned can be stopped together,
reads /dev/null and appends its output to a log file, never to a pipe of the runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from worktree_runner import logs, statefs
from worktree_runner.errors import WtrError
from worktree_runner.git import clean_env
from worktree_runner.supervise import signal_all

KILL_GRACE_SECONDS = float(os.environ.get("WTR_KILL_GRACE", "5"))


def write_wtr_shim(bin_dir: Path) -> Path:
    """Put a ``wtr`` that runs this very installation in ``bin_dir`` (for the agents' PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "wtr"
    # -P: the agent's worktree (its cwd) may hold a package of the same name; never import it.
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -P -m worktree_runner "$@"\n')
    shim.chmod(0o755)
    return bin_dir


def child_env(extra: Mapping[str, str], bin_dir: Path | None = None) -> dict[str, str]:
    env = clean_env(extra)
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def with_pwd(env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """``env`` with ``PWD`` naming ``cwd`` and no ``OLDPWD``: a child that takes its folder
    from ``$PWD`` (as some agent CLIs do) must find its own, never the caller's."""
    return {**{k: v for k, v in env.items() if k != "OLDPWD"}, "PWD": str(Path(cwd).absolute())}


def as_argv(command: Sequence[str] | str) -> list[str]:
    """A list is exec'd as it is; a string is run by ``sh -c``."""
    return ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)


def start(argv: Sequence[str] | str, cwd: Path, env: Mapping[str, str],
          log_path: Path, keep: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """Start a child in its own process group; a string is run by ``sh -c``. ``keep``:
    descriptors the child inherits (no other does)."""
    command = as_argv(argv)
    with os.fdopen(statefs.open_append(log_path), "ab") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=with_pwd(env, cwd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            pass_fds=tuple(keep),
        )
    logs.debug("started", command=command, cwd=str(cwd), pid=process.pid)
    return process


def group_alive(pgid: int) -> bool:
    if pgid <= 1:  # 0 and 1 would mean our own group, or every process
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    if pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_group(pgid: int, process: subprocess.Popen[bytes] | None = None,
               grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM a process group, SIGKILL what is left after ``grace``. ``process``, the
    group's leader when it is our child, is waited for so that it leaves no zombie."""
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        leader_gone = process is None or process.poll() is not None
        if leader_gone and not group_alive(pgid):
            return
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    if process is not None:
        process.wait()


def reap_group(pgid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """After the leader exited: stop whatever it left running in its group."""
    if group_alive(pgid):
        stop_group(pgid, process, grace=1.0)


def tagged_processes(state_dir: Path, stream: str | None = None) -> list[int]:
    """Processes whose environment names this run's state folder (unique to a repository
    and run) and stream: everything an agent, a setup or a verify command started inherits
    it, also what left the supervisor's tree when the supervisor itself was killed. Never
    this process."""
    marks = [f"WTR_STATE_DIR={state_dir}".encode()]
    if stream is not None:
        marks.append(f"WTR_STREAM={stream}".encode())
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if all(mark in environ for mark in marks):
            found.append(int(entry))
    return found


def end_tagged(state_dir: Path, stream: str | None = None, grace: float = 2.0) -> int:
    """Stop what :func:`tagged_processes` finds, as the supervisor would: SIGTERM first (a
    git command then removes its lock files), SIGKILL what is left after ``grace`` (stopped
    first, so that none forks meanwhile). How many there were. Only for a stream whose
    supervisor could not do it."""
    pids = tagged_processes(state_dir, stream)
    if not pids:
        return 0
    signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap_each(pids)
        if not (left := [pid for pid in tagged_processes(state_dir, stream) if pid in pids]):
            return len(pids)
        time.sleep(0.05)
    left = tagged_processes(state_dir, stream)
    signal_all(left, signal.SIGSTOP)
    signal_all(left, signal.SIGKILL)
    _reap_each(left)
    return len(set(pids) | set(left))


def _reap_each(pids: Sequence[int]) -> None:
    """Collect the exit of those that were our children (no zombie left behind)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def run_logged(command: str, cwd: Path, env: Mapping[str, str], log_path: Path,
               timeout: float | None = None) -> int:
    """Run a shell command to completion with its output in ``log_path``; its exit code."""
    statefs.append_text(log_path, f"$ {command}\n")
    process = start(supervised("-", command), cwd, env, log_path)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process.pid, process)
        return -int(signal.SIGKILL)
    finally:
        reap_group(process.pid, process)


def capture(argv: Sequence[str], cwd: Path, timeout: float = 120) -> tuple[int, str, str]:
    """Run a helper program (a forge's CLI) to completion: exit code, stdout, stderr.
    A program that is missing or hangs answers like one that failed (127, -9)."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, env=with_pwd(child_env({}), cwd),
                              stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return -int(signal.SIGKILL), "", f"{argv[0]}: no answer in {timeout:.0f} s"
    logs.debug("ran", command=list(argv), returncode=done.returncode)
    return done.returncode, done.stdout, done.stderr


def ask(command: Sequence[str] | str, cwd: Path, env: Mapping[str, str], given: str,
        log_path: Path, timeout: float) -> tuple[int, str]:
    """Run a judge: ``given`` on its stdin, its stderr appended to ``log_path``; its exit
    code and stdout. A program that is missing or hangs answers like one that failed."""
    shown = command if isinstance(command, str) else " ".join(command)
    statefs.append_text(log_path, f"$ {shown}\n")
    try:
        with os.fdopen(statefs.open_append(log_path), "ab") as errors:
            process = subprocess.Popen(as_argv(command), cwd=cwd, env=with_pwd(env, cwd),
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=errors, start_new_session=True)
    except OSError as exc:
        statefs.append_text(log_path, f"cannot start it: {exc.strerror}\n")
        return 127, ""
    try:
        out, _ = process.communicate(given.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process.pid, process)
        return -int(signal.SIGKILL), ""
    finally:
        reap_group(process.pid, process)
    return process.returncode, out.decode(errors="replace")


def run_forwarding_signals(command: Sequence[str], cwd: Path | None = None,
                           env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` to its end (for ``wtr lock``; ``wtr attach``'s session, on the
    terminal, in ``cwd`` with ``env`` and ``PWD``), passing SIGTERM and SIGHUP on to it
    instead of dying first: whoever holds something while it runs holds it until it has
    exited. SIGINT from a terminal reaches the command by itself (same process group), so
    it is only not allowed to end us early. Exit code as a shell gives it (128 + signal)."""
    process = subprocess.Popen(list(command), cwd=cwd,
                               env=with_pwd(env, cwd) if env is not None and cwd else env)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)

    handlers = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    handlers[signal.SIGINT] = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        code = process.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code


# -- agents: started through the supervisor, or adopted after a runner crash ----------------


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), to tell a reused pid apart; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


@dataclass
class Agent:
    """An agent's supervisor: the leader of the agent's process group."""

    pid: int
    started: int | None
    exit_file: Path
    process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.started is not None and process_start_time(self.pid) == self.started

    def wait(self, seconds: float) -> None:
        """Return when the agent exits, or after ``seconds``."""
        if self.process is None:
            time.sleep(seconds)
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=seconds)

    def exit_code(self) -> int | None:
        """The agent's exit code, from the supervisor's record; None if it left none."""
        try:
            return int(json.loads(statefs.read_text(self.exit_file))["exit_code"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.process.returncode if self.process is not None else None

    def stop(self, grace: float = KILL_GRACE_SECONDS) -> None:
        stop_group(self.pid, self.process, grace)

    def reap(self) -> None:
        """Once the agent has exited: stop whatever it left running in its group."""
        reap_group(self.pid, self.process)


# The supervisor runs as a file, isolated (-I: no PYTHON* variables, no user site, not the
# agent's folder on sys.path) and without site-packages (-S): it needs the standard library
# only, and one starts per agent, setup and verify command.
SUPERVISOR_FILE = str(Path(__file__).with_name("supervise.py"))


def supervised(exit_file: Path | str, argv: Sequence[str] | str,
               options: Sequence[str] = ()) -> list[str]:
    """``argv`` under the supervisor, which keeps every descendant below it (supervise.py)."""
    return [sys.executable, "-I", "-S", SUPERVISOR_FILE, str(exit_file), *options,
            "--", *as_argv(argv)]


def start_agent(argv: Sequence[str] | str, cwd: Path, env: Mapping[str, str], log_path: Path,
                exit_file: Path, log_limit: int | None = None,
                bound: bool = False) -> Agent:
    """Start the agent under its supervisor; with ``log_limit``, the supervisor writes the
    agent's output to ``log_path`` itself and keeps the file under that many bytes.
    ``bound``: the agent is stopped when this process dies (else it runs on, for a
    ``wtr resume`` to adopt)."""
    exit_file.unlink(missing_ok=True)
    capped = ["--log", str(log_path), "--log-limit", str(log_limit)] if log_limit else []
    if bound:
        capped += ["--parent", str(os.getpid())]
    with _agent_lock(exit_file.parent) as lock:
        process = start(supervised(exit_file, argv, [*capped, "--lock", str(lock)]), cwd, env,
                        log_path, keep=(lock,))
    return Agent(process.pid, process_start_time(process.pid), exit_file, process)


# A stream's agent lock (a file beside its exit files) is held by the agent's supervisor for
# its whole life, from before the runner forks it: a flock belongs to the open file, which
# the forked child inherits and keeps across its exec (pass_fds), and the runner closes its
# own descriptor once the child runs. Between fork and exec the child's command line and
# environment are still the runner's, so nothing else tells it apart; with the lock, a
# runner killed there leaves it findable, and a free lock says for certain that no
# supervisor of the stream lives or is about to. (filelock cannot hand a lock to a child.)
AGENT_LOCK = "agent.lock"


@contextlib.contextmanager
def _agent_lock(stream_dir: Path) -> Iterator[int]:
    """The stream's agent lock, taken; yields the descriptor that holds it."""
    fd = statefs.open_append(stream_dir / AGENT_LOCK)
    try:
        _take(fd, stream_dir)
        yield fd
    finally:
        os.close(fd)


def _take(fd: int, stream_dir: Path) -> None:
    """Wait for the lock while a supervisor just stopped is still dying; never start an
    agent beside one that lives on."""
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise WtrError(
                    f"an earlier agent of this stream still runs (its supervisor holds "
                    f"{stream_dir / AGENT_LOCK})",
                    hint="stop it, then 'wtr retry' the stream") from None
            time.sleep(0.05)


def agent_lock_held(stream_dir: Path) -> bool:
    """Whether a supervisor of the stream (or a child forked to become one) holds its lock."""
    try:
        handle = statefs.open_read(stream_dir / AGENT_LOCK)
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


SUPERVISOR_MODULE = "worktree_runner.supervise"  # how earlier versions started it


def _supervisor_exit_file(argv: list[bytes]) -> Path | None:
    """The EXIT_FILE argument if ``argv`` is a supervisor's command line, else None."""
    for i, arg in enumerate(argv[:6]):
        if arg == SUPERVISOR_MODULE.encode() or arg.endswith(b"worktree_runner/supervise.py"):
            return Path(os.fsdecode(argv[i + 1])) if i + 1 < len(argv) else None
    return None


def stream_agents(stream_dir: Path, waiting: Callable[[], None] = lambda: None) -> list[Agent]:
    """The stream's live supervisors (:func:`live_agents`), one still starting included:
    while the stream's agent lock is held and no supervisor is found, a child forked to
    become one has not exec'd yet. It is waited for (``waiting`` is told, once) until it is
    one or is gone, however long that takes: [] means that none lives, for certain."""
    told = False
    while not (alive := live_agents(stream_dir)) and agent_lock_held(stream_dir):
        if not told:
            waiting()
            told = True
        time.sleep(0.02)
    return alive


def live_agents(stream_dir: Path) -> list[Agent]:
    """Supervisors still alive whose exit file is in ``stream_dir``: agents of that stream,
    whoever started them (a runner killed before it could record the pid included)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        exit_file = _supervisor_exit_file(argv)
        if exit_file is None or exit_file.parent != stream_dir:
            continue
        pid = int(cmdline.parent.name)
        started = process_start_time(pid)
        if started is not None:
            found.append(Agent(pid, started, exit_file))
    return found
