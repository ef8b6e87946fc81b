"""Install the real agent CLIs, at the versions the presets pin, into a cache outside the
repository: ``python -m tests.conformance.install [PRESET...]``.

npm packages go to ``<cache>/<preset>-<version>/node_modules``; PyPI packages to a venv
``<cache>/<preset>-<version>/venv`` made with a Python every user can run (the conformance
suite also runs the CLIs as an unprivileged user). A ``.installed`` stamp marks a finished
install, so a second call costs nothing. Also made: ``<cache>/wtr-deps-<hash>``, a venv
holding worktree_runner's own dependencies for that Python, with which the unprivileged
runs start ``python -m worktree_runner`` from the checkout.

The cache is ``$WTR_AGENT_CACHE``, else ``/var/cache/worktree-runner/agents`` for root,
else ``~/.cache/worktree-runner/agents``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from worktree_runner.presets import PRESETS, Preset

ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    if configured := os.environ.get("WTR_AGENT_CACHE"):
        return Path(configured)
    if os.geteuid() == 0:
        return Path("/var/cache/worktree-runner/agents")
    return Path.home() / ".cache" / "worktree-runner" / "agents"


def install_dir(preset: Preset) -> Path:
    return cache_root() / f"{preset.name}-{preset.pinned}"


def bin_dir(preset: Preset) -> Path:
    """Where the installed CLI's program lies (whether or not it is installed yet)."""
    folder = install_dir(preset)
    if preset.package.startswith("pypi:"):
        return folder / "venv" / "bin"
    return folder / "node_modules" / ".bin"


def installed(preset: Preset) -> bool:
    return (install_dir(preset) / ".installed").exists() and (
        bin_dir(preset) / preset.program).exists()


def shared_python() -> str:
    """A Python 3.10+ that any user can run (pyenv's under /root is not), for the venvs."""
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3.12", "/usr/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True,
                       stdin=subprocess.DEVNULL)


def install(preset: Preset) -> tuple[str, bool, str]:
    """Install one CLI; (name, ok, what happened)."""
    if installed(preset):
        return preset.name, True, f"{preset.name} {preset.pinned}: already installed"
    folder = install_dir(preset)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log = folder / "install.log"
    kind, package = preset.package.split(":", 1)
    try:
        if kind == "npm":
            _run(["npm", "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                  "--loglevel=error", f"{package}@{preset.pinned}"], log)
        else:
            _run([shared_python(), "-m", "venv", str(folder / "venv")], log)
            _run([str(folder / "venv" / "bin" / "pip"), "install", "-q",
                  f"{package}=={preset.pinned}"], log)
    except (OSError, subprocess.CalledProcessError) as exc:
        return preset.name, False, f"{preset.name} {preset.pinned}: FAILED ({exc}; log: {log})"
    (folder / ".installed").write_text(preset.pinned + "\n")
    return preset.name, True, f"{preset.name} {preset.pinned}: installed in {folder}"


def project_dependencies() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["project"]["dependencies"])


def deps_venv() -> Path:
    """A venv of worktree_runner's dependencies built with :func:`shared_python`."""
    wanted = "\n".join([shared_python(), *project_dependencies()])
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:12]
    return cache_root() / f"wtr-deps-{digest}"


def install_deps_venv() -> tuple[str, bool, str]:
    folder = deps_venv()
    if (folder / ".installed").exists():
        return "wtr-deps", True, "worktree_runner's dependencies: already installed"
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = folder.parent / f"{folder.name}.log"
    try:
        _run([shared_python(), "-m", "venv", str(folder)], log)
        _run([str(folder / "bin" / "pip"), "install", "-q", *project_dependencies()], log)
    except (OSError, subprocess.CalledProcessError) as exc:
        return "wtr-deps", False, f"worktree_runner's dependencies: FAILED ({exc}; log: {log})"
    (folder / ".installed").write_text("ok\n")
    return "wtr-deps", True, f"worktree_runner's dependencies: installed in {folder}"


def main(names: list[str]) -> int:
    chosen = [PRESETS[name] for name in names] if names else list(PRESETS.values())
    cache_root().mkdir(parents=True, exist_ok=True)
    os.chmod(cache_root(), 0o755)
    jobs = [lambda p=preset: install(p) for preset in chosen] + [install_deps_venv]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: job(), jobs))
    for _, ok, message in results:
        print(("" if ok else "!!! ") + message, file=sys.stderr if not ok else sys.stdout)
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
