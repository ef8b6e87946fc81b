"""`scripts/chaos --replay BUNDLE`: a real project's history replayed through wtr.

N consecutive commits of the project's first-parent history become N streams of one plan.
Stream k owns exactly the paths commit k changed, depends on every earlier stream that
changed one of the same paths (so overlapping changes land in their real order), and its
agent applies exactly that commit's change (`git diff --binary` of the commit against its
first parent, applied with `git apply --index`) and commits it with the commit's message.
The repository starts at the commit before the first one.

The plan goes through `run` then `merge`; `run --merge` with the target checked out in the
main checkout; `sparse: true`; and `run --merge` again on the worktrees the earlier runs
left in the pool. The target is put back at the start commit before each. After each:
the target's tree must be exactly the last real commit's tree, every stream merged,
none failed, none blamed for a change outside its worktree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() \
    else sys.executable
PHASES = ("run_then_merge", "run_merge", "sparse", "pool")


@dataclass
class Change:
    commit: str
    parent: str
    paths: list[str]
    subject: str


@dataclass
class PhaseResult:
    phase: str
    seconds: float = 0.0
    tree_equal: bool = False
    merged: int = 0
    pooled_before: int = 0
    problems: list[str] = field(default_factory=list)


class Replay:
    def __init__(self, source: Path, folder: Path) -> None:
        self.folder = folder
        self.repo = folder / "repo"
        config = folder / "gitconfig"
        config.write_text("[user]\n\tname = replay\n\temail = replay@example.invalid\n"
                          "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "WTR_"))}
        self.env.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1")
        self.source = source

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> str:
        done = subprocess.run(["git", *args], cwd=cwd or self.repo, env=self.env,
                              capture_output=True, text=True, check=False)
        if check and done.returncode:
            raise RuntimeError(f"git {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    # -- the history ----------------------------------------------------------------------

    def clone(self) -> None:
        """The project's objects in a fresh repository with no refs of the source's; the
        replayed commits stay reachable from one ref (refs/replay/source) only, so the
        agents can read their changes and gc never drops them."""
        subprocess.run(["git", "clone", "-q", "--no-checkout", str(self.source), str(self.repo)],
                       env=self.env, check=True, capture_output=True)

    def changes(self, count: int, start: str | None) -> list[Change]:
        history = self.git("rev-list", "--first-parent", "--reverse", "HEAD").split()
        first = history.index(self.git("rev-parse", f"{start}^{{commit}}")) if start \
            else max(1, len(history) - count)
        picked: list[Change] = []
        for commit in history[max(first, 1):]:
            if len(picked) == count:
                break
            parent = self.git("rev-parse", f"{commit}^1")
            paths = self.git("diff", "--name-only", "--no-renames", "-z", parent, commit)
            names = [p for p in paths.split("\0") if p]
            if names:  # an empty commit has nothing to replay
                picked.append(Change(commit, parent, names,
                                     self.git("log", "-1", "--format=%s", commit)))
        return picked

    def prepare(self, changes: list[Change]) -> str:
        base = changes[0].parent
        self.git("update-ref", "refs/replay/source", changes[-1].commit)
        for ref in self.git("for-each-ref", "--format=%(refname)").split():
            if ref != "refs/replay/source":
                self.git("update-ref", "-d", ref)
        self.git("remote", "remove", "origin", check=False)
        self.git("checkout", "-q", "-B", "main", base)
        return base

    # -- the plan -------------------------------------------------------------------------

    def plan(self, name: str, changes: list[Change], sparse: bool) -> Path:
        streams: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for number, change in enumerate(changes, 1):
            stream = f"c{number:03d}"
            deps = sorted({owner[p] for p in change.paths if p in owner})
            spec: dict[str, Any] = {
                "files": [_pattern(p) for p in change.paths],
                "prompt": f"apply {change.commit[:12]}: {change.subject}",
                "agent": {"env": {"REPLAY_COMMIT": change.commit,
                                  "REPLAY_PARENT": change.parent}},
            }
            if deps:
                spec["depends_on"] = deps
            streams[stream] = spec
            owner.update({p: stream for p in change.paths})
        plan: dict[str, Any] = {
            "version": 1, "name": name, "max_parallel": 4, "worktrees_dir": "../worktrees",
            "agent": {"command": [sys.executable, str(Path(__file__).resolve()), "agent"],
                      "timeout": 300, "retries": 0},
            "streams": streams,
        }
        if sparse:
            plan["sparse"] = True
        path = self.folder / f"{name}.json"
        path.write_text(json.dumps(plan, indent=1))
        return path

    # -- the phases -----------------------------------------------------------------------

    def wtr(self, *args: str) -> tuple[int, str, str]:
        done = subprocess.run([PYTHON, "-m", "worktree_runner", *args], cwd=self.repo,
                              env=self.env, capture_output=True, text=True, timeout=3600,
                              check=False)
        return done.returncode, done.stdout, done.stderr

    def phase(self, phase: str, changes: list[Change], base: str) -> PhaseResult:
        result = PhaseResult(phase)
        started = time.monotonic()
        self.git("reset", "-q", "--hard", base)  # the user puts the target back
        result.pooled_before = sum(1 for line in self.git("worktree", "list").splitlines()
                                   if "/.pool/" in line)
        plan = self.plan(f"replay-{phase.replace('_', '-')}", changes, phase == "sparse")
        merge_in_run = phase in ("run_merge", "pool")
        code, _, err = self.wtr("run", str(plan), *(["--merge"] if merge_in_run else []))
        if code != 0:
            result.problems.append(f"wtr run exit {code}: {_last(err)}")
        if not merge_in_run:
            code, _, err = self.wtr("merge")
            if code != 0:
                result.problems.append(f"wtr merge exit {code}: {_last(err)}")
        self.judge(result, changes)
        code, _, err = self.wtr("clean")
        if code != 0:
            result.problems.append(f"wtr clean exit {code}: {_last(err)}")
        result.seconds = time.monotonic() - started
        return result

    def judge(self, result: PhaseResult, changes: list[Change]) -> None:
        real = self.git("rev-parse", f"{changes[-1].commit}^{{tree}}")
        result.tree_equal = self.git("rev-parse", "main^{tree}") == real
        if not result.tree_equal:
            diff = self.git("diff", "--stat", changes[-1].commit, "main", check=False)
            result.problems.append(f"main's tree is not the real one: {_last(diff)}")
        if self.git("status", "--porcelain"):
            result.problems.append("the main checkout does not match main")
        code, out, err = self.wtr("status", "--json")
        doc = json.loads(out) if code == 0 else {}
        for stream in doc.get("streams", []):
            if stream["status"] == "merged":
                result.merged += 1
            else:
                failure = (stream.get("failure") or {}).get("message", "")
                result.problems.append(f"{stream['name']}: {stream['status']} {failure}"[:200])
        for entry in doc.get("isolation", []):
            result.problems.append(f"isolation: {entry.get('stream')}: {entry.get('changes')}")
        if not doc:
            result.problems.append(f"wtr status failed: {_last(err)}")


def _pattern(path: str) -> str:
    """A path as a pattern matching it (one without a '/' inside also matches deeper)."""
    return "".join("\\" + c if c in "*?[\\!#" else c for c in path)


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def replay(source: Path, count: int, start: str | None, keep: bool = False,
           phases: tuple[str, ...] = PHASES) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="wtr-replay-"))
    try:
        job = Replay(source.resolve(), folder)
        job.clone()
        changes = job.changes(count, start)
        base = job.prepare(changes)
        results = [job.phase(phase, changes, base) for phase in phases]
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "source": str(source), "changes": len(changes), "base": base,
        "first": changes[0].commit, "last": changes[-1].commit,
        "paths": len({p for c in changes for p in c.paths}),
        "dependencies": sum(1 for i, c in enumerate(changes)
                            if any(set(c.paths) & set(d.paths) for d in changes[:i])),
        "phases": [vars(r) for r in results],
        "ok": all(r.tree_equal and not r.problems and r.merged == len(changes)
                  for r in results),
        **({"folder": str(folder)} if keep else {}),
    }


def agent() -> int:
    """One stream's agent: the commit's change, applied and committed."""
    commit, parent = os.environ["REPLAY_COMMIT"], os.environ["REPLAY_PARENT"]
    patch = subprocess.run(["git", "diff", "--binary", "--full-index", "--no-renames",
                            parent, commit], capture_output=True, check=True).stdout
    subprocess.run(["git", "apply", "--index", "--whitespace=nowarn"], input=patch,
                   check=True)
    message = subprocess.run(["git", "log", "-1", "--format=%B", commit], capture_output=True,
                             check=True).stdout
    author = subprocess.run(["git", "log", "-1", "--format=%an%x00%ae%x00%ad", "--date=raw",
                             commit], capture_output=True, text=True, check=True).stdout
    name, email, date = author.strip().split("\0")
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_AUTHOR_DATE": date}
    subprocess.run(["git", "commit", "-q", "--no-verify", "-F", "-"], input=message, env=env,
                   check=True)
    return 0


def replay_main(source: Path, count: int, start: str | None, keep: bool, as_json: bool) -> int:
    doc = replay(source, count, start, keep)
    if as_json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"replayed {doc['changes']} commits {doc['first'][:12]}..{doc['last'][:12]} "
              f"of {doc['source']} ({doc['paths']} paths, {doc['dependencies']} changes "
              f"ordered after an earlier one)")
        for phase in doc["phases"]:
            verdict = "exact tree" if phase["tree_equal"] else "TREE DIFFERS"
            print(f"  {phase['phase']:<15} {verdict}, {phase['merged']} merged, "
                  f"{phase['pooled_before']} pooled worktrees before, {phase['seconds']:.0f}s")
            for problem in phase["problems"]:
                print(f"      {problem}")
    return 0 if doc["ok"] else 1


if __name__ == "__main__" and sys.argv[1:] == ["agent"]:
    sys.exit(agent())
