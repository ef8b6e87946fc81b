"""`scripts/bench --files 100000` (and more, or --monorepo at any size): the lifecycle on a
monorepo-shaped repository from scripts/make-big-repo, against plain git, in one run.

Both sides start from their own `git clone` of the cached repository (the user's checkout
of main). Streams: --streams packages of the repository (spread over its groups), stream
`apps-api-0` owning `apps/api-0/**`; each agent appends a line to its package's README.md
and commits it (`git add` of that file, `git commit`): the same command on both sides.

runner  timed: `wtr check PLAN`; `wtr run PLAN` (the launch: from the command's start to
        the last agent_started event); `wtr merge`; `wtr clean`. The disk of the run's
        worktrees is taken after the run (see below); the checkout method of each stream
        (`checkout` in `wtr status --json`, when the runner records one) is printed.
git     timed: the launch loop (`git worktree add --no-checkout -b` + `reset --hard` per
        stream), the agents (all at once), the merge (integration worktree, `git rebase
        --onto` per stream, update-ref, `reset --hard` of the checkout), clean
        (`git worktree remove --force` + `git branch -D` per stream).
        When --streams full checkouts do not fit (a million files: 20 of them take about
        100 GiB), git's side makes only --git-sample K worktrees (default: as many as
        fit): its launch, agents, worktree removal and disk are those of the K, times
        N/K (one worktree's work does not depend on the others'; the loop is sequential).
        The other streams' branches get the same commit (their README.md plus a line)
        from one untimed `git fast-import`, so the merge and `branch -D` still handle all N.

--checkout METHOD sets the plan's `checkout` (full, overlay, reflink, auto); with a method
other than full the runner's side needs room for one checkout beside the clone, not N.

Disk: `du -s` of the worktrees folder (blocks; a file hard-linked twice inside it counts
once; copy-on-write clones count in full, as du cannot see shared extents), and the
change of the filesystem's used space across the run (`statvfs`), which counts shared
blocks once but also counts whatever else writes to that filesystem meanwhile. One
checkout is the `du` of the clone's files (its .git aside).

Before each side the free space is compared with --streams full checkouts; when they do
not fit (bytes, and inodes: a tmpfs of 24 GiB holds about 3 million), the benchmark stops
and says how many would (pass --no-disk-check when the
runner's worktrees are cheap). One repetition unless --repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib as lib
import bigrepo

AGENT = ('d=$(printf "%s\\n" "$WTR_FILES" | head -n 1); d=${d%/**}; '
         'echo x >> "$d/README.md" && git add -- "$d/README.md" && git commit -q -m work')


def choose_packages(template: Path, count: int) -> list[str]:
    found = bigrepo.packages(template)
    if count > len(found):
        lib.fail(f"--streams {count}: the repository has only {len(found)} packages")
    step = len(found) / count
    return [found[int(i * step)] for i in range(count)]


def stream_name(package: str) -> str:
    return package.replace("/", "-")


def write_plan(path: Path, packages: list[str], method: str | None) -> Path:
    lines = ["version: 1", "name: bench", f"max_parallel: {len(packages)}", "agent:",
             f"  command: {json.dumps(AGENT)}"]
    lines += [f"checkout: {method}"] if method else []
    lines += ["streams:"]
    for package in packages:
        lines += [f"  {stream_name(package)}:", f'    files: ["{package}/**"]',
                  "    prompt: append a line to the package's README"]
    path.write_text("\n".join(lines) + "\n")
    return path


def du_mib(env: dict[str, str], folder: Path, *exclude: str) -> float:
    """Blocks under ``folder``, on its own filesystem only (-x): an overlay worktree's
    mount would show every file of the shared checkout again, once per mount."""
    if not folder.exists():
        return 0.0
    args = ["du", "-s", "-x", "--block-size=1", *(f"--exclude={e}" for e in exclude),
            str(folder)]
    return int(lib.run(args, folder, env).split()[0]) / 2**20


def used_mib(folder: Path) -> float:
    st = os.statvfs(folder)
    return (st.f_blocks - st.f_bfree) * st.f_frsize / 2**20


def free_mib(folder: Path) -> float:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize / 2**20


def clone(env: dict[str, str], template: Path, dest: Path) -> tuple[Path, float]:
    timed = lib.timed(["git", "clone", "-q", "--no-hardlinks", str(template), str(dest)],
                      dest.parent, env, dest.parent / "clone.log")
    print(f"  cloned {dest.name} in {timed.seconds:.1f}s", flush=True)
    return dest, timed.seconds


def room_for(args: argparse.Namespace, where: Path, repo: Path) -> tuple[float, int]:
    """The clone's checkout in MiB, and how many more such checkouts fit in the bytes and
    the inodes (tmpfs has few) left where the benchmark runs."""
    checkout = du_mib(args.env, repo, ".git")
    inodes = int(lib.run(["sh", "-c", "find . -path ./.git -prune -o -print | wc -l"], repo,
                         args.env))
    st = os.statvfs(where)
    return checkout, int(min(free_mib(where) / checkout, st.f_favail / inodes)) - 1


def ensure_room(args: argparse.Namespace, where: Path, repo: Path, streams: int) -> float:
    """The clone's checkout in MiB; stops the benchmark when ``streams`` more checkouts
    would not fit in the bytes or the inodes (tmpfs has few) left where it runs."""
    checkout = du_mib(args.env, repo, ".git")
    inodes = int(lib.run(["sh", "-c", "find . -path ./.git -prune -o -print | wc -l"], repo,
                         args.env))
    st = os.statvfs(where)
    free, free_inodes = free_mib(where), st.f_favail
    fits = int(min(free / checkout, free_inodes / inodes)) - 1
    if args.no_disk_check or fits >= streams:
        return checkout
    lib.fail(f"{streams} full checkouts of {checkout:.0f} MiB and {inodes} files and folders "
             f"each do not fit in {where} ({free / 1024:.1f} GiB and {free_inodes} inodes "
             f"free): pass --streams {max(fits, 0)} or less, a TMPDIR with room, or "
             "--no-disk-check when the runner's worktrees are cheap")


def methods(b: Any, repo: Path) -> str:
    doc = json.loads(lib.run([b.wtr, "status", "--json", "--repo", str(repo)], repo, b.env))
    used = Counter(str(s.get("checkout") or "not recorded") for s in doc["streams"])
    return ", ".join(f"{name} x{n}" for name, n in sorted(used.items()))


def runner_side(b: Any, args: argparse.Namespace, template: Path, work: Path,
                packages: list[str], bench: Any) -> dict[str, Any]:
    repo, _ = clone(b.env, template, work / "runner")
    thin = args.checkout not in (None, "full")
    checkout = ensure_room(args, work, repo, 1 if thin else len(packages))
    plan, log = write_plan(work / "plan.yaml", packages, args.checkout), work / "runner.log"
    where = ["--repo", str(repo)]
    old = lib.run(["git", "rev-parse", "main"], repo, b.env).strip()
    checked = lib.timed([b.wtr, "check", str(plan), *where], repo, b.env, log)
    before = used_mib(work)
    ran = lib.timed([b.wtr, "run", str(plan), *where], repo, b.env, log)
    run_id = bench.check_run(b, repo, len(packages))
    grown = used_mib(work) - before
    events = repo / ".git" / "worktree-runner" / "runs" / run_id / "events.jsonl"
    result = {"check": checked.seconds, "run": ran.seconds,
              "launch": bench.launched(events, ran), "checkout": checkout,
              "du": du_mib(b.env, repo.with_name(repo.name + ".worktrees")), "df": grown,
              "methods": methods(b, repo)}
    result["merge"] = lib.timed([b.wtr, "merge", *where], repo, b.env, log).seconds
    bench.check_landed(b, repo, old, len(packages))
    result["clean"] = lib.timed([b.wtr, "clean", *where], repo, b.env, log).seconds
    bench.check_cleaned(b, repo)
    result["rss"] = max(checked.rss_mib, ran.rss_mib)
    bench.discard(b, repo)
    return result


def git_scripts(folder: Path, packages: list[str], sample: int) -> dict[str, Path]:
    def loop(chosen: list[str]) -> str:
        pairs = " ".join(f"{stream_name(p)}:{p}" for p in chosen)
        return f"for pair in {pairs}; do s=${{pair%%:*}}; p=${{pair#*:}}"
    some, every = loop(packages[:sample]), loop(packages)
    head = ["set -euo pipefail", 'wt="$PWD.worktrees/base"', f"AGENT={shlex.quote(AGENT)}"]
    bodies = {
        "launch": [some, '  git worktree add -q --no-checkout -b "wtr/base/$s" "$wt/$s" main',
                   '  git -C "$wt/$s" reset -q --hard', "done"],
        "agents": ["pids=()", some,
                   '  (cd "$wt/$s" && WTR_FILES="$p/**" exec sh -c "$AGENT") & pids+=($!)',
                   "done", 'for p in "${pids[@]}"; do wait "$p"; done'],
        "merge": ['int="$wt/_merge"', "old=$(git rev-parse main)",
                  'git worktree add -q --detach "$int" "$old"', every,
                  '  tip=$(git rev-parse "wtr/base/$s")',
                  '  git -C "$int" rebase -q --onto "$(git -C "$int" rev-parse HEAD)" "$old" '
                  '"$tip"', "done",
                  'git update-ref refs/heads/main "$(git -C "$int" rev-parse HEAD)" "$old"',
                  "git reset -q --hard", 'git worktree remove --force "$int"'],
        "remove": [some, '  git worktree remove --force "$wt/$s"', "done"],
        "branches": [every, '  git branch -q -D "wtr/base/$s"', "done"],
    }
    scripts = {}
    for phase, body in bodies.items():
        scripts[phase] = folder / f"git-{phase}.sh"
        scripts[phase].write_text("\n".join(head + body) + "\n")
    return scripts


def commit_unsampled(b: Any, repo: Path, packages: list[str]) -> None:
    """Give the streams git's side does not run a worktree for the commit their agent would
    make (README.md plus a line), on their branch, with one untimed `git fast-import`."""
    if not packages:
        return
    main = lib.run(["git", "rev-parse", "main"], repo, b.env).strip()
    stream = []
    for package in packages:
        text = lib.run(["git", "cat-file", "blob", f"main:{package}/README.md"], repo, b.env)
        data = (text + "x\n").encode()
        stream += [f"commit refs/heads/wtr/base/{stream_name(package)}".encode(),
                   b"committer bench <bench@example.com> 1700000000 +0000", b"data 4", b"work",
                   f"from {main}".encode(), f"M 100644 inline {package}/README.md".encode(),
                   f"data {len(data)}".encode() + b"\n" + data]
    subprocess.run(["git", "fast-import", "--quiet"], input=b"\n".join(stream) + b"\n",
                   cwd=repo, env=b.env, check=True)


def git_side(b: Any, args: argparse.Namespace, template: Path, work: Path,
             packages: list[str], bench: Any) -> dict[str, Any]:
    repo, _ = clone(b.env, template, work / "git")
    streams = len(packages)
    _, fits = room_for(args, work, repo)
    fits -= 1  # (the merge's integration worktree, beside the streams' worktrees)
    room = streams if args.no_disk_check or fits >= streams else max(fits, 1)
    sample = min(args.git_sample or room, streams)
    if sample < streams and not args.git_sample:
        print(f"  git: {streams} full checkouts do not fit; measuring {sample} and counting "
              f"each {streams / sample:.1f} times", flush=True)
    scripts, log = git_scripts(work, packages, sample), work / "git.log"
    old = lib.run(["git", "rev-parse", "main"], repo, b.env).strip()
    result: dict[str, Any] = {"sample": sample}
    scale = streams / sample
    before = used_mib(work)
    result["launch"] = lib.timed(["bash", str(scripts["launch"])], repo, b.env, log).seconds * scale
    result["agents"] = lib.timed(["bash", str(scripts["agents"])], repo, b.env, log).seconds * scale
    commit_unsampled(b, repo, packages[sample:])
    result["du"] = du_mib(b.env, repo.with_name(repo.name + ".worktrees")) * scale
    result["df"] = (used_mib(work) - before) * scale
    result["merge"] = lib.timed(["bash", str(scripts["merge"])], repo, b.env, log).seconds
    bench.check_landed(b, repo, old, streams)
    removed = lib.timed(["bash", str(scripts["remove"])], repo, b.env, log).seconds
    branches = lib.timed(["bash", str(scripts["branches"])], repo, b.env, log).seconds
    result["clean"] = removed * scale + branches
    bench.check_cleaned(b, repo)
    bench.discard(b, repo)
    return result


def report(files: int, streams: int, r: dict[str, Any], g: dict[str, Any]) -> None:
    rows = [("until every agent runs", r["launch"], g["launch"]),
            ("wtr run / launch+agents", r["run"], g["launch"] + g["agents"]),
            ("check", r["check"], None),
            (f"merge of {streams} streams", r["merge"], g["merge"]),
            ("clean", r["clean"], g["clean"])]
    print(f"\n{files} files, {streams} streams\n{'phase':<26} | runner s | git s    | ratio")
    print(f"{'-' * 26}-|----------|----------|------")
    for phase, ours, theirs in rows:
        if theirs is None:
            print(f"{phase:<26} | {ours:8.2f} | {'-':>8} |")
        else:
            print(f"{phase:<26} | {ours:8.2f} | {theirs:8.2f} | {ours / theirs:5.2f}")
    print(f"disk of the run's worktrees: runner du {r['du']:.0f} MiB (filesystem grew "
          f"{r['df']:.0f} MiB), git du {g['du']:.0f} MiB (grew {g['df']:.0f} MiB); one "
          f"checkout {r['checkout']:.0f} MiB; runner/one checkout "
          f"{r['du'] / r['checkout']:.2f} (du), {r['df'] / r['checkout']:.2f} (filesystem)")
    print(f"checkout method per stream: {r['methods']}")
    if g["sample"] < streams:
        print(f"git's side made {g['sample']} of the {streams} worktrees: its launch, agents, "
              f"worktree removal and disk are theirs times {streams / g['sample']:.1f}")
    print(f"runner peak memory (check, run): {r['rss']:.0f} MiB")


def mode_monorepo(b: Any, tmp: Path, args: argparse.Namespace, bench: Any) -> None:
    files, args.env = args.files or 100_000, b.env
    clock = time.perf_counter()
    template = Path(subprocess.run(
        [str(Path(__file__).with_name("make-big-repo")), str(files)], check=True,
        capture_output=True, text=True).stdout.strip())
    print(f"  repository {template} ({time.perf_counter() - clock:.1f}s)", flush=True)
    packages = choose_packages(template, args.streams)
    results = []
    for i in range(args.repeat or 1):
        work = tmp / f"rep{i}"
        work.mkdir()
        sides = [("r", runner_side), ("g", git_side)]
        got: dict[str, dict[str, Any]] = {}
        for prefix, side in sides[::-1] if i % 2 else sides:
            got[prefix] = side(b, args, template, work, packages, bench)
            shown = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in got[prefix].items())
            print(f"  {'runner' if prefix == 'r' else 'git'}: {shown}", flush=True)
        results.append(got)
        report(files, len(packages), got["r"], got["g"])
