"""`scripts/bench --merge-replay`: wtr merge (in-memory replay) against the plain rebase loop.

Per repetition, on fresh clones of one synthetic repository (--files, default 20,000;
--streams non-conflicting streams, default 20, each appending to one file of its own
folder), the target having moved by one commit after the streams started:

wtr      `wtr run` (not timed), then `wtr merge` timed: streams replayed in the object
         database, no worktree (the plan has no verify), main's checkout following.
rebase   `wtr run` (not timed), then `WTR_MERGE_REPLAY=rebase wtr merge` timed: the same
         landing, every stream rebased in an integration worktree (the old path).
git      the lifecycle benchmark's plain merge script: an integration worktree, one
         `git rebase --onto` per stream, update-ref, `git reset --hard`, worktree removed.

Prints the medians and `merge ratio wtr/git-rebase-loop: X.XX (goal: <= 0.50)`. Then
reads every commit object of the repository's history (--reads, default 2,000 reads)
once through one persistent `git cat-file --batch` and once with one `git cat-file`
process per object, and prints that ratio too.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as lib


def _move_target(repo: Path, env: dict[str, str]) -> None:
    (repo / "README.md").write_text("the target moved\n")
    lib.run(["git", "commit", "-q", "-am", "the target moves"], repo, env)


def _wtr_side(b: Any, template: Path, work: Path, streams: list[str], plan: Path,
              mode: str) -> float:
    repo = lib.fresh_clone(template, work / mode, b.env)
    where = ["--repo", str(repo)]
    log = work / f"{mode}.log"
    lib.timed([b.wtr, "run", str(plan), *where], repo, b.env, log)
    _move_target(repo, b.env)
    env = {**b.env, "WTR_MERGE_REPLAY": "rebase" if mode == "rebase" else "memory"}
    old = lib.run(["git", "rev-parse", "main"], repo, b.env).strip()
    seconds = lib.timed([b.wtr, "merge", *where], repo, env, log).seconds
    landed = int(lib.run(["git", "rev-list", "--count", f"{old}..main"], repo, b.env))
    if landed != len(streams):
        lib.fail(f"{mode}: main gained {landed} commits in {repo}, expected {len(streams)}")
    return seconds


def _git_side(b: Any, template: Path, work: Path, streams: list[str],
              scripts: dict[str, Path]) -> float:
    repo = lib.fresh_clone(template, work / "git", b.env)
    log = work / "git.log"
    for phase in ("launch", "agents"):
        lib.timed(["bash", str(scripts[phase])], repo, b.env, log)
    _move_target(repo, b.env)
    # the script rebases onto main as it was: start the loop from the moved main
    return lib.timed(["bash", str(scripts["merge"])], repo, b.env, log).seconds


def reader_seconds(repo: Path, ids: list[str]) -> float | None:
    """Seconds the runner's own object reader (GitPython's object database over one
    persistent cat-file --batch) takes for ``ids``; None when worktree_runner is not
    importable from this python."""
    try:
        from worktree_runner import git as wtr_git
    except ImportError:
        return None
    clock = time.perf_counter()
    with wtr_git.ObjectReader(wtr_git.open_repository(repo)) as reader:
        for oid in ids:
            reader.read(oid)
    return time.perf_counter() - clock


def reads(repo: Path, env: dict[str, str], count: int) -> tuple[float, float]:
    """Seconds to read ``count`` commit objects: one cat-file --batch vs one process each."""
    ids = lib.run(["git", "rev-list", "--all"], repo, env).split()
    ids = (ids * (count // max(1, len(ids)) + 1))[:count]
    runner = reader_seconds(repo, ids)
    if runner is not None:
        print(f"reading {count} commit objects through the runner's reader (GitPython): "
              f"{runner:.3f}s", flush=True)
    clock = time.perf_counter()
    proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=repo, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    for oid in ids:
        proc.stdin.write(oid.encode() + b"\n")
        proc.stdin.flush()
        size = int(proc.stdout.readline().split()[2])
        proc.stdout.read(size + 1)
    proc.stdin.close()
    proc.wait()
    batch = time.perf_counter() - clock
    clock = time.perf_counter()
    for oid in ids:
        subprocess.run(["git", "cat-file", "commit", oid], cwd=repo, env=env,
                       capture_output=True, check=True)
    return batch, time.perf_counter() - clock


def mode_merge_replay(b: Any, tmp: Path, args: argparse.Namespace,
                      write_plan: Callable[[Path, list[str]], Path],
                      git_scripts: Callable[[Path, list[str]], dict[str, Path]],
                      area_names: Callable[[int], list[str]]) -> None:
    streams, files = area_names(args.streams), args.files or 20_000
    template = tmp / "template"
    lib.build_repo(template, files, streams, b.env)
    rows = []
    for i in range(args.repeat or 3):
        work = tmp / f"rep{i}"
        work.mkdir()
        plan = write_plan(work / "plan.yaml", streams)
        scripts = git_scripts(work, streams)
        row = {"wtr": _wtr_side(b, template, work, streams, plan, "wtr"),
               "rebase": _wtr_side(b, template, work, streams, plan, "rebase"),
               "git": _git_side(b, template, work, streams, scripts)}
        rows.append(row)
        print("  " + ", ".join(f"{k} {v:.2f}s" for k, v in row.items()), flush=True)
    m = lib.medians(rows)
    print(f"\nmerge of {len(streams)} non-conflicting streams on {files} files (medians): "
          f"wtr {m['wtr']:.2f}s, wtr by rebase {m['rebase']:.2f}s, git rebase loop "
          f"{m['git']:.2f}s")
    print(f"merge ratio wtr/git-rebase-loop: {m['wtr'] / m['git']:.2f} (goal: <= 0.50); "
          f"wtr by rebase / git: {m['rebase'] / m['git']:.2f}")
    batch, each = reads(template, b.env, args.reads)
    print(f"reading {args.reads} commit objects: one cat-file --batch {batch:.3f}s, one "
          f"process per object {each:.3f}s, ratio {batch / each:.3f}")
