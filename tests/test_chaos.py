"""The chaos harness (scripts/chaos), small and with a fixed seed: the standing guard."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import chaoslib

# Every invariant holds on this code: any violation fails the test.


SETTINGS = chaoslib.Settings(runs=20, seed=16, max_streams=3, timeout=1.0)
# Thirteen of the seed's twenty runs (each run's randomness is its own, so a run plays the
# same whichever others are played), chosen so that every fault kind is drawn (all but
# 'none' twice), every mode in four runs or more, the runner killed early (0.7 s) and late
# (3.9 s), interrupted early (2.2 s) and late (3.7 s), and the WTR_FAULT step runs stop at
# two different steps (after_worktree, agent_ended). Sliced for the test workers; the
# coverage is checked below without playing a run.
SLICES = ((1, 4, 5), (6, 8, 10), (12, 14, 15), (16, 17, 18, 19))


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("runs", SLICES, ids=lambda runs: "runs" + "-".join(map(str, runs)))
def test_chaos_runs_with_a_fixed_seed_keep_every_invariant(runs: tuple[int, ...]) -> None:
    """Runs RUNS of the seed, each with the fault the seed gave it."""
    outcomes = [outcome for number in runs
                for outcome in chaoslib.play(dataclasses.replace(SETTINGS, only=number))]
    doc = chaoslib.summary(outcomes)
    report = chaoslib.table(doc)
    print(report)
    assert [o.run for o in outcomes] == list(runs)
    assert [o.fault for o in outcomes] == [_fault_of(n) for n in runs]
    assert not doc["violations"], report


def test_the_chaos_runs_cover_every_fault_and_every_mode() -> None:
    """Over the union of the slices above, as the harness draws them (no run played)."""
    played = [number for runs in SLICES for number in runs]
    assert len(set(played)) == len(played) and max(played) < SETTINGS.runs
    drawn = [_draw(number) for number in played]
    faults = Counter(fault for fault, _ in drawn)
    assert set(faults) == set(chaoslib.FAULTS), faults
    assert all(n >= 2 for fault, n in faults.items() if fault != "none"), faults
    modes = Counter(mode for _, modes in drawn for mode in modes)
    available = set(chaoslib.MODES) - ({"sandbox"} if shutil.which("bwrap") is None else set())
    assert set(modes) == available and min(modes.values()) >= 4, modes


def _fault_of(number: int) -> str:
    """The fault the seed gives run NUMBER, drawn by the harness itself (no run played)."""
    return _draw(number)[0]


def _draw(number: int) -> tuple[str, list[str]]:
    """The fault and the modes the seed gives run NUMBER (no run played)."""
    with tempfile.TemporaryDirectory() as tmp:
        outcome = chaoslib.Chaos(SETTINGS, number, Path(tmp)).outcome
        return outcome.fault, outcome.modes


def test_the_harness_sees_a_lost_commit() -> None:
    """The invariant check itself: a journaled commit no ref reaches is a violation."""
    with tempfile.TemporaryDirectory() as tmp:
        chaos = chaoslib.Chaos(chaoslib.Settings(runs=1), 0, Path(tmp))
        chaos.build(2)
        (chaos.repo / "s0" / "f.txt").write_text("lost\n")
        chaos.git("commit", "-qam", "soon unreachable")
        lost = chaos.git("rev-parse", "HEAD")
        chaos.git("reset", "-q", "--hard", "HEAD~1")
        chaos.git("reflog", "expire", "--expire=now", "--all")
        (chaos.journal / "s0.jsonl").write_text(
            f'{{"event": "behaviour", "pid": 1, "stream": "s0", "behaviour": "reset"}}\n'
            f'{{"event": "commit", "pid": 1, "stream": "s0", "sha": "{lost}"}}\n')
        chaos.check()
        kinds = [kind for kind, _ in chaos.outcome.violations]
        assert "lost_commit:reset" in kinds


def _harness(tmp: Path) -> chaoslib.Chaos:
    chaos = chaoslib.Chaos(chaoslib.Settings(runs=1, modes=()), 0, tmp)
    chaos.build(2)
    return chaos


def test_the_harness_sees_what_the_runner_must_never_do(tmp_path: Path) -> None:
    """The attack invariants themselves, on a real repository: a sentinel written or
    created, a planted program run, an edit hidden by an index flag and saved nowhere,
    planted leftovers seen by an agent, a tree the verify rejects held by the target."""
    chaos = _harness(tmp_path)
    (chaos.sentinels / "s0-agent.log").write_text("appended through a symlink\n")
    (chaos.sentinels / "s1-report.md").write_text("created through a symlink\n")
    (chaos.markers / "s0-1-gpg").write_text("gpg ran: sign\n")
    (chaos.repo / "README.md").write_text(f"{chaoslib.BROKEN}\n")
    chaos.git("commit", "-qam", "a tree the verify rejects")
    (chaos.journal / "s0.jsonl").write_text(
        '{"event": "hidden", "pid": 1, "stream": "s0", "run": "chaos-1", "path": "s0/f.txt",'
        ' "text": "hidden s0 0.5", "flag": "--skip-worktree"}\n'
        '{"event": "planted", "pid": 2, "stream": "s0", "run": "chaos2-1",'
        ' "what": "index flags: S s0/f.txt"}\n')
    chaos.check()
    kinds = {kind for kind, _ in chaos.outcome.violations}
    assert {"wrote_outside", "ran_agent_program", "lost_edit:skip-worktree",
            "planted_in_pool", "landed_broken"} <= kinds, chaos.outcome.violations
    written = [d for k, d in chaos.outcome.violations if k == "wrote_outside"]
    assert written == ["sentinels/s0-agent.log written", "sentinels/s1-report.md created"]


def test_a_hidden_edit_saved_in_a_rescue_ref_is_no_violation(tmp_path: Path) -> None:
    chaos = _harness(tmp_path)
    (chaos.repo / "s0" / "f.txt").write_text("hidden s0 0.5\n")
    chaos.git("add", "-A")
    tree = chaos.git("write-tree")
    saved = chaos.git("commit-tree", tree, "-p", "HEAD", "-m", "rescued")
    chaos.git("update-ref", "refs/worktree-runner/rescue/chaos-1/s0", saved)
    chaos.git("reset", "-q", "--hard")
    (chaos.journal / "s0.jsonl").write_text(
        '{"event": "hidden", "pid": 1, "stream": "s0", "run": "chaos-1", "path": "s0/f.txt",'
        ' "text": "hidden s0 0.5", "flag": "--assume-unchanged"}\n')
    chaos.check()
    assert chaos.outcome.violations == []


def _history(folder: Path) -> Path:
    """A small real history: edits, a new folder, a delete, a rename, a binary file, a
    merge commit, and changes to one file ordered across commits."""
    from tests.gitrepo import git

    repo = folder / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    steps: list[dict[str, str | bytes | None]] = [
        {"a.txt": "a\n", "b.txt": "b\n", "old.txt": "old\n", "keep/c.txt": "c\n"},
        {"a.txt": "a\na2\n"},
        {"new/d.txt": "d\n", "b.txt": "b\nb2\n"},
        {"old.txt": None, "renamed.txt": "old\n"},
        {"bin.dat": bytes(range(256)) * 4, "a.txt": "a0\na\na2\n"},
        {"keep/c.txt": None},
        {"a.txt": "a0\na\na2\na3\n", "new/d.txt": "d\nd2\n"},
    ]
    for number, step in enumerate(steps):
        for name, content in step.items():
            path = repo / name
            if content is None:
                path.unlink()
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"step {number}")
    git(repo, "checkout", "-q", "-b", "side", "HEAD~1")
    (repo / "side.txt").write_text("from a side branch\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "side work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    bundle = folder / "project.bundle"
    git(repo, "bundle", "create", "-q", str(bundle), "main")
    return bundle


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_replayed_history_lands_the_real_tree_in_every_mode(tmp_path: Path) -> None:
    """Replay from a bundle through run + merge, run --merge with the target checked out,
    sparse and the pool: the target's tree is the real one, every stream merged."""
    import chaos_replay

    doc = chaos_replay.replay(_history(tmp_path), 7, None)
    assert doc["changes"] == 7 and doc["dependencies"] >= 2, doc
    assert [p["phase"] for p in doc["phases"]] == list(chaos_replay.PHASES)
    for phase in doc["phases"]:
        assert phase["tree_equal"] and phase["merged"] == 7, phase["problems"]
        assert not phase["problems"], phase["problems"]
    assert doc["phases"][-1]["pooled_before"] > 0  # the last run took pooled worktrees
    assert doc["ok"]
