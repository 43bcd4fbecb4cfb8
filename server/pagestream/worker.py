"""The worker: the single consumer of the FIFO queue.

It claims the oldest job, hands it to the extraction child (``pagestream.child``) and turns
what the child sends into store writes — pages in batches, so a fast document costs one
commit per batch and not one per page, and a short one a single commit with its end and the
next claim. The child is given the next jobs of the queue ahead of their claims, so it never
waits for the server between jobs; the claims decide (see _send_ahead), and short jobs it
finished ahead share the commit of the job before them (see _runs_done_ahead). It enforces the
per-page stall timeout and the total timeout, cancels at a page boundary (killing the child if
it does not get there within the grace period), and takes a job up again from its next
unfinished page when the child dies.

Every store write appends the matching event, and the store hands committed events to the
hub, so the worker never talks to a watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .database import Lease
from .errors import InsufficientStorage, Unavailable
from .jobs import ErrorCode, Job, JobState, parse_pages
from .metrics import Metrics
from .settings import Settings
from .store import Commit, PageRow, Store, Write
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
# Runs given to the child ahead of their claims. The child does a one-page PDF in about 1 ms, and
# the worker's claim, commit and end of it take longer, so along a stretch of short documents the
# child draws ahead; with 4 runs it waited for the worker there (0.5 s of a 5 s B1 round). It can
# only be far ahead on documents it finishes faster than the worker commits them: short ones, so
# the messages waiting in the worker's inbox stay small. Topped up once half of them are claimed.
RUNS_AHEAD = 64
# Seconds to wait before trying again when the store cannot be written.
STORAGE_BACKOFF = 2.0


def _log_running(job: Job) -> None:
    log.info("job %s running, attempt %d", job.id, job.attempts,
             extra={"job_id": job.id, "state": "running", "attempt": job.attempts})


def _page_row(message: dict[str, Any]) -> PageRow:
    return PageRow(message["number"], message["chars"], message["words"], message["ms"], message["method"],
                   message["error"], message["text"])


def _meant_for(message: dict[str, Any], job_id: str | None) -> bool:
    """True for a worker message that still applies to the run of ``job_id`` (None: no run)."""
    kind = message["t"]
    return kind in ("_shutdown", "_lease_lost") or (kind == "_cancel" and message["job"] == job_id)


def _run_over(message: dict[str, Any]) -> bool:
    """True for the child's last message of a run after which it waits for the next one."""
    kind, code = message["t"], message.get("code")
    return bool(kind == "end" or (kind == "fail" and code != ErrorCode.memory_limit.value))


class Child:
    """One extraction child process and the inbox its messages arrive in.

    The child writes each message the moment it is ready; the worker reads its pipe at most once
    per ``pace`` seconds while messages come faster than that (and at once after a quiet spell),
    so that a fast document wakes the server and costs a commit once for several pages, not once
    each — streams write no more often either. On a 1,000-page PDF that halved the server's CPU
    per page; reading less often costs the child nothing (its pipe holds a megabyte)."""

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _ChildProtocol) -> None:
        self.transport = transport
        self.protocol = protocol
        self.pid: int = transport.get_pid()
        self.inbox = protocol.inbox

    @classmethod
    async def spawn(cls, memory_mb: int, nice: int, pace: float) -> Child:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.subprocess_exec(
            lambda: _ChildProtocol(loop, pace), sys.executable, "-m", "pagestream.child", str(memory_mb), str(nice),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
        )
        return cls(transport, protocol)

    def send(self, message: dict[str, Any]) -> None:
        stdin = typing.cast(asyncio.WriteTransport | None, self.transport.get_pipe_transport(0))
        if stdin is not None and not stdin.is_closing():
            body = orjson.dumps(message)
            with contextlib.suppress(ConnectionError, RuntimeError):
                stdin.write(_HEADER.pack(len(body)) + body)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None if none came within ``timeout`` seconds."""
        if not self.inbox.empty():
            return self.inbox.get_nowait()
        try:  # not wait_for, which makes a task of the get each time
            async with asyncio.timeout(max(timeout, 0.0)):
                return await self.inbox.get()
        except TimeoutError:
            return None

    def drain(self) -> list[dict[str, Any]]:
        """Every message already waiting, without waiting for more."""
        messages = []
        while not self.inbox.empty():
            messages.append(self.inbox.get_nowait())
        return messages

    def put_back(self, messages: list[dict[str, Any]]) -> None:
        """Return ``messages`` (taken out too early) to the front of the inbox, in their order."""
        later = self.drain()
        for message in [*messages, *later]:
            self.inbox.put_nowait(message)

    def clear(self, job_id: str) -> None:
        """Drop what the child sent for earlier runs, keeping the worker's messages that apply to
        the run of ``job_id`` about to start (a cancel for it may already be waiting)."""
        for message in self.drain():
            if _meant_for(message, job_id):
                self.inbox.put_nowait(message)

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    @property
    def alive(self) -> bool:
        return self.returncode is None and not self.protocol.output_closed

    def exit_description(self) -> str:
        code = self.returncode
        if code is None:
            return "the child closed its output"
        if code < 0:
            return f"the child was killed by signal {-code}"
        return f"the child exited with status {code}"

    async def wait(self) -> None:
        """Until the process has exited (its status is then ``returncode``)."""
        await asyncio.shield(self.protocol.exited)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.transport.kill()
        await self.wait()
        self.transport.close()

    async def close(self) -> None:
        """Ask the child to leave (end of its stdin); kill it if it does not."""
        stdin = self.transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wait(), 2.0)
        await self.kill()


class _ChildProtocol(asyncio.SubprocessProtocol):
    """Turns the child's output into inbox messages, pausing the pipe for ``pace`` after a read that
    came soon after the one before (messages are dense)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pace: float) -> None:
        self.loop, self.pace = loop, pace
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.output_closed = False
        self._buffer = bytearray()
        self._transport: asyncio.SubprocessTransport | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._last_read = -float("inf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass, only alike

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            end = start + _HEADER.size + _HEADER.unpack_from(buffer, start)[0]
            if end > len(buffer):
                break
            self.inbox.put_nowait(orjson.loads(buffer[start + _HEADER.size:end]))
            start = end
        del buffer[:start]
        # Two paces: a read the pause itself delayed comes one pace after the last and must pause
        # again. Messages further apart than that gain nothing from a pause, and a pause and its
        # timer are a good part of what a page of a slow document costs the event loop.
        now = self.loop.time()
        dense, self._last_read = now - self._last_read < 2 * self.pace, now
        if dense and self._resume is None and self._transport is not None:
            stdout = typing.cast(asyncio.ReadTransport | None, self._transport.get_pipe_transport(1))
            if stdout is not None and not stdout.is_closing():
                stdout.pause_reading()  # what comes meanwhile is read in one go
                self._resume = self.loop.call_later(self.pace, self._resume_reading, stdout)

    def _resume_reading(self, stdout: asyncio.ReadTransport) -> None:
        self._resume = None
        if not stdout.is_closing():
            stdout.resume_reading()

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            if self._resume is not None:
                self._resume.cancel()
            self.output_closed = True
            self.inbox.put_nowait(_EOF)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _report_end(task: asyncio.Task[None]) -> None:
    # The worker only ends when the server stops; anything else would leave the queue unserved
    # without a word, so it is logged at once (not when the task is collected).
    if not task.cancelled() and task.exception() is not None:
        log.critical("the worker stopped on an unexpected error; no more jobs will run",
                     exc_info=task.exception())


def _link_spool_file(path: Path, own: Path) -> bool:
    """Give the spool file ``path`` the second name ``own`` (replacing a copy an earlier run left);
    False if it is not here, or the file system has no links."""
    path.parent.mkdir(parents=True, exist_ok=True)
    own.unlink(missing_ok=True)
    try:
        os.link(path, own)
    except OSError:
        return False
    return True


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
        # (job id, run command) of the runs given to the child before their jobs were claimed, in order.
        self._ahead: list[tuple[str, dict[str, Any]]] = []
        # Jobs this worker has ended, each in a commit that claims the next one: a look at the queue that
        # one crossed is out of date (see _send_ahead; claim_next never runs beside one).
        self._claims = 0
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
        self._task.add_done_callback(_report_end)

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
        self._ahead = []
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
                await self._drop_ahead(None)
                # Woken by a submission; the poll catches jobs queued by other processes.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            self.current = job.id
            _log_running(job)
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
            settings = self.settings
            self._child = await Child.spawn(settings.child_memory_mb, settings.child_nice,
                                            settings.stream_pace_ms / 1000)
        return self._child

    async def _discard_child(self, cause: str) -> None:
        """Kill the child (it is replaced before the next run); ``cause`` labels the metric and the log."""
        if self._child is not None:
            await self._child.kill()
            log.info("extraction child %d stopped: %s", self._child.pid, cause,
                     extra={"child_pid": self._child.pid, "cause": cause})
            self.metrics.child_restarts.labels(cause).inc()
            self._child = None
        self._ahead = []

    async def _finish(self, job_id: str, state: JobState, code: ErrorCode | None = None, message: str = "",
                      progress: Sequence[Write] = (), then: Sequence[tuple[str, Sequence[Write]]] = ()) -> int:
        """End the job, after the ``progress`` of its run not committed yet, in one commit; and in
        it, the runs given ahead that ``then`` holds (see Store.finish_and_claim) that the claims
        pick. Returns how many of those were."""
        if self._stopping or not self._leased:
            ended = [await self.store.finish(job_id, state, code, message, progress)]
        else:  # and take the next job in the same commit
            ended, self._claimed = await self.store.finish_and_claim(job_id, state, code, message,
                                                                     self.settings.max_attempts, progress, then)
        self._claims += 1
        for index, job in enumerate(ended):
            if index:  # begun and ended in this commit: its running line too
                _log_running(job)
            log.info("job %s %s", job.id, job.state.value, extra={
                "job_id": job.id, "state": job.state.value, "code": job.error_code,
                "pages_done": job.pages_done, "attempts": job.attempts,
            })
        return len(ended) - 1

    async def _run_job(self, job: Job) -> None:
        path = self.settings.spool_dir / job.spool_name
        if job.cancel_requested:
            await self._finish(job.id, JobState.cancelled)
            return
        if self.store.shared:
            # The upload may have reached another machine: the store keeps a copy for the worker. The
            # worker's copy has a name of its own: the spool file of an upload to this machine is
            # removed by its request once committed, which can be after this job was claimed (a job
            # failed file_missing that way). A link to it, while it is there, spares the fetch.
            own = path.with_name(f"{job.spool_name}.run")
            if not await asyncio.to_thread(_link_spool_file, path, own):  # the disk, off the event loop
                await self.store.fetch_file(job.spool_name, own)
            try:
                await self._run_job_file(job, own)
            finally:
                own.unlink(missing_ok=True)  # only a local copy (at once, even when cancelled)
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
            "op": "run", "job": job.id, "path": path, "kind": job.kind.value, "password": job.password,
            "pages": parse_pages(job.pages_spec) if job.pages_spec else None,
            "done": sorted(done), "limits": self._limits,
        }

    async def _send_ahead(self, child: Child) -> None:
        """Give the child the next jobs of the queue now (up to RUNS_AHEAD of them), so that it goes
        from one to the next without waiting for the server: for a short document the child is
        faster than a claim's commit. Only a head start: the claims decide, and a run a claim
        does not confirm is stopped and dropped (_drop_ahead)."""
        claims = self._claims
        try:
            head = await self.store.queue_head(RUNS_AHEAD)
        except Exception:  # noqa: BLE001  # only a hint for a head start: the claims decide
            return
        if self._stopping or not self._leased or self._child is not child:
            return
        if self._claims != claims:
            # A commit ended the job under way while the queue was read, and claimed the next one. If it
            # also ended every run given ahead, nothing below can tell: the head read after it lacks the
            # job it claimed, and the one read before it holds the jobs it ended. Either way the runs
            # given would not follow the claims, and the next claim would drop them all (a stretch of
            # one-page jobs had 67 of 400 done twice). The next run looks again.
            return
        given = [job_id for job_id, _ in self._ahead]
        if [job.id for job in head[:len(given)]] != given:
            return  # the queue changed under the runs given: the next claim sorts it out first
        for job in head[len(given):]:
            if job.pages_done or job.cancel_requested:
                break  # its run needs what the claim finds; the ones behind it must wait for it
            command = self._command(job, str(self.settings.spool_dir / job.spool_name), set())
            child.send(command)
            self._ahead.append((job.id, command))

    async def _drop_ahead(self, next_job: str | None, command: dict[str, Any] | None = None) -> bool:
        """Stop and drop the runs given ahead that were not claimed after all (cancelled or deleted
        meanwhile), up to the one of ``next_job`` if it was given with ``command``; True if it
        was (its messages are next in the inbox). Worker messages meant for ``next_job`` stay."""
        while self._ahead:
            if self._ahead[0] == (next_job, command):
                self._ahead.pop(0)
                return True
            job_id, _ = self._ahead.pop(0)
            await self._drop_run(job_id, next_job)
        return False

    async def _drop_run(self, job_id: str, next_job: str | None) -> None:
        child = self._child
        if child is None:
            return
        log.info("job %s was started early but not claimed (cancelled or deleted meanwhile); that run is dropped",
                 job_id, extra={"job_id": job_id})
        child.send({"op": "stop", "job": job_id})
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
            child.put_back(controls)

    async def _one_run(self, job: Job, path: str, deadline: float) -> None:
        done = await self.store.done_pages(job.id) if job.pages_done else set()
        command = self._command(job, path, done)
        if self._child is not None and await self._drop_ahead(job.id, command):
            child = self._child  # started early: what it sent is in its inbox
        else:
            child = await self._child_ready()
            child.clear(job.id)  # nothing of an earlier job may leak into this one
            child.send(command)
        # The next jobs go to the child now: it starts each the moment the one before ends, without
        # waiting for that end to be read and committed. (A shared store's worker fetches each upload
        # from the store first: no head start there.)
        # The queue is read beside the run, not before it: this job's messages do not wait for it.
        head_start = not self.store.shared and len(self._ahead) <= RUNS_AHEAD // 2
        sending = asyncio.ensure_future(self._send_ahead(child)) if head_start else None
        try:
            await self._run_messages(job, child, deadline, sending)
        finally:
            if sending is not None:
                await sending

    async def _run_messages(self, job: Job, child: Child, deadline: float,
                            sending: asyncio.Future[None] | None) -> None:
        """Turn what the child sends for the run of ``job`` into store writes until the run ends."""
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
            # Everything the child has sent so far, handled in order. What the run did (opened, pages) is
            # committed in one write, with the job's end when that is in the batch too: a one-page
            # document costs one commit, not three.
            batch = [first, *child.drain()]
            if sending is not None and sending.done() and not self._ahead and any(_run_over(m) for m in batch):
                await self._send_ahead(child)  # the queue was empty as this job began; maybe not now
            pages: list[PageRow] = []
            progress: list[Write] = []
            for index, message in enumerate([*batch, None]):
                if message is not None and message["t"] == "page":
                    pages.append(_page_row(message))
                    continue
                if pages:
                    progress.append(Store.pages_extracted(job.id, pages))
                    pages = []
                if message is None:
                    if progress:
                        await self.store.write_all(progress)
                    break
                kind = message["t"]
                if kind == "open":
                    opened = True
                    progress.append(Store.run_opened(job.id, message["pages_total"], message["resume_from"]))
                    continue
                if kind == "end":
                    # The child may have finished the runs given ahead after it too (short documents):
                    # those its messages hold whole go into the same commit.
                    after = batch[index + 1:]
                    runs, ends = self._runs_done_ahead(after)
                    committed = 0
                    try:
                        committed = await self._finish(job.id, JobState.completed, progress=progress, then=runs)
                        del self._ahead[:committed]
                    finally:  # the next run's messages are next in the inbox, whatever happened
                        child.put_back(after[ends[committed - 1] if committed else 0:])
                    return
                if kind in ("fail", "stopped"):
                    child.put_back(batch[index + 1:])  # the run given ahead has begun: its messages are next
                if kind == "fail":
                    code = ErrorCode(message["code"])
                    if code is ErrorCode.memory_limit:
                        await self._discard_child("memory limit")
                    await self._finish(job.id, JobState.failed, code, message["message"], progress)
                    return
                if progress:  # durable before anything else is done about the run
                    await self.store.write_all(progress)
                    progress = []
                if kind == "stopped":
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
                        await asyncio.wait_for(child.wait(), 1.0)
                    raise _RunEnded(child.exit_description() + ("" if opened else " while opening the document"))
                elif kind in _CONTROLS and not _meant_for(message, job.id):
                    continue  # a cancel of a job that has ended
                elif kind in ("_cancel", "_shutdown") and stop_deadline is None:
                    stop_reason = JobState.cancelled if kind == "_cancel" else JobState.queued
                    stop_deadline = time.monotonic() + settings.cancel_grace
                    child.send({"op": "stop", "job": job.id})

    def _runs_done_ahead(self, messages: list[dict[str, Any]]) -> tuple[list[tuple[str, list[Write]]], list[int]]:
        """The runs given ahead whose messages ``messages`` holds whole, in order from its start (each
        an open, its pages, an end): (job id, its writes) for each, and where each one's messages
        end. Anything else (a failure, a stop, a worker's message, a run not over) ends the list:
        from there on, the usual way."""
        runs: list[tuple[str, list[Write]]] = []
        ends: list[int] = []
        start = 0
        for job_id, _ in self._ahead:
            end = start + 1
            while end < len(messages) and messages[end]["t"] == "page":
                end += 1
            if end >= len(messages) or messages[start]["t"] != "open" or messages[end]["t"] != "end":
                break
            opened = messages[start]
            writes = [Store.run_opened(job_id, opened["pages_total"], opened["resume_from"])]
            if end > start + 1:
                writes.append(Store.pages_extracted(job_id, [_page_row(m) for m in messages[start + 1:end]]))
            runs.append((job_id, writes))
            start = end + 1
            ends.append(start)
        return runs, ends

    async def _stopped(self, job: Job, reason: JobState | None) -> None:
        if reason is JobState.queued:
            await self.store.requeue(job.id)
        else:
            await self._finish(job.id, JobState.cancelled)
