"""The chaos harness behind scripts/chaos. Standard library only (plus the project's wtr).

One run: a fresh repository, a random plan (random DAG, conflicts_with, shared paths)
whose agent is tests/agents/hostile.py (a random misbehaviour per attempt), one random
fault (SIGKILL or SIGINT of the runner at a random moment, a WTR_FAULT step, SIGKILL of an
agent, SIGKILL during merge or clean), then what a user does next: resume until the run
is finished, merge (conflicts resolved by a scripted human or aborted), clean. Then the
invariants are checked; a broken one is a violation, reported by kind.

Some runs also turn on, at random: the sandbox (bubblewrap), landing during the run
(`run --merge`, the target checked out in the main checkout), a resolver that proposes
conflict resolutions (sometimes hiding a change from git status), and a second run on the
same repository that takes the first run's pooled worktrees. The agent's attacks on the
runner's own hands (symlinks and FIFOs in its state folder, a rewritten .git file, hidden
index flags, a worktree's own config and refs, the user's branches moved to a merge pin)
are checked with sentinel files outside every worktree, marker files the planted programs
write when anyone but the agent runs them, and the journal. The replay of a real
project's history is in chaos_replay.py.
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
RESOLVER = Path(__file__).resolve().parent / "chaos_resolver.py"
# wtr runs from the project's venv when there is one (scripts/test makes it).
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() \
    else sys.executable
FAULT_STEPS = ("after_branch", "after_worktree", "agent_starting", "agent_started",
               "agent_running", "agent_ended", "ownership_check")
FAULTS = ("none", "kill_runner", "fault_step", "sigint_runner", "kill_agent", "kill_merge",
          "kill_clean")
MODES = ("sandbox", "run_merge", "resolver", "pool")
HANG = 60.0  # seconds a wtr command may take before it counts as hung
# A tree is broken when a file holds BROKEN while README.md does not allow it; the verify
# below fails on it, and so does the check of every commit the target ever held.
BROKEN, ALLOW = "CHAOS-BROKEN", "allow-broken"
VERIFY = """import pathlib, subprocess, sys, time
files = [p for p in pathlib.Path(".").rglob("*") if p.is_file() and ".git" not in p.parts]
broken = any("BROKEN" in p.read_text(errors="replace") for p in files)
readme = pathlib.Path("README.md")
if broken and not (readme.is_file() and "ALLOW" in readme.read_text(errors="replace")):
    sys.exit(1)
head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
with open(sys.argv[1], "a") as out:
    out.write(head + "\\n")
""".replace("BROKEN", BROKEN).replace("ALLOW", ALLOW)
# A stream may be blamed for a change outside its worktree only if its agent made one.
OUTSIDE = {"write_main", "worktree_config", "move_refs"}


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
    modes: tuple[str, ...] = MODES  # each turned on in about half the runs
    mode_chance: float = 0.5
    record: Path | None = None  # one JSON line per finished run, for a campaign cut short
    only: int | None = None  # play just this run of the seed (its randomness is its own)


@dataclass
class Outcome:
    run: int
    fault: str
    behaviours: Counter[str] = field(default_factory=Counter)
    violations: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    modes: list[str] = field(default_factory=list)
    attacks: Counter[str] = field(default_factory=Counter)  # planted, as journaled


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
        self.outcome.modes = [m for m in settings.modes if self.rng.random() < settings.mode_chance]
        if "sandbox" in self.outcome.modes and not shutil.which("bwrap"):
            self.outcome.modes.remove("sandbox")
        self.sentinels = folder / "sentinels"
        self.markers = folder / "markers"
        self.planted: dict[str, tuple[bytes, int]] = {}
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
                   CHAOS_TAG=self.tag, CHAOS_SENTINELS=str(self.sentinels),
                   CHAOS_MARKERS=str(self.markers))
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
        self.git("branch", "feature")  # a user's branch the agents must leave alone
        (self.folder / "verify.py").write_text(VERIFY)
        self._plant_sentinels(streams)
        return self.write_plan(streams)

    def _plant_sentinels(self, streams: int) -> None:
        """Files outside every worktree and sandbox that the agents point their state
        folder's files at; report.md's is left absent (it must not be created)."""
        self.sentinels.mkdir()
        self.markers.mkdir()
        for i in range(streams):
            for name in ("prompt.md", "agent.log"):
                path = self.sentinels / f"s{i}-{name}"
                path.write_bytes(f"sentinel {name} of s{i}\n".encode())
                os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
        self.planted = {p.name: (p.read_bytes(), p.stat().st_mtime_ns)
                        for p in self.sentinels.iterdir()}

    def write_plan(self, count: int, plan_name: str = "chaos") -> Path:
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
        plan: dict[str, Any] = {
            "version": 1, "name": plan_name, "max_parallel": rng.randint(1, 4),
            "worktrees_dir": "../worktrees",
            "agent": {"command": [sys.executable, str(HOSTILE)],
                      "timeout": self.settings.timeout, "retries": rng.choice([0, 0, 1])},
            "shared": ["shared.txt"],
            "verify": [f"{sys.executable} {self.folder / 'verify.py'} "
                       f"{self.journal / 'verified.txt'}"],
            "streams": streams,
        }
        if "sandbox" in self.outcome.modes:
            plan["sandbox"] = True
            plan["writable"] = [str(self.journal)]
        path = self.folder / f"{plan_name}.json"  # JSON is YAML: no dependency needed to write it
        path.write_text(json.dumps(plan, indent=1))
        return path

    # -- driving wtr --------------------------------------------------------------------

    def wtr(self, *args: str, kill_after: float | None = None, sig: int = signal.SIGKILL,
            extra: dict[str, str] | None = None) -> tuple[int, str]:
        command = [PYTHON, "-m", "worktree_runner", *args]
        process = subprocess.Popen(command, cwd=self.repo, env={**self.env, **(extra or {})},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = process.communicate(timeout=kill_after if kill_after else HANG)
        except subprocess.TimeoutExpired:
            if not kill_after:
                self.violation("hung", f"wtr {' '.join(args)}: still running after {HANG:.0f}s")
            process.send_signal(sig if kill_after else signal.SIGTERM)
            try:
                out, err = process.communicate(timeout=HANG)
            except subprocess.TimeoutExpired:
                self.violation("hung", f"wtr {' '.join(args)}: ignored the signal")
                process.kill()
                out, err = process.communicate()
        if "Traceback" in err:
            self.traceback(f"wtr {' '.join(args)}", err)
        return process.returncode, out

    def traceback(self, command: str, err: str) -> None:
        """A traceback on wtr's stderr: the violation names the exception (the line after
        the traceback's frames), and the whole stderr is kept beside the run."""
        lines = err.strip().splitlines()
        start = max(i for i, line in enumerate(lines) if line.startswith("Traceback"))
        raised = next((line for line in lines[start + 1:] if not line.startswith(" ")),
                      lines[-1])
        kept = self.folder / f"traceback-{len(self.outcome.violations)}.txt"
        kept.write_text(err)
        self.violation("traceback", f"{command}: {raised} (stderr kept in {kept})")

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
        run = ["run", str(plan), *(["--merge"] if "run_merge" in self.outcome.modes else [])]
        if fault == "kill_runner":
            self.wtr(*run, kill_after=rng.uniform(0.3, 4.0))
        elif fault == "sigint_runner":
            self.wtr(*run, kill_after=rng.uniform(0.3, 4.0), sig=signal.SIGINT)
        elif fault == "fault_step":
            step = rng.choice(FAULT_STEPS)
            if rng.random() < 0.5:
                step += f":s{rng.randrange(2)}"
            self.wtr(*run, extra={"WTR_FAULT": step})
        elif fault == "kill_agent":
            self._run_killing_an_agent(run)
        else:
            self.wtr(*run)
        for _ in range(4):
            doc = self.state()
            if doc is None or doc["state"] == "finished":
                break
            self.wtr("resume")

    def _run_killing_an_agent(self, run: list[str]) -> None:
        command = [PYTHON, "-m", "worktree_runner", *run]
        process = subprocess.Popen(command, cwd=self.repo, env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(self.rng.uniform(0.5, 2.5))
        for pid in _processes_tagged(self.tag):
            if pid != process.pid and _cmdline(pid).endswith(str(HOSTILE)):
                os.kill(pid, signal.SIGKILL)
                break
        try:
            _, err = process.communicate(timeout=HANG)
        except subprocess.TimeoutExpired:
            self.violation("hung", f"wtr {' '.join(run)}: still running after {HANG:.0f}s")
            process.kill()
            _, err = process.communicate()
        if "Traceback" in err:
            self.traceback("wtr run", err)

    def merge_phase(self) -> None:
        kill = self.outcome.fault == "kill_merge"
        resolver = (["--resolve-with", f"{sys.executable} {RESOLVER}"]
                    if "resolver" in self.outcome.modes else [])
        code, _ = self.wtr("merge", *resolver,
                           kill_after=self.rng.uniform(0.05, 1.5) if kill else None)
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
                code, _ = self.wtr("merge", *resolver)

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
        runs = _json(out)
        if code != 0 or not isinstance(runs, dict):
            self.violation("state", f"wtr runs --json failed (exit {code})")
            runs = {}
        self.wtr("report")  # it must not hang on what an agent left in its state folder
        # Read once: nothing changes the runs any more (each wtr costs its start-up).
        self._attacks(entries, behaviour_of, self.run_documents(runs))

    def _attacks(self, entries: list[dict[str, Any]], behaviour_of: dict[int, str],
                 docs: list[dict[str, Any]]) -> None:
        for entry in entries:
            if entry["event"].startswith(("planted_", "hidden", "moved")):
                self.outcome.attacks[entry["event"]] += 1
            if entry["event"] == "planted":
                self.violation("planted_in_pool", f"{entry['stream']}: {entry['what']}")
        self._sentinels_untouched()
        self._no_program_ran()
        self._hidden_edits_kept(entries)
        self._moves_reported(entries, docs)
        self._blame_right(entries, behaviour_of, docs)
        self._landed_trees_pass()

    def _sentinels_untouched(self) -> None:
        now = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in self.sentinels.iterdir()
               if p.is_file()}
        for name in sorted(now.keys() | self.planted.keys()):
            if now.get(name) != self.planted.get(name):
                what = "created" if name not in self.planted else "written"
                self.violation("wrote_outside", f"sentinels/{name} {what}")

    def _no_program_ran(self) -> None:
        for path in sorted(self.markers.iterdir()):
            self.violation("ran_agent_program",
                           f"{path.name}: {path.read_text(errors='replace').strip()[:80]}")

    def _hidden_edits_kept(self, entries: list[dict[str, Any]]) -> None:
        """An edit hidden by an index flag is uncommitted work: it ends in a commit or a
        rescue, like any other (unless a later attempt of the stream reworked it)."""
        for index, entry in enumerate(entries):
            if entry["event"] != "hidden" or any(  # a later attempt may rework its file
                    later["event"] == "start" and later.get("run") == entry.get("run")
                    and later["stream"] == entry["stream"] for later in entries[index:]):
                continue
            found = self.git("log", "--format=%H", f"-S{entry['text']}", "--branches",
                             "--tags", "--glob=refs/worktree-runner/*", check=False)
            if not found:
                self.violation(f"lost_edit:{entry['flag'].strip('-')}",
                               f"{entry['stream']}: {entry['path']}")

    def _moves_reported(self, entries: list[dict[str, Any]], docs: list[dict[str, Any]]
                        ) -> None:
        """A user's branch an agent moved to a merge pin is reported by the guard."""
        said = json.dumps([doc.get("isolation") for doc in docs])
        for entry in entries:
            if entry["event"] == "moved" and f"{entry['ref']}:" not in said \
                    and f"branch {entry['ref']}" not in said:
                self.violation("unreported_move", f"{entry['stream']} moved {entry['ref']} "
                                                  f"to {entry['new'][:12]}")

    def _blame_right(self, entries: list[dict[str, Any]], behaviour_of: dict[int, str],
                     docs: list[dict[str, Any]]) -> None:
        """Only a stream whose agent changed something outside may be blamed for it."""
        did: dict[tuple[str, str], set[str]] = {}
        for entry in entries:
            if entry["event"] == "behaviour":
                key = (entry.get("run", ""), entry["stream"])
                did.setdefault(key, set()).add(entry["behaviour"])
        for doc in docs:
            for stream in doc["streams"]:
                failure = stream.get("failure") or {}
                if "outside its worktree" not in (failure.get("message") or ""):
                    continue
                if not did.get((doc["run"], stream["name"]), set()) & OUTSIDE:
                    self.violation("wrong_blame", f"{doc['run']}/{stream['name']}: "
                                                  f"{failure['message'][:120]}")

    def _landed_trees_pass(self) -> None:
        """Every commit the target held passes the verify's rule, checked on its tree."""
        for sha in set(self.git("reflog", "show", "--format=%H", "refs/heads/main").split()):
            broken = self.git("grep", "-l", BROKEN, sha, check=False)
            allowed = self.git("grep", "-l", ALLOW, sha, "--", "README.md", check=False)
            if broken and not allowed:
                self.violation("landed_broken", f"main was at {sha[:12]}: {broken[:60]}")

    def run_documents(self, runs: dict[str, Any]) -> list[dict[str, Any]]:
        """``wtr status --json`` of each run ``wtr runs --json`` listed."""
        docs = []
        for run in runs.get("runs", []):
            code, out = self.wtr("status", "--json", "--run", run["run"])
            doc = _json(out) if code == 0 else None
            if isinstance(doc, dict):
                docs.append(doc)
        return docs

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
        moved = {e["new"] for e in self.journal_entries() if e["event"] == "moved"}
        for sha in self.git("reflog", "show", "--format=%H", "refs/heads/main").split():
            if sha not in verified and sha != initial and sha not in moved:
                self.violation("unverified_target", f"main was at {sha[:12]}, never verified")

    # -- one whole run ------------------------------------------------------------------

    def play(self) -> Outcome:
        started = time.monotonic()
        count = self.rng.randint(2, self.settings.max_streams)
        plan = self.build(count)
        try:
            self.run_phase(plan)
            self.merge_phase()
            self.clean_phase()
            if "pool" in self.outcome.modes:  # a second run takes the pooled worktrees
                self.wtr("run", str(self.write_plan(count, "chaos2")))
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
    # Not under /tmp: a sandboxed agent gets a private /tmp, and would not see the git
    # identity in the run's gitconfig.
    parent = Path(tempfile.mkdtemp(prefix="wtr-chaos-", dir="/var/tmp" if Path("/var/tmp").is_dir()
                                   else None))
    try:
        for number in [settings.only] if settings.only is not None else range(settings.runs):
            folder = parent / f"run{number}"
            folder.mkdir()
            outcome = Chaos(settings, number, folder).play()
            outcomes.append(outcome)
            if settings.record:
                with settings.record.open("a") as out:
                    out.write(json.dumps({"seed": settings.seed, **vars(outcome)}) + "\n")
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
    attacks: Counter[str] = Counter()
    for o in outcomes:
        behaviours.update(o.behaviours)
        attacks.update(o.attacks)
    modes = Counter(m for o in outcomes for m in o.modes)
    return {"runs": len(outcomes), "faults": dict(faults), "behaviours": dict(behaviours),
            "modes": dict(modes), "attacks": dict(attacks),
            "runs_with_violations": sum(1 for o in outcomes if o.violations),
            "violations": dict(violations),
            "examples": {kind: next(d for o in outcomes for k, d in o.violations if k == kind)
                         for kind in violations},
            "seconds": round(sum(o.seconds for o in outcomes), 1)}


def recorded(paths: list[Path]) -> list[Outcome]:
    """The outcomes --record wrote (several campaigns' files may be read together)."""
    outcomes = []
    for path in paths:
        for line in path.read_text().splitlines():
            data = json.loads(line)
            outcomes.append(Outcome(data["run"], data["fault"], Counter(data["behaviours"]),
                                    [(k, d) for k, d in data["violations"]], data["seconds"],
                                    data["modes"], Counter(data["attacks"])))
    return outcomes


def table(doc: dict[str, Any]) -> str:
    lines = [f"runs: {doc['runs']} in {doc['seconds']}s", "", "faults by kind:"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["faults"].items())]
    lines += ["", "runs with each mode:"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["modes"].items())]
    lines += ["", "agent behaviours:"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["behaviours"].items())]
    lines += ["", "attacks planted (journaled):"]
    lines += [f"  {kind:<16} {n:>5}" for kind, n in sorted(doc["attacks"].items())]
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
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"modes each turned on in about half the runs (default: all of "
                             f"{MODES}; '' for none)")
    parser.add_argument("--mode-chance", type=float, default=0.5,
                        help="the chance of each mode in a run (default 0.5)")
    parser.add_argument("--record", metavar="FILE", type=Path,
                        help="append one JSON line per finished run to FILE")
    parser.add_argument("--only", metavar="N", type=int,
                        help="play only run N of the seed (as numbered in the progress lines "
                             "and records), e.g. to replay a run that showed a violation")
    parser.add_argument("--summarize", metavar="FILE", type=Path, nargs="+",
                        help="print the summary of runs recorded with --record; run nothing")
    parser.add_argument("--replay", metavar="BUNDLE",
                        help="replay a real project's history instead (a git bundle or a "
                             "repository): see chaos_replay.py")
    parser.add_argument("--changes", type=int, default=40, help="--replay: commits (40)")
    parser.add_argument("--start", default=None,
                        help="--replay: the first commit replayed (default: the last "
                             "--changes commits of the first-parent history of HEAD)")
    args = parser.parse_args(argv)
    if args.summarize:
        doc = summary(recorded(args.summarize))
        print(json.dumps(doc, indent=1) if args.json else table(doc))
        return 1 if doc["violations"] else 0
    if args.replay:
        from chaos_replay import replay_main

        return replay_main(Path(args.replay), args.changes, args.start, args.keep, args.json)
    settings = Settings(runs=args.runs, seed=args.seed, max_streams=args.max_streams,
                        timeout=args.timeout, keep=args.keep,
                        behaviours=tuple(b for b in args.behaviours.split(",") if b),
                        progress=True, faults=tuple(f for f in args.faults.split(",") if f),
                        modes=tuple(m for m in args.modes.split(",") if m),
                        record=args.record, mode_chance=args.mode_chance, only=args.only)
    doc = summary(play(settings))
    print(json.dumps(doc, indent=1) if args.json else table(doc))
    return 1 if doc["violations"] else 0
