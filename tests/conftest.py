from __future__ import annotations

import compileall
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.gitrepo import ROOT, Repo, Result, isolated_git_env, make_repo, run_wtr


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the package once, before any test starts a ``wtr``. Where Python may
    not write bytecode (PYTHONDONTWRITEBYTECODE), each of the hundreds of ``wtr``
    processes the tests start would otherwise compile its modules again (~0.2 s each),
    and each test worker would parse and rewrite every test module again (~3 s): pytest
    keeps its rewritten test modules only where Python may write bytecode."""
    sys.dont_write_bytecode = False
    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist
        compileall.compile_dir(ROOT / "worktree_runner", quiet=1)


@pytest.fixture(autouse=True)
def git_isolation(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every test sees git with pinned identity and dates, and no user or system config."""
    home = tmp_path_factory.mktemp("home")
    for key, value in isolated_git_env(home).items():
        monkeypatch.setenv(key, value)
    for key in ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "WTR_RUN", "WTR_STREAM"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def preset_stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Programs named like the presets' CLIs that tell their pinned version and refuse to
    do anything else: a plan naming a preset checks here as on a machine that has it."""
    from worktree_runner.presets import PRESETS

    folder = tmp_path_factory.mktemp("preset-stand-ins")
    for preset in PRESETS.values():
        program = folder / preset.program
        program.write_text(f'#!/bin/sh\ncase "$1" in --version|-v|version) echo '
                           f'"{preset.pinned}"; exit 0;; esac\n'
                           f'echo "stand-in {preset.program}: the real CLI is not installed '
                           'in this test" >&2\nexit 97\n')
        program.chmod(0o755)
    return folder


@pytest.fixture(autouse=True)
def presets_on_path(preset_stand_ins: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-ins come last on PATH: a real CLI, or a test's own stand-in, wins."""
    monkeypatch.setenv("PATH", f"{os.environ.get('PATH', '')}{os.pathsep}{preset_stand_ins}")


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(
        tmp_path / "repo",
        {
            "README.md": "# sample\n",
            "src/api/orders.py": "ORDERS = []\n",
            "src/db/models.py": "MODELS = []\n",
            "src/ui/view.py": "VIEW = None\n",
            "docs/index.md": "docs\n",
        },
    )


@pytest.fixture
def wtr(repo: Repo) -> Callable[..., Result]:
    """Run ``wtr`` inside the ``repo`` fixture's repository."""

    def call(*args: str | Path, cwd: Path | None = None,
             env: Mapping[str, str] | None = None) -> Result:
        return run_wtr(*args, cwd=cwd or repo.path, env=env)

    return call


@pytest.fixture
def rec(tmp_path: Path) -> Path:
    """A folder where the test agent records what each attempt saw."""
    folder = tmp_path / "records"
    folder.mkdir()
    return folder


@pytest.fixture
def seen(tmp_path: Path) -> Path:
    """A folder where an agent writes down what its worktree held (``$SEEN``)."""
    folder = tmp_path / "seen"
    folder.mkdir()
    return folder
