"""The client's vocabulary: where the server is, and what it returns — ``TypedDict`` s shaped
exactly like ``shared_schemas/``.

They are the server's JSON as it arrives — no copying into objects — so an event can be
written back out as JSON unchanged (``pagestream watch --json`` does) and still validate
against its schema. Each event's ``type`` is a ``Literal``, so a type checker narrows
``Event`` by testing ``event["type"] == "page"``. ``tests/test_client.py`` checks every
``TypedDict`` here against its schema (same keys, same required keys, same enums).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, TypeAlias, TypedDict

#: The server a client talks to when given no URL and ``PAGESTREAM_URL`` is not set.
DEFAULT_URL = "http://127.0.0.1:8000"
#: The environment variable that names the server.
URL_ENV = "PAGESTREAM_URL"
#: The environment variable that holds the API key, for a server that has keys.
API_KEY_ENV = "PAGESTREAM_API_KEY"


class Servers:
    """The servers a client may use (API replicas of one cluster), and which one it uses now.

    ``failed(url)`` moves on to the next one: a client fails over when it cannot reach the one
    it was using, and comes back round to it after the others.
    """

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._index = 0

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def failed(self, url: str) -> None:
        if url == self.current and len(self.urls) > 1:
            self._index = (self._index + 1) % len(self.urls)


def resolve_urls(url: str | Sequence[str] | None) -> list[str]:
    """One URL, several (a list, or comma-separated), else ``$PAGESTREAM_URL`` (which may list several)."""
    if url is None or isinstance(url, str):
        given = (url or os.environ.get(URL_ENV) or DEFAULT_URL).split(",")
    else:
        given = list(url)
    urls = [resolve_url(u) for u in given if u.strip()]
    if not urls:
        raise ValueError("no server URL given")
    return urls


def resolve_url(url: str | None) -> str:
    """``url``, else ``$PAGESTREAM_URL``, else :data:`DEFAULT_URL`; ``host:port`` gets ``http://``."""
    chosen = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip()
    if "://" not in chosen:
        chosen = "http://" + chosen
    return chosen.rstrip("/")


#: ``shared_schemas/job.json`` ``state``.
JobStateName: TypeAlias = Literal["queued", "running", "completed", "failed", "cancelled"]
#: ``shared_schemas/job.json`` ``kind``.
DocumentKindName: TypeAlias = Literal["pdf", "epub", "text", "markdown", "html"]
#: ``shared_schemas/page.json`` ``method``.
PageMethod: TypeAlias = Literal["pdfium", "epub", "text", "html"]
#: The formats of ``GET /api/v1/jobs/{id}/result``.
ResultFormat: TypeAlias = Literal["json", "text", "ndjson"]

#: States after which a job changes no more (unless it is retried).
FINISHED_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: Event types that end a run, and so a job's event stream.
TERMINAL_EVENTS: frozenset[str] = frozenset({"completed", "failed", "cancelled"})


class CallbackAttempt(TypedDict):
    """``shared_schemas/job.json`` ``callback.attempts[]``: one webhook delivery attempt."""

    attempt: int
    at: str
    status: int | None
    error: str | None
    ms: float


class Callback(TypedDict):
    """``shared_schemas/job.json`` ``callback``: the job's webhook and every attempt to deliver it."""

    url: str
    state: Literal["waiting", "pending", "delivered", "failed"]
    attempts: list[CallbackAttempt]


class ErrorDetail(TypedDict):
    """``error.json#/$defs/detail``: a stable ``code`` (branch on it) and a human ``message``."""

    code: str
    message: str


class JobOptions(TypedDict):
    """The submit options a job runs with; the password itself is never shown."""

    pages: str | None
    has_password: bool


class JobLinks(TypedDict):
    """Paths of the job, its event stream and its result on the server."""

    self: str
    events: str
    result: str


class Job(TypedDict):
    """``shared_schemas/job.json``: one document and the state of its extraction."""

    id: str
    seq: int
    state: JobStateName
    filename: str
    kind: DocumentKindName
    media_type: str
    size: int
    sha256: str
    options: JobOptions
    position: int | None
    pages_total: int | None
    pages_done: int
    percent: float | None
    pages_per_second: float | None
    eta_seconds: float | None
    attempts: int
    cancel_requested: bool
    created_at: str
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    error: ErrorDetail | None
    last_event_id: int
    callback: Callback | None
    links: JobLinks


class PageFigures(TypedDict):
    """The figures of one page (``shared_schemas/page.json`` without its text)."""

    number: int
    chars: int
    words: int
    ms: float
    method: PageMethod
    error: str | None


# NotRequired[...] is not seen at run time under ``from __future__ import annotations`` (3.11):
# an optional key is declared in a ``total=False`` subclass instead.
class Page(PageFigures, total=False):
    """``shared_schemas/page.json``: one page's figures; ``text`` only where asked for."""

    text: str


class ResultPage(PageFigures):
    """A page of a result: its figures and, always, its ``text``."""

    text: str


class Result(TypedDict):
    """``shared_schemas/result.json``: the pages of a job, whole or (``partial``) as far as it got."""

    job_id: str
    state: JobStateName
    partial: bool
    pages_total: int | None
    pages_done: int
    pages: list[ResultPage]


class Health(TypedDict):
    """``shared_schemas/health.json``."""

    status: Literal["ok"]
    version: str
    queued: int
    running: str | None
    streams: int


# -- the per-job stream (shared_schemas/events/*.json)


class SnapshotEvent(TypedDict):
    """The job as it is now; the first event of every connection, without an id."""

    type: Literal["snapshot"]
    job_id: str
    at: str
    job: Job


class QueuedEvent(TypedDict):
    """The job entered the queue (also after a retry or a graceful restart)."""

    type: Literal["queued"]
    job_id: str
    at: str
    position: int


class PositionEvent(TypedDict):
    """A queued job moved up; not part of the log, so it has no id."""

    type: Literal["position"]
    job_id: str
    at: str
    position: int


class StartedEvent(TypedDict):
    """A run began (again after an interruption, from ``resume_from``)."""

    type: Literal["started"]
    job_id: str
    at: str
    attempt: int
    pages_total: int
    resume_from: int
    pages_done: int


class PageEvent(TypedDict):
    """A page is done; ``page["text"]`` is there only for ``events(..., text=True)``."""

    type: Literal["page"]
    job_id: str
    at: str
    page: Page
    pages_done: int
    pages_total: int


class RetryingEvent(TypedDict):
    """A run was cut short (child crash, server restart) and the job resumes."""

    type: Literal["retrying"]
    job_id: str
    at: str
    attempt: int
    reason: ErrorDetail
    pages_done: int


class CompletedEvent(TypedDict):
    """Terminal: every selected page is done."""

    type: Literal["completed"]
    job_id: str
    at: str
    pages_done: int
    pages_total: int
    duration_seconds: float


class FailedEvent(TypedDict):
    """Terminal: the job stopped for good with ``error``."""

    type: Literal["failed"]
    job_id: str
    at: str
    error: ErrorDetail
    pages_done: int


class CancelledEvent(TypedDict):
    """Terminal: the job was cancelled; the pages done are kept."""

    type: Literal["cancelled"]
    job_id: str
    at: str
    pages_done: int


#: Any event of a job's stream; narrow it on ``event["type"]``.
Event: TypeAlias = (
    SnapshotEvent | QueuedEvent | PositionEvent | StartedEvent | PageEvent | RetryingEvent
    | CompletedEvent | FailedEvent | CancelledEvent
)


# -- the global stream (shared_schemas/events/global-*.json)


class SyncFrame(TypedDict):
    """Every job the caller may see; first on every connection (so again after a reconnect)."""

    type: Literal["sync"]
    at: str
    jobs: list[Job]


class _JobsFrameBase(TypedDict):
    type: Literal["jobs"]
    at: str
    jobs: list[Job]
    removed: list[str]


class JobsFrame(_JobsFrameBase, total=False):
    """The jobs that changed since the last frame, the ids removed, and (when the queue moved)
    the queue position of every queued job."""

    positions: dict[str, int]


#: Any frame of the global stream.
GlobalFrame: TypeAlias = SyncFrame | JobsFrame
