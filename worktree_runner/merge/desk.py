"""``wtr merge`` while ``wtr run`` holds the run: the runner does the merging.

Only the holder of a run's lock writes its state, so a ``wtr merge`` (or ``--continue``,
``--abort``, ``--undo``) started while the runner works leaves a request in the run's
folder; the runner's desk thread takes requests one at a time, acts on them on its own
thread (the same one ``wtr run --merge`` lands on), and leaves a reply that the waiting
command prints. If the runner goes away before replying, the command says so.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from worktree_runner.errors import EXIT_FAILED, WtrError
from worktree_runner.run.state import RunStore, read_json, write_json_atomic

ACTIONS = ("start", "continue", "abort", "undo")
POLL = 0.25


@dataclass
class Reply:
    code: int
    out: str = ""
    err: list[str] = field(default_factory=list)
    merge: dict[str, Any] = field(default_factory=dict)


def _folder(store: RunStore, kind: str) -> Path:
    return store.dir / f"merge-{kind}"


def ask(store: RunStore, action: str, resolver: str | None, still_there: Callable[[], bool],
        timeout: float = 3600.0) -> Reply:
    """Leave a request for the runner and wait for its reply."""
    ident = uuid.uuid4().hex
    write_json_atomic(_folder(store, "requests") / f"{ident}.json",
                      {"action": action, "resolve_with": resolver, "pid": os.getpid()})
    reply_path = _folder(store, "replies") / f"{ident}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = read_json(reply_path)
        if isinstance(data, dict):
            reply_path.unlink(missing_ok=True)
            return Reply(**data)
        if not still_there():
            (_folder(store, "requests") / f"{ident}.json").unlink(missing_ok=True)
            if isinstance(data := read_json(reply_path), dict):
                return Reply(**data)
            raise WtrError(f"the runner of run {store.run_id} ended before it took the merge",
                           hint="run the same 'wtr merge' again")
        time.sleep(POLL)
    raise WtrError(f"the runner of run {store.run_id} did not answer in {int(timeout)} s")


class Desk:
    """The runner's side: a thread that takes requests and hands them to ``act``."""

    def __init__(self, store: RunStore, act: Callable[[str, str | None], Reply]) -> None:
        self.store, self.act = store, act
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="merge-desk", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._serve()  # what came in at the very end

    def _loop(self) -> None:
        while not self._stop.wait(POLL):
            self._serve()

    def _serve(self) -> None:
        folder = _folder(self.store, "requests")
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime_ns):
            data = read_json(path)
            path.unlink(missing_ok=True)
            if not isinstance(data, dict) or not _alive(data.get("pid")):
                continue  # its asker is gone: a merge nobody waits for is not done
            action = str(data.get("action"))
            resolver = data.get("resolve_with")
            try:
                known = action in ACTIONS or action.startswith("skip:")
                reply = self.act(action, resolver) if known else Reply(
                    EXIT_FAILED, err=[f"wtr: unknown merge request {action!r}"])
            except Exception as exc:  # the runner goes on; the asker hears what happened
                reply = Reply(EXIT_FAILED, err=[f"wtr: the merge failed in the runner: {exc!r}"])
            text = json.loads(json.dumps(asdict(reply)))
            write_json_atomic(_folder(self.store, "replies") / path.name, text)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
