"""The chaos harness behind scripts/chaos. Standard library only (plus the project's wtr).

One run: a fresh repository, a random plan (random DAG, conflicts_with, shared paths)
whose agent is tests/agents/hostile.py (a random misbehaviour per attempt), one random
fault (SIGKILL or SIGINT of the runner at a random moment, a WTR_FAULT step, SIGKILL of an
agent, SIGKILL during merge or clean), then what a user does next: resume until the run
is finished, merge (conflicts resolved by a scripted human or aborted), clean. Then the
invariants are checked; a broken one is a violation, reported by kind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = ROOT / "tests" / "agents" / "hostile.py"
# wtr runs from the project's venv when there is one (scripts/test makes it).
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() \
    else sys.executable
FAULT_STEPS = ("after_branch", "after_worktree", "agent_running", "agent_ended",
               "ownership_check")
FAULTS = ("none", "kill_runner", "fault_step", "sigint_runner", "kill_agent", "kill_merge",
          "kill_clean")
VERIFY = """import subprocess, sys, time
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(sys.argv[1], "a") as out:
    out.write(head + "\\n")
"""


@dataclass
class Settings:
    runs: int = 20
    seed: int = 1
    max_streams: int = 5
    timeout: float = 3.0
    keep: bool = False
    behaviours: tuple[str, ...] = ()
    progress: bool = False
    faults: tuple[str, ...] = ()


@dataclass
class Outcome:
    run: int
    fault: str
    behaviours: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Chaos:
    """One repository, one plan, one fault, then the checks."""

    def __init__(self, settings: Settings, number: int, folder: Path) -> None:
        self.settings = settings
        self.number = number
        self.rng = random.Random(f"{settings.seed}:{number}")
        self.folder = folder
        self.repo = folder / "repo"
        self.journal = folder / "journal"
        self.tag = f"chaos-{os.getpid()}-{settings.seed}-{number}"
        self.outcome = Outcome(number, self.rng.choice(settings.faults or FAULTS))
        self.env = self._env()

    # -- setup --------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        config = self.folder / "gitconfig"
        config.write_text("[user]\n\tname = chaos\n\temail = chaos@example.invalid\n"
                          "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GIT_", "WTR_", "CHAOS_"))}
        env.update(GIT_CONFIG_GLOBAL=str(config), GIT_CONFIG_NOSYSTEM="1",
                   WTR_KILL_GRACE="1", WTR_RETRY_BACKOFF="0.05",
                   CHAOS_JOURNAL=str(self.journal), CHAOS_SEED=str(self.settings.seed),
                   CHAOS_TAG=self.tag)
        if self.settings.behaviours:
            env["CHAOS_BEHAVIOURS"] = ",".join(self.settings.behaviours)
        return env

    def git(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["git", *args], cwd=self.repo, env=self.env, capture_output=True,
                              text=True, check=False)
        if check and done.returncode:
            raise RuntimeError(f"git {' '.join(args)}: {done.stderr}")
        return done.stdout.strip()

    def build(self, streams: int) -> Path:
        self.journal.mkdir()
        self.repo.mkdir()
        self.git("init", "-q", "-b", "main")
        for i in range(streams):
            (self.repo / f"s{i}").mkdir()
            (self.repo / f"s{i}" / "f.txt").write_text(f"file of s{i}\n")
        (self.repo / "shared.txt").write_text("shared\n")
        (self.repo / "README.md").write_text("chaos\n")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "initial")
        (self.folder / "verify.py").write_text(VERIFY)
        return self.write_plan(streams)

    def write_plan(self, count: int) -> Path:
        rng, names = self.rng, [f"s{i}" for i in range(count)]
        streams: dict[str, Any] = {}
        for i, name in enumerate(names):
            earlier = names[:i]
            spec: dict[str, Any] = {"files": [f"{name}/**"], "prompt": f"work on {name}"}
            deps = [n for n in earlier if rng.random() < 0.3]
            conflicts = [n for n in earlier if n not in deps and rng.random() < 0.15]
            if deps:
                spec["depends_on"] = deps
            if conflicts:
                spec["conflicts_with"] = conflicts
            env = {"CHAOS_OWN": f"{name}/f.txt",
                   "CHAOS_OTHER": f"{rng.choice([n for n in names if n != name] or [name])}/f.txt"}
            if rng.random() < 0.4:
                spec["shared"] = ["shared.txt"]
                env["CHAOS_SHARED"] = "shared.txt"
            spec["agent"] = {"env": env}
            streams[name] = spec
        plan = {
            "version": 1, "name": "chaos", "max_parallel": rng.randint(1, 4),
            "worktrees_dir": "../worktrees",
            "agent": {"command": [sys.executable, str(HOSTILE)],
                      "timeout": self.settings.timeout, "retries": rng.choice([0, 0, 1])},
            "shared": ["shared.txt"],
            "verify": [f"{sys.executable} {self.folder / 'verify.py'} "
                       f"{self.journal / 'verified.txt'}"],
            "streams": streams,
        }
        path = self.folder / "plan.json"  # JSON is YAML: no dependency needed to write it
        path.write_text(json.dumps(plan, indent=1))
        return path

    # -- driving wtr --------------------------------------------------------------------

    def wtr(self, *args: str, kill_after: float | None = None, sig: int = signal.SIGKILL,
            extra: dict[str, str] | None = None) -> tuple[int, str]:
        command = [PYTHON, "-m", "worktree_runner", *args]
        process = subprocess.Popen(command, cwd=self.repo, env={**self.env, **(extra or {})},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=kill_after if kill_after else 300)
        except subprocess.TimeoutExpired:
            process.send_signal(sig)
            out, err = process.communicate(timeout=300)
        if "Traceback" in err:
            self.violation("traceback", f"wtr {' '.join(args)}: {err.strip().splitlines()[-1]}")
        return process.returncode, out

    def violation(self, kind: str, detail: str) -> None:
        self.outcome.violations.append((kind, detail))

    def state(self) -> dict[str, Any] | None:
        code, out = self.wtr("status", "--json")
        if code != 0:
            return None
        try:
            doc: dict[str, Any] = json.loads(out)
        except ValueError:
            self.violation("state", "wtr status --json printed no JSON document")
            return None
        return doc

    def run_phase(self, plan: Path) -> None:
        fault, rng = self.outcome.fault, self.rng
        if fault == "kill_runner":
            self.wtr("run", str(plan), kill_after=rng.uniform(0.3, 4.0))
        elif fault == "sigint_runner":
            self.wtr("run", str(plan), kill_after=rng.uniform(0.3, 4.0), sig=signal.SIGINT)
        elif fault == "fault_step":
            step = rng.choice(FAULT_STEPS)
            if rng.random() < 0.5:
                step += f":s{rng.randrange(2)}"
            self.wtr("run", str(plan), extra={"WTR_FAULT": step})
        elif fault == "kill_agent":
            self._run_killing_an_agent(plan)
        else:
            self.wtr("run", str(plan))
        for _ in range(4):
            doc = self.state()
            if doc is None or doc["state"] == "finished":
                break
            self.wtr("resume")

    def _run_killing_an_agent(self, plan: Path) -> None:
        command = [PYTHON, "-m", "worktree_runner", "run", str(plan)]
        process = subprocess.Popen(command, cwd=self.repo, env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(self.rng.uniform(0.5, 2.5))
        for pid in _processes_tagged(self.tag):
            if pid != process.pid and _cmdline(pid).endswith(str(HOSTILE)):
                os.kill(pid, signal.SIGKILL)
                break
        _, err = process.communicate(timeout=300)
        if "Traceback" in err:
            self.violation("traceback", f"wtr run: {err.strip().splitlines()[-1]}")

    def merge_phase(self) -> None:
        kill = self.outcome.fault == "kill_merge"
        code, _ = self.wtr("merge", kill_after=self.rng.uniform(0.05, 1.5) if kill else None)
        for _ in range(8):
            doc = self.state()
            merge = doc["merge"] if doc else {}
            if merge.get("state") != "halted" and code not in (-signal.SIGKILL,):
                return
            if merge.get("state") == "halted" and self.rng.random() < 0.7 and \
                    merge.get("conflicted_files"):
                self._resolve(Path(merge["worktree"]), merge["conflicted_files"])
                code, _ = self.wtr("merge", "--continue")
            elif merge.get("state") == "halted":
                code, _ = self.wtr("merge", "--abort")
            else:
                code, _ = self.wtr("merge")

    def _resolve(self, worktree: Path, files: list[str]) -> None:
        """The scripted human: keep both sides of every conflict, stage the files."""
        for name in files:
            path = worktree / name
            if path.exists():
                lines = path.read_text().splitlines(keepends=True)
                kept = [ln for ln in lines if not ln.startswith(("<<<<<<<", "=======",
                                                                 ">>>>>>>", "|||||||"))]
                path.write_text("".join(kept))
            subprocess.run(["git", "add", "-A", "--", name], cwd=worktree, env=self.env,
                           capture_output=True, check=False)

    def clean_phase(self) -> None:
        args = ["clean", *(["--force"] if self.rng.random() < 0.5 else [])]
        if self.outcome.fault == "kill_clean":
            self.wtr(*args, kill_after=self.rng.uniform(0.05, 1.0))
        self.wtr(*args)
        self.wtr("clean", "--pool")  # the emptied worktrees kept for reuse go too

    # -- the invariants -------------------------------------------------------------------

    def journal_entries(self) -> list[dict[str, Any]]:
        entries = []
        for path in sorted(self.journal.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue  # a line cut short by a kill
        return entries

    def check(self) -> None:
        entries = self.journal_entries()
        behaviour_of: dict[int, str] = {}
        for entry in entries:
            if entry["event"] == "behaviour":
                behaviour_of[entry["pid"]] = entry["behaviour"]
                self.outcome.behaviours[entry["behaviour"]] += 1
        self._commits_reachable(entries, behaviour_of)
        self._fsck()
        self._nothing_left()
        for entry in entries:
            if entry["event"] == "overlap":
                self.violation("two_agents", f"{entry['stream']}: pid {entry['pid']} started "
                                             f"while pid {entry['other']} still ran")
        self._target_verified()
        code, out = self.wtr("runs", "--json")
        if code != 0 or not isinstance(_json(out), dict):
            self.violation("state", f"wtr runs --json failed (exit {code})")

    def _commits_reachable(self, entries: list[dict[str, Any]], behaviour_of: dict[int, str]
                           ) -> None:
        reachable = set(self.git("rev-list", "--branches", "--tags",
                                 "--glob=refs/worktree-runner/*").split())
        doc = self.state() or {"streams": []}
        merged_heads = {s["name"]: s["head_commit"] for s in doc["streams"]
                        if s["status"] == "merged" and s.get("head_commit")}
        for entry in entries:
            if entry["event"] != "commit" or entry["sha"] in reachable:
                continue
            how = behaviour_of.get(entry["pid"], "?")
            head = merged_heads.get(entry["stream"])
            if head and self._is_ancestor(entry["sha"], head):
                how = "merged_original"  # landed rebased; the original sha is kept nowhere
            self.violation(f"lost_commit:{how}", f"{entry['stream']}: {entry['sha'][:12]}")

    def _is_ancestor(self, older: str, newer: str) -> bool:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer],
                              cwd=self.repo, env=self.env, capture_output=True, check=False)
        return done.returncode == 0

    def _fsck(self) -> None:
        done = subprocess.run(["git", "fsck", "--no-progress", "--no-dangling"], cwd=self.repo,
                              env=self.env, capture_output=True, text=True, check=False)
        if done.returncode:
            self.violation("fsck", (done.stderr or done.stdout).strip()[:200])

    def _nothing_left(self) -> None:
        worktrees = [line for line in self.git("worktree", "list", "--porcelain").splitlines()
                     if line.startswith("worktree ")]
        if len(worktrees) > 1:
            self.violation("worktree_left", ", ".join(w[9:] for w in worktrees[1:]))
        git_dir = self.repo / ".git"
        locks = [p for p in git_dir.rglob("*.lock")
                 if "worktree-runner" not in p.relative_to(git_dir).parts]
        if locks:
            self.violation("lock_left", ", ".join(str(p.relative_to(git_dir)) for p in locks))
        deadline = time.monotonic() + 3  # a process being reaped right now gets a moment
        while (alive := _processes_tagged(self.tag)) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in alive:
            self.violation("process_left", f"pid {pid}: {_cmdline(pid)[:80]}")
            _kill(pid)

    def _target_verified(self) -> None:
        verified_file = self.journal / "verified.txt"
        verified = set(verified_file.read_text().split()) if verified_file.exists() else set()
        initial = self.git("rev-list", "--max-parents=0", "main")
        for sha in self.git("reflog", "show", "--format=%H", "refs/heads/main").split():
            if sha not in verified and sha != initial:
                self.violation("unverified_target", f"main was at {sha[:12]}, never verified")

    # -- one whole run ------------------------------------------------------------------

    def play(self) -> Outcome:
        started = time.monotonic()
        plan = self.build(self.rng.randint(2, self.settings.max_streams))
        try:
            self.run_phase(plan)
            self.merge_phase()
            self.clean_phase()
            self.check()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            self.violation("harness", str(exc)[:200])
        finally:
            for pid in _processes_tagged(self.tag):
                _kill(pid)
        self.outcome.seconds = time.monotonic() - started
        return self.outcome


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _processes_tagged(tag: str) -> list[int]:
    """Processes whose environment carries CHAOS_TAG=tag (ours aside)."""
    needle = f"CHAOS_TAG={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def play(settings: Settings) -> list[Outcome]:
    outcomes = []
    parent = Path(tempfile.mkdtemp(prefix="wtr-chaos-"))
    try:
        for number in range(settings.runs):
            folder = parent / f"run{number}"
            folder.mkdir()
            outcome = Chaos(settings, number, folder).play()
            outcomes.append(outcome)
            if settings.progress:
                kinds = ", ".join(kind for kind, _ in outcome.violations) or "ok"
                print(f"run {number}: {outcome.fault}, {outcome.seconds:.1f}s: {kinds}",
                      file=sys.stderr, flush=True)
            if not outcome.violations and not settings.keep:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not settings.keep and not any(o.violations for o in outcomes):
            shutil.rmtree(parent, ignore_errors=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    faults = Counter(o.fault for o in outcomes)
    violations = Counter(kind for o in outcomes for kind, _ in o.violations)
    behaviours: Counter[str] = Counter()
    for o in outcomes:
        behaviours.update(o.behaviours)
    return {"runs": len(outcomes), "faults": dict(faults), "behaviours": dict(behaviours),
            "violations": dict(violations),
            "examples": {kind: next(d for o in outcomes for k, d in o.violations if k == kind)
                         for kind in violations},
            "seconds": round(sum(o.seconds for o in outcomes), 1)}


def table(doc: dict[str, Any]) -> str:
    lines = [f"runs: {doc['runs']} in {doc['seconds']}s", "", "faults by kind:"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["faults"].items())]
    lines += ["", "agent behaviours:"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["behaviours"].items())]
    lines += ["", "invariant violations:" if doc["violations"] else "invariant violations: 0"]
    lines += [f"  {kind:<28} {n:>5}  e.g. {doc['examples'][kind]}"
              for kind, n in sorted(doc["violations"].items())]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--max-streams", type=int, default=5, help="streams per plan, at most")
    parser.add_argument("--timeout", type=float, default=3.0, help="agent timeout, seconds")
    parser.add_argument("--keep", action="store_true", help="keep every run's folder")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--behaviours", default="", help="comma-separated subset to pick from")
    parser.add_argument("--faults", default="", help=f"comma-separated subset of {FAULTS}")
    args = parser.parse_args(argv)
    settings = Settings(runs=args.runs, seed=args.seed, max_streams=args.max_streams,
                        timeout=args.timeout, keep=args.keep,
                        behaviours=tuple(b for b in args.behaviours.split(",") if b),
                        progress=True, faults=tuple(f for f in args.faults.split(",") if f))
    doc = summary(play(settings))
    print(json.dumps(doc, indent=1) if args.json else table(doc))
    return 1 if doc["violations"] else 0
