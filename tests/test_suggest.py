"""``wtr init --suggest``: streams proposed from which folders the history changes together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.history import add_history


def areas_history(top: str = "") -> list[list[str]]:
    """Three independent areas (alpha, beta, and the pair gamma + delta, which always change
    together), each a quarter of 80 commits; CHANGELOG.md changes with every fourth commit of
    every area (hot). ``top`` puts the areas in a folder."""
    commits: list[list[str]] = []
    for i in range(80):
        kind = i % 4
        if kind == 0:
            paths = [f"{top}alpha/a{i % 3}.py"]
        elif kind == 1:
            paths = [f"{top}beta/sub{(i // 4) % 2}/b{i % 3}.py"]
        elif kind == 2:
            paths = [f"{top}gamma/g{i % 3}.py", f"{top}delta/d{i % 5}.py"]
        else:
            paths = [f"{top}omega/o{i % 3}.py"] if top else [f"alpha/a{i % 3}.py"]
        if (i // 4) % 2 == 0:
            paths.append("CHANGELOG.md")
        commits.append(paths)
    return commits


@pytest.fixture
def areas(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    add_history(repo, areas_history())
    return repo


def suggest(repo: Repo, *args: str) -> tuple[dict[str, Any], str, str]:
    result = run_wtr("init", "--suggest", *args, cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    target = repo.path / "worktree-plan.yaml"
    text = target.read_text()
    loaded = yaml.safe_load(text)
    assert isinstance(loaded, dict)
    return loaded, text, result.stdout


def checked(repo: Repo) -> dict[str, Any]:
    result = run_wtr("check", "--json", "worktree-plan.yaml", cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    doc: dict[str, Any] = result.json()
    assert doc["valid"] is True
    return doc


def files_of(plan: dict[str, Any]) -> dict[str, list[str]]:
    return {name: spec["files"] for name, spec in plan["streams"].items()}


def test_three_areas_become_three_streams_with_the_coupled_pair_together(areas: Repo) -> None:
    plan, text, out = suggest(areas)
    assert files_of(plan) == {
        "alpha": ["alpha/**"],
        "beta": ["beta/**"],
        "delta": ["delta/**", "gamma/**"],
    }
    assert out.startswith("3 streams suggested from 81 commits\n")
    assert text.startswith("# Suggested by 'wtr init --suggest' from the last 81 commits of "
                           "main:\n")
    doc = checked(areas)
    assert doc["waves"] == [["alpha", "beta", "delta"]]
    assert doc["coupling"]["pairs"] == []
    assert doc["coupling"]["hot_files"] == []


def test_hot_file_becomes_shared(areas: Repo) -> None:
    plan, text, _ = suggest(areas)
    assert plan["shared"] == ["CHANGELOG.md"]
    assert '  - "CHANGELOG.md"    # changed by 40 of 81 commits\n' in text
    for name in ("alpha", "beta", "delta"):
        assert "shared" not in plan["streams"][name]  # a suggestion, in a comment
    assert text.count('    # shared: ["CHANGELOG.md"]   # changed with these files') == 3


def test_asked_for_more_streams_the_coupled_pair_is_split_but_ordered(areas: Repo) -> None:
    plan, text, _ = suggest(areas, "--streams", "4")
    assert files_of(plan) == {
        "alpha": ["alpha/**"],
        "beta": ["beta/**"],
        "delta": ["delta/**"],
        "gamma": ["gamma/**"],
    }
    assert plan["streams"]["gamma"]["conflicts_with"] == ["delta"]
    assert ("    # delta and gamma: folders delta/ and gamma/ changed together in 20 of 20 "
            "commits that touched either\n") in text
    doc = checked(areas)
    assert doc["waves"] == [["alpha", "beta", "delta"], ["gamma"]]
    assert doc["coupling"]["pairs"] == []


def test_asked_for_fewer_streams_independent_areas_are_merged(areas: Repo) -> None:
    plan, _, out = suggest(areas, "--streams", "2")
    streams = files_of(plan)
    assert len(streams) == 2
    assert ["delta/**", "gamma/**"] in streams.values()
    assert out.startswith("2 streams suggested")
    checked(areas)


def test_a_folder_most_commits_touch_is_split_into_its_subfolders(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n", "src/main.py": "x\n"})
    add_history(repo, areas_history(top="src/"))
    plan, _, _ = suggest(repo)
    assert files_of(plan) == {
        "alpha": ["src/alpha/**"],
        "beta": ["src/beta/**"],
        "delta": ["src/delta/**", "src/gamma/**"],
        "omega": ["src/omega/**"],
    }
    assert "#   README.md, src/*\n" in (repo.path / "worktree-plan.yaml").read_text()
    checked(repo)


def test_never_overwrites(areas: Repo) -> None:
    target = areas.path / "worktree-plan.yaml"
    target.write_text("mine\n")
    result = run_wtr("init", "--suggest", cwd=areas.path)
    assert result.returncode == 2
    assert result.stderr == f"wtr: {target} already exists; pass another PATH to 'wtr init', " \
                            "or remove it first\n"
    assert target.read_text() == "mine\n"


def test_no_history_says_so_and_suggests_folders(repo: Repo) -> None:
    plan, _, out = suggest(repo)
    assert out.startswith("note: only 1 commit usable in the history of main (fewer than 5): "
                          "nothing to learn from, so one stream per top-level folder\n")
    assert list(plan["streams"]) == ["docs", "src"]
    checked(repo)


def test_since_and_commits_bound_what_is_read(areas: Repo) -> None:
    _, _, out = suggest(areas, "--commits", "40", "worktree-plan.yaml")
    assert out.startswith("3 streams suggested from 40 commits\n")
    (areas.path / "worktree-plan.yaml").unlink()
    _, _, out = suggest(areas, "--since", "2999-01-01")
    assert out.startswith("note: only 0 commits usable")


@pytest.mark.parametrize(("args", "message"), [
    (["--suggest", "--streams", "api:src/api/**"],
     "wtr: --streams 'api:src/api/**': with --suggest, give the number of streams; "
     "for example: wtr init --suggest --streams 4\n"),
    (["--suggest", "--streams", "0"],
     "wtr: --streams '0': with --suggest, give the number of streams; "
     "for example: wtr init --suggest --streams 4\n"),
    (["--suggest", "--from-dirs"], "wtr: use --from-dirs alone, without --streams or --suggest\n"),
    (["--suggest", "--since", "soonish"],
     "wtr: cannot read the date 'soonish'; write a date such as 2024-05-01 or an age such "
     "as 6.months\n"),
])
def test_bad_arguments(areas: Repo, args: list[str], message: str) -> None:
    result = run_wtr("init", *args, cwd=areas.path)
    assert result.returncode == 2
    assert result.stderr == message
    assert not (areas.path / "worktree-plan.yaml").exists()
