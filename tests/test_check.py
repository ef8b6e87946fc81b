"""``wtr check``: the analysis of a valid plan, its JSON form, and how base/target resolve."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, Result, run_wtr

Wtr = Callable[..., Result]

AGENT = {"command": ["python3", "agent.py", "{prompt_file}"]}


def plan(streams: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"version": 1, "agent": AGENT, **top, "streams": streams}


CHECKOUT = plan(
    {
        "db": {"files": ["src/db/**"], "prompt": "tables"},
        "api": {"files": ["src/api/**", "tests/api/**"], "depends_on": ["db"], "prompt": "x"},
        "ui": {"files": ["src/ui/**"], "prompt": "screens"},
        "docs": {"files": ["docs/**"], "conflicts_with": ["ui"], "prompt": "write"},
        "release": {"files": ["CHANGES.md"], "depends_on": ["api"], "prompt": "notes"},
    }
)


def test_valid_plan_prints_waves_and_critical_path(repo: Repo, wtr: Wtr) -> None:
    result = wtr("check", repo.write_plan(CHECKOUT))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert out.startswith(
        f"plan plan: 5 streams, base main ({repo.head()[:12]}), target main, max_parallel 4\n"
    )
    assert "  1. db, ui\n  2. api, docs\n  3. release\n" in out
    assert "critical path: db -> api -> release\n" in out
    assert "note: 1 tracked files have no owning stream: README.md" in out
    assert "warning: streams.api.files: pattern 'tests/api/**' matches no tracked file" in out
    assert out.rstrip().endswith("plan is valid")


def test_json_is_one_document_with_the_analysis(repo: Repo, wtr: Wtr) -> None:
    path = repo.write_plan(CHECKOUT)
    result = wtr("check", "--json", path)
    assert result.returncode == 0, result.stderr
    doc = result.json()
    assert doc["valid"] is True
    assert doc["plan"] == str(path)
    assert (doc["base"], doc["base_commit"], doc["target"]) == ("main", repo.head(), "main")
    assert doc["waves"] == [["db", "ui"], ["api", "docs"], ["release"]]
    assert doc["critical_path"] == ["db", "api", "release"]
    assert doc["errors"] == []
    assert list(doc["streams"]) == ["db", "api", "ui", "docs", "release"]
    assert doc["streams"]["api"] == {
        "depends_on": ["db"],
        "waits_for": [],
        "files": ["src/api/**", "tests/api/**"],
        "owned_files": ["src/api/orders.py"],
    }
    assert doc["streams"]["docs"]["waits_for"] == ["ui"]
    assert doc["streams"]["release"]["owned_files"] == []
    assert doc["unowned_files"] == ["README.md"]
    assert doc["tracked_files"] == 5
    assert doc["warnings"] == [
        "streams.api.files: pattern 'tests/api/**' matches no tracked file",
        "streams.release.files: pattern 'CHANGES.md' matches no tracked file",
    ]


def test_json_on_an_invalid_plan_is_still_one_document(repo: Repo, wtr: Wtr) -> None:
    text = "version: 1\nagent: {command: run}\nstreams:\n  a:\n    files: [docs/**]\n" + (
        "    depends_on: [zz]\n"
    )
    path = repo.write_plan(text)
    result = wtr("check", "--json", path)
    assert result.returncode == 2
    assert result.json() == {
        "plan": str(path),
        "valid": False,
        "errors": [
            {"where": "streams.a.depends_on", "line": 6, "message": "unknown stream 'zz'"}
        ],
    }


def test_json_on_overlapping_streams(repo: Repo, wtr: Wtr) -> None:
    text = (
        "version: 1\nagent: {command: run}\nstreams:\n"
        "  wide: {files: [src/**]}\n"
        "  api:\n    files: [src/api/*]\n"
    )
    result = wtr("check", "--json", repo.write_plan(text))
    assert result.returncode == 2
    doc = result.json()
    assert doc["valid"] is False
    assert doc["overlaps"] == [{"path": "src/api/orders.py", "streams": ["wide", "api"]}]
    assert [(e["where"], e["line"]) for e in doc["errors"]] == [("streams.api.files", 6)]
    assert "'src/api/orders.py' is owned by both 'wide' and 'api'" in doc["errors"][0]["message"]


@pytest.mark.parametrize("declared_by", ["later", "earlier", "both"])
def test_waves_honour_conflicts_with(repo: Repo, wtr: Wtr, declared_by: str) -> None:
    first: dict[str, Any] = {"files": ["src/api/**"]}
    second: dict[str, Any] = {"files": ["src/db/**"]}
    if declared_by in ("earlier", "both"):
        first["conflicts_with"] = ["second"]
    if declared_by in ("later", "both"):
        second["conflicts_with"] = ["first"]
    third = {"files": ["src/ui/**"]}
    text = json.dumps(plan({"first": first, "second": second, "third": third}))
    doc = wtr("check", "--json", repo.write_plan(text)).json()
    assert doc["waves"] == [["first", "third"], ["second"]]
    assert doc["streams"]["second"]["waits_for"] == ["first"]
    assert doc["streams"]["first"]["waits_for"] == []
    assert doc["critical_path"] == ["first"]


def test_repo_option_before_and_after_the_subcommand(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = repo.write_plan(CHECKOUT)
    outside = run_wtr("check", path, cwd=elsewhere)
    assert "is not inside a git repository" in outside.one_line_error()
    for args in (("--repo", repo.path, "check", "--json", path),
                 ("check", "--json", path, "--repo", repo.path)):
        result = run_wtr(*args, cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        assert result.json()["base_commit"] == repo.head()


def test_two_different_repo_options_are_refused_not_one_ignored(repo: Repo,
                                                                 tmp_path: Path) -> None:
    path = repo.write_plan(CHECKOUT)
    result = run_wtr("--repo", tmp_path, "check", path, "--repo", repo.path, cwd=tmp_path)
    assert "--repo is given twice" in result.one_line_error(2)


def test_base_defaults_to_the_checked_out_branch(repo: Repo, wtr: Wtr) -> None:
    repo.git("switch", "-q", "-c", "feature/x")
    tip = repo.commit({"src/ui/button.py": "B = 1\n"})
    doc = wtr("check", "--json", repo.write_plan(CHECKOUT)).json()
    assert (doc["base"], doc["base_commit"], doc["target"]) == ("feature/x", tip, "feature/x")
    assert doc["streams"]["ui"]["owned_files"] == ["src/ui/button.py", "src/ui/view.py"]


def test_explicit_base_and_target(repo: Repo, wtr: Wtr) -> None:
    first = repo.head()
    repo.git("tag", "-a", "-m", "v1", "v1")
    repo.git("switch", "-q", "-c", "other")
    repo.commit({"docs/more.md": "more\n"})
    result = wtr("check", "--json", repo.write_plan({**CHECKOUT, "base": "v1", "target": "main"}))
    assert result.returncode == 0, result.stderr
    doc = result.json()
    assert (doc["base"], doc["base_commit"], doc["target"]) == ("v1", first, "main")
    assert doc["streams"]["docs"]["owned_files"] == ["docs/index.md"]


def test_explicit_base_that_does_not_exist(repo: Repo, wtr: Wtr) -> None:
    result = wtr("check", repo.write_plan({**CHECKOUT, "base": "no-such-branch"}))
    line = result.one_line_error()
    assert line.startswith(f"wtr: 'no-such-branch' does not name a commit in {repo.path}")


@pytest.mark.parametrize("top", [{"target": "v1"}, {"base": "v1"}, {"target": "nowhere"}])
def test_target_that_is_not_a_branch(repo: Repo, wtr: Wtr, top: dict[str, str]) -> None:
    repo.git("tag", "v1")
    result = wtr("check", repo.write_plan({**CHECKOUT, **top}))
    target = top.get("target", "v1")
    assert f"'{target}' is not a local branch" in result.one_line_error()


def test_detached_head_needs_a_base(repo: Repo, wtr: Wtr) -> None:
    repo.git("switch", "-q", "--detach")
    result = wtr("check", repo.write_plan(CHECKOUT))
    assert result.one_line_error().startswith(
        f"wtr: HEAD is detached in {repo.path} and the plan names no base"
    )
    assert wtr("check", repo.write_plan({**CHECKOUT, "base": "main"})).returncode == 0
