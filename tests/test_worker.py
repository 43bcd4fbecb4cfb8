"""The worker against a real server: FIFO, one job at a time, cancel, limits, crashes of the child."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .docs import make_pdf
from .server import Server, read_events, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")


def submit(client: httpx.Client, body: bytes, **params: str) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", content=body, params=params)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def log_of(client: httpx.Client, job_id: str) -> list[tuple[int | None, str, dict[str, Any]]]:
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        return [(e.id, e.type, e.data) for e in read_events(response) if e.id is not None]


def test_five_jobs_run_one_at_a_time_in_submission_order(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.05"})
    with server.client() as client:
        jobs = [submit(client, make_pdf([f"job {i} page {p}" for p in range(4)]), filename=f"{i}.pdf")
                for i in range(5)]
        finished = [wait_for_state(client, j["id"], {"completed"}) for j in jobs]
    # Each started after the one before it finished: never two at once, never out of order.
    for before, after in zip(finished, finished[1:]):
        assert before["finished_at"] <= after["started_at"]
    assert [j["seq"] for j in finished] == sorted(j["seq"] for j in finished)


def test_cancel_a_running_job_stops_at_a_page_boundary_and_keeps_its_pages(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"})
    with server.client() as client:
        job = submit(client, make_pdf([f"page {i}" for i in range(1, 41)]))
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        done_at_cancel = response.json()["pages_done"]
        cancelled = wait_for_state(client, job["id"], {"cancelled"}, timeout=10)
        # It stops within a page: at most the page under way (and one already in the pipe) finishes.
        assert done_at_cancel <= cancelled["pages_done"] <= done_at_cancel + 2
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
        assert len(result["pages"]) == cancelled["pages_done"] and result["partial"] is True
        assert [p["text"].strip() for p in result["pages"]] == [f"page {i}" for i in range(1, len(result["pages"]) + 1)]
        events = log_of(client, job["id"])
        assert events[-1][1] == "cancelled"
        # The worker goes on with the next job.
        after = submit(client, make_pdf(["next"]))
        assert wait_for_state(client, after["id"], {"completed"})["pages_done"] == 1


def test_a_stalled_page_fails_the_job_with_page_timeout_and_the_next_job_runs(make_server: type[Server]) -> None:
    server = make_server(settings={"page_timeout": 0.5}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "2"})
    with server.client() as client:
        stalled = submit(client, make_pdf(["a", "b"]))
        failed = wait_for_state(client, stalled["id"], {"failed"}, timeout=20)
        assert failed["error"]["code"] == "page_timeout"
        assert log_of(client, stalled["id"])[-1][2]["error"]["code"] == "page_timeout"


def test_the_total_timeout_fails_the_job_with_job_timeout(make_server: type[Server]) -> None:
    server = make_server(settings={"job_timeout": 1.0, "page_timeout": 5}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        job = submit(client, make_pdf([f"p{i}" for i in range(20)]))
        failed = wait_for_state(client, job["id"], {"failed"}, timeout=20)
        assert failed["error"]["code"] == "job_timeout"
        assert 1 <= failed["pages_done"] < 20


@pytest.mark.stores("sqlite")  # the child's limit; the store only adds minutes of copying 330 MB
def test_the_memory_limit_fails_the_job_with_memory_limit(make_server: type[Server], tmp_path: Path) -> None:
    server = make_server(settings={"child_memory_mb": 400, "max_upload_mb": 400})
    big = (b"lorem ipsum dolor sit amet " * 40 + b"\n") * 300_000  # about 330 MB of plain text
    with server.client() as client:
        job = submit(client, big, filename="huge.txt")
        failed = wait_for_state(client, job["id"], {"failed", "completed"}, timeout=120)
        assert failed["state"] == "failed" and failed["error"]["code"] == "memory_limit", failed
        small = submit(client, make_pdf(["still fine"]))
        assert wait_for_state(client, small["id"], {"completed"})["pages_done"] == 1


def test_a_crashed_child_is_replaced_and_the_job_resumes_at_the_next_page(make_server: type[Server],
                                                                          tmp_path: Path) -> None:
    marker = tmp_path / "crash-once"
    marker.touch()
    server = make_server(env={"PAGESTREAM_FAULT_CRASH": f"{marker}:4"})
    with server.client() as client:
        job = submit(client, make_pdf([f"page {i}" for i in range(1, 9)]))
        done = wait_for_state(client, job["id"], {"completed", "failed"})
        assert done["state"] == "completed" and done["attempts"] == 2
        events = log_of(client, job["id"])
        types = [t for _, t, _ in events]
        assert types.count("retrying") == 1 and types.count("started") == 2
        retrying = next(d for _, t, d in events if t == "retrying")
        assert retrying["reason"]["code"] == "child_crashed" and retrying["pages_done"] == 3
        second_start = [d for _, t, d in events if t == "started"][1]
        assert second_start["resume_from"] == 4 and second_start["attempt"] == 2
        assert [d["page"]["number"] for _, t, d in events if t == "page"] == list(range(1, 9))
        assert [e[0] for e in events] == list(range(1, len(events) + 1))


def test_a_child_that_keeps_crashing_fails_the_job_after_max_attempts(make_server: type[Server],
                                                                     tmp_path: Path) -> None:
    server = make_server(settings={"max_attempts": 2}, env={"PAGESTREAM_FAULT_CRASH": f"{tmp_path}/x:2"})
    # The marker is put back each time the child removes it, so every attempt crashes at page 2.
    marker = tmp_path / "x"
    with server.client() as client:
        marker.touch()
        job = submit(client, make_pdf(["a", "b", "c"]))
        deadline = time.monotonic() + 30
        while (state := client.get(f"/api/v1/jobs/{job['id']}").json())["state"] not in ("failed", "completed"):
            marker.touch()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert state["state"] == "failed" and state["error"]["code"] == "child_crashed"
        assert state["pages_done"] == 1 and state["attempts"] == 2
