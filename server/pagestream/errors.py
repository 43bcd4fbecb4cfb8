"""The errors the HTTP API answers with, one class per kind, each carrying its HTTP status.

    ApiError (500 internal)
    ├── BadRequest (400 bad_request)
    │   ├── InvalidOptions (400 invalid_options)
    │   └── EmptyUpload (400 empty_upload)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    │   ├── NotFinished (409 not_finished)
    │   └── IdempotencyConflict (409 idempotency_conflict)
    ├── TooLarge (413 too_large)
    ├── UnsupportedType (415 unsupported_type)
    ├── QueueFull (429 queue_full, Retry-After)
    ├── CallerStreamLimit (429 too_many_streams, Retry-After)
    ├── Unavailable (503 unavailable)
    │   └── TooManyStreams (503 too_many_streams)
    └── InsufficientStorage (507 insufficient_storage)

One handler (``api.error_response``) turns any of them into ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

from .jobs import ErrorCode


class ApiError(Exception):
    status: int = 500
    code: ErrorCode = ErrorCode.internal
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if headers:
            self.headers = headers

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code.value, "message": self.message}}


class BadRequest(ApiError):
    status, code = 400, ErrorCode.bad_request


class InvalidOptions(BadRequest):
    code = ErrorCode.invalid_options


class EmptyUpload(BadRequest):
    code = ErrorCode.empty_upload


class Unauthorized(ApiError):
    status, code = 401, ErrorCode.unauthorized
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ApiError):
    status, code = 403, ErrorCode.forbidden


class NotFound(ApiError):
    status, code = 404, ErrorCode.not_found


class MethodNotAllowed(ApiError):
    status, code = 405, ErrorCode.method_not_allowed


class Conflict(ApiError):
    status, code = 409, ErrorCode.conflict


class NotFinished(Conflict):
    code = ErrorCode.not_finished


class IdempotencyConflict(Conflict):
    code = ErrorCode.idempotency_conflict


class TooLarge(ApiError):
    status, code = 413, ErrorCode.too_large


class UnsupportedType(ApiError):
    status, code = 415, ErrorCode.unsupported_type


class QueueFull(ApiError):
    status, code = 429, ErrorCode.queue_full
    headers = {"Retry-After": "5"}


class CallerStreamLimit(ApiError):
    status, code = 429, ErrorCode.too_many_streams
    headers = {"Retry-After": "10"}


class Unavailable(ApiError):
    status, code = 503, ErrorCode.unavailable
    headers = {"Retry-After": "5"}


class TooManyStreams(Unavailable):
    code = ErrorCode.too_many_streams


class InsufficientStorage(ApiError):
    status, code = 507, ErrorCode.insufficient_storage
