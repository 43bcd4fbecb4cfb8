"""What the client raises: one small hierarchy, every error with a ``code``, a ``message`` and a ``status``.

    PagestreamError
    ├── ApiError                the server answered with an error ({"error": {"code", "message"}})
    │   ├── BadRequest          400  bad_request, invalid_options, empty_upload
    │   ├── Unauthorized        401  unauthorized (no API key, or not a valid one)
    │   ├── Forbidden           403  forbidden
    │   ├── NotFound            404  not_found
    │   ├── Conflict            409  conflict, not_finished, idempotency_conflict
    │   ├── TooLarge            413  too_large
    │   ├── UnsupportedType     415  unsupported_type
    │   ├── QueueFull           429  queue_full, too_many_streams (``retry_after``)
    │   └── ServerError         5xx  unavailable, too_many_streams, internal, …
    ├── ConnectionFailed        the server could not be reached (status None)
    │   └── StreamGaveUp        an event stream could not reconnect within ``give_up_after``
    ├── ProtocolError           the server's answer broke the contract (e.g. a gap in event ids)
    └── WaitTimeout             ``wait(timeout=…)`` ran out of time (also a ``TimeoutError``)

An ``ApiError`` carries the server's code (one of ``shared_schemas/error.json``) and message;
the others carry a code of the client's own (``connection_failed``, ``stream_gave_up``,
``protocol_error``, ``timeout``) and ``status`` None.

These are the *client's* exceptions; :mod:`pagestream.errors` holds the server's, which
share some names but are never raised on this side of the wire.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# Statuses after which a stream reconnects rather than failing: the server (or a proxy in
# front of it) is busy, starting or stopping, and will likely answer in a moment.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


class PagestreamError(Exception):
    """Base of every error the client raises."""

    code: str = "error"
    status: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(PagestreamError):
    """The server answered ``status`` with ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        #: Seconds the server asked to wait before trying again (``Retry-After``), if it said.
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may well succeed in a moment (429, 502, 503, 504)."""
        return self.status in RETRYABLE_STATUSES

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status!r}, {self.code!r}, {self.message!r})"


class BadRequest(ApiError):
    """400: the request or its options are malformed."""


class Unauthorized(ApiError):
    """401: the server has API keys, and the request named none or an unknown one."""


class Forbidden(ApiError):
    """403: the key may not do this."""


class NotFound(ApiError):
    """404: no such job (or route)."""


class Conflict(ApiError):
    """409: the job is not in a state that allows this (e.g. its result before it finished)."""


class TooLarge(ApiError):
    """413: the upload is over the server's ``max-upload-mb``."""


class UnsupportedType(ApiError):
    """415: the bytes are none of the supported document types."""


class QueueFull(ApiError):
    """429: the queue is full (or, for a stream, the caller has too many open); try again after
    ``retry_after`` seconds."""


class ServerError(ApiError):
    """5xx: the server failed, is stopping, or has too many streams open."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge,
    415: UnsupportedType, 429: QueueFull,
}


class ConnectionFailed(PagestreamError):
    """The server could not be reached at ``url`` (refused, unresolvable, timed out, cut off)."""

    code = "connection_failed"

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class StreamGaveUp(ConnectionFailed):
    """An event stream lost its connection and could not get it back within ``give_up_after`` seconds."""

    code = "stream_gave_up"

    def __init__(self, message: str, *, url: str, attempts: int, elapsed: float) -> None:
        super().__init__(message, url=url)
        #: Connection attempts made since the connection was lost.
        self.attempts = attempts
        #: Seconds since the connection was lost.
        self.elapsed = elapsed


class ProtocolError(PagestreamError):
    """The server's answer broke the contract: a gap or a repeat in event ids, a body that is not JSON.

    Never expected from a pagestream server; it means a bug (or not a pagestream server).
    """

    code = "protocol_error"


class WaitTimeout(PagestreamError, TimeoutError):
    """``wait(job_id, timeout=…)`` returned before the job finished."""

    code = "timeout"


def api_error(status: int, body: bytes, headers: Mapping[str, str]) -> ApiError:
    """The :class:`ApiError` subclass for an error answer; a body not in the error shape (a proxy's
    HTML page) still gives an error, with code ``unexpected_response``."""
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, TypeError, KeyError):
        text = body.decode("utf-8", "replace").strip()
        code, message = "unexpected_response", f"HTTP {status}" + (f": {text[:200]}" if text else "")
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ApiError)
    return kind(status, code, message, retry_after=_seconds(headers.get("retry-after")))


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date: rare enough to ignore
