"""The vocabulary of a job: its states, its kinds of document, the error codes, the event types.

Every enum here is ``str``-valued so members go straight into JSON, and each one matches an
enum in ``shared_schemas/`` (a test keeps them in step).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class JobState(StrEnum):
    #: Waiting in the FIFO queue.
    queued = "queued"
    #: Being extracted by the worker (including while a retry after a crash is under way).
    running = "running"
    #: Every selected page was extracted (some pages may carry a page-level error).
    completed = "completed"
    #: Stopped for good with an error code.
    failed = "failed"
    #: Cancelled by a user; pages done before the cancel are kept.
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.completed, JobState.failed, JobState.cancelled})


class DocumentKind(StrEnum):
    pdf = "pdf"
    epub = "epub"
    text = "text"
    markdown = "markdown"
    html = "html"


MEDIA_TYPES = {
    DocumentKind.pdf: "application/pdf",
    DocumentKind.epub: "application/epub+zip",
    DocumentKind.text: "text/plain",
    DocumentKind.markdown: "text/markdown",
    DocumentKind.html: "text/html",
}


class ErrorCode(StrEnum):
    """Every error code, of an HTTP error and of a failed job alike (``shared_schemas/error.json``)."""

    # -- HTTP errors
    #: The request is malformed (bad query parameter, bad multipart body, bad header).
    bad_request = "bad_request"
    #: The submit options do not match shared_schemas/submit-options.json.
    invalid_options = "invalid_options"
    #: The upload has no bytes.
    empty_upload = "empty_upload"
    #: The bytes are none of the supported document types (415).
    unsupported_type = "unsupported_type"
    #: The upload is over max_upload_mb (413).
    too_large = "too_large"
    #: The queue holds max_queued_jobs already (429, with Retry-After).
    queue_full = "queue_full"
    #: No valid API key or session (401).
    unauthorized = "unauthorized"
    #: A cookie-signed state change that did not come from this server's pages (403).
    forbidden = "forbidden"
    #: No such job, route or schema (404); also another owner's job.
    not_found = "not_found"
    #: The method is not allowed on this route (405).
    method_not_allowed = "method_not_allowed"
    #: The job is not in a state that allows this (409).
    conflict = "conflict"
    #: The job has not finished, and the result was asked for without ?partial=1 (409).
    not_finished = "not_finished"
    #: The same Idempotency-Key was used with a different upload (409).
    idempotency_conflict = "idempotency_conflict"
    #: Too many open event streams: the process's limit (503) or the caller's (429).
    too_many_streams = "too_many_streams"
    #: The server is stopping or its store cannot be written (503).
    unavailable = "unavailable"
    #: The disk is full (507).
    insufficient_storage = "insufficient_storage"
    #: A bug: something failed that should not have (500).
    internal = "internal"

    # -- Why a job failed
    #: The PDF is encrypted and no password was given.
    password_required = "password_required"
    #: The PDF is encrypted and the password given does not open it.
    wrong_password = "wrong_password"
    #: The file cannot be opened as a document of its kind.
    invalid_document = "invalid_document"
    #: The document (or the selected page range) has no pages.
    no_pages = "no_pages"
    #: The document has more pages than max_pages.
    too_many_pages = "too_many_pages"
    #: An EPUB is over the uncompressed size or entry limits (a zip bomb).
    archive_too_large = "archive_too_large"
    #: One page took longer than page_timeout.
    page_timeout = "page_timeout"
    #: The job ran longer than job_timeout.
    job_timeout = "job_timeout"
    #: The extraction child went over child_memory_mb.
    memory_limit = "memory_limit"
    #: The extraction child died max_attempts times on this job.
    child_crashed = "child_crashed"
    #: The job was interrupted (server restart, crash) max_attempts times.
    too_many_attempts = "too_many_attempts"
    #: The uploaded file is no longer in the spool.
    file_missing = "file_missing"
    #: A run was cut short by a server restart (the reason of a ``retrying`` event).
    interrupted = "interrupted"


class EventType(StrEnum):
    """Events of the per-job stream (``shared_schemas/events/*.json``)."""

    #: The job as it is now; sent first on every connection; carries no id.
    snapshot = "snapshot"
    #: The job was accepted into the queue.
    queued = "queued"
    #: The job's place in the queue changed (it moves up as jobs ahead leave).
    position = "position"
    #: The worker started (or resumed) the job.
    started = "started"
    #: One page is done; its figures, and its text with ?text=1.
    page = "page"
    #: The run was interrupted (child crash, server restart) and will resume at a page.
    retrying = "retrying"
    #: Terminal: every selected page is done.
    completed = "completed"
    #: Terminal: the job stopped with an error.
    failed = "failed"
    #: Terminal: the job was cancelled.
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (EventType.completed, EventType.failed, EventType.cancelled)


class CallbackState(StrEnum):
    """Where a job's webhook stands (``job.json`` → ``callback.state``)."""

    #: The job has not finished yet.
    waiting = "waiting"
    #: Due, or being retried after a failed attempt.
    pending = "pending"
    #: The receiver answered 2xx.
    delivered = "delivered"
    #: Every attempt failed during webhook_retry_for seconds; no more are made.
    failed = "failed"


class GlobalEventType(StrEnum):
    """Events of the global stream (``shared_schemas/events/global-*.json``)."""

    #: Every job the caller may see, as it is now; sent first on every connection.
    sync = "sync"
    #: The latest state of the jobs that changed since the last frame, and the ids removed.
    jobs = "jobs"


PAGES_PATTERN = r"^\s*[1-9][0-9]*(\s*-\s*[1-9][0-9]*)?(\s*,\s*[1-9][0-9]*(\s*-\s*[1-9][0-9]*)?)*\s*$"
_PAGES_RE = re.compile(PAGES_PATTERN)


def parse_pages(spec: str) -> list[tuple[int, int]]:
    """``"1-10,15"`` → ``[(1, 10), (15, 15)]``. Raises ValueError on a malformed or reversed range."""
    if not _PAGES_RE.match(spec):
        raise ValueError(f"pages must look like 1-10,15, not {spec!r}")
    ranges = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        start, end = int(lo), int(hi or lo)
        if end < start:
            raise ValueError(f"page range {part.strip()!r} runs backwards")
        if end >= 2**31:
            raise ValueError(f"page {end} is past any document's last page")
        ranges.append((start, end))
    return ranges


def select_pages(ranges: list[tuple[int, int]] | None, page_count: int) -> list[int]:
    """The 1-based page numbers a job extracts, in order, without repeats."""
    if not ranges:
        return list(range(1, page_count + 1))
    wanted: set[int] = set()
    for start, end in ranges:
        wanted.update(range(start, min(end, page_count) + 1))
    return sorted(wanted)


def new_job_id() -> str:
    """16 random hex digits: unguessable, so a job id is no hint to another owner's jobs."""
    return secrets.token_hex(8)


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Job:
    """One job as the store keeps it. :meth:`as_dict` renders it as ``shared_schemas/job.json``."""

    id: str
    seq: int
    state: JobState
    filename: str
    kind: DocumentKind
    size: int
    sha256: str
    spool_name: str
    pages_spec: str | None
    password: str | None
    owner: str
    idempotency_key: str | None
    created_at: float
    started_at: float | None = None
    run_started_at: float | None = None
    run_pages_start: int = 0
    finished_at: float | None = None
    pages_total: int | None = None
    pages_done: int = 0
    attempts: int = 0
    cancel_requested: bool = False
    error_code: str | None = None
    error_message: str | None = None
    last_event_id: int = 0
    callback_url: str | None = None
    callback_state: str | None = None
    callback_due_at: float | None = None
    callback_since: float | None = None
    callback_attempts: str | None = None

    @property
    def callback(self) -> dict[str, Any] | None:
        if not self.callback_url:
            return None
        return {
            "url": self.callback_url,
            "state": self.callback_state or CallbackState.waiting.value,
            "attempts": orjson.loads(self.callback_attempts) if self.callback_attempts else [],
        }

    @property
    def error(self) -> dict[str, str] | None:
        if self.error_code is None:
            return None
        return {"code": self.error_code, "message": self.error_message or ""}

    def pages_per_second(self, now: float) -> float | None:
        if self.state is not JobState.running or self.run_started_at is None:
            return None
        done = self.pages_done - self.run_pages_start
        elapsed = now - self.run_started_at
        if done <= 0 or elapsed <= 0:
            return None
        return round(done / elapsed, 2)

    def as_dict(self, position: int | None = None, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        rate = self.pages_per_second(now)
        total = self.pages_total
        percent = None if not total else round(100.0 * self.pages_done / total, 2)
        eta = None if rate is None or total is None else round(max(total - self.pages_done, 0) / rate, 1)
        duration = None
        if self.started_at is not None and self.finished_at is not None:
            duration = round(self.finished_at - self.started_at, 3)
        base = f"/api/v1/jobs/{self.id}"
        return {
            "id": self.id,
            "seq": self.seq,
            "state": self.state.value,
            "filename": self.filename,
            "kind": self.kind.value,
            "media_type": MEDIA_TYPES[self.kind],
            "size": self.size,
            "sha256": self.sha256,
            "options": {"pages": self.pages_spec, "has_password": self.password is not None},
            "position": position if self.state is JobState.queued else None,
            "pages_total": total,
            "pages_done": self.pages_done,
            "percent": percent,
            "pages_per_second": rate,
            "eta_seconds": eta,
            "attempts": self.attempts,
            "cancel_requested": self.cancel_requested,
            "created_at": rfc3339(self.created_at),
            "started_at": rfc3339(self.started_at),
            "finished_at": rfc3339(self.finished_at),
            "duration_seconds": duration,
            "error": self.error,
            "last_event_id": self.last_event_id,
            "callback": self.callback,
            "links": {"self": base, "events": f"{base}/events", "result": f"{base}/result"},
        }
