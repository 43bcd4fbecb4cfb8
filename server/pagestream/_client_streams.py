"""The client's event streams without I/O: SSE decoding, and the state of a stream that resumes.

:class:`Client` and :class:`AsyncClient` each drive a stream with a loop of a dozen lines
(send the request, feed the bytes, sleep when the connection is lost); every decision is
made here, once, for both:

- :class:`SSEDecoder` turns bytes into messages by the WHATWG rules. It splits lines at CR,
  LF and CRLF only — not at U+2028, U+0085 or form feed, where ``httpx``'s ``iter_lines``
  also splits — because a page's text inside a ``data:`` line may hold those characters raw.
- :class:`JobStream` is one job's lossless stream: it asks for the events after the last id
  it handed out (``Last-Event-ID``), hands out the first ``snapshot`` only, checks that ids
  run 1, 2, 3, … without a gap or a repeat, and ends after the terminal event.
- :class:`GlobalStream` is the dashboard's stream: every frame, a fresh ``sync`` after each
  reconnect.
- :class:`Reconnect` is the policy: exponential backoff with jitter, bounded, and a total
  time after which the stream gives up with :class:`StreamGaveUp`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import httpx

from ._client_errors import ApiError, ConnectionFailed, ProtocolError, StreamGaveUp, WaitTimeout, api_error
from ._client_models import TERMINAL_EVENTS, Event, GlobalFrame, Job

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched SSE message. ``id`` is this message's own ``id:`` field (None without one),
    not the spec's inherited last-event-id: the caller keeps that."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Bytes in, :class:`ServerSentEvent` s out, as the WHATWG ``text/event-stream`` rules say."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False  # the last chunk ended in CR: a LF starting the next one is part of it
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        #: The latest ``retry:`` hint in milliseconds, if the server sent one.
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> Iterator[ServerSentEvent]:
        """The messages completed by ``chunk`` (lazily: each one is decoded as it is taken)."""
        if self._skip_lf and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer + chunk
        start = 0
        while True:
            cr, lf = buffer.find(b"\r", start), buffer.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or 0 <= lf < cr else cr
            step = 2 if end == cr and buffer[cr + 1:cr + 2] == b"\n" else 1
            if end == cr and cr == len(buffer) - 1:
                self._skip_lf = True  # CR at the very end: a LF may follow in the next chunk
            message = self._line(buffer[start:end].decode("utf-8", "replace"))
            start = end + step
            if message is not None:
                self._buffer = buffer[start:]
                yield message
        self._buffer = buffer[start:]

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event, self._id = "", None
                return None
            message = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):
            return None  # a comment: the server's heartbeat
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


@dataclass(frozen=True)
class Reconnect:
    """How a stream gets its connection back: after the ``n``-th failed attempt in a row it waits
    ``min(maximum, initial * multiplier**n)`` seconds, times a random factor in [0.5, 1) so that
    clients do not all come back in the same instant; it gives up with :class:`StreamGaveUp` once
    the connection has been gone ``give_up_after`` seconds. A 429 or 503's ``Retry-After`` is
    waited out in full. The server's ``retry:`` hint (meant for browsers) is not used."""

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    give_up_after: float = 300.0

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` failed ones so far)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base * (0.5 + rng() / 2)


class StreamClosed(Exception):
    """The server ended the body before the stream's end (a graceful restart): reconnect."""


#: What a driver catches around one connection and hands to :meth:`Stream.lost`.
LOST = (httpx.TransportError, ApiError, StreamClosed)


class Stream(Generic[T]):
    """The I/O-free state of one resumable stream; a driver loop in the client does the I/O.

    A driver, for each connection::

        response = send(stream.request(), stream=True)
        if stream.needs_body(response): read the body
        if stream.opened(response):             # False: nothing more to read (204)
            for chunk in response's bytes:
                yield from stream.feed(chunk)   # stops after the end
            stream.end_of_body()
        ... and on an exception in LOST: sleep(stream.lost(exc)), then loop while not stream.ended
    """

    #: Id of the last log event handed out: the resume point (None: a stream without ids).
    last_event_id: int | None = None
    #: The job as of the latest snapshot (None: not a job's stream, or no snapshot yet).
    job: Job | None = None

    def __init__(self, build: Callable[[float | None], httpx.Request], url: str, reconnect: Reconnect, *,
                 reached: Callable[[], bool] = lambda: False, deadline: float | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: Callable[[], float] = random.random) -> None:
        self._build = build
        self._reached = reached
        self._url = url
        self._reconnect = reconnect
        self._deadline = deadline
        self._clock = clock
        self._rng = rng
        self._decoder = SSEDecoder()
        self._connected_once = False
        self._lost_at: float | None = None
        self._attempt = 0
        #: True once the stream has nothing more to give: the iteration stops.
        self.ended = False
        #: Connections opened again after the first one.
        self.reconnects = 0

    # -- what a driver calls

    def request(self) -> httpx.Request:
        """The request for the next connection (it carries the resume point)."""
        if self._deadline is None:
            return self._build(None)
        return self._build(max(self._deadline - self._clock(), 0.001))

    @staticmethod
    def needs_body(response: httpx.Response) -> bool:
        """Whether the driver must read the whole body before :meth:`opened` (an error answer)."""
        return response.status_code >= 300

    def opened(self, response: httpx.Response) -> bool:
        """Take a response's status: True to read its events, False when there is nothing more
        (204: a finished job's stream after its end). Raises :class:`ApiError` for an error."""
        status = response.status_code
        if status == 204:
            self.ended = True
            return False
        if status != 200:
            raise api_error(status, response.content, response.headers)
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith("text/event-stream"):
            raise ProtocolError(f"{response.request.url} answered {content_type or 'no content type'}, "
                                "not text/event-stream")
        self._decoder = SSEDecoder()
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        self._lost_at = None
        self._attempt = 0
        return True

    def feed(self, chunk: bytes) -> Iterator[T]:
        """The items that ``chunk`` completes, in order, up to and including the stream's end."""
        if self.ended:
            return
        for message in self._decoder.feed(chunk):
            if self._deadline is not None and self._clock() >= self._deadline:
                raise WaitTimeout("the job did not finish in time")
            item = self._accept(message, self._parse(message))
            if item is not None:
                yield item
            if self.ended:
                return

    def end_of_body(self) -> None:
        """The body ended: fine after the end, else the connection was cut (raises :class:`StreamClosed`)."""
        if not self.ended:
            raise StreamClosed("the server closed the stream before its end")

    def lost(self, error: Exception) -> float:
        """The connection failed with ``error`` (one of :data:`LOST`): seconds to wait before the
        next attempt, or raise — the error itself if it is final, :class:`ConnectionFailed` if the
        very first connection of a client that never reached its server could not be made,
        :class:`StreamGaveUp` when out of time."""
        if isinstance(error, ApiError) and not error.retryable:
            raise error
        now = self._clock()
        if self._deadline is not None and now >= self._deadline:
            raise WaitTimeout("the job did not finish in time") from error
        if not self._connected_once and not self._reached() and isinstance(error, httpx.TransportError):
            # Nothing ever answered at this URL: most likely a wrong URL or a server not started,
            # so say so at once rather than after give_up_after seconds. (A server that did
            # answer and is gone now is restarting: that is waited for, like a dropped stream.)
            raise ConnectionFailed(f"cannot reach {self._url}: {describe(error)}", url=self._url) from error
        if self._lost_at is None:
            self._lost_at = now
        elapsed = now - self._lost_at
        budget = self._reconnect.give_up_after - elapsed
        if budget <= 0:
            raise StreamGaveUp(f"lost the stream from {self._url} and could not get it back in {elapsed:.0f} s "
                               f"({self._attempt} attempts; last: {describe(error)})",
                               url=self._url, attempts=self._attempt, elapsed=elapsed) from error
        delay = self._reconnect.delay(self._attempt, self._rng)
        if isinstance(error, ApiError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        self._attempt += 1
        if self._deadline is not None:
            delay = min(delay, self._deadline - now)
        return max(min(delay, budget), 0.0)

    # -- what a kind of stream defines

    def _parse(self, message: ServerSentEvent) -> dict[str, Any]:
        try:
            data = json.loads(message.data)
        except ValueError:
            raise ProtocolError(f"event {message.event!r} carries data that is not JSON: {message.data[:80]!r}") \
                from None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            raise ProtocolError(f"event {message.event!r} carries no object with a type: {message.data[:80]!r}")
        return data

    def _accept(self, message: ServerSentEvent, data: dict[str, Any]) -> T | None:
        raise NotImplementedError


class JobStream(Stream[Event]):
    """One job's event log, resumed after ``last_event_id`` on every connection.

    Snapshots: the server sends one first on every connection. The first is handed out; later
    ones (after a reconnect) are not — their news is in the log events that follow — but each
    one refreshes :attr:`job`, so ``job["position"]`` is current even though the ``position``
    events of the time the stream was away are lost (they are not part of the log).

    The end: after a ``completed``, ``failed`` or ``cancelled`` event that is the job's latest
    — not after an older one followed by a retry (the snapshot's ``last_event_id`` tells which):
    then the stream reconnects after it and goes on with the retried run.
    """

    last_event_id: int

    def __init__(self, build: Callable[[int, float | None], httpx.Request], url: str, reconnect: Reconnect, *,
                 after: int = 0, **options: Any) -> None:
        super().__init__(lambda timeout: build(self.last_event_id, timeout), url, reconnect, **options)
        self.last_event_id = after
        self._first_snapshot = True

    def _accept(self, message: ServerSentEvent, data: dict[str, Any]) -> Event | None:
        kind = data["type"]
        if message.id is None:
            if kind != "snapshot":
                return cast(Event, data)  # position: news of the moment, not part of the log
            self.job = cast(Job, data["job"])
            first, self._first_snapshot = self._first_snapshot, False
            return cast(Event, data) if first else None
        try:
            event_id = int(message.id)
        except ValueError:
            raise ProtocolError(f"event {kind!r} has the id {message.id!r}, not a number") from None
        if event_id != self.last_event_id + 1:
            what = "a gap" if event_id > self.last_event_id else "a repeat"
            raise ProtocolError(f"event id {event_id} ({kind}) came after {self.last_event_id}: {what} in the "
                                "job's event log, which a pagestream server never sends")
        self.last_event_id = event_id
        if kind in TERMINAL_EVENTS and (self.job is None or event_id >= self.job["last_event_id"]):
            self.ended = True
        return cast(Event, data)


class GlobalStream(Stream[GlobalFrame]):
    """The global stream: every frame; after a reconnect the server's fresh ``sync`` comes first,
    so a consumer that replaces its state on ``sync`` stays right. It never ends by itself."""

    def _accept(self, message: ServerSentEvent, data: dict[str, Any]) -> GlobalFrame | None:
        return cast(GlobalFrame, data)


def describe(error: BaseException) -> str:
    """A short human reason for a transport error ("connection refused", "timed out", …)."""
    if isinstance(error, httpx.ConnectError):
        # The refusal may sit at the bottom of the chain (anyio says "All connection attempts failed").
        cause: BaseException | None = error
        for _ in range(8):
            if cause is None:
                break
            if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
                return "connection refused"
            cause = cause.__cause__ or cause.__context__
        return str(error) or "cannot connect"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        return "the connection was cut"
    return str(error) or type(error).__name__
