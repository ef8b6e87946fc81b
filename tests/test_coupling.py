"""``wtr check`` warns about streams whose files the base's history changes together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.gitrepo import Repo, make_repo, run_wtr
from tests.history import START, add_history

AGENT = {"command": ["python3", "agent.py", "{prompt_file}"]}
WARN = "consider depends_on or conflicts_with"


def plan(streams: dict[str, Any], **top: Any) -> dict[str, Any]:
    specs = {name: {"prompt": "x", **spec} for name, spec in streams.items()}
    return {"version": 1, "agent": AGENT, **top, "streams": specs}


def history() -> list[list[str]]:
    """60 commits: src/api and src/db always change together (a different file of each
    every time, so no pair of files repeats 5 times); ui and docs alone; CHANGELOG.md
    with a third of all commits (hot)."""
    commits: list[list[str]] = []
    for i in range(60):
        kind = i % 3
        if kind == 0:
            paths = [f"src/api/a{i % 7}.py", f"src/db/d{i % 5}.py"]
        elif kind == 1:
            paths = [f"src/ui/u{i % 5}.py"]
        else:
            paths = [f"docs/p{i % 4}.md"]
        if i % 3 == (i // 3) % 3:  # every third commit, spread over the three kinds
            paths.append("CHANGELOG.md")
        commits.append(paths)
    return commits


@pytest.fixture
def coupled(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    add_history(repo, history())
    return repo


STREAMS = {
    "api": {"files": ["src/api/**"]},
    "db": {"files": ["src/db/**"]},
    "ui": {"files": ["src/ui/**"]},
    "docs": {"files": ["docs/**"]},
}


def check(repo: Repo, doc: dict[str, Any], *args: str) -> Any:
    result = run_wtr("check", *args, repo.write_plan(doc), cwd=repo.path)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.json() if "--json" in args else result.stdout


def coupling_warnings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("warning:") and WARN in line]


def test_folders_changed_together_are_flagged_with_their_numbers(coupled: Repo) -> None:
    out = check(coupled, plan(STREAMS))
    assert coupling_warnings(out) == [
        "warning: api and db: folders src/api/ and src/db/ changed together in 20 of 20 "
        "commits that touched either (confidence 1.00; thresholds: min_support 5, "
        "min_confidence 0.5); consider depends_on or conflicts_with"
    ]
    assert "coupling: 61 commits of main; thresholds min_support 5, min_confidence 0.5, " \
           "hot_share 0.1" in out
    assert out.rstrip().endswith("plan is valid")


@pytest.mark.parametrize("order", [
    {"db": {"depends_on": ["api"]}},
    {"db": {"conflicts_with": ["api"]}},
    {"ui": {"depends_on": ["api"]}, "db": {"depends_on": ["ui"]}},  # ordered through ui
])
def test_ordered_streams_are_not_flagged(coupled: Repo, order: dict[str, Any]) -> None:
    streams = {name: {**spec, **order.get(name, {})} for name, spec in STREAMS.items()}
    assert coupling_warnings(check(coupled, plan(streams))) == []


def test_json_lists_the_pairs_and_the_thresholds(coupled: Repo) -> None:
    doc = check(coupled, plan(STREAMS), "--json")
    coupling = doc["coupling"]
    assert {k: coupling[k] for k in ("enabled", "min_support", "min_confidence", "hot_share",
                                     "since", "commits", "skipped_commits", "note")} == {
        "enabled": True, "min_support": 5, "min_confidence": 0.5, "hot_share": 0.1,
        "since": None, "commits": 61, "skipped_commits": 0, "note": None,
    }
    assert coupling["pairs"] == [{"streams": ["api", "db"], "kind": "folder",
                                  "paths": ["src/api", "src/db"], "together": 20,
                                  "either": 20, "confidence": 1.0}]
    assert any(w.startswith("api and db: folders src/api/") for w in doc["warnings"])


def test_pairs_of_files_are_flagged_too(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hello\n"})
    # routes.py and models.py together 8 times, models.py alone 3 more: 8 of 11.
    commits = [["src/api/routes.py", "src/db/models.py", f"src/api/v{i}.py"] for i in range(8)]
    # and enough other work that neither is a hot file (10% of the commits)
    commits += [["src/db/models.py"]] * 3 + [[f"src/ui/m{i % 9}.py"] for i in range(120)]
    add_history(repo, commits)
    doc = check(repo, plan(STREAMS), "--json")
    files = [p for p in doc["coupling"]["pairs"] if p["kind"] == "file"]
    assert files == [{"streams": ["api", "db"], "kind": "file",
                      "paths": ["src/api/routes.py", "src/db/models.py"], "together": 8,
                      "either": 11, "confidence": 0.727}]


def test_hot_file_touched_by_several_streams_is_flagged(coupled: Repo) -> None:
    out = check(coupled, plan(STREAMS))
    hot = [line for line in out.splitlines() if "hot file" in line]
    assert hot == [
        "warning: hot file CHANGELOG.md: changed by 20 of 61 commits (33%; threshold "
        "hot_share 0.1), owned by no stream; changed in the same commits as files of "
        "api (7), db (7), ui (7), docs (6); list it under 'shared' (and in the streams that "
        "need it) or serialise these streams with depends_on or conflicts_with"
    ]
    doc = check(coupled, plan(STREAMS), "--json")
    assert doc["coupling"]["hot_files"] == [{
        "path": "CHANGELOG.md", "changes": 20, "owners": [],
        "alongside": {"api": 7, "db": 7, "ui": 7, "docs": 6},
    }]


def test_a_shared_hot_file_is_not_flagged(coupled: Repo) -> None:
    out = check(coupled, plan(STREAMS, shared=["CHANGELOG.md"]))
    assert "hot file" not in out


def test_hot_file_owned_by_one_stream_and_changed_with_another(coupled: Repo) -> None:
    streams = {**STREAMS, "docs": {"files": ["docs/**", "CHANGELOG.md"]}}
    out = check(coupled, plan(streams))
    assert "hot file CHANGELOG.md: changed by 20 of 61 commits (33%; threshold hot_share " \
           "0.1), owned by docs; changed in the same commits as files of api (7), db (7), " \
           "ui (7)" in out


def test_thresholds_are_tunable(coupled: Repo) -> None:
    strict = plan(STREAMS, coupling={"min_support": 21, "hot_share": 0.5})
    out = check(coupled, strict)
    assert coupling_warnings(out) == []
    assert "hot file" not in out
    assert "thresholds min_support 21, min_confidence 0.5, hot_share 0.5" in out
    loose = plan(STREAMS, coupling={"min_confidence": 0.3})
    out = check(coupled, loose)
    assert "min_confidence 0.3)" in coupling_warnings(out)[0]


def test_coupling_off(coupled: Repo) -> None:
    text = yaml.safe_dump(plan(STREAMS), sort_keys=False) + "coupling: off\n"
    result = run_wtr("check", coupled.write_plan(text), cwd=coupled.path)
    assert result.returncode == 0, result.stderr
    assert "coupling" not in result.stdout
    assert "hot file" not in result.stdout
    result = run_wtr("check", "--json", coupled.write_plan(text), cwd=coupled.path)
    assert result.json()["coupling"] == {"enabled": False}
    cache = Path(coupled.git("rev-parse", "--path-format=absolute", "--git-common-dir"))
    assert not (cache / "worktree-runner" / "cache").exists()


@pytest.mark.parametrize(("coupling", "message"), [
    ({"min_suport": 3}, "coupling.min_suport: unknown key (did you mean 'min_support'?)"),
    ({"min_confidence": 2}, "coupling.min_confidence: must be a number above 0 and at most 1"),
    ({"min_support": 0}, "coupling.min_support: must be a whole number of at least 1"),
    ("sometimes", "coupling: 'coupling' (or 'coupling: off') must be a mapping"),
])
def test_bad_coupling_settings_are_plan_errors(repo: Repo, coupling: Any, message: str) -> None:
    result = run_wtr("check", repo.write_plan(plan(STREAMS, coupling=coupling)), cwd=repo.path)
    assert result.returncode == 2
    assert message in result.stderr


def test_no_history_says_so(repo: Repo) -> None:
    result = run_wtr("check", repo.write_plan(plan(STREAMS)), cwd=repo.path)
    assert result.returncode == 0, result.stderr
    assert "note: only 1 commit of history, fewer than min_support 5: no coupling can be " \
           "found" in result.stdout
    in_future = plan(STREAMS, coupling={"since": "2999-01-01"})
    doc = check(repo, in_future, "--json")
    assert doc["coupling"]["commits"] == 0
    assert doc["coupling"]["note"] == "no history below main to learn from: coupling not checked"


def test_since_limits_the_history(coupled: Repo) -> None:
    # commit n of the synthetic history is at START + 60 n: keep the last 30
    since = f"@{START + 31 * 60}"
    doc = check(coupled, plan(STREAMS, coupling={"since": since}), "--json")
    assert doc["coupling"]["commits"] == 30
    assert doc["coupling"]["pairs"][0]["together"] == 10
    result = run_wtr("check", coupled.write_plan(plan(STREAMS, coupling={"since": "blurb"})),
                     cwd=coupled.path)
    assert result.returncode == 2
    assert "cannot read the date 'blurb'" in result.stderr


def test_commits_bounds_the_history(coupled: Repo) -> None:
    doc = check(coupled, plan(STREAMS, coupling={"commits": 12}), "--json")
    assert doc["coupling"]["commits"] == 12
    assert doc["coupling"]["pairs"] == []  # together in 4 commits: below min_support
    doc = check(coupled, plan(STREAMS, coupling={"commits": 12, "min_support": 4}), "--json")
    assert doc["coupling"]["pairs"][0]["together"] == 4


def test_huge_commits_and_merges_are_left_out(coupled: Repo) -> None:
    sweep = [f"src/api/a{i}.py" for i in range(7)] + [f"src/ui/x{i}.py" for i in range(50)]
    add_history(coupled, [sweep], start=START + 100_000)
    coupled.git("switch", "-q", "-c", "side")
    coupled.commit({"src/ui/side.py": "x\n"}, "side work")
    coupled.git("switch", "-q", "main")
    coupled.commit({"src/api/main.py": "x\n"}, "main work")
    coupled.git("merge", "-q", "--no-ff", "-m", "merge side", "side")
    doc = check(coupled, plan(STREAMS), "--json")
    assert doc["coupling"]["commits"] == 63  # 61, side work, main work; no merge, no sweep
    assert doc["coupling"]["skipped_commits"] == 1
    assert doc["coupling"]["max_commit_files"] == 50
    assert doc["coupling"]["pairs"][0]["either"] == 21


def test_a_first_commit_of_every_file_is_skipped_and_a_small_one_counts(tmp_path: Path) -> None:
    # A big repository's first commit adds every file: too many to say what goes together.
    # (Only its first 51 paths are read to tell: tests/test_tree_reads.py.)
    files = {f"vendor/v{i}.py": "x\n" for i in range(120)}
    big = make_repo(tmp_path / "big", {"README.md": "hello\n", **files})
    add_history(big, history())
    doc = check(big, plan(STREAMS, shared=["CHANGELOG.md"]), "--json")
    assert (doc["coupling"]["commits"], doc["coupling"]["skipped_commits"]) == (60, 1)
    small = make_repo(tmp_path / "small", {"src/api/a0.py": "x\n", "src/db/d0.py": "x\n"})
    add_history(small, history())
    doc = check(small, plan(STREAMS, shared=["CHANGELOG.md"]), "--json")
    assert (doc["coupling"]["commits"], doc["coupling"]["skipped_commits"]) == (61, 0)
    assert doc["coupling"]["pairs"][0]["together"] == 21  # the first commit is one of them


def test_history_is_cached_per_base_commit(coupled: Repo) -> None:
    common = Path(coupled.git("rev-parse", "--path-format=absolute", "--git-common-dir"))
    cache = common / "worktree-runner" / "cache"
    first = check(coupled, plan(STREAMS), "--json")
    files = sorted(cache.glob("*.json"))
    assert [f.name for f in files] == [f"cochange-{coupled.head()}-1000-50.json"]
    files[0].write_text("{not json")  # a broken cache is rebuilt, not an error
    assert check(coupled, plan(STREAMS), "--json")["coupling"] == first["coupling"]
    assert '"version":1' in files[0].read_text()
    coupled.commit({"src/api/a0.py": "new\n", "src/db/d0.py": "new\n"})
    again = check(coupled, plan(STREAMS), "--json")
    assert again["coupling"]["pairs"][0]["together"] == 21
    assert len(list(cache.glob("*.json"))) == 2
