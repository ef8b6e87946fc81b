"""Helpers shared by the benchmark scripts (scripts/bench). Standard library only.

Every command runs with an isolated git config (see isolated_env) and stops the benchmark
with its output when it fails; timed commands report wall-clock seconds and peak memory.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
PROG = Path(sys.argv[0]).name


def fail(message: str) -> NoReturn:
    sys.exit(f"{PROG}: {message}")


def find_wtr(given: Path | None) -> str:
    """--wtr if given, else <project root>/.venv/bin/wtr, else wtr on PATH; its modules
    byte-compiled (``byte_compile``)."""
    if given is not None:
        if not os.access(given, os.X_OK):
            fail(f"--wtr {given} is not an executable file")
        found: str | None = str(given.resolve())
    elif os.access(local := ROOT / ".venv" / "bin" / "wtr", os.X_OK):
        found = str(local)
    elif (found := shutil.which("wtr")) is None:
        fail(f"no wtr at {local} nor on PATH; pass --wtr PATH")
    assert found is not None
    byte_compile(found)
    return found


def byte_compile(wtr: str) -> None:
    """Compile wtr's modules, as installing a package does: in a checkout under
    PYTHONDONTWRITEBYTECODE (or read-only), every command would compile them again, a
    tenth of a second that no installed wtr spends."""
    with open(wtr, "rb") as script:
        shebang = script.readline()
    if not shebang.startswith(b"#!"):
        return
    python = shebang[2:].decode().strip()
    where = subprocess.run([python, "-c", "import os, worktree_runner as w; "
                            "print(os.path.dirname(w.__file__))"],
                           capture_output=True, text=True, check=False)
    if where.returncode == 0:
        subprocess.run([python, "-m", "compileall", "-q", where.stdout.strip()],
                       capture_output=True, check=False)


def temp_parent() -> str:
    """TMPDIR if set, else /dev/shm if it exists (disk timings are noisy), else the default."""
    if os.environ.get("TMPDIR"):
        return tempfile.gettempdir()
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def isolated_env(tmp: Path) -> dict[str, str]:
    """os.environ minus anything that redirects git, plus a private global git config."""
    config = tmp / "gitconfig"
    config.write_text("[user]\n\tname = bench\n\temail = bench@example.invalid\n"
                      "[init]\n\tdefaultBranch = main\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
    return env


def run(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command and return its stdout; on failure print its output and stop."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"{' '.join(argv)} failed (exit {done.returncode}) in {cwd}\n"
             f"{done.stdout}{done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class Timed:
    seconds: float
    rss_mib: float  # peak RSS of the largest process in the command's tree
    started: float  # wall clock (time.time()) at start and end
    ended: float


def timed(argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Timed:
    """Wall-clock seconds and peak memory of one command (output to ``log``).

    The child is reaped with os.wait4, whose ru_maxrss covers it and the descendants it
    waited for: what `/usr/bin/time -f %M` reports, without an extra process in the
    timed window. Earlier writes are flushed first (less noise).
    """
    os.sync()
    with log.open("ab") as out:
        started, clock = time.time(), time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds, ended = time.perf_counter() - clock, time.time()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        fail(f"{' '.join(argv)} failed (exit {child.returncode}) in {cwd}; its output "
             f"({log}):\n{log.read_text(errors='replace')[-4000:]}")
    return Timed(seconds, usage.ru_maxrss / 1024, started, ended)


def build_repo(path: Path, files: int, areas: list[str], env: dict[str, str]) -> None:
    """A repository on branch main: a few top-level files, the rest spread over
    <area>/subK/dJ/fileM.txt (one top-level folder per area)."""
    path.mkdir(parents=True)
    for name in ("README.md", "Makefile", "setup.cfg"):
        (path / name).write_text(f"{name}\n")
    for i in range(max(files - 3, len(areas))):
        area, rest = areas[i % len(areas)], i // len(areas)
        file = path / area / f"sub{rest % 5}" / f"d{rest // 5 % 4}" / f"file{rest}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(f"{area} file {rest}\n" * 4)
    run(["git", "init", "-q", "-b", "main"], path, env)
    run(["git", "add", "-A"], path, env)
    # No background `gc --auto` (from 6,700 loose objects): it would pack and delete objects
    # while the clones copy them. Packed once here instead, as a real repository is.
    run(["git", "-c", "gc.auto=0", "commit", "-q", "-m", "synthetic repository"], path, env)
    run(["git", "repack", "-adq"], path, env)


def fresh_clone(template: Path, dest: Path, env: dict[str, str]) -> Path:
    run(["git", "clone", "-q", "--no-hardlinks", str(template), str(dest)], dest.parent, env)
    return dest


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}
