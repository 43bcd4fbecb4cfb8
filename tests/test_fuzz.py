"""Fuzzing: schemathesis against the live contract, and hypothesis against the event stream's resume.

(a) schemathesis generates requests — valid and invalid — for every operation of
``/openapi.json`` and checks each answer with its default checks: no 5xx, the status code is
documented, the body matches the schema of its status and content type, the headers too, and
invalid input is refused. The document under test is the live server's ``/openapi.json``
(compared with the one the parametrization is built from, which must be taken at import).
Some generated job ids are real jobs — finished, failed, cancelled — so the operations are
exercised past their 404. One operation is left out: the global stream ``GET /api/v1/events``
never ends (a dashboard's state sync), and schemathesis reads a whole body before it checks
it; the per-job stream stays in (for a real job it ends at the terminal event, otherwise it is
a JSON error), and its frames are checked by (b) and by every test that reads events.

(b) hypothesis plays an EventSource that loses its connection at random points — after a
random number of bytes, mid-line, mid-frame, or after a random time on a live job — and
reconnects with ``Last-Event-ID`` (or, for a first connection, ``?after=``; or both, where the
header must win), like a browser: it parses only what it received, dispatches an event at its
blank line, and stops at a 204. The events it reconstructs must be the job's log exactly.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

try:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import positive_data_acceptance
except ImportError as exc:  # the tools are in the test extra
    from .corpus import unavailable

    unavailable(f"tests/test_fuzz.py needs schemathesis>=4 and hypothesis>=6 (pip install -e '.[test]'): {exc}",
                module=True)

from pagestream import __version__
from pagestream.schemas import Contract, openapi

from .docs import make_pdf
from .server import Server, read_events, running_server, sse_events, wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# -- (a) schemathesis

SCHEMA_DOCUMENT = orjson.loads(orjson.dumps(openapi(Contract(), __version__)))
# A raw upload is bytes whatever its declared type: PDF and EPUB bodies are sent as
# octet-stream bodies are (the server judges the bytes, not the header).
schemathesis.serializer.alias(["application/pdf", "application/epub+zip"], "application/octet-stream")
SCHEMA = schemathesis.openapi.from_dict(SCHEMA_DOCUMENT).exclude(path="/api/v1/events")
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
#: Real job ids (filled by the fixture); a valid generated id is swapped for one of them half the time.
KNOWN_JOBS: list[str] = []


@SCHEMA.hook
def map_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    job_id = (path_parameters or {}).get("job_id")
    # Only ids that are valid already: an invalid one belongs to a negative case and must stay invalid.
    if KNOWN_JOBS and isinstance(job_id, str) and JOB_ID.match(job_id) and int(job_id, 16) % 2 == 0:
        return {**(path_parameters or {}), "job_id": KNOWN_JOBS[int(job_id, 16) // 2 % len(KNOWN_JOBS)]}
    return path_parameters


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with real jobs of every end state, for schemathesis to find."""
    with running_server(tmp_path_factory.mktemp("fuzz-contract") / "data",
                        env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.005"}) as server:
        live = httpx.get(server.url + "/openapi.json", timeout=10).json()
        assert live == SCHEMA_DOCUMENT, "the live /openapi.json differs from the document the cases come from"
        with server.client() as client:
            done = client.post("/api/v1/jobs", content=make_pdf(["fuzz one", "fuzz two"])).json()["id"]
            failed = client.post("/api/v1/jobs", content=make_pdf(["locked"], user_password="pw")).json()["id"]
            cancelled = client.post("/api/v1/jobs", content=make_pdf([f"p{i}" for i in range(400)])).json()["id"]
            client.post(f"/api/v1/jobs/{cancelled}/cancel")
            for job_id in (done, failed, cancelled):
                wait_for_state(client, job_id, {"completed", "failed", "cancelled"}, timeout=30)
        KNOWN_JOBS[:] = [done, failed, cancelled]
        yield server
        KNOWN_JOBS.clear()


#: Checks left out for one operation, and why.
#: - POST /api/v1/jobs, positive_data_acceptance: "valid" is more than the schema can say for an
#:   upload — its bytes must be a document (else 415) and not empty (else 400 empty_upload),
#:   and both answers are documented; random bytes are valid to the schema and to nobody else.
EXCLUDED_CHECKS = {("POST", "/api/v1/jobs"): [positive_data_acceptance]}


@SCHEMA.parametrize()
# Derandomized unless FUZZ_RANDOM=1: CI runs the same examples every time (a failure there is
# a change's fault, not luck); FUZZ_RANDOM=1 explores new ones.
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck),
          derandomize=os.environ.get("FUZZ_RANDOM") != "1")
def test_every_operation_answers_within_its_contract(case: Any, contract_server: Server) -> None:
    case.call_and_validate(base_url=contract_server.url, timeout=15,
                           excluded_checks=EXCLUDED_CHECKS.get((case.method, case.path), []))


def test_a_wrong_method_on_an_api_route_is_answered_with_that_routes_methods(contract_server: Server) -> None:
    """Found by schemathesis (ST205). Every 405 says ``Allow: GET, HEAD``: a method a route does not
    take falls through to the UI's catch-all ``Mount("/", StaticFiles)`` (app.py), which matches any
    path fully (a route with the wrong method matches only partly) and refuses all but GET and HEAD.
    RFC 9110 §15.5.6: the Allow header of a 405 lists the target's methods."""
    expected = {"/api/v1/jobs/0123456789abcdef/cancel": {"POST"}, "/api/v1/jobs": {"GET", "POST"},
                "/api/v1/jobs/0123456789abcdef": {"GET", "DELETE"}, "/healthz": {"GET"}}
    for path, methods in expected.items():
        response = httpx.request("PATCH", contract_server.url + path, timeout=10)
        assert response.status_code == 405
        allowed = {m.strip() for m in response.headers.get("allow", "").split(",")} - {"HEAD", ""}
        assert allowed == methods, f"PATCH {path}: Allow: {response.headers.get('allow')}; the route takes {methods}"


def test_the_documented_cursor_is_the_cursor_the_server_takes(contract_server: Server) -> None:
    """Found by schemathesis (ST202). /openapi.json declares ``cursor`` any string, and documents no
    400 for GET /api/v1/jobs; the server answers 400 to any cursor but digits (api.list_jobs)."""
    response = httpx.get(contract_server.url + "/api/v1/jobs", params={"cursor": "INF"}, timeout=10)
    cursor = next(p for p in SCHEMA_DOCUMENT["paths"]["/api/v1/jobs"]["get"]["parameters"] if p["name"] == "cursor")
    pattern = cursor["schema"].get("pattern")
    if response.status_code == 400:
        assert pattern is not None and not re.search(pattern, "INF"), (
            f"the server refuses cursor=INF ({response.json()['error']['message']}) but the contract allows it")


def test_numbers_past_64_bits_or_odd_digits_are_refused_not_500s(contract_server: Server) -> None:
    """Found while shrinking schemathesis's cursor finding. Three places turn a number from the
    request into an int and hand it on unchecked:
    - api.list_jobs: ``cursor.isdigit()`` is true for "²" (int() then raises: 500), and a cursor
      past 2**63 reaches SQLite (OverflowError: 500);
    - jobs.parse_pages: ``pages=1-99999999999999999999999`` is accepted (202), then the worker's
      orjson.dumps of the run command raises (past 64 bits) and the job fails ``internal``;
    - api.job_stream: ``Last-Event-ID``/``after`` past 2**63 on an unfinished job opens a 200 stream
      that dies at once (OverflowError in store.events_after), and an EventSource retries it forever.
    """
    problems = []
    # No keep-alive: after a 500 the server closes the connection, and the next request must not ride on it.
    with contract_server.client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for cursor in ("²", "99999999999999999999"):
            response = client.get("/api/v1/jobs", params={"cursor": cursor})
            if response.status_code != 400:
                problems.append(f"GET /api/v1/jobs?cursor={cursor}: {response.status_code} {response.text}")
        pages = "1-99999999999999999999999"
        response = client.post("/api/v1/jobs", content=make_pdf(["a", "b"]), params={"pages": pages})
        if response.status_code == 202:
            job = wait_for_state(client, response.json()["id"], {"completed", "failed"}, timeout=30)
            if job["state"] == "failed" and job["error"]["code"] == "internal":
                problems.append(f"pages={pages}: accepted (202), then the job failed {job['error']}")
        elif response.status_code != 400:
            problems.append(f"pages={pages}: {response.status_code} {response.text}")
        running = client.post("/api/v1/jobs", content=make_pdf([f"p{i}" for i in range(600)])).json()["id"]
        wait_for_state(client, running, {"running"}, timeout=30)
        try:
            with client.stream("GET", f"/api/v1/jobs/{running}/events",
                               headers={"Last-Event-ID": "99999999999999999999"}) as stream:
                if stream.status_code == 200:  # then it must be a stream that lives, not one that breaks
                    started = time.monotonic()
                    for _ in stream.iter_raw():
                        if time.monotonic() - started > 1.0:
                            break
                elif stream.status_code != 400:
                    problems.append(f"Last-Event-ID past 2**63: {stream.status_code}")
        except httpx.TransportError as exc:
            problems.append(f"Last-Event-ID past 2**63 on a running job: 200, then the stream broke ({exc})")
        finally:
            client.post(f"/api/v1/jobs/{running}/cancel")
    assert not problems, "\n".join(problems)


# -- (b) resuming event streams


@dataclass
class Received:
    """What one connection delivered: dispatched events (in order) and whether it was a 204."""

    status: int
    events: list[tuple[int | None, str, dict[str, Any]]] = field(default_factory=list)


def parse_dispatched(raw: bytes) -> list[tuple[int | None, str, dict[str, Any]]]:
    """The events an EventSource dispatches from ``raw`` (the bytes before the connection died).

    As the WHATWG parser: lines end at CRLF, LF or CR; a blank line dispatches the event being
    built; a line cut off by the end of the bytes, and an event without its blank line, are lost.
    """
    complete = raw[: max(raw.rfind(b"\n"), raw.rfind(b"\r")) + 1]  # a line cut short is lost
    lines = re.split(r"\r\n|\n|\r", complete.decode("utf-8"))
    lines.pop()  # the "" after the last line end
    return [(e.id, e.type, e.data) for e in sse_events(lines)]


def connect(client: httpx.Client, job_id: str, last: int, mode: str, text: bool, cut_bytes: int | None,
            cut_seconds: float | None = None) -> Received:
    """One connection resuming after ``last``, dropped after ``cut_bytes`` bytes or ``cut_seconds``."""
    headers: dict[str, str] = {}
    params: dict[str, Any] = {"text": 1} if text else {}
    if mode == "header" and last:
        headers["Last-Event-ID"] = str(last)
    elif mode == "after":
        params["after"] = last
    elif mode == "both":  # the header wins over a (wrong) after=
        headers["Last-Event-ID"] = str(last)
        params["after"] = last + 7
    received = bytearray()
    started = time.monotonic()
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers, params=params) as response:
        if response.status_code != 200:
            return Received(response.status_code)
        for chunk in response.iter_raw(512):
            received += chunk
            if cut_bytes is not None and len(received) >= cut_bytes:
                del received[cut_bytes:]
                break
            if cut_seconds is not None and time.monotonic() - started >= cut_seconds:
                break
    return Received(200, parse_dispatched(bytes(received)))


@dataclass
class Resumer:
    """An EventSource with a plan of drops: it reconnects after each one, and after a normal end,
    until the server answers 204."""

    server: Server
    job_id: str
    text: bool
    plan: list[tuple[str, int | None, float | None]]
    events: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connections: int = 0

    def run(self) -> None:
        # One client throughout (making one costs an SSL context: ~0.1 s on a busy machine).
        with httpx.Client(base_url=self.server.url, timeout=httpx.Timeout(30, connect=5)) as client:
            self._run(client)

    def _run(self, client: httpx.Client) -> None:
        last = 0
        for attempt in range(len(self.plan) + 50):
            mode, cut_bytes, cut_seconds = self.plan[attempt] if attempt < len(self.plan) else ("header", None, None)
            received = connect(client, self.job_id, last, mode, self.text, cut_bytes, cut_seconds)
            self.connections += 1
            if received.status == 204:
                if not self.events or self.events[-1][1] not in ("completed", "failed", "cancelled"):
                    self.problems.append(f"204 after id {last}, before the terminal event")
                return
            if received.status != 200:
                self.problems.append(f"status {received.status} after id {last}")
                return
            for index, (event_id, event_type, data) in enumerate(received.events):
                if index == 0 and event_type != "snapshot":
                    self.problems.append(f"connection {self.connections} began with {event_type}")
                if event_id is None:
                    if event_type not in ("snapshot", "position"):
                        self.problems.append(f"an id-less {event_type} event")
                    continue
                if event_id != last + 1:
                    self.problems.append(f"event {event_id} after {last} (mode {mode})")
                self.events.append((event_id, event_type, data))
                last = event_id
        self.problems.append("no 204 after 50 reconnections")


def full_log(server: Server, job_id: str, text: bool) -> list[tuple[int, str, dict[str, Any]]]:
    with server.client() as client, client.stream("GET", f"/api/v1/jobs/{job_id}/events",
                                                  params={"text": 1} if text else {}) as response:
        return [(e.id, e.type, e.data) for e in read_events(response) if e.id is not None]


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("fuzz-streams") / "data",
                        env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.01"}) as server:
        yield server


@pytest.fixture(scope="module")
def finished_job(stream_server: Server) -> dict[str, Any]:
    """A finished job with a log long enough to cut in many places: 40 pages, a page range, text."""
    with stream_server.client() as client:
        pages = [f"resume page {i}\n" + "word " * (i % 7) for i in range(1, 41)]
        job = client.post("/api/v1/jobs", content=make_pdf(pages), params={"filename": "resume.pdf"}).json()
        done = wait_for_state(client, job["id"], {"completed"}, timeout=30)
    logs = {text: full_log(stream_server, job["id"], text) for text in (False, True)}
    assert [e[0] for e in logs[False]] == list(range(1, done["last_event_id"] + 1))
    return {"id": job["id"], "logs": logs, "last": done["last_event_id"]}


MODES = st.sampled_from(["header", "after", "both"])
BYTE_PLAN = st.lists(st.tuples(MODES, st.integers(min_value=0, max_value=6000), st.none()), max_size=12)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(plan=BYTE_PLAN, text=st.booleans())
def test_a_client_cut_anywhere_reconstructs_a_finished_jobs_log_exactly(
        stream_server: Server, finished_job: dict[str, Any], plan: list[Any], text: bool) -> None:
    resumer = Resumer(stream_server, finished_job["id"], text, plan)
    resumer.run()
    assert not resumer.problems, resumer.problems
    assert resumer.events == finished_job["logs"][text]


@pytest.fixture(scope="module")
def stream_client(stream_server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream_server.url, timeout=30) as client:
        yield client


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(after=st.integers(min_value=0, max_value=80), header=st.booleans(), text=st.booleans())
def test_a_resume_point_gives_exactly_the_events_after_it(
        stream_client: httpx.Client, finished_job: dict[str, Any], after: int, header: bool, text: bool) -> None:
    received = connect(stream_client, finished_job["id"], after, "header" if header else "after", text, None)
    if after >= finished_job["last"]:
        assert received.status == 204
        return
    assert received.status == 200
    assert received.events[0][1] == "snapshot"
    assert [e for e in received.events if e[0] is not None] == finished_job["logs"][text][after:]


LIVE_PLAN = st.lists(st.one_of(
    st.tuples(MODES, st.integers(min_value=0, max_value=4000), st.none()),
    st.tuples(MODES, st.none(), st.floats(min_value=0.0, max_value=0.4)),
), max_size=10)


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(plans=st.lists(LIVE_PLAN, min_size=3, max_size=3), text=st.booleans())
def test_clients_cut_anywhere_reconstruct_a_live_jobs_log_exactly(
        stream_server: Server, plans: list[Any], text: bool) -> None:
    """Three clients follow a job while it runs (120 pages, 10 ms each), dropping their
    connections by bytes or by time, and resume; each must end with the job's exact log."""
    with stream_server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf([f"live {i}" for i in range(120)])).json()
    resumers = [Resumer(stream_server, job["id"], text, plan) for plan in plans]
    threads = [threading.Thread(target=r.run) for r in resumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    log = full_log(stream_server, job["id"], text)
    assert log[-1][1] == "completed"
    for resumer in resumers:
        assert not resumer.problems, resumer.problems
        assert resumer.events == log, f"{len(resumer.events)} events reconstructed, the log has {len(log)}"
