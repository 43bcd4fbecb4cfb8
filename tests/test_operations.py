"""Operating it: /metrics moves as jobs run, logs are JSON lines without secrets or document text."""

from __future__ import annotations

import datetime
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from .docs import make_pdf
from .server import Server, read_events, running_server, scrape, value, wait_for_state

ADMIN, USER = "admin-key-operations-0001", "user-key-operations-00001"


def test_metrics_move_as_jobs_run(make_server: type[Server], tmp_path: Path) -> None:
    marker = tmp_path / "crash-once"
    marker.touch()
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.05", "PAGESTREAM_FAULT_CRASH": f"{marker}:2"})
    before = scrape(server)
    assert value(before, "pagestream_jobs_submitted_total") == 0
    with server.client() as client:
        done = client.post("/api/v1/jobs", content=make_pdf(["a", "b", "c"])).json()
        locked = client.post("/api/v1/jobs", content=make_pdf(["x"], user_password="pw")).json()
        slow = client.post("/api/v1/jobs", content=make_pdf(["s"] * 40)).json()
        queued = client.post("/api/v1/jobs", content=make_pdf(["q"])).json()
        client.post(f"/api/v1/jobs/{queued['id']}/cancel")
        during = scrape(server)
        assert value(during, "pagestream_jobs_submitted_total") == 4
        assert value(during, "pagestream_upload_bytes_total") > 0
        # A stream is open while we look.
        opened = threading.Event()

        def watch() -> None:
            with server.client() as own, own.stream("GET", f"/api/v1/jobs/{slow['id']}/events") as response:
                for _ in read_events(response):
                    opened.set()

        watcher = threading.Thread(target=watch)
        watcher.start()
        assert opened.wait(10)
        assert value(scrape(server), "pagestream_open_streams", kind="job") >= 1
        for job in (done, locked, slow):
            wait_for_state(client, job["id"], {"completed", "failed"})
        watcher.join(30)
    after = scrape(server)
    assert value(after, "pagestream_jobs_completed_total") == 2
    assert value(after, "pagestream_jobs_failed_total", code="password_required") == 1
    assert value(after, "pagestream_jobs_cancelled_total") == 1
    assert value(after, "pagestream_pages_processed_total") == 3 + 40
    assert value(after, "pagestream_child_restarts_total", cause="crashed") == 1
    assert value(after, "pagestream_job_duration_seconds_count") == 2
    assert value(after, "pagestream_job_pages_per_second_count") == 2
    assert value(after, "pagestream_events_delivered_total", kind="job") >= 40
    assert value(after, "pagestream_open_streams", kind="job") == 0
    assert value(after, "pagestream_queue_depth") == 0
    assert value(after, "pagestream_http_requests_total", method="POST", route="/api/v1/jobs", status="202") == 4
    assert value(after, "pagestream_http_request_duration_seconds_count", route="/api/v1/jobs/{job_id}") > 0
    # Labels stay bounded: no job id anywhere in the metrics.
    with server.client() as client:
        text = client.get("/metrics").text
    assert done["id"] not in text and slow["id"] not in text


def test_timeouts_are_counted(make_server: type[Server]) -> None:
    server = make_server(settings={"page_timeout": 0.3}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "1"})
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(["a"])).json()
        wait_for_state(client, job["id"], {"failed"})
    figures = scrape(server)
    assert value(figures, "pagestream_child_timeouts_total", kind="page") == 1
    assert value(figures, "pagestream_jobs_failed_total", code="page_timeout") == 1


def test_metrics_are_protected_like_the_api(make_server: type[Server]) -> None:
    server = make_server(settings={"api_keys": f"{ADMIN}:ops:admin,{USER}:someone"})
    with server.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {USER}"}).status_code == 403
    assert "pagestream_jobs_submitted_total" in str(scrape(server, Authorization=f"Bearer {ADMIN}"))


def test_the_event_loop_s_lag_is_measured_and_a_stalled_loop_shows(make_server: type[Server]) -> None:
    server = make_server()
    assert server.process is not None

    def lagging(figures: dict[tuple[str, tuple[tuple[str, str], ...]], float], over: str) -> float:
        return (value(figures, "pagestream_event_loop_lag_seconds_count")
                - value(figures, "pagestream_event_loop_lag_seconds_bucket", le=over))

    time.sleep(1.0)
    before = scrape(server)
    assert value(before, "pagestream_event_loop_lag_seconds_count") >= 5  # sampled every 100 ms
    # Stop the whole server for 0.3 s, as a loop held by blocking work would be: the sample
    # that straddles the stop comes that much late.
    os.kill(server.process.pid, signal.SIGSTOP)
    time.sleep(0.3)
    os.kill(server.process.pid, signal.SIGCONT)
    time.sleep(0.3)
    after = scrape(server)
    assert lagging(after, "0.1") - lagging(before, "0.1") >= 1
    lag = "pagestream_event_loop_lag_seconds_sum"
    assert value(after, lag) - value(before, lag) >= 0.15


def test_logs_are_json_lines_with_request_ids_and_never_a_key_or_document_text(make_server: type[Server]) -> None:
    secret_text = "confidential-page-text-0123"
    # A zone nine hours from UTC: the times, marked Z, must still be UTC.
    server = make_server(settings={"api_keys": f"{ADMIN}:ops:admin", "log_format": "json"}, env={"TZ": "JST-9"})
    started = datetime.datetime.now(datetime.UTC)
    with server.client(headers={"Authorization": f"Bearer {ADMIN}", "X-Request-ID": "trace-me-42"}) as client:
        response = client.post("/api/v1/jobs", content=make_pdf([secret_text]))
        assert response.headers["x-request-id"] == "trace-me-42"
        job = response.json()
        wait_for_state(client, job["id"], {"completed"})
        client.get(f"/api/v1/jobs/{job['id']}/result")
    with server.client() as client:
        client.get("/api/v1/jobs", headers={"Authorization": "Bearer wrong-key-but-long-enough"})
        generated = client.get("/healthz").headers["x-request-id"]
    time.sleep(0.3)
    lines = [line for line in server.log().splitlines() if line.startswith("{")]
    entries = [orjson.loads(line) for line in lines]
    text = server.log_path.read_text() if server.log_path else ""
    assert ADMIN not in text and "wrong-key-but-long-enough" not in text
    assert secret_text not in text
    requests = [e for e in entries if e.get("logger") == "pagestream.http"]
    submit = next(e for e in requests if e["route"] == "/api/v1/jobs" and e["method"] == "POST")
    assert submit["request_id"] == "trace-me-42" and submit["status"] == 202 and submit["duration_ms"] >= 0
    assert any(e["request_id"] == generated and e["route"] == "/healthz" for e in requests)
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    states = [e["state"] for e in entries if e.get("job_id") == job["id"] and "state" in e]
    assert states == ["running", "completed"]
    for entry in requests:
        logged = datetime.datetime.fromisoformat(entry["time"])
        assert abs(logged - started) < datetime.timedelta(minutes=5), entry


def test_a_store_of_an_earlier_schema_is_migrated_on_start_and_keeps_its_pages_and_queue(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as server, server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(["one", "two", "three"])).json()
        wait_for_state(client, job["id"], {"completed"})
    with running_server(data, args=["--no-worker"]) as server, server.client() as client:
        waiting = [client.post("/api/v1/jobs", content=make_pdf([f"w{n}"])).json() for n in range(3)]
    # Lay the store out again as schema version 2 did: page rows inside their key (WITHOUT ROWID),
    # and no queue counts (version 4).
    with sqlite3.connect(data / "pagestream.db") as db:
        db.executescript("""
            CREATE TABLE pages_v2 (job_id TEXT NOT NULL, number BIGINT NOT NULL, chars BIGINT NOT NULL,
                words BIGINT NOT NULL, ms DOUBLE PRECISION NOT NULL, method TEXT NOT NULL, error TEXT,
                text TEXT NOT NULL, PRIMARY KEY (job_id, number)) WITHOUT ROWID;
            INSERT INTO pages_v2 SELECT * FROM pages;
            DROP TABLE pages;
            ALTER TABLE pages_v2 RENAME TO pages;
            DROP TRIGGER jobs_queue_in;
            DROP TRIGGER jobs_queue_out;
            DROP TRIGGER jobs_queue_moved;
            DROP TABLE queue_counts;
            UPDATE schema_version SET version = 2;
        """)
    db.close()
    with running_server(data, args=["--no-worker"], settings={"max_queued_jobs": 4}) as server, \
            server.client() as client:
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
        assert [p["text"].strip() for p in result["pages"]] == ["one", "two", "three"]
        assert "migrated the store to schema version 3" in server.log()
        assert "migrated the store to schema version 4" in server.log()
        # The queue counts start from the jobs already waiting: 3 of 4.
        fourth = client.post("/api/v1/jobs", content=make_pdf(["w3"]))
        assert (fourth.status_code, fourth.json()["position"]) == (202, 4)
        assert client.post("/api/v1/jobs", content=make_pdf(["w4"])).status_code == 429
    with running_server(data) as server, server.client() as client:
        for queued in [*waiting, fourth.json()]:
            assert wait_for_state(client, queued["id"], {"completed"})["pages_done"] == 1
    with sqlite3.connect(data / "pagestream.db") as db:
        (layout,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'pages'").fetchone()
        assert "WITHOUT ROWID" not in layout.upper()
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(4,)]
        assert db.execute("SELECT COUNT(*) FROM pages").fetchone() == (7,)
        assert db.execute("SELECT COALESCE(SUM(queued), 0) FROM queue_counts").fetchone() == (0,)
    db.close()


def test_the_turnstile_lets_a_few_requests_begin_per_loop_turn_in_order() -> None:
    # A burst of requests (hundreds of watchers opening a stream at once) begins a group per turn
    # of the event loop; one cancelled while it waits (its client left) neither begins nor stalls
    # the others. A stream's opening takes its turn from the same Turns (api.job_stream).
    import asyncio

    from pagestream.app import Turnstile
    from pagestream.turns import Turns

    async def main() -> tuple[list[int], list[int]]:
        begun: list[int] = []

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            begun.append(scope["n"])

        gate = Turnstile(app, turns=Turns(4))
        tasks = [asyncio.ensure_future(gate({"type": "http", "n": n}, None, None)) for n in range(14)]
        await asyncio.sleep(0)
        tasks[9].cancel()
        per_turn = []
        for _ in range(12):
            before = len(begun)
            await asyncio.sleep(0)
            per_turn.append(len(begun) - before)
        await asyncio.gather(*tasks, return_exceptions=True)
        return begun, per_turn

    begun, per_turn = asyncio.run(main())
    assert begun == [n for n in range(14) if n != 9]
    assert max(per_turn) <= 4 and sum(1 for n in per_turn if n) >= 3  # 4 began at once, 9 in the turns after
