"""Logs: one JSON object per line (or plain text for a person at a terminal).

Every request gets a line with its request id (taken from a sane ``X-Request-ID``, else made
up, and sent back in the response), route, method, status and duration; the worker logs each
job's state changes and each exit of the extraction child with its cause. Fields go in
``extra={...}``. Never logged: an API key, a cookie, a password, a document's text.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics, route_of

log = logging.getLogger("pagestream.http")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    # UTC, as the Z says (logging's default is local time); the second's text is made once, not per line.
    _second: tuple[int, str] = (-1, "")

    def _utc(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{self._second[1]}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._utc(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
        line = super().format(record)
        return f"{line}  {' '.join(f'{k}={v}' for k, v in extra.items())}" if extra else line


def configure(level: str, fmt: str) -> None:
    """Set up the root logger: ``fmt`` is json, text, or auto (text at a terminal, else JSON)."""
    json_lines = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):  # one format for everything
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


class RequestLog:
    """Pure ASGI middleware: a request id for every request, one log line when it ends, and its
    figures in the metrics (requests by route and status; time to the response's start)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = offered if _REQUEST_ID.match(offered) else secrets.token_hex(8)
        started = time.perf_counter()
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.http_latency.labels(route_of(scope)).observe(time.perf_counter() - started)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            route = route_of(scope)
            self.metrics.http_requests.labels(route, scope["method"], str(status)).inc()
            log.info("%s %s %s", scope["method"], route, status, extra={
                "request_id": request_id, "route": route, "method": scope["method"], "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            })
