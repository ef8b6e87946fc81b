"""Notifications on real runs: a webhook on a loopback server, a command, the desktop
(a stand-in notify-send), and dead webhooks that must slow nothing down."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.gitrepo import Repo, run_wtr
from tests.runhelp import agent_plan, status, stream_of, wait_for
from worktree_runner.notify import WEBHOOK_ATTEMPTS, WEBHOOK_TIMEOUT

CHAIN = {
    "db": {"files": ["src/db/**"], "env": {"AGENT_WRITE": "src/db/models.py=DB = 2"}},
    "api": {"files": ["src/api/**"], "depends_on": ["db"],
            "env": {"AGENT_WRITE": "src/api/orders.py=API = 2"}},
    "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}},
}
FAILING = {
    "db": {"files": ["src/db/**"], "env": {"AGENT_EXIT": "4"}},
    "api": {"files": ["src/api/**"], "depends_on": ["db"]},
    "ui": {"files": ["src/ui/**"], "env": {"AGENT_WRITE": "src/ui/view.py=UI = 2"}},
}


class Hook:
    """A webhook on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        received: list[dict] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kinds(self) -> list[tuple[str, str]]:
        return [(r["topic"], r["kind"]) for r in self.received]


@pytest.fixture
def hook() -> Iterator[Hook]:
    served = Hook()
    yield served
    served.server.shutdown()
    served.server.server_close()


def log_of(repo: Repo) -> list[dict]:
    path = repo.path / ".git/worktree-runner/runs" / status(repo)["run"] / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_webhook_receives_the_finish_and_the_halt(repo: Repo, hook: Hook) -> None:
    plan = repo.write_plan(agent_plan(CHAIN, notify=[{"webhook": hook.url}]))
    ran = run_wtr("run", plan, cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    assert hook.kinds() == [("finished", "run.finished")]
    finished = hook.received[0]
    assert finished["run"] == status(repo)["run"] and "the run finished" in finished["message"]
    repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
    halted = run_wtr("merge", cwd=repo.path)
    assert halted.returncode == 3, halted.stderr
    assert hook.kinds()[1:] == [("attention", "landing.halted")]
    halt = hook.received[1]
    assert halt["landing"]["stream"] == "api"
    assert halt["landing"]["conflicted_files"] == ["src/api/orders.py"]
    assert "halted at api in src/api/orders.py" in halt["message"]
    sent = [e for e in log_of(repo) if e["kind"] == "notification.sent"]
    assert [(e["topic"], e["to"]) for e in sent] == [("finished", f"webhook {hook.url}"),
                                                      ("attention", f"webhook {hook.url}")]
    # landing is news too: abort, then land without the conflicting change
    assert run_wtr("merge", "--abort", cwd=repo.path).returncode == 0
    repo.git("revert", "--no-edit", "HEAD")
    landed = run_wtr("merge", cwd=repo.path)
    assert landed.returncode == 0, landed.stderr
    assert hook.kinds()[-1] == ("landed", "landing.landed")
    assert hook.received[-1]["landing"]["merged"] == ["db", "api", "ui"]


def test_news_from_another_process_reaches_the_runners_webhook(
        repo: Repo, hook: Hook, tmp_path: Path) -> None:
    """A person syncs a stream (its own wtr process) while the run goes: the conflict is
    attention, told by the runner's notifications, which read the run's event log."""
    release = tmp_path / "release"
    plan = agent_plan({
        "api": {"files": ["src/api/**"], "env": {"AGENT_WRITE": "src/api/orders.py=API = 2"}},
        "ui": {"files": ["src/ui/**"], "env": {"AGENT_WAIT_FOR": str(release),
                                                "AGENT_WRITE": "src/ui/view.py=UI = 2"}},
    }, notify=[{"webhook": hook.url}])
    runner = subprocess.Popen([sys.executable, "-m", "worktree_runner", "run",
                               str(repo.write_plan(plan))], cwd=repo.path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: run_wtr("status", "--json", cwd=repo.path).returncode == 0
                 and stream_of(status(repo), "api")["status"] == "succeeded", timeout=60)
        repo.commit({"src/api/orders.py": "MAIN = 1\n"}, "main changes orders")
        synced = run_wtr("sync", "api", cwd=repo.path)
        assert synced.returncode == 3, synced.stderr
        wait_for(lambda: ("attention", "sync.conflict") in hook.kinds(), timeout=30)
    finally:
        release.write_text("go")
        runner.communicate(timeout=120)
    told = next(r for r in hook.received if r["kind"] == "sync.conflict")
    assert told["stream"] == "api" and told["files"] == ["src/api/orders.py"]
    assert "syncing api conflicts in src/api/orders.py" in told["message"]
    assert hook.kinds()[-1] == ("finished", "run.finished")


def test_a_command_gets_the_event_as_json_on_stdin(repo: Repo, tmp_path: Path) -> None:
    out = tmp_path / "told.jsonl"
    command = f"cat >> '{out}'; echo >> '{out}'"
    plan = repo.write_plan(agent_plan(FAILING, notify=[{"command": command,
                                                        "on": ["attention"]}]))
    ran = run_wtr("run", plan, cwd=repo.path)
    assert ran.returncode == 1
    told = [json.loads(line) for line in out.read_text().splitlines() if line]
    assert sorted((t["kind"], t["stream"]) for t in told) == [
        ("stream.blocked", "api"), ("stream.failed", "db")]  # not the finish: only attention
    failed = next(t for t in told if t["kind"] == "stream.failed")
    assert failed["topic"] == "attention" and failed["failure"]["kind"] == "exit_code"
    assert "db failed (exit_code" in failed["message"]


def test_notify_on_the_command_line_and_the_desktop(repo: Repo, tmp_path: Path) -> None:
    bin_dir, shown = tmp_path / "bin", tmp_path / "shown.txt"
    bin_dir.mkdir()
    stand_in = bin_dir / "notify-send"
    stand_in.write_text(f"#!/bin/sh\nprintf '%s|' \"$@\" >> '{shown}'\necho >> '{shown}'\n")
    stand_in.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    told = tmp_path / "told.json"
    ran = run_wtr("run", repo.write_plan(agent_plan(CHAIN)), "--notify", "desktop",
                  "--notify", f"command=cat > '{told}'", cwd=repo.path, env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(told.read_text())["kind"] == "run.finished"
    assert shown.read_text().splitlines() == [
        f"--app-name=wtr|wtr: finished|{status(repo)['run']}: the run finished|"]


def test_a_command_that_fails_is_recorded_and_shown_not_fatal(repo: Repo) -> None:
    ran = run_wtr("run", repo.write_plan(agent_plan(CHAIN)), "--notify",
                  "command=echo no chat server >&2; exit 5", cwd=repo.path)
    assert ran.returncode == 0, ran.stderr
    doc = status(repo)
    failed = doc["notifications"]["failed"]
    log = Path(doc["repo"]) / ".git/worktree-runner/runs" / doc["run"] / "notify.log"
    assert [(f["topic"], f["error"]) for f in failed] == [
        ("finished", f"exit code 5 (its messages: {log})")]
    assert "no chat server" in log.read_text()
    text = run_wtr("status", cwd=repo.path).stdout
    assert "notifications: 1 failed; last: finished to command echo no chat server" in text
    assert any(e["kind"] == "notification.failed" for e in log_of(repo))


@pytest.mark.parametrize(("entry", "problem"), [
    ({"webhok": "http://x"}, "unknown key 'webhok' (did you mean 'webhook'?)"),
    ({"webhook": "ftp://x"}, "http:// or https:// URL"),
    ({"desktop": True, "on": ["landed", "lunch"]}, "'on' lists some of"),
    ({"desktop": True, "command": "x"}, "exactly one of"),
])
def test_a_bad_notify_entry_is_a_plan_error(repo: Repo, entry: dict, problem: str) -> None:
    checked = run_wtr("check", repo.write_plan(agent_plan(CHAIN, notify=[entry])),
                      cwd=repo.path)
    assert checked.returncode == 2 and "notify" in checked.stderr, checked.stderr
    assert problem in checked.stderr


def test_a_bad_notify_option_is_bad_input(repo: Repo) -> None:
    result = run_wtr("run", repo.write_plan(agent_plan(CHAIN)), "--notify", "pager=me",
                     cwd=repo.path)
    assert result.returncode == 2 and "use desktop, webhook=URL or command=CMD" in result.stderr
    assert not (repo.path / ".git/worktree-runner/runs").exists()  # nothing started


def _silent_port() -> tuple[socket.socket, int]:
    """A port that takes connections and never answers (the kernel accepts them)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener, listener.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.timeout(240)
def test_dead_webhooks_slow_nothing_down(repo: Repo) -> None:
    def timed_run(*notify: str) -> tuple[float, int]:
        started = time.monotonic()
        ran = run_wtr("run", repo.write_plan(agent_plan(FAILING)), *notify, cwd=repo.path)
        return time.monotonic() - started, ran.returncode

    baseline, code = timed_run()
    assert code == 1
    listener, silent = _silent_port()
    try:
        took, code = timed_run("--notify", f"webhook=http://127.0.0.1:{silent}/",
                               "--notify", f"webhook=http://127.0.0.1:{_closed_port()}/")
    finally:
        listener.close()
    assert code == 1  # the streams' outcome, nothing else
    # Three pieces of news (failed, blocked, finished) to two dead webhooks: waiting for
    # them would take WEBHOOK_TIMEOUT x WEBHOOK_ATTEMPTS for each; the run waits not even one.
    assert took - baseline < WEBHOOK_TIMEOUT * WEBHOOK_ATTEMPTS, (took, baseline)
    failed = status(repo)["notifications"]["failed"]
    assert {f["to"].split(":")[-1].strip("/") for f in failed} >= {str(silent)}
    refused = [f for f in failed if str(silent) not in f["to"]]
    assert refused and all("refused" in f["error"] or "not delivered" in f["error"]
                           for f in refused)
