"""The README's nginx snippet, run: a real nginx on loopback in front of a real server.

Events pass through as they happen (not held until the stream ends), a stream ends after its
terminal event, Last-Event-ID resumes through the proxy, large uploads pass unbuffered,
connections to the server are kept alive, and a signed-in browser's Origin check still holds.

nginx is the Debian package (tests/run installs it): missing, these tests skip, and fail in CI.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pagestream.settings import Settings

from .contract import check_response
from .corpus import unavailable
from .docs import make_pdf
from .nginx import README_SECTION, Nginx, find_nginx, readme_snippet, snippet
from .server import Event, Server, read_events, wait_for_state

KEY = "nginx-test-key-0123456789"
PAGE_DELAY = 0.3  # seconds each page takes (the server's fault injection): events 0.3 s apart

# What nginx may add to an event's journey, compared with the same event on a direct stream
# from the server read at the same time. This is not a speed test: it tells "passed on at once"
# from "held back". An nginx that holds events back (test_a_buffering_proxy_would_be_caught)
# delivers the first page's event about 3 s late here, and anything that waited even for the
# next event would add PAGE_DELAY (0.3 s). On loopback nginx adds a few milliseconds at most;
# the bound leaves room for a busy 2-core CI machine and stays well below PAGE_DELAY.
MAX_ADDED_LAG = 0.15


@pytest.fixture(scope="module")
def nginx_binary() -> str:
    found = find_nginx()
    if found is None:
        message = "nginx is not installed (Debian: apt-get install nginx; tests/run does it as root)"
        unavailable(message)
    return found


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, nginx_binary: str) -> Iterator[Server]:
    """The server behind nginx: keys on (as it would be when reachable by others), pages slowed."""
    server = Server(tmp_path_factory.mktemp("nginx-upstream") / "data", settings={"api_keys": f"{KEY}:alice:admin"},
                    env={"PAGESTREAM_FAULT_PAGE_DELAY": str(PAGE_DELAY)}).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: Server) -> Iterator[Nginx]:
    """nginx with the README's snippet, as written, in front of ``upstream``."""
    with Nginx(tmp_path_factory.mktemp("nginx"), snippet(), upstream.port) as nginx:
        yield nginx


def client(base_url: str, **kwargs: Any) -> httpx.Client:
    """A client that checks every body against the contract, signed in with the API key."""
    headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
    timeout = kwargs.pop("timeout", httpx.Timeout(30, read=10))  # a stream that does not end fails in 10 s
    return httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                        event_hooks={"response": [check_response]}, **kwargs)


def submit(c: httpx.Client, pages: int) -> dict[str, Any]:
    response = c.post("/api/v1/jobs", content=make_pdf([f"page {i} of {pages}" for i in range(1, pages + 1)]),
                      params={"filename": "slow.pdf"})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


@dataclass
class Arrival:
    monotonic: float
    wall: float
    event: Event


@dataclass
class Stream:
    asked: float  # wall-clock time the request was sent
    arrivals: list[Arrival]
    ended: bool  # the server ended the response (as opposed to a read timeout or an error)
    headers: httpx.Headers


def read_stream(c: httpx.Client, job_id: str, headers: dict[str, str] | None = None,
                stop: Any = None) -> Stream:
    """Read a job's event stream, stamping each event with its arrival time, to its end (or ``stop``)."""
    arrivals: list[Arrival] = []
    asked = time.time()
    with c.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response):
            arrivals.append(Arrival(time.monotonic(), time.time(), event))
            if stop is not None and stop(event):
                return Stream(asked, arrivals, False, response.headers)
        return Stream(asked, arrivals, True, response.headers)


def at(event: Event) -> float:
    return datetime.fromisoformat(event.data["at"].replace("Z", "+00:00")).timestamp()


def added_lag(direct: Stream, proxied: Stream) -> dict[int, float]:
    """For each page event that happened after both streams were open: how much later it came through nginx.

    "Open" is when the direct stream's snapshot arrived and when the request to nginx was sent:
    an event from before that is replayed on connection, not delivered live, so its arrival
    says nothing about the proxy.
    """
    both_open = max(direct.arrivals[0].wall, proxied.asked)
    direct_times = {a.event.id: a.monotonic for a in direct.arrivals if a.event.type == "page"}
    return {a.event.id: a.monotonic - direct_times[a.event.id] for a in proxied.arrivals
            if a.event.type == "page" and a.event.id is not None and a.event.id in direct_times
            and at(a.event) > both_open}


def lag_through(proxy_url: str, upstream: Server, pages: int = 10) -> tuple[dict[int, float], Stream]:
    """Submit a slow job through the proxy and read its stream through the proxy and directly, at once."""
    with client(proxy_url) as via_proxy, client(upstream.url) as direct:
        job = submit(via_proxy, pages)
        with ThreadPoolExecutor(2) as pool:
            proxied_future = pool.submit(read_stream, via_proxy, job["id"])
            direct_future = pool.submit(read_stream, direct, job["id"])
            proxied, straight = proxied_future.result(timeout=90), direct_future.result(timeout=90)
        wait_for_state(direct, job["id"], {"completed"})
    assert straight.ended and straight.arrivals[-1].event.type == "completed"
    return added_lag(straight, proxied), proxied


# -- the snippet itself


def directives(text: str) -> list[tuple[str, str]]:
    """(name, arguments) of every directive in an nginx config text, comments dropped."""
    text = re.sub(r"#[^\n]*", "", text)
    return [(m.group(1), " ".join(m.group(2).split())) for m in re.finditer(r"([a-z_0-9]+)\s*([^;{}]*);", text)]


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value)
    assert match, f"not an nginx time: {value!r}"
    return int(match.group(1)) * units[match.group(2) or "s"]


def test_the_snippet_has_what_streams_and_uploads_need() -> None:
    found = directives(snippet())
    values: dict[str, list[str]] = {}
    for name, args in found:
        values.setdefault(name, []).append(args)
    defaults = Settings()

    assert values["proxy_http_version"] == ["1.1"]
    assert 'Connection ""' in values["proxy_set_header"]
    assert "Host $http_host" in values["proxy_set_header"]  # $host would drop the port the browser's Origin has
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in values["proxy_set_header"]
    assert "X-Forwarded-Proto $scheme" in values["proxy_set_header"]
    assert values["proxy_buffering"] == ["off"]
    assert values["proxy_request_buffering"] == ["off"]
    # Idle streams get a heartbeat every `heartbeat` seconds: the read timeout must outlast
    # several of them, or nginx cuts a quiet stream.
    assert seconds(values["proxy_read_timeout"][0]) >= 4 * defaults.heartbeat
    # Uploads: at least pagestream's own limit (so pagestream answers 413 in its JSON shape),
    # and not far above it.
    size = values["client_max_body_size"][0]
    assert size.endswith("m"), size
    assert defaults.max_upload_mb < int(size[:-1]) <= defaults.max_upload_mb + 8
    # An upstream keep-alive connection must be dropped by nginx before uvicorn drops it, or a
    # request sent on it just as uvicorn closes it fails (nginx does not retry a POST).
    uvicorn_keep_alive = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert values["keepalive"], "no keepalive in the upstream block"
    assert seconds(values["keepalive_timeout"][0]) < uvicorn_keep_alive


def test_the_readme_shows_the_snippet_this_test_runs() -> None:
    """Once the README has its proxy section, its one ```nginx block is what every test here runs."""
    in_readme = readme_snippet()  # asserts there is exactly one block, if the section is there
    if in_readme is None:
        message = (f"README.md has no '## {README_SECTION}' section with the nginx snippet "
                   "(tests/nginx.py SNIPPET holds the proposed text)")
        unavailable(message)
    assert snippet() == in_readme
    assert "proxy_pass http://pagestream;" in in_readme


# -- streams


@pytest.mark.slow
def test_page_events_come_through_nginx_as_they_happen_and_the_stream_ends(proxy: Nginx, upstream: Server) -> None:
    lag, proxied = lag_through(proxy.url, upstream)
    assert len(lag) >= 8, f"too few page events happened while both streams were open: {lag}"
    assert max(lag.values()) < MAX_ADDED_LAG, (
        f"nginx held events back (seconds later than the direct stream, by event id): {lag}")
    # The whole log, in order, and the response ended after the terminal event.
    logged = [a.event for a in proxied.arrivals if a.event.id is not None]
    assert [e.id for e in logged] == list(range(1, len(logged) + 1))
    assert logged[-1].type == "completed" and proxied.ended
    assert [e.data["page"]["number"] for e in logged if e.type == "page"] == list(range(1, 11))
    assert "x-accel-buffering" not in proxied.headers  # nginx reads it and keeps it to itself
    assert "content-encoding" not in proxied.headers


@pytest.mark.slow
def test_a_buffering_proxy_would_be_caught(tmp_path: Path, upstream: Server) -> None:
    """The instrument: the same measurement through an nginx that holds events back sees it.

    Buffering alone does not do it with this server: nginx passes on each chunk of a chunked
    response as it comes even with proxy_buffering on. Buffering (with the server's
    X-Accel-Buffering ignored) together with compression of event streams does: the gzip
    filter is flushed only by an unbuffered proxy, so every event waits for the end.
    """
    buffering = snippet().replace("proxy_buffering off;", (
        "proxy_buffering on; proxy_ignore_headers X-Accel-Buffering; "
        "gzip on; gzip_proxied any; gzip_min_length 1; gzip_types text/event-stream;"))
    assert buffering != snippet()
    with Nginx(tmp_path / "nginx", buffering, upstream.port) as nginx:
        lag, proxied = lag_through(nginx.url, upstream)
    assert proxied.ended and proxied.arrivals[-1].event.type == "completed"
    assert max(lag.values()) > 1.0, f"a buffering nginx passed events at once? {lag}"
    assert statistics.median(lag.values()) > MAX_ADDED_LAG


def test_last_event_id_resumes_through_nginx(proxy: Nginx) -> None:
    with client(proxy.url) as c:
        job = submit(c, 6)
        first = read_stream(c, job["id"], stop=lambda e: e.type == "page")  # then drop the connection
        seen = first.arrivals[-1].event.id
        assert seen is not None and first.arrivals[-1].event.type == "page"
        rest = read_stream(c, job["id"], headers={"Last-Event-ID": str(seen)})
        assert rest.ended and rest.arrivals[0].event.type == "snapshot"
        ids = [a.event.id for a in first.arrivals + rest.arrivals if a.event.id is not None]
        assert ids == list(range(1, len(ids) + 1)), "events lost or repeated across the reconnect"
        assert rest.arrivals[-1].event.type == "completed"
        # Resuming after the last event: 204, which tells a browser's EventSource to stop.
        done = c.get(f"/api/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(ids[-1])})
        assert done.status_code == 204
        # ?after= (a first connection) works the same way.
        with c.stream("GET", f"/api/v1/jobs/{job['id']}/events", params={"after": ids[-2]}) as response:
            events = [e for e in read_events(response) if e.id is not None]
        assert [e.id for e in events] == [ids[-1]]


def test_the_global_stream_starts_at_once_through_nginx(proxy: Nginx) -> None:
    """The dashboard's stream never ends: a proxy that held it back would show nothing at all."""
    with client(proxy.url) as c:
        started = time.monotonic()
        with c.stream("GET", "/api/v1/events") as response:
            assert response.status_code == 200
            first = next(read_events(response))
        assert first.type == "sync"
        assert time.monotonic() - started < 5


# -- uploads and connections


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_large_upload_passes_through_nginx_unbuffered(proxy: Nginx, framing: str) -> None:
    """24 MiB, far above nginx's default 1 MiB limit; nginx hands it on without a temporary file."""
    body = make_pdf(["a large upload"]) + b"%" + b"padding " * (3 * 1024 * 1024) + b"\n"
    content: Any = body
    if framing == "chunked":
        content = (body[i:i + 256 * 1024] for i in range(0, len(body), 256 * 1024))
    with client(proxy.url, timeout=120) as c:
        response = c.post("/api/v1/jobs", content=content, params={"filename": "large.pdf"})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["size"] == len(body) and job["sha256"] == hashlib.sha256(body).hexdigest()
        assert c.post(f"/api/v1/jobs/{job['id']}/cancel").status_code in (200, 202)
        wait_for_state(c, job["id"], {"cancelled", "completed", "failed"})
    assert "buffered to a temporary file" not in proxy.log()


def upstream_peers(port: int) -> set[int]:
    """Remote ports of the TCP sockets (any state, TIME_WAIT included) whose local port is ``port``."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote = line.split()[1:3]
        if int(local.rsplit(":", 1)[1], 16) == port:
            peers.add(int(remote.rsplit(":", 1)[1], 16))
    return peers


def test_nginx_keeps_its_connections_to_the_server_alive(proxy: Nginx, upstream: Server) -> None:
    """HTTP/1.1 upstream, Connection "" and keepalive: 30 requests ride on one or two connections."""
    if not Path("/proc/net/tcp").exists():
        unavailable("this test reads Linux's /proc/net/tcp")
    before = upstream_peers(upstream.port)
    seen: set[int] = set()
    with client(proxy.url) as c:
        for _ in range(30):
            response = c.get("/api/v1/jobs", params={"limit": 1})
            assert response.status_code == 200
            # nginx's $request_id (32 hex digits) reached the server and came back in its logs' id.
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])
            seen |= upstream_peers(upstream.port)
    new = seen - before
    assert len(new) <= 3, f"nginx opened {len(new)} connections for 30 requests: no keep-alive upstream"


def test_a_signed_in_browser_can_submit_through_nginx(proxy: Nginx) -> None:
    """The cookie session's Origin check compares with Host: nginx must pass the Host with its port."""
    with httpx.Client(base_url=proxy.url, timeout=30, event_hooks={"response": [check_response]}) as browser:
        assert browser.post("/api/v1/session", json={"key": KEY}).status_code == 200
        response = browser.post("/api/v1/jobs", content=b"hello through nginx\n", params={"filename": "a.txt"},
                                headers={"Origin": proxy.url})
        assert response.status_code == 202, response.text
        wait_for_state(browser, response.json()["id"], {"completed"})
        # And a page of some other site is still refused.
        other = browser.post("/api/v1/jobs", content=b"x\n", headers={"Origin": "http://evil.example"})
        assert other.status_code == 403

