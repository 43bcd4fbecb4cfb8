"""The worker: the single consumer of the FIFO queue.

It claims the oldest job, hands it to the extraction child (``pagestream.child``) and turns
what the child sends into store writes — pages in batches, so a fast document costs one
commit per batch and not one per page. It enforces the per-page stall timeout and the total
timeout, cancels at a page boundary (killing the child if it does not get there within the
grace period), and takes a job up again from its next unfinished page when the child dies.

Every store write appends the matching event, and the store hands committed events to the
hub, so the worker never talks to a watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from .database import Lease
from .errors import InsufficientStorage, Unavailable
from .jobs import ErrorCode, Job, JobState, parse_pages
from .metrics import Metrics
from .settings import Settings
from .store import Commit, PageRow, Store
from .webhooks import Deliverer

log = logging.getLogger("pagestream.worker")

_HEADER = struct.Struct(">I")
# Messages the worker puts into its own inbox, next to the child's.
_SHUTDOWN = {"t": "_shutdown"}
_EOF = {"t": "_eof"}
_LEASE_LOST = {"t": "_lease_lost"}
_CONTROLS = frozenset({"_cancel", "_shutdown", "_lease_lost"})  # the worker's own messages, not the child's
# Seconds between looks at the worker's lease (taking it as a standby; checking it as the worker).
LEASE_POLL = 1.0
# Seconds to wait before trying again when the store cannot be written.
STORAGE_BACKOFF = 2.0


def _meant_for(message: dict[str, Any], job_id: str | None) -> bool:
    """True for a worker message that still applies to the run of ``job_id`` (None: no run)."""
    kind = message["t"]
    return kind in ("_shutdown", "_lease_lost") or (kind == "_cancel" and message["job"] == job_id)


def _run_over(message: dict[str, Any]) -> bool:
    """True for the child's last message of a run after which it waits for the next one."""
    kind, code = message["t"], message.get("code")
    return bool(kind == "end" or (kind == "fail" and code != ErrorCode.memory_limit.value))


class Child:
    """One extraction child process and the inbox its messages arrive in."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, memory_mb: int) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pagestream.child", str(memory_mb),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        # Whatever the pipe holds is read at once and every whole message in it parsed: the child
        # writes pages several at a time, and one wake-up of the loop takes them all.
        stdout = self.process.stdout
        assert stdout is not None
        buffer = bytearray()
        try:
            while chunk := await stdout.read(1 << 20):
                buffer += chunk
                start = 0
                while len(buffer) - start >= _HEADER.size:
                    end = start + _HEADER.size + _HEADER.unpack_from(buffer, start)[0]
                    if end > len(buffer):
                        break
                    self.inbox.put_nowait(orjson.loads(buffer[start + _HEADER.size:end]))
                    start = end
                del buffer[:start]
        except ConnectionError:
            pass
        finally:
            self.inbox.put_nowait(_EOF)

    def send(self, message: dict[str, Any]) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        body = orjson.dumps(message)
        with contextlib.suppress(ConnectionError, RuntimeError):
            stdin.write(_HEADER.pack(len(body)) + body)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        try:
            return await asyncio.wait_for(self.inbox.get(), max(timeout, 0.0))
        except TimeoutError:
            return None

    def drain(self) -> list[dict[str, Any]]:
        """Every message already waiting, without waiting for more."""
        messages = []
        while not self.inbox.empty():
            messages.append(self.inbox.get_nowait())
        return messages

    def clear(self, job_id: str) -> None:
        """Drop what the child sent for earlier runs, keeping the worker's messages that apply to
        the run of ``job_id`` about to start (a cancel for it may already be waiting)."""
        for message in self.drain():
            if _meant_for(message, job_id):
                self.inbox.put_nowait(message)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and not self._reader.done()

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is None:
            return "the child closed its output"
        if code < 0:
            return f"the child was killed by signal {-code}"
        return f"the child exited with status {code}"

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def close(self) -> None:
        """Ask the child to leave (end of its stdin); kill it if it does not."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 2.0)
        except TimeoutError:
            pass
        await self.kill()


class _LeaseLost(Exception):
    """Another process may be the worker now: drop the job without writing anything more."""


class _RunEnded(Exception):
    """The child died during a run: the run may be retried."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class Worker:
    """The single consumer. ``start()`` it once; ``stop()`` lets the current page finish and persists."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics | None = None) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.current: str | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._child: Child | None = None
        self._task: asyncio.Task[None] | None = None
        self._lease = Lease(store.db)
        self._leased = False
        self._claimed: Job | None = None  # the next job, claimed as the last one finished
        # (job id, run command) the child was given as the last job ended, before this job was claimed.
        self._ahead: tuple[str, dict[str, Any]] | None = None
        self.deliverer = Deliverer(store, settings, self.metrics)
        # The fields of extraction.Limits; the server never imports the parsers themselves.
        self._limits = {
            "text_page_chars": settings.text_page_chars,
            "epub_max_uncompressed_bytes": settings.epub_max_uncompressed_mb * 1024 * 1024,
            "epub_max_entries": settings.epub_max_entries,
            "max_pages": settings.max_pages,
            "max_page_chars": settings.max_page_chars,
        }

    # -- control from the HTTP layer

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pagestream-worker")

    def wake(self) -> None:
        """A job was queued (or ended): look at the queue and the webhooks now, not at the next poll."""
        self._wake.set()
        self.deliverer.wake()

    def request_cancel(self, job_id: str) -> None:
        if self.current == job_id and self._child is not None:
            # Named for its job: one that arrives as the job ends must not stop the next one.
            self._child.inbox.put_nowait({"t": "_cancel", "job": job_id})

    def foreign(self, commit: Commit | None) -> None:
        """Another process committed (shared stores): maybe a job was queued, or ours cancelled."""
        self.wake()
        current = self.current
        if current is not None and (commit is None or current in commit.touched):
            asyncio.get_running_loop().create_task(self._check_cancel(current))

    async def _check_cancel(self, job_id: str) -> None:
        found = await self.store.get(job_id)
        if found is not None and found[0].cancel_requested:
            self.request_cancel(job_id)

    async def stop(self) -> None:
        """Stop taking jobs; the running job stops at its next page boundary and is put back
        at the head of the queue, so the next start resumes it without spending an attempt."""
        self._stopping = True
        self._wake.set()
        if self._child is not None and self.current is not None:
            self._child.inbox.put_nowait(_SHUTDOWN)
        if self._task is not None:
            await self._task
        if self._child is not None:
            await self._child.close()
            self._child = None
        self._ahead = None
        await asyncio.to_thread(self._lease.release)

    # -- the loop

    async def _run(self) -> None:
        """Wait for the lease (another process may be the worker now), then consume the queue while
        it is held; when it is lost, stop at once and wait for it again."""
        announced = False
        while not self._stopping:
            try:
                self._leased = await asyncio.to_thread(self._lease.try_acquire)
            except Exception as exc:
                log.warning("cannot reach the store to take the worker's lease (%s); trying again", exc)
                self._leased = False
            if not self._leased:
                if not announced:
                    log.info("another worker holds the lease; this one waits as a standby")
                    announced = True
                await asyncio.sleep(LEASE_POLL)
                continue
            log.info("this process is the worker now")
            announced = False
            watchdog = asyncio.create_task(self._watch_lease())
            self.deliverer.start()  # webhooks go out beside the queue, never in its way
            try:
                await self._consume()
            finally:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
                await self.deliverer.stop()
            if not self._leased:
                log.error("lost the worker's lease; the running job stays with the store for the next worker")

    async def _watch_lease(self) -> None:
        while True:
            await asyncio.sleep(LEASE_POLL)
            if not await asyncio.to_thread(self._lease.held):
                self._leased = False
                self._wake.set()
                if self._child is not None:
                    self._child.inbox.put_nowait(_LEASE_LOST)
                return

    async def _consume(self) -> None:
        # Start the child before the first job arrives: its start-up is not the first job's wait.
        try:
            await self._child_ready()
        except OSError:
            log.exception("could not start the extraction child")
        while not self._stopping and self._leased:
            self._wake.clear()
            try:
                job, self._claimed = self._claimed or await self.store.claim_next(self.settings.max_attempts), None
            except Exception:
                log.exception("could not claim the next job")
                await asyncio.sleep(1.0)
                continue
            if job is None:
                await self._abandon_ahead(None)
                # Woken by a submission; the poll catches jobs queued by other processes.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            self.current = job.id
            log.info("job %s running, attempt %d", job.id, job.attempts,
                     extra={"job_id": job.id, "state": "running", "attempt": job.attempts})
            try:
                await self._run_job(job)
            except _LeaseLost:
                await self._discard_child("lease lost")
                return
            except (InsufficientStorage, Unavailable) as exc:
                # The store cannot be written (disk full, read-only): nothing of this run after the
                # last commit was kept. Leave the job running; once writes work again, claim_next
                # takes it up from its next unfinished page.
                log.error("job %s: %s; retrying in %g s", job.id, exc.message, STORAGE_BACKOFF)
                await self._discard_child("store unwritable")
                await asyncio.sleep(STORAGE_BACKOFF)
            except Exception:
                log.exception("job %s: the worker failed", job.id)
                with contextlib.suppress(Exception):
                    await self._finish(job.id, JobState.failed, ErrorCode.internal, "the worker failed")
            finally:
                self.current = None
                self.deliverer.wake()
        if self._claimed is not None and self._leased:
            # Claimed as the last job ended, never started: back to the head of the queue.
            with contextlib.suppress(Exception):
                await self.store.requeue(self._claimed.id)
            self._claimed = None

    async def _child_ready(self) -> Child:
        if self._child is None or not self._child.alive:
            if self._child is not None:
                await self._child.kill()
            self._child = await Child.spawn(self.settings.child_memory_mb)
        return self._child

    async def _discard_child(self, cause: str) -> None:
        """Kill the child (it is replaced before the next run); ``cause`` labels the metric and the log."""
        if self._child is not None:
            await self._child.kill()
            log.info("extraction child %d stopped: %s", self._child.process.pid, cause,
                     extra={"child_pid": self._child.process.pid, "cause": cause})
            self.metrics.child_restarts.labels(cause).inc()
            self._child = None
        self._ahead = None

    async def _finish(self, job_id: str, state: JobState, code: ErrorCode | None = None, message: str = "") -> None:
        if self._stopping or not self._leased:
            job = await self.store.finish(job_id, state, code, message)
        else:  # and take the next job in the same commit
            job, self._claimed = await self.store.finish_and_claim(job_id, state, code, message,
                                                                   self.settings.max_attempts)
        log.info("job %s %s", job_id, state.value, extra={
            "job_id": job_id, "state": state.value, "code": code.value if code else None,
            "pages_done": job.pages_done, "attempts": job.attempts,
        })

    async def _run_job(self, job: Job) -> None:
        path = self.settings.spool_dir / job.spool_name
        if job.cancel_requested:
            await self._finish(job.id, JobState.cancelled)
            return
        if self.store.shared:
            # The upload may have reached another machine: the store keeps a copy for the worker.
            self.settings.spool_dir.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                await self.store.fetch_file(job.spool_name, path)
            try:
                await self._run_job_file(job, path)
            finally:
                path.unlink(missing_ok=True)  # only a local copy
            return
        await self._run_job_file(job, path)

    async def _run_job_file(self, job: Job, path: Path) -> None:
        if not path.exists():
            await self._finish(job.id, JobState.failed, ErrorCode.file_missing,
                                    "the uploaded file is no longer in the spool")
            return
        deadline = time.monotonic() + self.settings.job_timeout
        while True:
            try:
                await self._one_run(job, str(path), deadline)
                return
            except _RunEnded as ended:
                await self._discard_child("crashed")
                log.warning("job %s: %s on attempt %d", job.id, ended.description, job.attempts)
                if job.attempts >= self.settings.max_attempts:
                    await self._finish(job.id, JobState.failed, ErrorCode.child_crashed,
                                            f"{ended.description}, {job.attempts} times")
                    return
                job = await self.store.retrying(job.id, ErrorCode.child_crashed, ended.description)

    def _command(self, job: Job, path: str, done: set[int]) -> dict[str, Any]:
        return {
            "op": "run", "path": path, "kind": job.kind.value, "password": job.password,
            "pages": parse_pages(job.pages_spec) if job.pages_spec else None,
            "done": sorted(done), "limits": self._limits,
            "page_interval": self.settings.stream_pace_ms / 1000,  # pages no more often than streams write
        }

    async def _start_next_early(self, child: Child, head: asyncio.Future[Job | None]) -> None:
        """This run has ended: give the child the head of the queue now, so that it parses while
        this job's end and the next job's claim are committed. Only a head start: the claim
        decides, and a run the claim does not confirm is stopped and dropped (_abandon_ahead)."""
        candidate = await head
        if candidate is None:  # the queue was empty as this job started; it may not be now
            candidate = await self._head_of_queue()
        if candidate is None or candidate.pages_done or candidate.cancel_requested:
            return
        if self._stopping or not self._leased:
            return
        command = self._command(candidate, str(self.settings.spool_dir / candidate.spool_name), set())
        child.send(command)
        self._ahead = (candidate.id, command)

    async def _head_of_queue(self) -> Job | None:
        try:
            return await self.store.next_queued()
        except Exception:  # noqa: BLE001  # only a hint for a head start: the claim decides
            return None

    async def _abandon_ahead(self, next_job: str | None) -> None:
        """The child was started early on a job that was not claimed after all (it was cancelled or
        deleted meanwhile): stop that run and drop what it sent (but not a worker message meant
        for ``next_job``, the run about to start)."""
        if self._ahead is None or self._child is None:
            self._ahead = None
            return
        (job_id, _), child = self._ahead, self._child
        self._ahead = None
        log.info("job %s was started early but not claimed (cancelled or deleted meanwhile); that run is dropped",
                 job_id, extra={"job_id": job_id})
        child.send({"op": "stop"})
        deadline = time.monotonic() + self.settings.cancel_grace
        controls = []
        while True:
            message = await child.next(deadline - time.monotonic())
            if message is None:
                await self._discard_child("did not stop in time")
                break
            kind = message["t"]
            if kind in _CONTROLS:
                if _meant_for(message, next_job):
                    controls.append(message)
            elif kind == "_eof" or (kind == "fail" and message["code"] == ErrorCode.memory_limit.value):
                await self._discard_child("crashed")
                break
            elif kind in ("end", "fail", "stopped"):
                break
        if self._child is child:
            for message in controls:
                child.inbox.put_nowait(message)

    async def _one_run(self, job: Job, path: str, deadline: float) -> None:
        done = await self.store.done_pages(job.id) if job.pages_done else set()
        command = self._command(job, path, done)
        if self._child is not None and self._ahead == (job.id, command):
            child, self._ahead = self._child, None  # started early: what it sent is in its inbox
        else:
            await self._abandon_ahead(job.id)
            child = await self._child_ready()
            child.clear(job.id)  # nothing of an earlier job may leak into this one
            child.send(command)
        # The next job to run, looked up now so that the child can start it the moment this one ends.
        # (A shared store's worker fetches each upload from the store first: no head start there.)
        head = None if self.store.shared else asyncio.ensure_future(self._head_of_queue())
        settings = self.settings
        stop_deadline: float | None = None  # set once a stop was sent to the child
        stop_reason: JobState | None = None  # cancelled, or queued again for a shutdown
        opened = False
        while True:
            now = time.monotonic()
            # Which limit a silence would hit, decided before waiting (a timer may fire a hair early).
            limit, timeout = "page", settings.page_timeout
            if deadline - now <= timeout:
                limit, timeout = "job", deadline - now
            if stop_deadline is not None and stop_deadline - now <= timeout:
                limit, timeout = "stop", stop_deadline - now
            first = await child.next(timeout)
            if first is None:
                if limit == "stop":
                    await self._discard_child("did not stop in time")
                    await self._stopped(job, stop_reason)
                elif limit == "job":
                    await self._discard_child("job timeout")
                    self.metrics.child_timeouts.labels("job").inc()
                    await self._finish(job.id, JobState.failed, ErrorCode.job_timeout,
                                            f"the job ran longer than {settings.job_timeout:g} s")
                else:
                    await self._discard_child("page timeout")
                    self.metrics.child_timeouts.labels("page").inc()
                    await self._finish(job.id, JobState.failed, ErrorCode.page_timeout,
                                            f"a page took longer than {settings.page_timeout:g} s")
                return
            # Everything the child has sent so far, handled in order; runs of pages are stored in one write.
            batch = [first, *child.drain()]
            if head is not None and any(_run_over(m) for m in batch):
                await self._start_next_early(child, head)
                head = None
            pages: list[PageRow] = []
            for message in [*batch, None]:
                if message is not None and message["t"] == "page":
                    pages.append(PageRow(message["number"], message["chars"], message["words"], message["ms"],
                                         message["method"], message["error"], message["text"]))
                    continue
                if pages:
                    await self.store.record_pages(job.id, pages)
                    pages = []
                if message is None:
                    break
                kind = message["t"]
                if kind == "open":
                    opened = True
                    await self.store.start_run(job.id, message["pages_total"], message["resume_from"])
                elif kind == "end":
                    await self._finish(job.id, JobState.completed)
                    return
                elif kind == "fail":
                    code = ErrorCode(message["code"])
                    if code is ErrorCode.memory_limit:
                        await self._discard_child("memory limit")
                    await self._finish(job.id, JobState.failed, code, message["message"])
                    return
                elif kind == "stopped":
                    await self._stopped(job, stop_reason)
                    return
                elif kind == "_lease_lost":
                    await self._discard_child("lease lost")
                    raise _LeaseLost()
                elif kind == "_eof":
                    if stop_reason is not None:  # killed while stopping: that is a stop too
                        await self._discard_child("died while stopping")
                        await self._stopped(job, stop_reason)
                        return
                    with contextlib.suppress(TimeoutError):  # let the exit status arrive, to say how it ended
                        await asyncio.wait_for(child.process.wait(), 1.0)
                    raise _RunEnded(child.exit_description() + ("" if opened else " while opening the document"))
                elif kind in _CONTROLS and not _meant_for(message, job.id):
                    continue  # a cancel of a job that has ended
                elif kind in ("_cancel", "_shutdown") and stop_deadline is None:
                    stop_reason = JobState.cancelled if kind == "_cancel" else JobState.queued
                    stop_deadline = time.monotonic() + settings.cancel_grace
                    child.send({"op": "stop"})

    async def _stopped(self, job: Job, reason: JobState | None) -> None:
        if reason is JobState.queued:
            await self.store.requeue(job.id)
        else:
            await self._finish(job.id, JobState.cancelled)
