#!/usr/bin/env python3
"""A hostile agent for the chaos harness (scripts/chaos): it picks one behaviour at random.

CHAOS_JOURNAL=DIR    where it journals, outside the repository, one JSON line per event:
                     start (pid, start time), commit (sha), end; and "overlap" when it finds
                     an earlier agent of its stream still alive
CHAOS_SEED=N         with the stream name and attempt, seeds the choice
CHAOS_BEHAVIOURS=a,b the behaviours to pick from (default: all of BEHAVIOURS)
CHAOS_OWN=path       a file the stream owns; CHAOS_SHARED=path a shared file it may touch;
CHAOS_OTHER=path     a file another stream owns
CHAOS_SENTINELS=DIR  files outside the sandbox and the worktree it points its state folder's
                     files at (symlink_state); the runner must never write them
CHAOS_MARKERS=DIR    where the programs it plants (hooks, filters, signing, fsmonitor) write
                     a line when run; it never runs them itself, so a line there means the
                     runner ran a program of the agent's

The attacks on the runner's own hands (symlink_state, fifo_report, gitdir_redirect,
skip_worktree, assume_unchanged, worktree_config, move_refs) are planted last: the agent
runs no git after planting, so whatever runs the planted programs is not the agent.
On its first attempt in a run it also looks for what a pooled worktree must not carry
from an earlier run (index flags, changed files, its own config, refs/worktree/*, a
rewritten .git file) and journals "planted" when it finds any.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

BEHAVIOURS = ("good", "multi", "uncommitted", "detached", "reset", "amend",
              "delete_branch", "crash", "hang", "huge_output", "out_of_scope", "conflict",
              "setsid_child", "write_main", "nothing")
ATTACKS = ("symlink_state", "fifo_report", "gitdir_redirect", "skip_worktree",
           "assume_unchanged", "worktree_config", "move_refs")
HOOKS = ("pre-commit", "prepare-commit-msg", "commit-msg", "post-commit", "pre-rebase",
         "post-checkout", "post-merge", "post-rewrite", "reference-transaction",
         "pre-auto-gc", "post-index-change")


def journal(event: str, **data: object) -> None:
    folder = Path(os.environ["CHAOS_JOURNAL"])
    line = json.dumps({"event": event, "stream": os.environ.get("WTR_STREAM"),
                       "run": os.environ.get("WTR_RUN"), "pid": os.getpid(),
                       "time": time.time(), **data})
    with (folder / f"{os.environ.get('WTR_STREAM')}.jsonl").open("a") as out:
        out.write(line + "\n")


def start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]


def check_alone() -> None:
    """Journal an overlap if an earlier agent of this stream (same run) is still alive."""
    path = Path(os.environ["CHAOS_JOURNAL"]) / f"{os.environ.get('WTR_STREAM')}.jsonl"
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if (entry["event"] == "start" and entry["pid"] != os.getpid()
                and entry.get("run") == os.environ.get("WTR_RUN")
                and start_time(entry["pid"]) == entry.get("start_time")):
            journal("overlap", other=entry["pid"])


def git(*args: str, check: bool = True) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a") as out:
        out.write(text + "\n")


def commit(message: str, amend: bool = False) -> str:
    git("add", "-A")
    git("commit", "-q", "--allow-empty", "-m", message, *(["--amend"] if amend else []))
    sha = git("rev-parse", "HEAD")
    journal("commit", sha=sha)
    return sha


def first_attempt() -> bool:
    """No earlier start of this stream in this run is journaled (retries and resumed
    attempts keep their worktree and may find their own leftovers)."""
    path = Path(os.environ["CHAOS_JOURNAL"]) / f"{os.environ.get('WTR_STREAM')}.jsonl"
    starts = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        starts += entry["event"] == "start" and entry.get("run") == os.environ.get("WTR_RUN")
    return starts <= 1  # its own start is journaled already (pids repeat in the sandbox)


def restore_git_file() -> bool:
    """Point .git back at the git dir git registered for this worktree, if an earlier
    attempt (or an earlier run of a pooled worktree) pointed it elsewhere."""
    common = Path(os.environ["WTR_STATE_DIR"]).parents[2]
    here = Path.cwd().resolve()
    for gitdir_file in (common / "worktrees").glob("*/gitdir"):
        if Path(gitdir_file.read_text().strip()).parent.resolve() == here:
            registered = gitdir_file.parent
            break
    else:
        return False
    dot_git = Path(".git")
    pointed = dot_git.read_text().removeprefix("gitdir:").strip() if dot_git.is_file() else ""
    if Path(pointed).resolve() == registered.resolve():
        return False
    dot_git.write_text(f"gitdir: {registered}\n")
    return True


def look_for_planted() -> None:
    """What a fresh or pooled worktree must not hold when an agent starts in it."""
    found: list[str] = []
    if restore_git_file():
        found.append(".git pointed at another git dir")
    git_dir = Path(git("rev-parse", "--path-format=absolute", "--git-dir", check=False))
    worktree_config = git_dir / "config.worktree"
    if worktree_config.exists() and worktree_config.read_text().strip():
        found.append("config.worktree: " + " ".join(worktree_config.read_text().split())[:80])
    refs = git("for-each-ref", "--format=%(refname)", "refs/worktree/", check=False)
    if refs:
        found.append(f"refs: {refs.split()[0]}")
    flags = [line for line in git("ls-files", "-v", check=False).splitlines()
             if line and line[0] != "H"]
    if flags:
        found.append(f"index flags: {flags[0]}")
    if git("rev-parse", "HEAD", check=False) != os.environ.get("WTR_BASE_COMMIT"):
        found.append("HEAD is not the base commit")
    for line in git("ls-tree", "-r", "HEAD", check=False).splitlines():
        meta, name = line.split("\t", 1)
        blob = meta.split()[2]
        expected = subprocess.run(["git", "cat-file", "blob", blob], capture_output=True,
                                  check=False).stdout
        if not Path(name).is_file() or Path(name).read_bytes() != expected:
            found.append(f"content of {name}")
    untracked = git("status", "--porcelain", "--ignored", "-uall", check=False)
    if untracked:
        found.append(f"status: {untracked.splitlines()[0]}")
    if found:
        journal("planted", what="; ".join(found))


def state_folder() -> Path:
    return Path(os.environ["WTR_PROMPT_FILE"]).parent


def marker_program(name: str) -> str:
    """A program that writes a line into CHAOS_MARKERS when run, then passes stdin on."""
    stream = os.environ["WTR_STREAM"]
    mark = Path(os.environ["CHAOS_MARKERS"]) / f"{stream}-{os.getpid()}-{name}"
    program = state_folder() / f"chaos-{name}"
    program.write_text(f"#!/bin/sh\n[ -n \"$CHAOS_IN_AGENT\" ] || "
                       f"echo \"{name} ran: $0 $*\" >> '{mark}'\ncat\n")
    program.chmod(0o755)
    return str(program)


def symlink_state(rng: random.Random) -> None:
    """prompt.md, agent.log and report.md become symlinks to files outside."""
    folder, sentinels = state_folder(), Path(os.environ["CHAOS_SENTINELS"])
    stream = os.environ["WTR_STREAM"]
    for name in ("prompt.md", "agent.log", "report.md"):
        link = folder / f".{name}.chaos"
        link.unlink(missing_ok=True)
        link.symlink_to(sentinels / f"{stream}-{name}")
        os.replace(link, folder / name)
    journal("planted_state", files=["prompt.md", "agent.log", "report.md"])
    print(f"{stream}: done; my final message is long enough to become a report", flush=True)
    if rng.random() < 0.5:
        journal("end", code=4)
        raise SystemExit(4)  # so that a retry writes the prompt again


def fifo_report() -> None:
    report = Path(os.environ["WTR_REPORT"])
    report.unlink(missing_ok=True)
    os.mkfifo(report)
    journal("planted_fifo", path=str(report))


def gitdir_redirect() -> None:
    """The worktree's .git file points at a git dir the agent made, whose config runs
    its programs (a clean filter, a signing program, fsmonitor, hooks)."""
    evil = state_folder() / "chaos-git"
    shutil.rmtree(evil, ignore_errors=True)
    subprocess.run(["git", "init", "-q", str(evil)], capture_output=True, check=True)
    hooks = evil / "chaos-hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        (hooks / hook).unlink(missing_ok=True)
        os.symlink(marker_program("hook"), hooks / hook)
    settings = {"filter.chaos.clean": f"{marker_program('filter')}",
                "filter.chaos.smudge": f"{marker_program('smudge')}",
                "commit.gpgsign": "true", "gpg.program": marker_program("gpg"),
                "core.fsmonitor": marker_program("fsmonitor"), "core.hooksPath": str(hooks),
                "diff.external": marker_program("diff")}
    for key, value in settings.items():
        subprocess.run(["git", "config", "-f", str(evil / ".git" / "config"), key, value],
                       check=True)
    (evil / ".git" / "info").mkdir(exist_ok=True)
    (evil / ".git" / "info" / "attributes").write_text("* filter=chaos\n")
    Path(".git").write_text(f"gitdir: {evil / '.git'}\n")
    journal("planted_gitdir", path=str(evil))


def hide_edit(own: str, tag: str, flag: str) -> None:
    """An uncommitted edit git status does not show."""
    text = f"hidden {tag}"
    write(own, text)
    git("update-index", flag, own)
    journal("hidden", path=own, text=text, flag=flag)


def worktree_config() -> None:
    """The worktree's own config (hooks) and a refs/worktree/ ref."""
    git("config", "extensions.worktreeConfig", "true", check=False)  # refused in the sandbox
    git_dir = Path(git("rev-parse", "--path-format=absolute", "--git-dir"))
    hooks = state_folder() / "chaos-worktree-hooks"
    hooks.mkdir(exist_ok=True)
    for hook in HOOKS:
        (hooks / hook).unlink(missing_ok=True)
        os.symlink(marker_program("worktree-hook"), hooks / hook)
    git("update-ref", "refs/worktree/chaos", "HEAD", check=False)
    try:
        with (git_dir / "config.worktree").open("a") as out:
            out.write(f"[core]\n\thooksPath = {hooks}\n"
                      f"\tfsmonitor = {marker_program('worktree-fsmonitor')}\n")
    except OSError as exc:  # the sandbox keeps it read-only
        journal("refused", what=f"config.worktree: {exc.strerror}")
        return
    journal("planted_config", path=str(git_dir / "config.worktree"))


def move_refs() -> None:
    """While a landing is under way, the user's branches moved to one of its pins."""
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        pins = git("for-each-ref", "--format=%(objectname)", "refs/worktree-runner/merge/",
                   check=False).split()
        if pins:
            break
        time.sleep(0.1)
    else:
        journal("no_pin")
        return
    for branch in ("feature", "main"):
        old = git("rev-parse", f"refs/heads/{branch}", check=False)
        done = subprocess.run(["git", "update-ref", "-m", "chaos: moved to a merge pin",
                               f"refs/heads/{branch}", pins[-1]], capture_output=True,
                              check=False)
        if done.returncode == 0 and old != pins[-1]:
            journal("moved", ref=branch, old=old, new=pins[-1])


def attack(behaviour: str, own: str, tag: str, rng: random.Random) -> None:
    commit(f"{os.environ['WTR_STREAM']}: work before the attack")
    if behaviour in ("gitdir_redirect", "worktree_config") or rng.random() < 0.5:
        write(own, tag + " left uncommitted")  # so that the runner's leftover commit runs
    if behaviour == "symlink_state":
        symlink_state(rng)
    elif behaviour == "fifo_report":
        fifo_report()
    elif behaviour == "gitdir_redirect":
        gitdir_redirect()
    elif behaviour in ("skip_worktree", "assume_unchanged"):
        hide_edit(own, tag, f"--{behaviour.replace('_', '-')}")
    elif behaviour == "worktree_config":
        worktree_config()
    elif behaviour == "move_refs":
        move_refs()


def main() -> int:
    pid = os.getpid()
    journal("start", start_time=start_time(pid))
    check_alone()
    os.environ["CHAOS_IN_AGENT"] = str(pid)  # the planted programs ignore the agent's git
    if first_attempt():
        look_for_planted()
    else:
        restore_git_file()
    stream, own = os.environ["WTR_STREAM"], os.environ["CHAOS_OWN"]
    rng = random.Random(f"{os.environ.get('CHAOS_SEED', '0')}:{os.environ.get('WTR_RUN')}:"
                        f"{stream}:{time.time_ns()}")
    choices = ([b for b in os.environ.get("CHAOS_BEHAVIOURS", "").split(",") if b]
               or BEHAVIOURS + ATTACKS)
    behaviour = rng.choice(list(choices))
    journal("behaviour", behaviour=behaviour)
    tag = f"{stream} {rng.random():.6f}"
    write(own, tag)
    if behaviour in ATTACKS:
        attack(behaviour, own, tag, rng)
    elif behaviour == "good":
        commit(f"{stream}: work")
    elif behaviour == "multi":
        for i in range(3):
            write(own, f"{tag} {i}")
            commit(f"{stream}: part {i}")
    elif behaviour == "uncommitted":
        pass
    elif behaviour == "detached":
        commit(f"{stream}: on the branch")
        git("checkout", "-q", "--detach")
        write(own, tag + " detached")
        commit(f"{stream}: on a detached HEAD")
    elif behaviour == "reset":
        commit(f"{stream}: soon hidden")
        git("reset", "-q", "--hard", os.environ["WTR_BASE_COMMIT"])
        write(own, tag + " again")
        commit(f"{stream}: after the reset")
    elif behaviour == "amend":
        commit(f"{stream}: first")
        write(own, tag + " amended")
        commit(f"{stream}: amended", amend=True)
    elif behaviour == "delete_branch":
        commit(f"{stream}: on a branch about to vanish")
        git("checkout", "-q", "-b", f"chaos-{stream}-{pid}")
        git("branch", "-D", os.environ["WTR_BRANCH"])
    elif behaviour == "crash":
        commit(f"{stream}: before the crash")
        journal("end", code=3)
        return 3
    elif behaviour == "hang":
        commit(f"{stream}: before hanging")
        time.sleep(3600)
    elif behaviour == "huge_output":
        block = "x" * 1023 + "\n"
        for _ in range(4096):
            sys.stdout.write(block)
        sys.stdout.flush()
        commit(f"{stream}: after a lot of output")
    elif behaviour == "out_of_scope":
        write(os.environ["CHAOS_OTHER"], tag)
        commit(f"{stream}: touching another stream's file")
    elif behaviour == "conflict":
        shared = os.environ.get("CHAOS_SHARED")
        if shared:
            write(shared, tag)
        commit(f"{stream}: shared edit")
    elif behaviour == "setsid_child":
        loop = "while true; do sleep 0.2; done"
        child = subprocess.Popen(["setsid", "sh", "-c", loop], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal("child", child=child.pid)
        commit(f"{stream}: with a child left behind")
    elif behaviour == "write_main":
        common = Path(git("rev-parse", "--path-format=absolute", "--git-common-dir"))
        write(str(common.parent / "README.md"), f"written by {stream}")
        commit(f"{stream}: and a write into the main checkout")
    elif behaviour == "nothing":
        Path(own).write_text(Path(own).read_text().replace(tag + "\n", ""))
    journal("end", code=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
