"""The Python client: :class:`Client` (blocking) and :class:`AsyncClient` (``async``), over httpx.

    from pagestream import Client

    with Client("http://127.0.0.1:8000") as client:
        job = client.submit("document.pdf")
        for event in client.events(job["id"]):
            if event["type"] == "page":
                print(event["page"]["number"], event["pages_done"], "/", event["pages_total"])
        text = client.result(job["id"], "text")

It speaks only the HTTP contract of ``shared_schemas/`` and imports nothing of the server.
The two clients share everything but the I/O: :class:`_Requests` builds every request,
:mod:`pagestream._client_streams` makes every decision of a stream (decoding, resuming,
checking ids, backing off), and each client adds a loop of a dozen lines that sends and
sleeps. Return values are the server's JSON typed as the ``TypedDict`` s of
:mod:`pagestream._client_models` (exported here: ``from pagestream.client import Job, Event``);
errors are those of :mod:`pagestream._client_errors` (exported by :mod:`pagestream`).

Plain requests are not retried: a failure raises :class:`ConnectionFailed` at once. Event
streams reconnect by themselves (see :class:`Reconnect`), unless nothing at the URL has
ever answered the client.

Several servers: give a list of URLs (API replicas of one cluster). Every request is built
against the one in use at the moment it is sent; a request that cannot connect goes to the
next server at once (a connection that was never made cannot have delivered anything), and a
stream that loses its server reconnects to the next one, resuming with ``Last-Event-ID``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar, cast, overload
from urllib.parse import quote

import anyio
import httpx

from . import __version__
from ._client_errors import ConnectionFailed, PagestreamError, ProtocolError, WaitTimeout, api_error
from ._client_models import (
    API_KEY_ENV,
    DEFAULT_URL,
    FINISHED_STATES,
    URL_ENV,
    CancelledEvent,
    CompletedEvent,
    ErrorDetail,
    Event,
    FailedEvent,
    GlobalFrame,
    Health,
    Job,
    JobsFrame,
    Page,
    PageEvent,
    PositionEvent,
    QueuedEvent,
    Result,
    ResultFormat,
    ResultPage,
    RetryingEvent,
    Servers,
    SnapshotEvent,
    StartedEvent,
    SyncFrame,
    resolve_urls,
)
from ._client_streams import LOST, GlobalStream, JobStream, Reconnect, Stream, describe

__all__ = [
    "DEFAULT_URL", "URL_ENV", "AsyncClient", "AsyncEventStream", "Client", "EventStream", "Reconnect",
    # the types of what the clients return (shared_schemas/ as TypedDicts), for annotations
    "CancelledEvent", "CompletedEvent", "ErrorDetail", "Event", "FailedEvent", "GlobalFrame", "Health", "Job",
    "JobsFrame", "Page", "PageEvent", "PositionEvent", "QueuedEvent", "Result", "ResultPage", "RetryingEvent",
    "SnapshotEvent", "StartedEvent", "SyncFrame",
]

API = "/api/v1"
#: The reconnect policy of a client given none.
DEFAULT_RECONNECT = Reconnect()

T = TypeVar("T")
Source = str | os.PathLike[str] | bytes


class _Requests:
    """Every request of the API, built (not sent) for either kind of httpx client."""

    def __init__(self, servers: Servers, http: httpx.Client | httpx.AsyncClient) -> None:
        self.servers = servers
        self._http = http

    def _build(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        return self._http.build_request(method, self.servers.current + path, **kwargs)

    def get(self, job_id: str) -> httpx.Request:
        return self._build("GET", f"{API}/jobs/{_segment(job_id)}")

    def list(self, state: str | Iterable[str] | None, order: str, limit: int, cursor: str | None) -> httpx.Request:
        params = {"order": order, "limit": str(limit)}
        if state:
            params["state"] = state if isinstance(state, str) else ",".join(state)
        if cursor is not None:
            params["cursor"] = cursor
        return self._build("GET", f"{API}/jobs", params=params)

    @contextlib.contextmanager
    def submit(self, source: Source, filename: str | None, password: str | None, pages: str | None,
               idempotency_key: str | None) -> Iterator[httpx.Request]:
        """A multipart upload (the password travels in the body, never in a URL a log could keep);
        a path is streamed from its file, which stays open while the request is in use."""
        with contextlib.ExitStack() as files:
            if isinstance(source, bytes | bytearray | memoryview):
                name, body = filename or "upload", bytes(source)
                part: tuple[str, Any] = (name, body)
            else:
                path = Path(source)
                part = (filename or path.name, files.enter_context(path.open("rb")))
            fields = {k: v for k, v in (("pages", pages), ("password", password)) if v is not None}
            headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
            yield self._build("POST", f"{API}/jobs", files={"file": part}, data=fields, headers=headers)

    def result(self, job_id: str, format: str, partial: bool) -> httpx.Request:
        params = {"format": format, **({"partial": "1"} if partial else {})}
        return self._build("GET", f"{API}/jobs/{_segment(job_id)}/result", params=params)

    def action(self, job_id: str, action: Literal["cancel", "retry"]) -> httpx.Request:
        return self._build("POST", f"{API}/jobs/{_segment(job_id)}/{action}")

    def delete(self, job_id: str) -> httpx.Request:
        return self._build("DELETE", f"{API}/jobs/{_segment(job_id)}")

    def health(self) -> httpx.Request:
        return self._build("GET", "/healthz")

    def job_events(self, job_id: str, text: bool, after: int, wait: float | None) -> httpx.Request:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if after:
            headers["Last-Event-ID"] = str(after)
        params = {"text": "1"} if text else None
        return self._build("GET", f"{API}/jobs/{_segment(job_id)}/events", params=params, headers=headers,
                           timeout=self._stream_timeout(wait))

    def global_events(self, wait: float | None) -> httpx.Request:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        return self._build("GET", f"{API}/events", headers=headers, timeout=self._stream_timeout(wait))

    def _stream_timeout(self, wait: float | None) -> httpx.Timeout:
        """The client's timeouts; the read timeout no longer than ``wait`` (a ``wait()`` deadline).
        Between events the server sends a heartbeat (every 15 s by default), so a read timeout
        longer than that only fires on a connection that is really gone."""
        timeout = self._http.timeout
        read = timeout.read if wait is None or (timeout.read is not None and timeout.read < wait) else wait
        return httpx.Timeout(connect=timeout.connect, read=read, write=timeout.write, pool=timeout.pool)


def _segment(job_id: str) -> str:
    return quote(job_id, safe="")


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise api_error(response.status_code, response.content, response.headers)
    return response


def _base(request: httpx.Request) -> str:
    """The base URL (scheme, host, port) a request went to."""
    return str(request.url.copy_with(path="/", query=None, fragment=None)).rstrip("/")


def _request_failed(url: str, error: httpx.HTTPError) -> PagestreamError:
    if isinstance(error, httpx.TransportError):
        return ConnectionFailed(f"cannot reach {url}: {describe(error)}", url=url)
    return ProtocolError(f"the answer of {url} could not be read: {error}")  # e.g. a body that does not decode


def _result_body(response: httpx.Response, format: str) -> Result | str:
    return cast(Result, response.json()) if format == "json" else response.text


class _StreamInfo(Generic[T]):
    """What both kinds of event stream tell about themselves while they run."""

    _stream: Stream[T]

    @property
    def last_event_id(self) -> int | None:
        """Id of the last log event handed out: pass it as ``after=`` to resume elsewhere (None: global stream)."""
        return self._stream.last_event_id

    @property
    def job(self) -> Job | None:
        """The job as of the latest ``snapshot`` — refreshed by each reconnection, whose snapshot is not handed out."""
        return self._stream.job

    @property
    def reconnects(self) -> int:
        """How many times the stream got its connection back."""
        return self._stream.reconnects


class EventStream(_StreamInfo[T], Iterator[T]):
    """An iterator over a stream's events that reconnects by itself; close it (or use ``with``)
    to drop the connection before the end."""

    def __init__(self, http: httpx.Client, stream: Stream[T], servers: Servers) -> None:
        self._stream = stream
        self._items: Generator[T, None, None] = _drive(http, stream, servers)

    def __iter__(self) -> EventStream[T]:
        return self

    def __next__(self) -> T:
        return next(self._items)

    def close(self) -> None:
        self._items.close()

    def __enter__(self) -> EventStream[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _drive(http: httpx.Client, stream: Stream[T], servers: Servers) -> Generator[T, None, None]:
    """The blocking I/O of a stream; every decision is ``stream``'s."""
    while not stream.ended:
        request = stream.request()
        try:
            response = http.send(request, stream=True)
            try:
                if stream.needs_body(response):
                    response.read()
                if stream.opened(response):
                    for chunk in response.iter_bytes():
                        yield from stream.feed(chunk)
                        if stream.ended:
                            break
                    stream.end_of_body()
            finally:
                response.close()
        except LOST as error:
            servers.failed(_base(request))  # come back through the next server
            time.sleep(stream.lost(error))


class AsyncEventStream(_StreamInfo[T], AsyncIterator[T]):
    """:class:`EventStream` for :class:`AsyncClient`: ``async for``, and ``async with`` to close it."""

    def __init__(self, http: httpx.AsyncClient, stream: Stream[T], servers: Servers) -> None:
        self._stream = stream
        self._items: AsyncGenerator[T, None] = _adrive(http, stream, servers)

    def __aiter__(self) -> AsyncEventStream[T]:
        return self

    async def __anext__(self) -> T:
        return await anext(self._items)

    async def aclose(self) -> None:
        await self._items.aclose()

    async def __aenter__(self) -> AsyncEventStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _adrive(http: httpx.AsyncClient, stream: Stream[T], servers: Servers) -> AsyncGenerator[T, None]:
    """The async I/O of a stream (asyncio or trio, through anyio); every decision is ``stream``'s."""
    while not stream.ended:
        request = stream.request()
        try:
            response = await http.send(request, stream=True)
            try:
                if stream.needs_body(response):
                    await response.aread()
                if stream.opened(response):
                    async for chunk in response.aiter_bytes():
                        for item in stream.feed(chunk):
                            yield item
                        if stream.ended:
                            break
                    stream.end_of_body()
            finally:
                await response.aclose()
        except LOST as error:
            servers.failed(_base(request))
            await anyio.sleep(stream.lost(error))


class _ClientBase:
    """What both clients keep: the server's URL, the reconnect policy, and how streams are made."""

    _api: _Requests

    def __init__(self, url: str | Sequence[str] | None, reconnect: Reconnect) -> None:
        #: The servers' base URLs, e.g. ``http://127.0.0.1:8000``, and which one is in use.
        self.servers = Servers(resolve_urls(url))
        for each in self.servers.urls:
            try:
                httpx.URL(each)
            except httpx.InvalidURL as error:
                raise ValueError(f"{each!r} is not a URL: {error}") from None
        #: How event streams reconnect (see :class:`Reconnect`).
        self.reconnect = reconnect
        # Whether the server has answered this client yet: until it has, a stream's first
        # connection that fails raises at once (a wrong URL); after, it is a restart to wait out.
        self._reached = False

    @staticmethod
    def _options(timeout: float | httpx.Timeout, api_key: str | None, headers: dict[str, str] | None) -> dict[str, Any]:
        sent = {"User-Agent": f"pagestream-client/{__version__}"}
        key = api_key or os.environ.get(API_KEY_ENV)
        if key:
            sent["Authorization"] = f"Bearer {key}"
        return {"timeout": timeout, "headers": {**sent, **(headers or {})}}

    def _job_stream(self, job_id: str, after: int | None, text: bool, deadline: float | None = None) -> JobStream:
        def build(last_event_id: int, wait: float | None) -> httpx.Request:
            return self._api.job_events(job_id, text, last_event_id, wait)

        return JobStream(build, self.url, self.reconnect, after=after or 0, reached=self._has_reached,
                         deadline=deadline)

    def _global_stream(self) -> GlobalStream:
        return GlobalStream(self._api.global_events, self.url, self.reconnect, reached=self._has_reached)

    def _has_reached(self) -> bool:
        return self._reached

    @property
    def url(self) -> str:
        """The base URL of the server in use now."""
        return self.servers.current

    def _next_server(self, request: httpx.Request, error: httpx.HTTPError) -> httpx.Request | None:
        """The same request to the next server, if it never reached this one and can be sent again."""
        failed = _base(request)
        self.servers.failed(failed)
        if (not isinstance(error, httpx.ConnectError) or self.servers.current == failed
                or not isinstance(request.stream, httpx.ByteStream)):
            return None
        target = httpx.URL(self.servers.current)
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        request.headers["Host"] = target.netloc.decode()
        return request


class Client(_ClientBase):
    """A blocking client of a pagestream server.

    ``url`` defaults to ``$PAGESTREAM_URL``, else ``http://127.0.0.1:8000``; a list of URLs (or
    a comma-separated string) names several API replicas to fail over between. ``api_key`` (default
    ``$PAGESTREAM_API_KEY``) is sent as ``Authorization: Bearer …`` to a server that has keys. ``timeout`` bounds
    each request (connect, read, write), and each read of an event stream — keep it above the
    server's heartbeat interval (15 s by default). ``transport`` replaces httpx's (tests use
    ``httpx.MockTransport``). ``reconnect`` sets how event streams reconnect.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, url: str | Sequence[str] | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, transport: httpx.BaseTransport | None = None,
                 reconnect: Reconnect = DEFAULT_RECONNECT, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, reconnect)
        self._http = httpx.Client(transport=transport, **self._options(timeout, api_key, headers))
        self._api = _Requests(self.servers, self._http)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def _call(self, request: httpx.Request) -> httpx.Response:
        for _ in self.servers.urls:
            try:
                response = self._http.send(request)
                break
            except httpx.HTTPError as error:
                url, retry = _base(request), self._next_server(request, error)
                if retry is None:
                    raise _request_failed(url, error) from error
                request = retry
        self._reached = True
        return _checked(response)

    def submit(self, source: Source, *, filename: str | None = None, password: str | None = None,
               pages: str | None = None, idempotency_key: str | None = None) -> Job:
        """Upload a document — a path (``str`` or ``Path``, streamed from disk) or ``bytes`` — and
        return its job, queued. ``filename`` is only for display (default: the file's name).
        ``pages`` selects pages (``"1-10,15"``); ``password`` opens an encrypted PDF. With an
        ``idempotency_key``, submitting again (after a lost answer) returns the same job."""
        with self._api.submit(source, filename, password, pages, idempotency_key) as request:
            return cast(Job, self._call(request).json())

    def get(self, job_id: str) -> Job:
        """The job now: state, queue position, pages done, rate, ETA, error."""
        return cast(Job, self._call(self._api.get(job_id)).json())

    def list(self, state: str | Iterable[str] | None = None, *, order: Literal["newest", "oldest"] = "newest",
             page_size: int = 100) -> Iterator[Job]:
        """Every job (in ``state``, e.g. ``"queued"`` or ``["queued", "running"]``), newest first
        or ``order="oldest"``; the listing's pages are fetched as the iteration reaches them."""
        cursor: str | None = None
        while True:
            body = self._call(self._api.list(state, order, page_size, cursor)).json()
            yield from cast(builtins.list[Job], body["jobs"])
            cursor = body["next"]
            if cursor is None:
                return

    @overload
    def result(self, job_id: str, format: Literal["json"] = "json", partial: bool = False) -> Result: ...
    @overload
    def result(self, job_id: str, format: Literal["text", "ndjson"], partial: bool = False) -> str: ...

    def result(self, job_id: str, format: ResultFormat = "json", partial: bool = False) -> Result | str:
        """The extracted pages: a :class:`Result` for ``"json"``; for ``"text"`` the text with a form
        feed between pages, for ``"ndjson"`` one JSON page a line. Raises :class:`Conflict`
        (``not_finished``) while the job runs, unless ``partial=True``."""
        return _result_body(self._call(self._api.result(job_id, format, partial)), format)

    def cancel(self, job_id: str) -> Job:
        """Cancel: a queued job at once, a running one at its next page boundary. Returns the job."""
        return cast(Job, self._call(self._api.action(job_id, "cancel")).json())

    def retry(self, job_id: str) -> Job:
        """Put a failed or cancelled job at the end of the queue again; it resumes at its next page."""
        return cast(Job, self._call(self._api.action(job_id, "retry")).json())

    def delete(self, job_id: str) -> None:
        """Remove a finished job, its pages, events and file (:class:`Conflict` while it is queued or running)."""
        self._call(self._api.delete(job_id))

    def health(self) -> Health:
        """``GET /healthz``: the server's version, and how many jobs are queued and streams open."""
        return cast(Health, self._call(self._api.health()).json())

    def events(self, job_id: str, after: int | None = None, text: bool = False) -> EventStream[Event]:
        """The job's events: a ``snapshot`` (the job now), then every event of its log after ``after``
        (default: from the start) in order, until the job's terminal event (``completed``,
        ``failed`` or ``cancelled``), which ends the iteration. With ``text=True`` each ``page``
        event carries the page's text.

        The connection comes back by itself after it drops or the server restarts: the stream
        resumes after the last event it handed out (``Last-Event-ID``), with backoff as
        :attr:`reconnect` says, so no event is lost or repeated. Only the first connection's
        snapshot is handed out; later ones refresh :attr:`EventStream.job`. ``position``
        events (the queue moved) are not part of the log: those sent while the stream was away
        are lost, and ``stream.job["position"]`` has the latest place. A stream raises
        :class:`StreamGaveUp` after ``reconnect.give_up_after`` seconds without a connection;
        but if nothing has ever answered this client (its first request is this stream, and it
        fails), :class:`ConnectionFailed` comes at once: a wrong URL should not look like a
        server that is restarting.
        If ``after`` is already the last event of a finished job, there is nothing to hand out.
        """
        return EventStream(self._http, self._job_stream(job_id, after, text), self.servers)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is finished (``completed``, ``failed`` or ``cancelled``) and return it;
        :class:`WaitTimeout` after ``timeout`` seconds. Rides out server restarts like :meth:`events`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.get(job_id)
        while job["state"] not in FINISHED_STATES:
            _check_deadline(deadline)
            stream = self._job_stream(job_id, job["last_event_id"], False, deadline)
            with EventStream(self._http, stream, self.servers) as events:
                for _ in events:
                    pass
            job = self.get(job_id)
        return job

    def watch_all(self) -> EventStream[GlobalFrame]:
        """The global stream: a ``sync`` frame (every job), then ``jobs`` frames with the jobs that
        changed. It reconnects like :meth:`events`, and each reconnection starts with a fresh
        ``sync``: replace your state on ``sync``, update it on ``jobs``. It never ends by itself."""
        return EventStream(self._http, self._global_stream(), self.servers)


class AsyncClient(_ClientBase):
    """:class:`Client` for ``async`` code (asyncio or trio): the same methods, awaited; streams
    are ``async for``. Use it with ``async with``, or call :meth:`aclose`."""

    def __init__(self, url: str | Sequence[str] | None = None, *, api_key: str | None = None,
                 timeout: float | httpx.Timeout = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 reconnect: Reconnect = DEFAULT_RECONNECT, headers: dict[str, str] | None = None) -> None:
        super().__init__(url, reconnect)
        self._http = httpx.AsyncClient(transport=transport, **self._options(timeout, api_key, headers))
        self._api = _Requests(self.servers, self._http)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def _call(self, request: httpx.Request) -> httpx.Response:
        for _ in self.servers.urls:
            try:
                response = await self._http.send(request)
                break
            except httpx.HTTPError as error:
                url, retry = _base(request), self._next_server(request, error)
                if retry is None:
                    raise _request_failed(url, error) from error
                request = retry
        self._reached = True
        return _checked(response)

    async def submit(self, source: Source, *, filename: str | None = None, password: str | None = None,
                     pages: str | None = None, idempotency_key: str | None = None) -> Job:
        """See :meth:`Client.submit`."""
        with self._api.submit(source, filename, password, pages, idempotency_key) as request:
            return cast(Job, (await self._call(request)).json())

    async def get(self, job_id: str) -> Job:
        """See :meth:`Client.get`."""
        return cast(Job, (await self._call(self._api.get(job_id))).json())

    async def list(self, state: str | Iterable[str] | None = None, *,
                   order: Literal["newest", "oldest"] = "newest", page_size: int = 100) -> AsyncIterator[Job]:
        """See :meth:`Client.list`; ``async for job in client.list()``."""
        cursor: str | None = None
        while True:
            body = (await self._call(self._api.list(state, order, page_size, cursor))).json()
            for job in cast(builtins.list[Job], body["jobs"]):
                yield job
            cursor = body["next"]
            if cursor is None:
                return

    @overload
    async def result(self, job_id: str, format: Literal["json"] = "json", partial: bool = False) -> Result: ...
    @overload
    async def result(self, job_id: str, format: Literal["text", "ndjson"], partial: bool = False) -> str: ...

    async def result(self, job_id: str, format: ResultFormat = "json", partial: bool = False) -> Result | str:
        """See :meth:`Client.result`."""
        return _result_body(await self._call(self._api.result(job_id, format, partial)), format)

    async def cancel(self, job_id: str) -> Job:
        """See :meth:`Client.cancel`."""
        return cast(Job, (await self._call(self._api.action(job_id, "cancel"))).json())

    async def retry(self, job_id: str) -> Job:
        """See :meth:`Client.retry`."""
        return cast(Job, (await self._call(self._api.action(job_id, "retry"))).json())

    async def delete(self, job_id: str) -> None:
        """See :meth:`Client.delete`."""
        await self._call(self._api.delete(job_id))

    async def health(self) -> Health:
        """See :meth:`Client.health`."""
        return cast(Health, (await self._call(self._api.health())).json())

    def events(self, job_id: str, after: int | None = None, text: bool = False) -> AsyncEventStream[Event]:
        """See :meth:`Client.events`; ``async with client.events(id) as events: async for event in events``."""
        return AsyncEventStream(self._http, self._job_stream(job_id, after, text), self.servers)

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """See :meth:`Client.wait`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get(job_id)
        while job["state"] not in FINISHED_STATES:
            _check_deadline(deadline)
            stream = self._job_stream(job_id, job["last_event_id"], False, deadline)
            async with AsyncEventStream(self._http, stream, self.servers) as events:
                async for _ in events:
                    pass
            job = await self.get(job_id)
        return job

    def watch_all(self) -> AsyncEventStream[GlobalFrame]:
        """See :meth:`Client.watch_all`."""
        return AsyncEventStream(self._http, self._global_stream(), self.servers)


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise WaitTimeout("the job did not finish in time")
