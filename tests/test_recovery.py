"""Kill the server (SIGKILL) or stop it (SIGTERM) mid-job, start it again: nothing lost, nothing twice."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from .docs import make_pdf
from .server import Event, Server, collect_events, read_events, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")

PAGES = [f"recovery page {i}" for i in range(1, 31)]
SLOW = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.1"}


def wait_for_pages(client: httpx.Client, job_id: str, pages: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["pages_done"] >= pages:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck at {job['pages_done']} pages"
        time.sleep(0.02)


def test_sigkill_mid_job_resumes_from_the_next_page_and_a_client_misses_nothing(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(PAGES)).json()
        seen: list[Event] = []
        reader = threading.Thread(target=collect_events, args=(server.url, job["id"], None, seen))
        reader.start()
        wait_for_pages(client, job["id"], 10)
    server.kill()
    reader.join(10)
    last_id = max(e.id for e in seen if e.id is not None)
    before = {e.id for e in seen if e.id is not None}

    server.start()
    with server.client() as client:
        resumed: list[Event] = []
        collect_events(server.url, job["id"], last_id, resumed)
        done = wait_for_state(client, job["id"], {"completed"})
        full = [e for e in read_events(client.send(client.build_request("GET", f"/api/v1/jobs/{job['id']}/events"),
                                                   stream=True)) if e.id is not None]
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()

    # The resumed client got exactly the events after the last one it saw: no gap, no repeat.
    resumed_ids = [e.id for e in resumed if e.id is not None]
    assert resumed_ids == list(range(last_id + 1, done["last_event_id"] + 1))
    assert before.isdisjoint(resumed_ids)
    assert [e.id for e in full] == list(range(1, done["last_event_id"] + 1))
    # Every page exactly once, in order, with its text; the interrupted run was retried.
    assert [p["number"] for p in result["pages"]] == list(range(1, 31))
    assert [p["text"].strip() for p in result["pages"]] == PAGES
    assert [e.data["page"]["number"] for e in full if e.type == "page"] == list(range(1, 31))
    retrying = [e for e in full if e.type == "retrying"]
    assert len(retrying) == 1 and retrying[0].data["reason"]["code"] == "interrupted"
    assert done["attempts"] == 2
    assert server.query("SELECT COUNT(*), COUNT(DISTINCT number) FROM pages WHERE job_id = ?",
                        (job["id"],)) == [(30, 30)]


def test_sigkill_during_queue_keeps_every_accepted_job(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    with server.client() as client:
        ids = [client.post("/api/v1/jobs", content=make_pdf([f"j{i}", "x"])).json()["id"] for i in range(6)]
        wait_for_state(client, ids[0], {"running"})
    server.kill()
    server.start()
    with server.client() as client:
        finished = [wait_for_state(client, i, {"completed"}) for i in ids]
    assert all(j["pages_done"] == 2 for j in finished)
    for before, after in zip(finished, finished[1:]):
        assert before["finished_at"] <= after["started_at"]


def test_sigterm_finishes_the_page_puts_the_job_back_and_the_next_start_resumes(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(PAGES[:12])).json()
        wait_for_pages(client, job["id"], 3)
    # uvicorn re-raises the signal once it has shut down, so a graceful stop exits by SIGTERM.
    assert server.stop(timeout=20) in (0, -15)
    assert "Application shutdown complete" in server.log()
    [(state, attempts, done)] = server.query("SELECT state, attempts, pages_done FROM jobs WHERE id = ?",
                                             (job["id"],))
    assert state == "queued" and attempts == 0 and 3 <= done < 12
    server.start()
    with server.client() as client:
        finished = wait_for_state(client, job["id"], {"completed"})
        with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            events = [e for e in read_events(response) if e.id is not None]
    assert finished["attempts"] == 1  # the stop did not spend an attempt
    assert [e.data["page"]["number"] for e in events if e.type == "page"] == list(range(1, 13))
    starts = [e.data for e in events if e.type == "started"]
    assert len(starts) == 2 and starts[1]["resume_from"] == done + 1
