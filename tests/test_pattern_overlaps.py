"""``wtr check`` reports patterns of streams that may run at the same time and reach the
same paths, even when no tracked file matches yet; and streams whose starting points
(several predecessors) own overlapping files."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gitrepo import Repo, Result, run_wtr

AGENT = {"command": ["python3", "agent.py", "{prompt_file}"]}


def check(repo: Repo, streams: dict[str, Any], *args: str) -> Result:
    plan = {"version": 1, "agent": AGENT, "streams": streams}
    return run_wtr("check", *args, repo.write_plan(plan), cwd=repo.path)


def overlaps(repo: Repo, streams: dict[str, Any]) -> list[dict[str, Any]]:
    result = check(repo, streams, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = result.json()
    assert doc["valid"] is True and doc["errors"] == []
    found: list[dict[str, Any]] = doc["pattern_overlaps"]
    assert len([w for w in doc["warnings"] if "patterns overlap" in w]) == len(found)
    return found


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["NOTES.md"], ["NOTES.md"], (["NOTES.md", "NOTES.md"], "NOTES.md")),
        (["scripts/**"], ["scripts/common.sh"],
         (["scripts/**", "scripts/common.sh"], "scripts/common.sh")),
        (["scripts/"], ["scripts/lib/*.sh"], (["scripts/", "scripts/lib/*.sh"], "scripts/lib/")),
        (["*.md"], ["NOTES.md"], (["*.md", "NOTES.md"], "NOTES.md")),
        (["src/new/**"], ["src/new/**"], (["src/new/**", "src/new/**"], "src/new/**")),
        (["docs/new/"], ["docs/new/a.md"], (["docs/new/", "docs/new/a.md"], "docs/new/a.md")),
    ],
    ids=["same-literal", "folder-holds-path", "folder-holds-pattern", "glob-matches-literal",
         "same-folder", "folder-holds-literal"],
)
def test_overlapping_patterns_of_unordered_streams_are_reported(
        repo: Repo, a: list[str], b: list[str], expected: tuple[list[str], str]) -> None:
    found = overlaps(repo, {"one": {"files": a}, "two": {"files": b}})
    patterns, path = expected
    assert found == [{"streams": ["one", "two"], "patterns": patterns, "path": path}]


def test_the_text_report_warns_and_says_what_to_do(repo: Repo) -> None:
    result = check(repo, {"one": {"files": ["scripts/**"]},
                          "two": {"files": ["scripts/common.sh"]}})
    assert result.returncode == 0, result.stderr
    assert (
        "warning: streams 'one' and 'two' may run at the same time and their patterns overlap "
        "('scripts/**' of 'one' and 'scripts/common.sh' of 'two' both reach scripts/common.sh); "
        "files they create there may conflict at merge: order them with depends_on or "
        "conflicts_with, or narrow the patterns" in result.stdout
    )
    assert result.stdout.rstrip().endswith("plan is valid")


@pytest.mark.parametrize(
    "streams",
    [
        {"one": {"files": ["NOTES.md"]}, "two": {"files": ["NOTES.md"], "depends_on": ["one"]}},
        {"one": {"files": ["NOTES.md"], "conflicts_with": ["two"]}, "two": {"files": ["NOTES.md"]}},
        {"one": {"files": ["scripts/**"]}, "two": {"files": ["scripts2/x.sh", "scriptsx"]}},
        {"one": {"files": ["src/**", "!src/gen/**"]}, "two": {"files": ["src/gen/**"]}},
        {"one": {"files": ["docs/*.md"]}, "two": {"files": ["docs/*.txt"]}},
        {"one": {"files": ["a/b.txt"]}, "two": {"files": ["a/c.txt"]}},
    ],
    ids=["depends_on", "conflicts_with", "prefix-is-not-a-folder", "negated", "disjoint-globs",
         "siblings"],
)
def test_ordered_or_disjoint_patterns_are_not_reported(repo: Repo,
                                                        streams: dict[str, Any]) -> None:
    assert overlaps(repo, streams) == []


def test_a_tracked_file_overlap_stays_an_error_and_is_not_repeated(repo: Repo) -> None:
    result = check(repo, {"one": {"files": ["src/**"]}, "two": {"files": ["src/api/orders.py"]}},
                   "--json")
    assert result.returncode == 2
    doc = result.json()
    assert doc["valid"] is False
    assert [o["path"] for o in doc["overlaps"]] == ["src/api/orders.py"]
    assert doc["pattern_overlaps"] == []


def test_each_pair_is_reported_once_in_plan_order(repo: Repo) -> None:
    found = overlaps(repo, {
        "a": {"files": ["NOTES.md", "gen/**"]},
        "b": {"files": ["gen/x.py", "NOTES.md"]},
        "c": {"files": ["other/**"]},
        "d": {"files": ["other/y/**"]},
    })
    assert [o["streams"] for o in found] == [["a", "b"], ["c", "d"]]


def test_a_stream_starting_from_overlapping_predecessors_is_warned_about(repo: Repo) -> None:
    result = check(repo, {
        "left": {"files": ["NOTES.md", "left/**"]},
        "right": {"files": ["NOTES.md", "right/**"]},
        "after": {"files": ["after/**"], "depends_on": ["left", "right"]},
        "solo": {"files": ["solo/**"], "depends_on": ["left"]},
    }, "--json")
    assert result.returncode == 0, result.stderr
    doc = result.json()
    assert doc["start_conflicts"] == [
        {"stream": "after", "predecessors": ["left", "right"], "path": "NOTES.md"}]
    assert (
        "stream 'after' starts from the results of 'left' and 'right', whose files overlap "
        "(NOTES.md); if both change it, their results conflict when merged as the start of "
        "'after': order 'left' and 'right' with depends_on or conflicts_with"
    ) in doc["warnings"]


def test_predecessors_ordered_between_themselves_give_no_start_warning(repo: Repo) -> None:
    result = check(repo, {
        "left": {"files": ["NOTES.md"]},
        "right": {"files": ["NOTES.md"], "depends_on": ["left"]},
        "after": {"files": ["after/**"], "depends_on": ["left", "right"]},
    }, "--json")
    assert result.returncode == 0, result.stderr
    assert result.json()["start_conflicts"] == []


def test_a_failed_check_still_has_every_list_in_json(repo: Repo) -> None:
    result = check(repo, {"one": {"files": ["x"], "depends_on": ["nope"]}}, "--json")
    assert result.returncode == 2
    doc = result.json()
    assert doc["valid"] is False and doc["errors"]
