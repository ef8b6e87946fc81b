from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.gitrepo import Repo, Result, isolated_git_env, make_repo, run_wtr


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
