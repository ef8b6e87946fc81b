"""The chaos harness (scripts/chaos), small and with a fixed seed: the standing guard."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import chaoslib

# Every invariant holds on this code: any violation fails the test.


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_twenty_chaos_runs_with_a_fixed_seed_keep_every_invariant() -> None:
    settings = chaoslib.Settings(runs=20, seed=16, max_streams=3, timeout=1.0)
    doc = chaoslib.summary(chaoslib.play(settings))
    report = chaoslib.table(doc)
    print(report)
    assert doc["runs"] == 20
    assert sum(doc["faults"].values()) == 20 and len(doc["faults"]) >= 4, report
    assert not doc["violations"], report


def test_the_harness_sees_a_lost_commit() -> None:
    """The invariant check itself: a journaled commit no ref reaches is a violation."""
    import tempfile

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
