"""An agent attacks its folder in the run's state: the runner never follows what it put there.

The agent replaces ``prompt.md``, ``agent.log`` or ``report.md`` with a symlink to a file
outside (the runner would overwrite, append to or create it), turns them into FIFOs (the
runner, ``wtr status`` and ``wtr report`` would block on them forever), or swaps the whole
folder for a symlink. Each runs through a real ``wtr run`` with a small hostile agent.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitrepo import Repo, Result, run_wtr
from tests.runhelp import agent_plan, stream_of

# Does its work (one committed file), then the attack named by ATTACK; on the first attempt
# of a failing attack it exits 1, so that the runner retries.
HOSTILE = f"""#!{sys.executable}
import os, subprocess, sys
from pathlib import Path

attack, outside = os.environ["ATTACK"], os.environ["OUTSIDE"]
folder = Path(os.environ["WTR_REPORT"]).parent
marks = Path(os.environ["MARKS"])
attempt = len(list(marks.iterdir())) + 1
(marks / str(attempt)).write_text("")
Path("src/db/work.txt").write_text(f"attempt {{attempt}}\\n")
subprocess.run(["git", "add", "-A"], check=True)
subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)


def plant(name):
    target = folder / name
    target.unlink(missing_ok=True)
    if attack == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to(outside)


if attempt > 1:
    pass
elif attack == "prompt":
    plant("prompt.md")
elif attack == "log":
    plant("agent.log")
elif attack in ("report", "fifo"):
    plant("report.md")
    if attack == "fifo":
        plant("progress.json")
elif attack == "folder":
    folder.rename(Path(os.environ["MOVED"]))
    folder.symlink_to(outside, target_is_directory=True)
print('{{"type": "result", "result": "all done, says the final message"}}', flush=True)
sys.exit(1 if attempt == 1 and attack in ("prompt", "log", "folder") else 0)
"""
OLD = 1_000_000_000  # the outside file's mtime, in seconds: anything that touches it shows
TIMEOUT = 60  # a run, status or report blocked on a FIFO would never end


def _attack(repo: Repo, tmp_path: Path, attack: str, outside: Path,
            sandboxed: bool = False) -> Result:
    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"ATTACK": attack, "OUTSIDE": str(outside), "MARKS": str(marks),
           "MOVED": str(tmp_path / "moved")}
    stream: dict[str, Any] = {"files": ["src/db/**"], "env": env}
    if sandboxed:
        stream.update(sandbox=True, writable=[str(marks)])
    plan = agent_plan({"db": stream},
                      agent={"command": [sys.executable, str(script)], "retries": 1})
    # (the retry starts 0.1 s after the failed attempt instead of the default 2 s)
    return run_wtr("run", repo.write_plan(plan), cwd=repo.path, timeout=TIMEOUT,
                   env={"WTR_RETRY_BACKOFF": "0.1"})


def _outside_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside" / "precious.txt"
    outside.parent.mkdir()
    outside.write_text("precious\n")
    os.utime(outside, (OLD, OLD))
    return outside


def _untouched(outside: Path) -> None:
    assert outside.read_text() == "precious\n"
    assert outside.stat().st_mtime_ns == OLD * 10**9
    assert sorted(p.name for p in outside.parent.iterdir()) == ["precious.txt"]


def _status(repo: Repo) -> dict[str, Any]:
    result = run_wtr("status", "--json", cwd=repo.path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = result.json()
    return stream_of(doc, "db")


def _stream_folder(repo: Repo) -> Path:
    return next((repo.path / ".git" / "worktree-runner" / "runs").glob("*/streams/db"))


def test_a_symlinked_prompt_is_replaced_on_the_retry(repo: Repo, tmp_path: Path) -> None:
    outside = _outside_file(tmp_path)
    result = _attack(repo, tmp_path, "prompt", outside)
    assert result.returncode == 0, result.stderr
    _untouched(outside)
    db = _status(repo)
    assert db["attempts"] == 2 and db["status"] == "succeeded"
    prompt = _stream_folder(repo) / "prompt.md"
    assert not prompt.is_symlink() and "src/db/**" in prompt.read_text()
    log = run_wtr("logs", "db", cwd=repo.path, timeout=TIMEOUT).stdout
    assert "prompt.md was a symlink, not a file; replaced, not followed" in log


@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "sandboxed"])
def test_a_symlinked_log_is_never_appended_to(repo: Repo, tmp_path: Path,
                                              sandboxed: bool) -> None:
    if sandboxed and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    outside = _outside_file(tmp_path)
    result = _attack(repo, tmp_path, "log", outside, sandboxed)
    assert result.returncode == 0, result.stderr
    _untouched(outside)
    log = _stream_folder(repo) / "agent.log"
    assert not log.is_symlink()
    text = log.read_text()
    assert "agent.log was a symlink, not a file" in text and "--- attempt 2" in text


@pytest.mark.parametrize("sandboxed", [False, True], ids=["plain", "sandboxed"])
def test_a_symlinked_report_is_replaced_by_the_final_message(repo: Repo, tmp_path: Path,
                                                               sandboxed: bool) -> None:
    if sandboxed and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    outside = _outside_file(tmp_path)
    result = _attack(repo, tmp_path, "report", outside, sandboxed)
    assert result.returncode == 0, result.stderr
    _untouched(outside)
    report = _status(repo)["report"]  # not the outside file's text, read through the link
    assert report["filled"] and "all done, says the final message" in report["text"]
    assert "precious" not in report["text"] and not Path(report["path"]).is_symlink()


def test_a_fifo_report_blocks_nothing(repo: Repo, tmp_path: Path) -> None:
    outside = _outside_file(tmp_path)
    result = _attack(repo, tmp_path, "fifo", outside)  # the runner's fill: no hang
    assert result.returncode == 0, result.stderr
    db = _status(repo)  # wtr status: no hang either
    assert db["status"] == "succeeded"
    assert db["report"]["filled"]  # the FIFO replaced by the final message
    progress = Path(db["report"]["path"]).with_name("progress.json")
    assert progress.is_fifo() and db["progress"]["message"] is None  # read as absent
    _untouched(outside)


def test_a_fifo_left_after_the_run_blocks_neither_status_nor_report(repo: Repo,
                                                                   tmp_path: Path) -> None:
    outside = _outside_file(tmp_path)
    assert _attack(repo, tmp_path, "report", outside).returncode == 0
    folder = _stream_folder(repo)
    for name in ("report.md", "progress.json", "agent.log"):
        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)  # as a process the agent left behind could do
    db = _status(repo)
    assert db["report"] is None and db["progress"]["message"] is None
    html = tmp_path / "report.html"
    result = run_wtr("report", "-o", html, cwd=repo.path, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert "db" in html.read_text()
    logs = run_wtr("logs", "db", cwd=repo.path, timeout=TIMEOUT)
    assert logs.returncode == 0, logs.stderr


def test_a_stream_folder_swapped_for_a_symlink_is_not_followed(repo: Repo,
                                                              tmp_path: Path) -> None:
    outside = _outside_file(tmp_path)
    result = _attack(repo, tmp_path, "folder", outside.parent)
    assert result.returncode == 0, result.stderr
    _untouched(outside)
    folder = _stream_folder(repo)
    assert folder.is_dir() and not folder.is_symlink()
    assert (folder / "prompt.md").is_file()
    assert _status(repo)["attempts"] == 2


def test_the_reader_and_writer_on_each_kind_of_plant(tmp_path: Path) -> None:
    """statefs itself: a folder below the agent's one swapped for a symlink (a preset's
    files), a hard link to a file outside, a FIFO, a folder in the place of a file."""
    from worktree_runner import statefs

    outside = _outside_file(tmp_path)
    folder = tmp_path / "stream"
    folder.mkdir()
    (folder / "home").symlink_to(outside.parent, target_is_directory=True)
    assert statefs.write_text(folder / "home" / "config.toml", "x", below=folder) is None
    assert (folder / "home").is_dir() and not (folder / "home").is_symlink()
    os.link(outside, folder / "agent.log")
    statefs.append_text(folder / "agent.log", "more\n")
    assert "a hard link to another file" in (folder / "agent.log").read_text()
    os.mkfifo(folder / "report.md")
    with pytest.raises(statefs.NotAFile):
        statefs.read_text(folder / "report.md")  # at once: never waits for a writer
    assert statefs.write_text(folder / "report.md", "ok\n") == "a FIFO"
    (folder / "prompt.md").mkdir()
    assert statefs.write_text(folder / "prompt.md", "task\n") == "a folder"
    assert (folder / "prompt.md").read_text() == "task\n"
    _untouched(outside)
