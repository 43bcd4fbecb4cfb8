"""Several machines on one PostgreSQL: two API replicas, two workers (one active, one standby).

Global FIFO across replicas; the active worker killed mid-job and the standby finishing it from
the next page; a client switching replicas with Last-Event-ID and missing nothing; the
PostgreSQL server itself restarted mid-job; two replicas submitting at once keeping the queue
limit and giving out exact positions.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .docs import make_pdf
from .pg import Cluster
from .server import Event, Server, collect_events, read_events, wait_for_state

SLOW = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.1"}


@contextlib.contextmanager
def running(processes: list[Server]) -> Iterator[None]:
    """Start each process in a data folder of its own; kill them all at the end."""
    try:
        for process in processes:
            process.data_dir.mkdir()
            process.start()
        yield
    finally:
        for process in processes:
            process.kill()


@pytest.fixture
def cluster(postgres: Cluster, tmp_path: Path) -> Any:
    """Two API processes (--no-worker) and two workers on a fresh database."""
    db = postgres.new_database()
    apis = [Server(tmp_path / f"api{i}", settings={"db": db}, args=["--no-worker"]) for i in (1, 2)]
    workers = [Server(tmp_path / f"worker{i}", settings={"db": db}, env=SLOW, command="worker") for i in (1, 2)]
    with running([*apis, *workers]):
        yield apis, workers


def active(workers: list[Server]) -> Server:
    for worker in workers:
        if worker.process is not None and "is the worker now" in worker.log():
            return worker
    raise AssertionError("no worker holds the lease")


def submit(api: Server, pages: list[str]) -> dict[str, Any]:
    with api.client() as client:
        response = client.post("/api/v1/jobs", content=make_pdf(pages))
        assert response.status_code == 202, response.text
        job: dict[str, Any] = response.json()
        return job


def test_jobs_from_both_replicas_run_one_at_a_time_in_global_submission_order(cluster: Any) -> None:
    apis, workers = cluster
    jobs = [submit(apis[i % 2], [f"job {i} page {p}" for p in range(3)]) for i in range(6)]
    with apis[0].client() as client:
        finished = [wait_for_state(client, job["id"], {"completed"}) for job in jobs]
    assert [j["seq"] for j in finished] == sorted(j["seq"] for j in finished)
    for before, after in zip(finished, finished[1:]):
        assert before["finished_at"] <= after["started_at"]
    # Either replica sees every job.
    with apis[1].client() as client:
        listed = {j["id"] for j in client.get("/api/v1/jobs", params={"limit": 50}).json()["jobs"]}
    assert {j["id"] for j in jobs} <= listed
    # Exactly one worker worked.
    assert sum("is the worker now" in w.log() for w in workers) == 1


def test_the_standby_finishes_a_job_whose_worker_was_killed_and_a_client_switching_replicas_misses_nothing(
        cluster: Any) -> None:
    apis, workers = cluster
    pages = [f"failover page {i}" for i in range(1, 41)]
    job = submit(apis[0], pages)
    seen: list[Event] = []

    reader = threading.Thread(target=collect_events, args=(apis[0].url, job["id"], None, seen))
    reader.start()
    with apis[1].client() as client:
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = active(workers)
        first.kill()  # the active worker dies mid-job
        apis[0].kill()  # and the replica the client streams through
        reader.join(10)
        last = max(e.id for e in seen if e.id is not None)
        collect_events(apis[1].url, job["id"], last, seen)  # the client resumes on the other replica
        done = wait_for_state(client, job["id"], {"completed"}, timeout=60)
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
    standby = next(w for w in workers if w is not first)
    assert "is the worker now" in standby.log()
    ids = [e.id for e in seen if e.id is not None]
    assert ids == list(range(1, done["last_event_id"] + 1))  # every event once, across two replicas
    assert [p["number"] for p in result["pages"]] == list(range(1, 41))
    assert [p["text"].strip() for p in result["pages"]] == pages
    kinds = [e.type for e in seen if e.id is not None]
    assert kinds.count("retrying") == 1 and kinds[-1] == "completed"
    second_start = [e.data for e in seen if e.type == "started"][-1]
    assert second_start["resume_from"] > 10  # taken up from the next unfinished page


def test_postgresql_restarted_mid_job_the_processes_reconnect_and_nothing_is_lost(postgres: Cluster,
                                                                                  cluster: Any) -> None:
    apis, _ = cluster
    job = submit(apis[0], [f"restart page {i}" for i in range(1, 31)])
    with apis[0].client() as client:
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    postgres.restart()
    with apis[1].client() as client:
        deadline = time.monotonic() + 90
        while True:
            try:
                state = client.get(f"/api/v1/jobs/{job['id']}")
                if state.status_code == 200 and state.json()["state"] in ("completed", "failed"):
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the job did not finish after PostgreSQL came back"
            time.sleep(0.2)
        assert state.json()["state"] == "completed", state.json()
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
        with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            ids = [e.id for e in read_events(response) if e.id is not None]
    assert [p["number"] for p in result["pages"]] == list(range(1, 31))
    assert ids == list(range(1, len(ids) + 1))
    # And the replica keeps serving after the restart.
    assert submit(apis[1], ["after the restart"])["state"] in ("queued", "running")


def test_the_python_client_fails_over_between_replicas(cluster: Any) -> None:
    from pagestream import Client, Reconnect

    apis, _ = cluster
    pages = [f"client failover page {i}" for i in range(1, 31)]
    with Client([apis[0].url, apis[1].url], reconnect=Reconnect(initial=0.05, maximum=0.5)) as client:
        job = client.submit(make_pdf(pages), filename="failover.pdf")
        events = client.events(job["id"])
        seen = []
        for event in events:
            seen.append(event)
            if event["type"] == "page" and event["page"]["number"] == 8:
                apis[0].kill()  # the replica the client talks to dies mid-stream
        assert client.url == apis[1].url
        # Plain requests go to the replica that is left.
        assert client.get(job["id"])["state"] == "completed"
        assert [p["number"] for p in client.result(job["id"])["pages"]] == list(range(1, 31))
    numbers = [e["page"]["number"] for e in seen if e["type"] == "page"]
    assert numbers == list(range(1, 31))
    assert seen[-1]["type"] == "completed"


def test_two_replicas_submitting_at_the_same_moment_keep_the_queue_limit_and_exact_positions(
        postgres: Cluster, tmp_path: Path) -> None:
    import psycopg

    db = postgres.new_database()
    apis = [Server(tmp_path / f"api{i}", settings={"db": db, "max_queued_jobs": 2}, args=["--no-worker"])
            for i in (1, 2)]
    with running(apis):
        assert submit(apis[0], ["first"])["position"] == 1
        # A third writer holds the queue's end, as a replica in the middle of a submission would,
        # while each replica takes one submission; both wait for it, then go one after the other.
        outcomes: list[httpx.Response] = []

        def post(api: Server) -> None:
            with api.client() as client:
                outcomes.append(client.post("/api/v1/jobs", content=make_pdf(["racing"])))

        with psycopg.connect(db) as holder:
            holder.execute("UPDATE counters SET value = value WHERE name = 'seq'")
            posts = [threading.Thread(target=post, args=(api,)) for api in apis]
            for thread in posts:
                thread.start()
            deadline = time.monotonic() + 20
            while holder.execute("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event_type = 'Lock'").fetchone()[0] < 2:
                assert time.monotonic() < deadline, "the two submissions never reached the store"
                time.sleep(0.05)
            holder.commit()
        for thread in posts:
            thread.join(30)
        assert sorted(r.status_code for r in outcomes) == [202, 429], [r.text for r in outcomes]
        accepted = next(r.json() for r in outcomes if r.status_code == 202)
        assert accepted["position"] == 2
        assert apis[1].query("SELECT COUNT(*) FROM jobs WHERE state = 'queued'") == [(2,)]
