"""scripts/plan-holdout and scripts/make-history-bundle on a small real history built here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import ROOT, Repo, make_repo
from tests.history import add_history

PLAN = """\
version: 1
agent: {command: ["true"]}
shared: ["CHANGES.md"]
streams:
  alpha: {files: ["alpha/**"], prompt: "a"}
  beta: {files: ["beta/**"], prompt: "b"}
"""

# Held out, oldest first; against PLAN: inside one stream are the alpha-only and beta-only
# changes and the one touching CHANGES.md alone (shared); the two others are not.
HELD = [
    ["alpha/a.py"],
    ["alpha/a.py", "CHANGES.md"],     # collides with the one before (alpha)
    ["beta/b.py"],
    ["alpha/a.py", "beta/b.py"],      # two streams; collides with both neighbours
    ["alpha/new.py"],                 # a new file, owned by its folder's stream
    ["CHANGES.md"],                   # shared only
    ["gamma/g.py", "alpha/a.py"],     # gamma/ is no stream's: not inside
    ["alpha/a.py"],
]


def script(name: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def history(tmp_path: Path) -> Repo:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n", "alpha/a.py": "a\n",
                                        "beta/b.py": "b\n", "CHANGES.md": "c\n"})
    add_history(repo, [["alpha/a.py"], ["beta/b.py"]] * 5 + HELD)
    return repo


def measure(repo: Repo, *args: str | Path) -> dict[str, Any]:
    done = script("plan-holdout", repo.path, "--json", *args, cwd=repo.path.parent)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_a_given_plan_laid_over_the_held_out_changes(history: Repo, tmp_path: Path) -> None:
    plan = tmp_path / "fixed.yaml"
    plan.write_text(PLAN)
    doc = measure(history, "--holdout", len(HELD), "--planner", f"cp {plan} {{plan}}",
                  "--name", "tiny")
    cut = history.head(f"HEAD~{len(HELD)}")
    assert doc == {
        "project": "tiny", "cut": cut[:12], "holdout": 8, "skip": 0,
        "tracked": 4, "streams": 2, "shared": 1,
        "inside": 0.75,  # 6 of 8: 4 alpha, 1 beta, 1 shared only
        "inside_known": 0.857,  # 6 of the 7 touching no unowned path
        "shared_only": 1, "unowned": 1,
        "spread": 1.47,  # 1 / ((4/5)^2 + (1/5)^2)
        "biggest": 0.25, "biggest_stream": "alpha",
        "collide": 0.571,  # 4 of 7 consecutive pairs: 1-2, 3-4, 4-5, 7-8
        "per_stream": {"alpha": 4, "beta": 1},
    }


def test_skip_moves_the_window_back(history: Repo, tmp_path: Path) -> None:
    plan = tmp_path / "fixed.yaml"
    plan.write_text(PLAN)
    doc = measure(history, "--holdout", 4, "--skip", 4, "--planner", f"cp {plan} {{plan}}")
    assert doc["cut"] == history.head(f"HEAD~{len(HELD)}")[:12]
    assert (doc["holdout"], doc["inside"], doc["per_stream"]) == (4, 0.75,
                                                                  {"alpha": 2, "beta": 1})


def test_the_default_planner_is_init_suggest_and_a_bundle_works(history: Repo,
                                                               tmp_path: Path) -> None:
    bundle = tmp_path / "tiny.bundle"
    done = script("make-history-bundle", history.path, bundle, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {bundle}: main, {history.commits} first-parent commits\n"
    kept = tmp_path / "suggested.yaml"
    done = script("plan-holdout", bundle, "--holdout", len(HELD), "--keep", kept, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| tiny | 4 | ")
    assert kept.read_text().startswith("# Suggested by 'wtr init --suggest' from the last 11 "
                                       "changes of holdout\n")
    again = script("make-history-bundle", history.path, bundle, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr == (f"make-history-bundle: {bundle} exists; remove it or name "
                            "another file\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--holdout", "50"], "plan-holdout: origin/main has 19 changes: too few to hold out 50 "
                          "after skipping 0\n"),
    (["--holdout", "4", "--planner", "exit 3"],
     "plan-holdout: the planner exited 3 without a plan: \n"),
    (["--holdout", "4", "--planner", "printf 'version: 1\\nstreams: {}\\n' > {plan}"],
     "plan-holdout: wtr check refuses the plan: the plan needs at least one stream under "
     "'streams'\n"),
])
def test_failures_say_why_and_exit_1(history: Repo, args: list[str], message: str) -> None:
    done = script("plan-holdout", history.path, *args, cwd=history.path.parent)
    assert (done.returncode, done.stderr, done.stdout) == (1, message, "")


def test_a_measured_project_does_not_shadow_what_wtr_imports(tmp_path: Path) -> None:
    """Measuring click itself: its top-level 'click/' package is not the click wtr runs on."""
    repo = make_repo(tmp_path / "click", {"click/__init__.py": "raise SystemExit(9)\n",
                                          "tests/test_core.py": "\n"})
    add_history(repo, [["click/core.py", "tests/test_core.py"], ["docs/index.rst"]] * 8)
    doc = measure(repo, "--holdout", "4")
    assert doc["holdout"] == 4 and doc["streams"] >= 1
