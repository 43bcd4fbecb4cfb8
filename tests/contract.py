"""Every body and every SSE payload the test suite sees is checked against shared_schemas/.

``Server.client()`` installs :func:`check_response` as a response hook, and
:func:`tests.server.read_events` checks every event, so a test that talks to the server
checks the contract as a side effect, with nothing to remember.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson

from pagestream.schemas import Contract

CONTRACT = Contract()
SEEN: dict[str, int] = {}  # schema name → instances checked, for the test that all shapes were seen

_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"^/api/v1/jobs$"), "job"),
    ("GET", re.compile(r"^/api/v1/jobs$"), "job-list.json"),
    ("GET", re.compile(r"^/api/v1/jobs/[^/]+$"), "job.json"),
    ("POST", re.compile(r"^/api/v1/jobs/[^/]+/(cancel|retry)$"), "job.json"),
    ("GET", re.compile(r"^/api/v1/jobs/[^/]+/result$"), "result"),
    ("GET", re.compile(r"^/healthz$"), "health.json"),
    ("GET", re.compile(r"^/api/v1/session$"), "session.json"),
    ("POST", re.compile(r"^/api/v1/session$"), "session.json"),
]


def validate(name: str, instance: Any) -> None:
    CONTRACT.validate(name, instance)
    SEEN[name] = SEEN.get(name, 0) + 1


def check_response(response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("text/event-stream"):
        return  # checked event by event in read_events
    response.read()
    path, method = response.request.url.path, response.request.method
    if response.status_code >= 400:
        if path.startswith("/api/") or path in ("/healthz",) or content_type.startswith("application/json"):
            validate("error.json", response.json())
        return
    if not content_type.startswith(("application/json", "application/x-ndjson")):
        return
    for route_method, pattern, name in _ROUTES:
        if method == route_method and pattern.match(path):
            body = response.json() if not content_type.startswith("application/x-ndjson") else None
            if name == "job":
                validate("job-batch.json" if "jobs" in body else "job.json", body)
            elif name == "result":
                if body is None:
                    for line in response.content.splitlines():
                        validate("page.json", orjson.loads(line))
                else:
                    validate("result.json", body)
            else:
                validate(name, body)
            return


def check_event(event_type: str, data: dict[str, Any], global_stream: bool) -> None:
    assert data.get("type") == event_type, f"event: {event_type} carries data of type {data.get('type')}"
    if global_stream:
        validate(CONTRACT.global_event_schema_for(event_type), data)
    else:
        validate(CONTRACT.event_schema_for(event_type), data)
