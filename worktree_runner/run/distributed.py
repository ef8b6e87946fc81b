"""Streams on a Dask cluster, handed over through a git remote every worker can reach.

The coordinator (the machine running ``wtr run``) keeps the scheduler, the state and the
event log, exactly as for a local run. For each stream it pushes the stream's starting
commit to the remote under ``refs/worktree-runner/dask/<run>/<stream>/start`` and submits
one task. The task, on a worker, fetches what it needs into a cache clone of the remote,
and runs :func:`run_stream` — the very life of a local stream (worktree, supervisor,
timeouts, retries, leftovers, ownership, verify) — against a state folder of its own.
Then it pushes the branch (with a lease) and a result commit (the stream's record and the
tail of its log) under ``.../result``, and returns the record. Progress, log lines and
events travel to the coordinator while the stream runs, through a Dask queue.

Faults: a worker that dies mid-stream makes Dask run the task again elsewhere; it starts
from what was last pushed and counts the lost attempt. Ctrl-C sets a Dask event that every
task watches: its agent is stopped and what it made is pushed. A coordinator killed
outright finds, on ``wtr resume``, the result of every task that finished meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from worktree_runner import git, procs
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.plan.executor import Executor
from worktree_runner.plan.load import parse_plan
from worktree_runner.run.guard import Guard
from worktree_runner.run.state import Failure, RunRecord, RunStore, Status, StreamRecord, now
from worktree_runner.run.stream import (
    RunContext,
    StartConflict,
    StreamFailed,
    _stream_base,
    run_stream,
)

REF_ROOT = "refs/worktree-runner/dask"
RELAY_SECONDS = 0.5
LOG_TAIL_BYTES = 1 << 20
# How long a task waits for an earlier task of its stream to stop its agent.
HANDOVER_SECONDS = float(os.environ.get("WTR_KILL_GRACE", "5")) + 30
# Fields of a stream's record that the worker's life of it decides.
RESULT_FIELDS = ("status", "failure", "attempts", "exit_code", "changed_files", "head_commit",
                 "base_commit", "usage", "seconds", "started_at", "finished_at")


def _stream_ref(run: str, name: str, what: str) -> str:
    return f"{REF_ROOT}/{run}/{name}/{what}"


def _names(run: str, name: str) -> dict[str, str]:
    """Dask names of a stream's queue, owner variable and of the run's stop event."""
    return {"queue": f"wtr-{run}-{name}-relay", "owner": f"wtr-{run}-{name}-owner",
            "active": f"wtr-{run}-{name}-active", "stop": f"wtr-{run}-stop"}


# -- the coordinator -----------------------------------------------------------------------


@contextmanager
def session(config: Executor, max_parallel: int) -> Iterator[Any]:
    """A Dask client: to the scheduler named, or to a LocalCluster started for this run."""
    try:
        import distributed
    except ImportError:
        raise BadInput("this plan runs streams on Dask, which is not installed",
                       hint="pip install 'worktree-runner[dask]'") from None
    import logging

    cluster = None
    try:
        if config.local_workers is not None:
            cluster = distributed.LocalCluster(
                n_workers=config.local_workers, threads_per_worker=max_parallel,
                processes=True, dashboard_address=None, silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(config.scheduler, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise WtrError(f"cannot reach the Dask scheduler at {config.scheduler}: {exc}",
                       hint="start it ('dask scheduler') or fix executor.scheduler") from None
    try:
        yield client
    finally:
        _close(client, cluster)


def _close(client: Any, cluster: Any) -> None:
    """Let go of the cluster; one slow to stop (its work is done and recorded by now) is
    logged, never a reason to fail the run."""
    from worktree_runner import logs

    for part in (client, cluster):
        if part is None:
            continue
        try:
            part.close(timeout=60)
        except Exception as exc:
            logs.debug("dask_close_failed", part=type(part).__name__, error=repr(exc))


@dataclass
class RemoteStreams:
    """The scheduler's ``work`` for a Dask run: one stream, start to recorded end."""

    ctx: RunContext
    config: Executor
    client: Any

    def __post_init__(self) -> None:
        from distributed import Event

        # A long-lived scheduler remembers the stop of an earlier, interrupted session.
        Event(f"wtr-{self.ctx.run_id}-stop", client=self.client).clear()

    @property
    def remote(self) -> str:
        assert self.config.remote is not None
        return self.config.remote

    def run(self, name: str) -> bool:
        store, record = self.ctx.store, self.ctx.store.record.streams[name]
        adopted = self._finished_meanwhile(record)
        try:
            result = adopted if adopted is not None else self._submit(name)
        except StreamFailed as exc:
            result = {"record": {"status": Status.FAILED.value, "failure": asdict(exc.failure)}}
        self._apply(name, result, with_log=adopted is not None)
        return store.record.streams[name].status == Status.SUCCEEDED.value

    def _submit(self, name: str) -> dict[str, Any]:
        from distributed import Event, Variable

        store = self.ctx.store
        start = self._publish_start(name)
        task = uuid.uuid4().hex
        store.update_stream(name, "stream_started", status=Status.RUNNING.value,
                            started_at=now(), finished_at=None, failure=None, exit_code=None,
                            base_commit=start, remote_task=task)
        names = _names(store.run_id, name)
        Variable(names["owner"], client=self.client).set(task)
        stop = Event(names["stop"], client=self.client)
        spec = {"task": task, "remote": self.remote, "run": store.run_id, "stream": name,
                "plan": store.plan_path.read_text(encoding="utf-8"),
                "record": store.record.to_json()}
        future = self.client.submit(worker_stream, spec, key=f"wtr-{store.run_id}-{name}-{task}",
                                    pure=False)
        relay = _Relay(store, name, names["queue"], self.client)
        relay.start()
        try:
            while not future.done():
                if self.ctx.stop.is_set():
                    stop.set()
                time.sleep(RELAY_SECONDS)
            return dict(future.result())
        except Exception as exc:  # the task itself failed: say so, lose nothing recorded
            return {"task": task, "record": {
                "status": Status.FAILED.value,
                "failure": {"kind": "error", "message": f"the Dask task failed: {exc!r}",
                            "files": []}}}
        finally:
            relay.stop()

    def _publish_start(self, name: str) -> str:
        """Push the stream's starting commit (and nothing else) where workers fetch it."""
        record = self.ctx.store.record.streams[name]
        start = record.base_commit or _stream_base(self.ctx, self.ctx.plan.stream(name))
        if isinstance(start, StartConflict):
            streams = ", ".join(f"'{n}'" for n in start.streams)
            raise StreamFailed(Failure(
                "error", f"the results of {streams}, which it starts from, conflict in "
                f"{', '.join(start.files)}; run it without the Dask executor to resolve "
                "that merge in its worktree", start.files))
        ref = _stream_ref(self.ctx.run_id, name, "start")
        result = self.ctx.repo.git("push", "--quiet", "--no-verify", "--", self.remote,
                                   f"+{start}:{ref}", check=False)
        if not result.ok:
            raise WtrError(f"cannot push to the remote {self.remote}: "
                           f"{_last_line(result.stderr)}",
                           hint="check its URL and that this machine may push there")
        return start

    def _finished_meanwhile(self, record: StreamRecord) -> dict[str, Any] | None:
        """The result a worker pushed for the task this coordinator last submitted, when it
        died before hearing of it (``wtr resume``)."""
        if not record.remote_task:
            return None
        ref = _stream_ref(self.ctx.run_id, record.name, "result")
        local = f"refs/worktree-runner/fetched/{self.ctx.run_id}/{record.name}"
        fetched = self.ctx.repo.git("fetch", "--quiet", "--no-tags", "--", self.remote,
                                    f"+{ref}:{local}", check=False)
        if not fetched.ok:
            return None
        shown = self.ctx.repo.git("show", f"{local}:result.json", check=False)
        with suppress(ValueError):
            result = json.loads(shown.stdout) if shown.ok else None
            if isinstance(result, dict) and result.get("task") == record.remote_task:
                self.ctx.store.event("remote_result_adopted", stream=record.name)
                return result
        return None

    def _apply(self, name: str, result: dict[str, Any], with_log: bool) -> None:
        """Bring the stream's branch home and record what its worker found."""
        store = self.ctx.store
        branch = self.ctx.branch(name)
        self.ctx.repo.git("fetch", "--quiet", "--no-tags", "--", self.remote,
                          f"+refs/heads/{branch}:refs/heads/{branch}", check=False)
        fields = {k: v for k, v in result.get("record", {}).items() if k in RESULT_FIELDS}
        if isinstance(fields.get("failure"), dict):
            fields["failure"] = Failure(**fields["failure"])
        if with_log and result.get("log"):  # else the relay brought it while it ran
            with store.log_path(name).open("a", encoding="utf-8") as log:
                log.write(f"--- as the worker {result.get('worker', '?')} logged it ---\n")
                log.write(str(result["log"]))
        fields.setdefault("finished_at", now())
        store.update_stream(name, "stream_finished", **fields, remote_task=None)
        store.event("remote_finished", stream=name, worker=result.get("worker"))


class _Relay(threading.Thread):
    """Copies what a task sends (progress, log lines, events) into the coordinator's run."""

    def __init__(self, store: RunStore, name: str, queue: str, client: Any) -> None:
        super().__init__(daemon=True, name=f"relay-{name}")
        from distributed import Queue

        self.store, self.name, self.queue = store, name, Queue(queue, client=client)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self._drain(timeout=RELAY_SECONDS)
        self._drain(timeout=0.2)

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)

    def _drain(self, timeout: float) -> None:
        try:
            messages = [self.queue.get(timeout=timeout)]
            size = self.queue.qsize()
            if size:
                messages += self.queue.get(batch=size)
        except Exception:  # nothing arrived in time, or the cluster went away
            return
        for message in messages:
            self._record(message)

    def _record(self, message: dict[str, Any]) -> None:
        kind, data = message.get("kind"), message.get("data")
        if kind == "log" and isinstance(data, str):
            with self.store.log_path(self.name).open("a", encoding="utf-8") as log:
                log.write(data)
        elif kind == "progress" and isinstance(data, dict):
            from worktree_runner.run.state import write_json_atomic

            write_json_atomic(self.store.progress_path(self.name), data)
        elif kind == "event" and isinstance(data, dict):
            event = str(data.pop("event", "remote_event"))
            data.pop("run", None)
            data.pop("at", None)
            if event == "attempt_started" and isinstance(data.get("attempt"), int):
                self.store.update_stream(self.name, None, attempts=data["attempt"])
            self.store.event(event, **{"remote": True, **data})


# -- the worker ----------------------------------------------------------------------------


def worker_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """A Dask task: the life of one stream on this worker, then its branch and result pushed."""
    from distributed import Event, Lock, Variable, get_worker

    run, name, task = spec["run"], spec["stream"], spec["task"]
    names = _names(run, name)
    worker = get_worker()
    cache = _cache_repo(spec["remote"], Path(os.environ.get("WTR_WORKER_CACHE")
                                             or Path(worker.local_directory) / "wtr-cache"))
    with Lock(names["owner"]):
        lost = _take_over(names, task)
    record = RunRecord.from_json(spec["record"])
    stream = record.streams[name]
    stream.attempts += lost
    with FileLock(str(cache.common_dir / "wtr-fetch.lock")):
        fetched = _fetch_stream(cache, spec["remote"], run, name, stream)
    store = _worker_store(cache, record, spec["plan"], task)
    plan = parse_plan(spec["plan"], Path(record.plan))
    ctx = RunContext(repo=cache, plan=plan, store=store, base_commit=record.base_commit,
                     worktrees_root=cache.root.parent / f"{cache.root.name}.worktrees",
                     bin_dir=procs.write_wtr_shim(store.dir / "bin"), guard=Guard(cache, store))
    ctx.guard.start()
    pusher = _BranchPusher(cache, spec["remote"], stream.branch, fetched)
    sender = _Sender(store, name, names["queue"], ctx.stop, Event(names["stop"]),
                     Variable(names["owner"]), task, lost, worker.address, pusher)
    sender.start()
    try:
        run_stream(ctx, name)
    finally:
        sender.finish()
    if sender.replaced:
        return {"task": task, "replaced": True, "record": {}}
    result = {"task": task, "worker": worker.address,
              "record": store.load().streams[name].to_json(), "log": _log_tail(store, name)}
    problem = pusher.push()
    if problem:
        result["record"].update(status=Status.FAILED.value, failure={
            "kind": "error", "files": [], "message": problem})
    _push_result(cache, spec["remote"], run, name, result)
    Variable(names["active"]).delete()
    return result


def _take_over(names: dict[str, str], task: str) -> int:
    """Become the stream's running task; wait for an earlier one to stop its agent first.
    Returns 1 when an earlier task of this stream was lost with its worker, else 0."""
    from distributed import Variable

    active = Variable(names["active"])
    earlier = active.get(timeout=1) if _has_value(active) else None
    deadline = time.monotonic() + HANDOVER_SECONDS
    while earlier not in (None, task) and time.monotonic() < deadline and _has_value(active):
        time.sleep(RELAY_SECONDS)
        earlier = active.get(timeout=1) if _has_value(active) else None
    lost = 1 if earlier == task else 0  # Dask runs a task again when its worker died
    active.set(task)
    return lost


def _has_value(variable: Any) -> bool:
    try:
        variable.get(timeout=0.1)
    except Exception:
        return False
    return True


def _cache_repo(remote: str, root: Path) -> git.Repository:
    """This worker's clone of the remote (objects only, no files checked out), made once."""
    path = root / hashlib.sha256(remote.encode()).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{path.name}.lock")):
        if not (path / ".git").is_dir():
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                clone = git.run_git(["clone", "--quiet", "--no-checkout", "--", remote,
                                     str(Path(tmp) / "clone")], root, check=False)
                if not clone.ok:
                    raise WtrError(f"this worker cannot clone {remote}: "
                                   f"{_last_line(clone.stderr)}")
                # An unborn HEAD: the clone's own checkout stays empty and clean, so
                # looking at it (the run's guard does, per stream) costs nothing.
                git.run_git(["symbolic-ref", "HEAD", "refs/heads/wtr-worker-cache"],
                            Path(tmp) / "clone")
                os.replace(Path(tmp) / "clone", path)
    return git.open_repository(path)


def _fetch_stream(cache: git.Repository, remote: str, run: str, name: str,
                  stream: StreamRecord) -> str | None:
    """Fetch the stream's start and, when a worker pushed it before, its branch; the
    branch's remote tip (the lease for our push), or None."""
    branch = stream.branch
    worktree = cache.root.parent / f"{cache.root.name}.worktrees" / run / name
    if worktree.exists():  # an earlier task of this stream on this worker: start over
        git.remove_worktree(cache, worktree)
    start = _stream_ref(run, name, "start")
    refspecs = [f"+{start}:{start}"]
    there = git.remote_branch_commit(cache, remote, branch)
    if there:
        refspecs.append(f"+refs/heads/{branch}:refs/heads/{branch}")
    elif git.branch_exists(cache, branch):
        cache.git("branch", "-D", "--", branch)
    cache.git("fetch", "--quiet", "--no-tags", "--", remote, *refspecs)
    return there


def _worker_store(cache: git.Repository, record: RunRecord, plan_text: str,
                  task: str) -> RunStore:
    """A state folder of the task's own: the worker's copy of the run, for run_stream."""
    store = RunStore(cache.state_dir / "tasks" / task / record.run)
    for name in record.streams:
        store.stream_dir(name).mkdir(parents=True, exist_ok=True)
    store.plan_path.write_text(plan_text, encoding="utf-8")
    store.save(record)
    return store


class _BranchPusher:
    """Pushes the stream's branch whenever it moved, so that a commit an agent made
    survives the loss of its worker; always with a lease, never over work not seen here."""

    def __init__(self, cache: git.Repository, remote: str, branch: str,
                 lease: str | None) -> None:
        self.cache, self.remote, self.branch, self.lease = cache, remote, branch, lease
        self.lock = threading.Lock()

    def push(self) -> str | None:
        """Push if the branch moved; what went wrong, or None."""
        with self.lock:
            tip = git.ref_commit(self.cache, f"refs/heads/{self.branch}")
            if tip is None or tip == self.lease:
                return None
            pushed = git.push_branch(self.cache, self.remote, self.branch, tip, self.lease)
            if not pushed.ok:
                return (f"the worker could not push {self.branch}: "
                        f"{_last_line(pushed.stderr)}; its work stays on that worker")
            self.lease = tip
            return None


def _push_result(cache: git.Repository, remote: str, run: str, name: str,
                 result: dict[str, Any]) -> None:
    """The stream's record, which a coordinator that died meanwhile finds on resume."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "result.json").write_text(json.dumps(result), encoding="utf-8")
        blob = cache.out("hash-object", "-w", str(Path(tmp) / "result.json"))
    tree = git.run_git(["mktree"], cache.root, stdin=f"100644 blob {blob}\tresult.json\n")
    commit = git.commit_tree(cache, tree.stdout.strip(), [], f"wtr: result of {name}")
    cache.git("push", "--quiet", "--no-verify", "--", remote,
              f"+{commit}:{_stream_ref(run, name, 'result')}", check=False)


def _log_tail(store: RunStore, name: str) -> str:
    path = store.log_path(name)
    if not path.exists():
        return ""
    with path.open("rb") as log:
        log.seek(max(0, path.stat().st_size - LOG_TAIL_BYTES))
        return log.read().decode("utf-8", "replace")


class _Sender(threading.Thread):
    """On the worker: sends progress, new log text and events to the coordinator; stops
    the stream when the run is stopped or another task took the stream over."""

    def __init__(self, store: RunStore, name: str, queue: str, stop: threading.Event,
                 run_stop: Any, owner: Any, task: str, lost: int, worker: str,
                 pusher: _BranchPusher) -> None:
        super().__init__(daemon=True, name=f"sender-{name}")
        from distributed import Queue

        self.store, self.name, self.queue = store, name, Queue(queue)
        self.stop, self.run_stop, self.owner, self.task = stop, run_stop, owner, task
        self.pusher = pusher
        self.finished = threading.Event()
        self.replaced = False
        self.offsets = {"log": 0, "events": 0}
        self.progress: Any = None
        self._send("event", {"event": "remote_started", "stream": name, "worker": worker,
                             "pid": os.getpid(), "lost_attempts": lost})

    def run(self) -> None:
        while not self.finished.wait(RELAY_SECONDS):
            self._send_news()
            with suppress(Exception):
                self.pusher.push()
            with suppress(Exception):
                if self.run_stop.is_set():
                    self.stop.set()
                if self.owner.get(timeout=1) != self.task:
                    self.replaced = True
                    self.stop.set()

    def finish(self) -> None:
        self.finished.set()
        self.join(timeout=10)
        self._send_news()

    def _send_news(self) -> None:
        log = self._new_text(self.store.log_path(self.name), "log")
        if log:
            self._send("log", log)
        for line in self._new_text(self.store.events_path, "events").splitlines():
            with suppress(ValueError):
                event = json.loads(line)
                if event.get("stream") == self.name and event.get("event") not in (
                        "stream_started", "stream_finished"):
                    self._send("event", event)
        progress = self.store.progress(self.name)
        if progress and progress != self.progress:
            self.progress = progress
            self._send("progress", progress)

    def _new_text(self, path: Path, key: str) -> str:
        try:
            with path.open("rb") as source:
                source.seek(self.offsets[key])
                data = source.read()
        except OSError:
            return ""
        complete = data[:data.rfind(b"\n") + 1] if key == "events" else data
        self.offsets[key] += len(complete)
        return complete.decode("utf-8", "replace")

    def _send(self, kind: str, data: Any) -> None:
        with suppress(Exception):
            self.queue.put({"kind": kind, "data": data}, timeout=5)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
