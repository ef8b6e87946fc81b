"""Streams on a Dask cluster, handed over through a git remote every worker can reach.

The coordinator (the machine running ``wtr run``) keeps the scheduler, the state and the
event log, exactly as for a local run. It pushes the run's base commit to the remote once
(``refs/worktree-runner/dask/<run>/base``), and a stream's starting commit when it is
another one (``.../<run>/<stream>/start``), then submits one task per stream. The task,
on a worker, fetches only what its cache clone of the remote lacks, and runs
:func:`run_stream` — the very life of a local stream (worktree, supervisor, timeouts,
retries, leftovers, ownership, verify) — against a state folder of its own. Then it
pushes, in one atomic push, the branch (with a lease) and a result blob (the stream's
record, report and the tail of its log) under ``.../result``, gives the worktree to the
worker's pool for the next stream, and returns the record. Progress, log lines and events
travel to the coordinator while the stream runs, through a Dask queue.

Speed (docs/performance.md): a worktree is reused from the worker's pool (a checkout of
the files that differ, not of every file); the coordinator hears of a task's end at once;
the few facts tasks share (who owns a stream, whether the run is stopping) are scheduler
metadata, read in one round trip and never waited on; a ``local:N`` cluster starts its
worker processes from a fork server, keeps its cache clone in the repository's state
folder (reused by the next run, and never deleted as the cluster stops).

Faults: a worker that dies mid-stream makes Dask run the task again elsewhere; it starts
from what was last pushed and counts the lost attempt. Ctrl-C sets a Dask event that every
task watches: its agent is stopped and what it made is pushed. A coordinator killed
outright finds, on ``wtr resume``, the result of every task that finished meanwhile.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from worktree_runner import checkout, git, procs, statefs
from worktree_runner.errors import BadInput, WtrError
from worktree_runner.events import STREAM_ENDS, Kind
from worktree_runner.plan.executor import Executor, connect_timeout
from worktree_runner.plan.load import parse_plan
from worktree_runner.pool import Pool
from worktree_runner.run.guard import Guard
from worktree_runner.run.state import Failure, RunRecord, RunStore, Status, StreamRecord, now
from worktree_runner.run.stream import (
    RunContext,
    StartConflict,
    StreamFailed,
    run_stream,
    stream_base,
)

REF_ROOT = "refs/worktree-runner/dask"
# Dask settings for the cluster a ``local:N`` run starts (and for this process): its tasks
# wait on agents, they do not compute. So no profiler sampling every 10 ms, fewer health
# checks and samples, no work stealing (a run never has more tasks than threads), and no
# memory limit (memory_limit=0: an agent's memory is its own, not its worker's).
QUIET = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.scheduler.work-stealing": False,
}
RELAY_SECONDS = 0.5
LOG_TAIL_BYTES = 1 << 20
# How long a task waits for an earlier task of its stream to stop its agent.
HANDOVER_SECONDS = float(os.environ.get("WTR_KILL_GRACE", "5")) + 30
# Fields of a stream's record that the worker's life of it decides.
RESULT_FIELDS = ("status", "failure", "attempts", "exit_code", "changed_files", "head_commit",
                 "base_commit", "usage", "seconds", "started_at", "finished_at", "session",
                 "attempt_log", "message", "checkout")


def _stream_ref(run: str, name: str, what: str) -> str:
    return f"{REF_ROOT}/{run}/{name}/{what}"


def _names(run: str, name: str) -> dict[str, str]:
    """Dask names of a stream's queue and of its lock (taking the stream over)."""
    return {"queue": f"wtr-{run}-{name}-relay", "lock": f"wtr-{run}-{name}-owner"}


def _meta(run: str, *keys: str) -> list[str]:
    """A key of the run's scheduler metadata: ``stop`` (the run is stopping), ``owner``
    (the task the coordinator last submitted, per stream) and ``active`` (the task that
    runs it now, per stream)."""
    return ["wtr", run, *keys]


# -- the coordinator -----------------------------------------------------------------------


@contextmanager
def session(config: Executor, max_parallel: int) -> Iterator[Any]:
    """A Dask client: to the scheduler named, or to a LocalCluster started for this run."""
    # First the fork server: it imports Dask in a process of its own while this one does.
    method = _start_method() if config.local_workers is not None else "spawn"
    try:
        import distributed
    except ImportError:
        raise BadInput("this plan runs streams on Dask, which is not installed",
                       hint="pip install 'worktree-runner[dask]'") from None
    import logging

    import dask

    cluster = None
    with dask.config.set({**QUIET, "distributed.worker.multiprocessing-method": method}):
        try:
            if config.local_workers is not None:
                cluster = distributed.LocalCluster(
                    n_workers=config.local_workers, threads_per_worker=max_parallel,
                    processes=True, dashboard_address=None, silence_logs=logging.ERROR,
                    memory_limit=0)
                client = distributed.Client(cluster)
            else:
                client = distributed.Client(config.scheduler, timeout=connect_timeout())
        except (OSError, TimeoutError) as exc:
            raise WtrError(f"cannot reach the Dask scheduler at {config.scheduler}: {exc}",
                           hint="start it ('dask scheduler') or fix executor.scheduler") from None
        try:
            yield client
        finally:
            _close(client, cluster)


def _start_method() -> str:
    """How a ``local:N`` cluster starts its worker processes: forked from a fork server
    that imported Dask and this module once, instead of N fresh interpreters importing
    them each (seconds on a busy machine). Where there is no fork server: spawn."""
    import multiprocessing
    from multiprocessing import forkserver

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if importlib.util.find_spec("distributed") is None:
        return "spawn"  # (the import below says what to install)
    multiprocessing.get_context("forkserver").set_forkserver_preload(["distributed", __name__])
    forkserver.ensure_running()
    return "forkserver"


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


@contextmanager
def remote_streams(ctx: RunContext, config: Executor,
                   max_parallel: int) -> Iterator[Callable[[str], bool]]:
    """The scheduler's ``work`` for a Dask run. While the cluster starts, the run's base
    goes to the remote and the workers' cache clone of a ``local:N`` cluster is made."""
    early = _Early(ctx, config)
    early.start()
    try:
        with session(config, max_parallel) as client:
            yield RemoteStreams(ctx, config, client, early).run
    finally:
        early.join()


def _cache_folder(ctx: RunContext, config: Executor) -> Path | None:
    """Where the workers of a ``local:N`` cluster keep their clone and pooled worktrees:
    this repository's state folder, so that the next run finds them (and the cluster, as
    it stops, does not delete thousands of files). Elsewhere: the worker decides."""
    return None if config.local_workers is None else ctx.repo.state_dir / "dask-workers"


class _Early(threading.Thread):
    """What needs no cluster: the run's base pushed (its outcome kept for the first stream
    that starts there), the local workers' cache clone made."""

    def __init__(self, ctx: RunContext, config: Executor) -> None:
        super().__init__(daemon=True, name="dask-early")
        self.ctx, self.config = ctx, config
        self.problem: WtrError | None = None

    def run(self) -> None:
        assert self.config.remote is not None
        try:
            _push_ref(self.ctx.repo, self.config.remote, self.ctx.base_commit,
                      f"{REF_ROOT}/{self.ctx.run_id}/base")
        except WtrError as exc:
            self.problem = exc
            return
        cache = _cache_folder(self.ctx, self.config)
        if cache is not None:
            with suppress(WtrError):  # (a worker says so, if it cannot either)
                _cache_repo(self.config.remote, cache)


def _push_ref(repo: git.Repository, remote: str, commit: str, ref: str) -> None:
    result = repo.git("push", "--quiet", "--no-verify", "--", remote, f"+{commit}:{ref}",
                      check=False)
    if not result.ok:
        raise WtrError(f"cannot push to the remote {remote}: {_last_line(result.stderr)}",
                       hint="check its URL and that this machine may push there")


@dataclass
class RemoteStreams:
    """One stream of a Dask run, start to recorded end."""

    ctx: RunContext
    config: Executor
    client: Any
    early: _Early

    def __post_init__(self) -> None:
        # A long-lived scheduler remembers the stop of an earlier, interrupted session.
        self.client.set_metadata(_meta(self.ctx.run_id, "stop"), False)

    @property
    def cache(self) -> str | None:
        folder = _cache_folder(self.ctx, self.config)
        return None if folder is None else str(folder)

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
        # (a stream that succeeded may already be merged by the lander of `run --merge`)
        return store.record.streams[name].status in (Status.SUCCEEDED.value,
                                                     Status.MERGED.value)

    def _submit(self, name: str) -> dict[str, Any]:
        store = self.ctx.store
        start, start_ref = self._publish_start(name)
        task = uuid.uuid4().hex
        store.update_stream(name, "stream_started", status=Status.RUNNING.value,
                            started_at=now(), finished_at=None, failure=None, exit_code=None,
                            base_commit=start, remote_task=task)
        self.client.set_metadata(_meta(store.run_id, "owner", name), task)
        spec = {"task": task, "remote": self.remote, "run": store.run_id, "stream": name,
                "start": start, "start_ref": start_ref, "cache": self.cache,
                "plan": store.plan_path.read_text(encoding="utf-8"),
                "record": store.record.to_json()}
        relay = _Relay(store, name, _names(store.run_id, name)["queue"], self.client)
        future = self.client.submit(worker_stream, spec, key=f"wtr-{store.run_id}-{name}-{task}",
                                    pure=False)
        ended = threading.Event()
        future.add_done_callback(lambda _: ended.set())
        relay.start()
        try:
            while not ended.wait(RELAY_SECONDS):
                if self.ctx.stop.is_set():
                    self.client.set_metadata(_meta(store.run_id, "stop"), True)
            return dict(future.result())
        except Exception as exc:  # the task itself failed: say so, lose nothing recorded
            return {"task": task, "record": {
                "status": Status.FAILED.value,
                "failure": {"kind": "error", "message": f"the Dask task failed: {exc!r}",
                            "files": []}}}
        finally:
            relay.stop()

    def _publish_start(self, name: str) -> tuple[str, str]:
        """Push the stream's starting commit where workers fetch it: the run's base once
        for every stream that starts there, any other start under the stream's own ref.
        Returns the commit and that ref."""
        record = self.ctx.store.record.streams[name]
        start = record.base_commit or stream_base(self.ctx, self.ctx.plan.stream(name))
        if isinstance(start, StartConflict):
            streams = ", ".join(f"'{n}'" for n in start.streams)
            raise StreamFailed(Failure(
                "error", f"the results of {streams}, which it starts from, conflict in "
                f"{', '.join(start.files)}; run it without the Dask executor to resolve "
                "that merge in its worktree", start.files))
        if start != self.ctx.base_commit:
            ref = _stream_ref(self.ctx.run_id, name, "start")
            _push_ref(self.ctx.repo, self.remote, start, ref)
            return start, ref
        self.early.join()
        if self.early.problem is not None:
            raise self.early.problem
        return start, f"{REF_ROOT}/{self.ctx.run_id}/base"

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
        shown = self.ctx.repo.git("cat-file", "blob", local, check=False)
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
            statefs.append_text(store.log_path(name), f"--- as the worker "
                                f"{result.get('worker', '?')} logged it ---\n{result['log']}")
        if isinstance(result.get("report"), str):
            statefs.write_text(store.report_path(name), result["report"])
        fields.setdefault("finished_at", now())
        store.update_stream(name, "stream_finished", **fields, remote_task=None)
        store.event("remote_finished", stream=name, worker=result.get("worker"))


class _Relay(threading.Thread):
    """Copies what a task sends (progress, log lines, events) into the coordinator's run,
    as it arrives: it waits on the queue, which the coordinator ends with a last message
    of its own once the task returned (the task's own last message is then before it)."""

    def __init__(self, store: RunStore, name: str, queue: str, client: Any) -> None:
        super().__init__(daemon=True, name=f"relay-{name}")
        from distributed import Queue

        self.store, self.name, self.queue = store, name, Queue(queue, client=client)

    def run(self) -> None:
        while True:
            try:  # no timeout: a wait that times out is logged by the scheduler as an error
                batch = self.queue.get()
            except Exception:  # the cluster went away
                return
            for message in batch.get("news", ()):
                self._record(message)
            if batch.get("end"):
                return

    def stop(self) -> None:
        with suppress(Exception):
            self.queue.put({"end": True}, timeout=10)
        self.join(timeout=30)
        with suppress(Exception):
            self.queue.close()

    def _record(self, message: dict[str, Any]) -> None:
        kind, data = message.get("kind"), message.get("data")
        if kind == "log" and isinstance(data, str):
            statefs.append_text(self.store.log_path(self.name), data)
        elif kind == "progress" and isinstance(data, dict):
            from worktree_runner.run.state import write_json_atomic

            write_json_atomic(self.store.progress_path(self.name), data)
        elif kind == "event" and isinstance(data, dict):
            event = str(data.pop("kind", None) or data.pop("event", "remote_event"))
            for key in ("run", "seq", "event"):
                data.pop(key, None)
            data["remote_at"] = data.pop("time", None) or data.pop("at", None)  # its clock
            if event == Kind.ATTEMPT_STARTED and isinstance(data.get("attempt"), int):
                self.store.update_stream(self.name, None, attempts=data["attempt"])
            self.store.event(event, **{"remote": True, **data})


# -- the worker ----------------------------------------------------------------------------


def worker_stream(spec: dict[str, Any]) -> dict[str, Any]:
    """A Dask task: the life of one stream on this worker, then its branch and result pushed."""
    from distributed import Lock, get_client, get_worker

    run, name, task = spec["run"], spec["stream"], spec["task"]
    worker, client = get_worker(), get_client()
    cache = _cache_repo(spec["remote"], Path(os.environ.get("WTR_WORKER_CACHE")
                                             or spec.get("cache")
                                             or Path(worker.local_directory) / "wtr-cache"))
    with Lock(_names(run, name)["lock"]):
        lost = _take_over(client, run, name, task)
    try:
        return _run_here(spec, cache, lost, worker.address, client)
    finally:
        with Lock(_names(run, name)["lock"]):
            if client.get_metadata(_meta(run, "active", name), None) == task:
                client.set_metadata(_meta(run, "active", name), None)


def _run_here(spec: dict[str, Any], cache: git.Repository, lost: int, address: str,
              client: Any) -> dict[str, Any]:
    run, name, task = spec["run"], spec["stream"], spec["task"]
    record = RunRecord.from_json(spec["record"])
    stream = record.streams[name]
    stream.attempts += lost
    _stop_earlier_agents(cache, task, run, name)
    with FileLock(str(cache.common_dir / "wtr-fetch.lock")):
        fetched = _fetch_stream(cache, spec, stream)
    store = _worker_store(cache, record, spec["plan"], task)
    plan = parse_plan(spec["plan"], Path(record.plan))
    worktrees = cache.root.parent / f"{cache.root.name}.worktrees"
    ctx = RunContext(repo=cache, plan=plan, store=store, base_commit=record.base_commit,
                     worktrees_root=worktrees,
                     bin_dir=procs.write_wtr_shim(store.dir / "bin"), guard=Guard(cache, store),
                     pool=Pool(cache, worktrees, plan.pool_size(record.max_parallel),
                               plan.keep_ignored),
                     bound_agents=True)
    ctx.guard.start()
    pusher = _BranchPusher(cache, spec["remote"], stream.branch, fetched, spec["start"])
    sender = _Sender(store, name, _names(run, name)["queue"], ctx.stop, client, run, task,
                     lost, address, pusher)
    sender.start()
    try:
        run_stream(ctx, name)
    finally:
        sender.finish()
    if sender.replaced:
        return {"task": task, "replaced": True, "record": {}}
    result = {"task": task, "worker": address,
              "record": store.load().streams[name].to_json(), "log": _log_tail(store, name),
              "report": _text(store.report_path(name))}
    if _push_home(cache, spec["remote"], run, name, pusher, result):
        _pool_worktree(ctx, name, result)
        shutil.rmtree(store.dir.parent, ignore_errors=True)  # all of it is in the result
    return result


def _stop_earlier_agents(cache: git.Repository, task: str, run: str, name: str) -> None:
    """An agent of this task that a lost worker left (it ends with its worker, after a
    grace period): stopped before its worktree is made again, never run beside."""
    for stream_dir in (cache.state_dir / "tasks").glob(f"{task}.*/{run}/streams/{name}"):
        for agent in procs.stream_agents(stream_dir):
            agent.stop()


def _take_over(client: Any, run: str, name: str, task: str) -> int:
    """Become the stream's running task; wait for an earlier one to stop its agent first.
    Returns 1 when an earlier task of this stream was lost with its worker, else 0."""
    key = _meta(run, "active", name)
    earlier = client.get_metadata(key, None)
    deadline = time.monotonic() + HANDOVER_SECONDS
    while earlier not in (None, task) and time.monotonic() < deadline:
        time.sleep(RELAY_SECONDS)
        earlier = client.get_metadata(key, None)
    lost = 1 if earlier == task else 0  # Dask runs a task again when its worker died
    client.set_metadata(key, task)
    return lost


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


def _fetch_stream(cache: git.Repository, spec: dict[str, Any], stream: StreamRecord) -> str | None:
    """Fetch what the cache lacks: the stream's start and, when a worker pushed its branch
    before, that branch. Returns the branch's remote tip (the lease for our push), or None."""
    remote, branch = spec["remote"], stream.branch
    worktree = cache.root.parent / f"{cache.root.name}.worktrees" / spec["run"] / stream.name
    if worktree.exists():  # an earlier task of this stream on this worker: start over
        git.remove_worktree(cache, worktree)
    refspecs = [] if git.has_commit(cache, spec["start"]) else [
        f"+{spec['start_ref']}:{spec['start_ref']}"]
    there = git.remote_branch_commit(cache, remote, branch)
    if there and git.ref_commit(cache, f"refs/heads/{branch}") != there:
        refspecs.append(f"+refs/heads/{branch}:refs/heads/{branch}")
    elif not there and git.branch_exists(cache, branch):
        cache.git("branch", "-D", "--", branch)
    if refspecs:
        cache.git("fetch", "--quiet", "--no-tags", "--", remote, *refspecs)
    return there


def _worker_store(cache: git.Repository, record: RunRecord, plan_text: str,
                  task: str) -> RunStore:
    """A state folder of this execution of the task (Dask runs it again when its worker
    died): the worker's copy of the run, for run_stream."""
    store = RunStore(cache.state_dir / "tasks" / f"{task}.{uuid.uuid4().hex[:8]}" / record.run)
    for name in record.streams:
        store.stream_dir(name).mkdir(parents=True, exist_ok=True)
    store.plan_path.write_text(plan_text, encoding="utf-8")
    store.save(record)
    return store


class _BranchPusher:
    """Pushes the stream's branch whenever it moved, so that a commit an agent made
    survives the loss of its worker; always with a lease, never over work not seen here."""

    def __init__(self, cache: git.Repository, remote: str, branch: str,
                 lease: str | None, start: str) -> None:
        self.cache, self.remote, self.branch, self.lease = cache, remote, branch, lease
        self.start = start
        self.lock = threading.Lock()

    def push(self, final: bool = False, also: tuple[str, ...] = ()) -> str | None:
        """Push if the branch moved (while it runs: only to keep a new commit), with
        ``also`` in the same atomic push; what went wrong, or None."""
        with self.lock:
            tip = git.ref_commit(self.cache, f"refs/heads/{self.branch}")
            unchanged = tip is None or tip == self.lease or (
                not final and self.lease is None and tip == self.start)
            if unchanged:
                if also:
                    pushed = self.cache.git("push", "--porcelain", "--no-verify", "--",
                                            self.remote, *also, check=False)
                    return None if pushed.ok else _last_line(pushed.stderr)
                return None
            pushed = git.push_branch(self.cache, self.remote, self.branch, tip, self.lease,
                                     also=also)
            if not pushed.ok:
                return (f"the worker could not push {self.branch}: "
                        f"{_last_line(pushed.stderr)}; its work stays on that worker")
            self.lease = tip
            return None


def _push_home(cache: git.Repository, remote: str, run: str, name: str,
               pusher: _BranchPusher, result: dict[str, Any]) -> bool:
    """The branch and the stream's result (which a coordinator that died meanwhile finds
    on resume) in one push. False when the branch could not be pushed: the result then
    says so, and is pushed alone."""
    ref = _stream_ref(run, name, "result")
    problem = pusher.push(final=True, also=(f"+{_result_blob(cache, result)}:{ref}",))
    if problem is None:
        return True
    result["record"].update(status=Status.FAILED.value, failure={
        "kind": "error", "files": [], "message": problem})
    cache.git("push", "--quiet", "--no-verify", "--", remote,
              f"+{_result_blob(cache, result)}:{ref}", check=False)
    return False


def _result_blob(cache: git.Repository, result: dict[str, Any]) -> str:
    """The result as a JSON blob, which the result ref names directly (no tree, no commit)."""
    written = git.run_git(["hash-object", "-w", "--stdin"], cache.root, stdin=json.dumps(result))
    return written.stdout.strip()


def _pool_worktree(ctx: RunContext, name: str, result: dict[str, Any]) -> None:
    """A stream that succeeded and is pushed leaves its worktree to the next stream that
    runs here (a failed one keeps it: what the agent left uncommitted stays there)."""
    if result["record"].get("status") != Status.SUCCEEDED.value or ctx.pool is None:
        return
    with suppress(WtrError):
        path = ctx.worktree(name)
        if not ctx.pool.give_back(path, name) and checkout.is_overlay(ctx.repo, path):
            git.remove_worktree(ctx.repo, path)  # (never pooled; its mount goes with it)


def _text(path: Path) -> str | None:
    try:
        return statefs.read_text(path)
    except OSError:
        return None


def _log_tail(store: RunStore, name: str) -> str:
    try:
        with statefs.open_read(store.log_path(name)) as log:
            log.seek(max(0, log.seek(0, 2) - LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


class _Sender(threading.Thread):
    """On the worker: sends progress, new log text and events to the coordinator (what a
    tick found, in one message); stops the stream when the run is stopped or another task
    took the stream over."""

    def __init__(self, store: RunStore, name: str, queue: str, stop: threading.Event,
                 client: Any, run: str, task: str, lost: int, worker: str,
                 pusher: _BranchPusher) -> None:
        super().__init__(daemon=True, name=f"sender-{name}")
        from distributed import Queue

        self.store, self.name, self.queue = store, name, Queue(queue, client=client)
        self.stop, self.client, self.run_id, self.task = stop, client, run, task
        self.pusher = pusher
        self.finished = threading.Event()
        self.replaced = False
        self.offsets = {"log": 0, "events": 0}
        self.progress: Any = None
        self._send([{"kind": "event", "data": {
            "event": "remote_started", "stream": name, "worker": worker, "pid": os.getpid(),
            "lost_attempts": lost}}])

    def run(self) -> None:
        while not self.finished.wait(RELAY_SECONDS):
            self._send(self._news())
            with suppress(Exception):
                self.pusher.push()
            with suppress(Exception):
                shared = self.client.get_metadata(_meta(self.run_id), {})
                if shared.get("stop"):
                    self.stop.set()
                if shared.get("owner", {}).get(self.name) not in (None, self.task):
                    self.replaced = True
                    self.stop.set()

    def finish(self) -> None:
        self.finished.set()
        self.join(timeout=10)
        self._send(self._news())

    def _news(self) -> list[dict[str, Any]]:
        news: list[dict[str, Any]] = []
        log = self._new_text(self.store.log_path(self.name), "log")
        if log:
            news.append({"kind": "log", "data": log})
        for line in self._new_text(self.store.events_path, "events").splitlines():
            with suppress(ValueError):
                event = json.loads(line)
                if event.get("stream") == self.name and event.get("kind") not in (
                        Kind.STREAM_STARTED, Kind.STREAM_RESUMED, *STREAM_ENDS):
                    news.append({"kind": "event", "data": event})
        progress = self.store.progress(self.name)
        if progress and progress != self.progress:
            self.progress = progress
            news.append({"kind": "progress", "data": progress})
        return news

    def _new_text(self, path: Path, key: str) -> str:
        try:
            with statefs.open_read(path) as source:
                source.seek(self.offsets[key])
                data = source.read()
        except OSError:
            return ""
        complete = data[:data.rfind(b"\n") + 1] if key == "events" else data
        self.offsets[key] += len(complete)
        return complete.decode("utf-8", "replace")

    def _send(self, news: list[dict[str, Any]]) -> None:
        if news:
            with suppress(Exception):
                self.queue.put({"news": news}, timeout=5)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
