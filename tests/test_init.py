"""``wtr init``: a starter plan for the repository that ``wtr check`` accepts as it is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitrepo import Repo, Result, make_repo, run_wtr

Wtr = Callable[..., Result]


def written_plan(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def assert_checks(path: Path, cwd: Path) -> dict[str, Any]:
    result = run_wtr("check", "--json", path, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = result.json()
    assert doc["valid"] is True
    return doc


def test_init_writes_one_stream_per_top_level_folder(repo: Repo, wtr: Wtr) -> None:
    repo.commit({".github/workflows/ci.yml": "on: push\n", ".hidden/x": "x\n"})
    result = wtr("init")
    target = repo.path / "worktree-plan.yaml"
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote {target}; edit it, then run: wtr check {target}\n"
    plan = written_plan(target)
    assert plan["version"] == 1
    assert (plan["base"], plan["target"]) == ("main", "main")
    assert plan["agent"]["preset"] == "claude"
    assert list(plan["streams"]) == ["docs", "src"]
    assert plan["streams"]["src"]["files"] == ["src/**"]
    assert plan["streams"]["docs"]["files"] == ["docs/**"]
    doc = assert_checks(target, repo.path)
    assert doc["waves"] == [["docs", "src"]]
    assert doc["streams"]["src"]["owned_files"] == [
        "src/api/orders.py", "src/db/models.py", "src/ui/view.py"
    ]
    assert doc["unowned_files"] == [".github/workflows/ci.yml", ".hidden/x", "README.md"]


def test_init_uses_the_current_branch_and_works_from_a_subfolder(repo: Repo, wtr: Wtr) -> None:
    repo.git("switch", "-q", "-c", "feature/checkout")
    result = wtr("init", cwd=repo.path / "src" / "api")
    assert result.returncode == 0, result.stderr
    target = repo.path / "worktree-plan.yaml"
    plan = written_plan(target)
    assert (plan["base"], plan["target"]) == ("feature/checkout", "feature/checkout")
    assert assert_checks(target, repo.path)["base"] == "feature/checkout"


def test_init_in_a_linked_worktree_reads_its_own_branch(repo: Repo, tmp_path: Path) -> None:
    """From a linked worktree, the streams come from the branch checked out there, not
    from the commit the main checkout has."""
    linked = tmp_path / "linked"
    repo.git("worktree", "add", "-q", "-b", "feature", str(linked))
    (linked / "web").mkdir()
    (linked / "web" / "app.js").write_text("app\n")
    repo.git("-C", str(linked), "add", "web/app.js")
    repo.git("-C", str(linked), "commit", "-q", "-m", "web")
    result = run_wtr("init", cwd=linked)
    assert result.returncode == 0, result.stderr
    plan = written_plan(linked / "worktree-plan.yaml")
    assert plan["base"] == "feature"
    assert any("web/**" in spec["files"] for spec in plan["streams"].values()), plan


def test_repo_with_only_top_level_files_gets_one_whole_repo_stream(tmp_path: Path) -> None:
    flat = make_repo(tmp_path / "flat", {"README.md": "r\n", "setup.py": "s\n"})
    assert run_wtr("init", cwd=flat.path).returncode == 0
    target = flat.path / "worktree-plan.yaml"
    assert written_plan(target)["streams"] == {
        "main": {
            "description": "the whole repository",
            "files": ["**"],
            "prompt": "Describe what the agent should do.\n",
        }
    }
    doc = assert_checks(target, flat.path)
    assert doc["streams"]["main"]["owned_files"] == ["README.md", "setup.py"]
    assert doc["unowned_files"] == []


def test_init_refuses_to_overwrite(repo: Repo, wtr: Wtr) -> None:
    target = repo.path / "worktree-plan.yaml"
    target.write_text("mine, keep me\n")
    result = wtr("init")
    assert result.one_line_error() == (
        f"wtr: {target} already exists; pass another PATH to 'wtr init', or remove it first"
    )
    assert target.read_text() == "mine, keep me\n"


def test_init_writes_to_the_given_path(repo: Repo, wtr: Wtr) -> None:
    result = wtr("init", "plans/other.yaml", cwd=repo.path / "docs")
    target = repo.path / "docs" / "plans" / "other.yaml"
    assert result.returncode == 0, result.stderr
    assert target.is_file()
    assert not (repo.path / "worktree-plan.yaml").exists()
    assert "wtr check other.yaml" in target.read_text()
    assert written_plan(target)["name"] == "repo"
    assert_checks(target, repo.path)


def test_init_in_a_repository_without_commits(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    Repo(empty).git("init", "-q", "-b", "main")
    result = run_wtr("init", cwd=empty)
    assert result.one_line_error() == (
        "wtr: branch 'main' has no commits yet; commit something first"
    )
    assert not (empty / "worktree-plan.yaml").exists()


def test_init_on_a_detached_head(repo: Repo, wtr: Wtr) -> None:
    repo.git("switch", "-q", "--detach")
    assert wtr("init").one_line_error().startswith("wtr: HEAD is detached")
    assert not (repo.path / "worktree-plan.yaml").exists()


@pytest.mark.parametrize(
    "folders",
    [
        ["a: b", "null", "0x10", "[abc]", "#notes", "!bang", "yes"],
        ["wild*card", "q?", "back\\slash", "émoji😀", "1.0", "x.lock"],
    ],
    ids=["yaml-words", "glob-characters"],
)
def test_odd_folder_names_still_give_a_plan_that_checks(
    tmp_path: Path, folders: list[str]
) -> None:
    odd = make_repo(tmp_path / "2024", {f"{folder}/f.txt": "x\n" for folder in folders})
    assert run_wtr("init", cwd=odd.path).returncode == 0
    target = odd.path / "worktree-plan.yaml"
    doc = assert_checks(target, odd.path)
    owned = sorted(path for stream in doc["streams"].values() for path in stream["owned_files"])
    assert owned == sorted(f"{folder}/f.txt" for folder in folders)
    assert doc["name"] == "2024"
