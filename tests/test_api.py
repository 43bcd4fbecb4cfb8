"""The HTTP API against a real server: intake, errors, reading jobs and results, user actions."""

from __future__ import annotations

import socket
import time

import httpx
import orjson
import pytest

from .docs import make_epub, make_pdf
from .server import Server, finished_long_text, metric, proc_status, read_events, stalled_clients, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")

PDF = make_pdf(["first page", "second page", "third page"])


def submit_raw(client: httpx.Client, body: bytes, **params: str) -> httpx.Response:
    return client.post("/api/v1/jobs", content=body, params=params, headers={"Content-Type": "application/pdf"})


def test_raw_upload_answers_202_with_the_job_location_and_links(server: Server) -> None:
    with server.client() as client:
        response = submit_raw(client, PDF, filename="three.pdf")
        assert response.status_code == 202
        job = response.json()
        assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
        assert job["filename"] == "three.pdf"
        assert job["kind"] == "pdf" and job["size"] == len(PDF)
        assert job["links"] == {
            "self": f"/api/v1/jobs/{job['id']}",
            "events": f"/api/v1/jobs/{job['id']}/events",
            "result": f"/api/v1/jobs/{job['id']}/result",
        }
        done = wait_for_state(client, job["id"], {"completed"})
        assert done["pages_done"] == done["pages_total"] == 3 and done["percent"] == 100
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
        assert [p["text"].strip() for p in result["pages"]] == ["first page", "second page", "third page"]
        assert result["partial"] is False


def test_multipart_upload_makes_one_job_per_file_in_order(server: Server) -> None:
    files = [
        ("file", ("a.pdf", make_pdf(["a"]), "application/pdf")),
        ("file", ("b.epub", make_epub(["<p>chapter b</p>"]), "application/epub+zip")),
        ("file", ("c.txt", b"plain text c\n", "text/plain")),
    ]
    with server.client() as client:
        response = client.post("/api/v1/jobs", files=files)
        assert response.status_code == 202
        jobs = response.json()["jobs"]
        assert [j["filename"] for j in jobs] == ["a.pdf", "b.epub", "c.txt"]
        assert [j["kind"] for j in jobs] == ["pdf", "epub", "text"]
        assert jobs[0]["seq"] < jobs[1]["seq"] < jobs[2]["seq"]
        for job in jobs:
            assert wait_for_state(client, job["id"], {"completed"})["pages_done"] == 1


def test_a_single_multipart_file_answers_with_the_job_itself(server: Server) -> None:
    with server.client() as client:
        response = client.post("/api/v1/jobs", files={"file": ("one.md", b"# Title\n\nsome *text*\n")},
                               data={"pages": "1"})
        assert response.status_code == 202
        assert response.json()["kind"] == "markdown"
        assert response.json()["options"] == {"pages": "1", "has_password": False}


def test_the_type_is_sniffed_from_the_bytes_not_the_name_or_content_type(server: Server) -> None:
    with server.client() as client:
        lying = client.post("/api/v1/jobs", content=PDF, params={"filename": "notes.txt"},
                            headers={"Content-Type": "text/plain"})
        assert lying.status_code == 202 and lying.json()["kind"] == "pdf"
        png = client.post("/api/v1/jobs", content=b"\x89PNG\r\n\x1a\n" + bytes(200), params={"filename": "a.pdf"},
                          headers={"Content-Type": "application/pdf"})
        assert png.status_code == 415
        assert png.json()["error"]["code"] == "unsupported_type"
        assert "a.pdf" in png.json()["error"]["message"]


def test_an_empty_upload_is_refused_with_400(server: Server) -> None:
    with server.client() as client:
        response = client.post("/api/v1/jobs", content=b"")
        assert response.status_code == 400 and response.json()["error"]["code"] == "empty_upload"
        response = client.post("/api/v1/jobs", files={"file": ("e.pdf", b"")})
        assert response.status_code == 400 and response.json()["error"]["code"] == "empty_upload"


def test_multipart_without_a_file_part_is_a_bad_request(server: Server) -> None:
    with server.client() as client:
        # (None, value) makes a form field with no file name: a multipart body without a file.
        response = client.post("/api/v1/jobs", files={"pages": (None, "1")})
        assert response.request.headers["content-type"].startswith("multipart/form-data")
        assert response.status_code == 400 and "no file part" in response.json()["error"]["message"]


def test_bad_options_are_refused_and_nothing_is_queued(server: Server) -> None:
    with server.client() as client:
        before = client.get("/api/v1/jobs", params={"limit": 200}).json()["jobs"]
        for pages in ("0", "3-1", "a-b", "1,,2"):
            response = submit_raw(client, PDF, pages=pages)
            assert response.status_code == 400, pages
            assert response.json()["error"]["code"] == "invalid_options"
        after = client.get("/api/v1/jobs", params={"limit": 200}).json()["jobs"]
        assert len(after) == len(before)


def test_an_upload_over_the_limit_gets_413_while_streaming(make_server: type[Server]) -> None:
    server = make_server(settings={"max_upload_mb": 0.05})
    big = PDF + b"%" * 200_000

    def chunks():  # type: ignore[no-untyped-def]
        for start in range(0, len(big), 16_384):
            yield big[start:start + 16_384]

    with server.client() as client:
        response = client.post("/api/v1/jobs", content=chunks(), headers={"Content-Type": "application/pdf"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "too_large"
        response = client.post("/api/v1/jobs", files={"file": ("big.pdf", big)})
        assert response.status_code == 413
        assert client.get("/api/v1/jobs").json()["jobs"] == []
    # Nothing of the refused uploads stays in the spool.
    assert list((server.data_dir / "spool").iterdir()) == []


def test_a_full_queue_answers_429_with_retry_after(make_server: type[Server]) -> None:
    server = make_server(settings={"max_queued_jobs": 2}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.5"})
    with server.client() as client:
        codes = [submit_raw(client, PDF).status_code for _ in range(4)]
        # One job runs (it left the queue), two wait; the fourth finds the queue full.
        assert codes[:3] == [202, 202, 202] and codes[3] == 429
        refused = submit_raw(client, PDF)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) > 0


def test_the_queue_limit_follows_jobs_in_and_out_of_the_queue(make_server: type[Server]) -> None:
    # The store keeps the number of queued jobs as they move (submitted, cancelled, retried,
    # claimed by the worker, deleted): the limit must count exactly the jobs waiting.
    server = make_server(settings={"max_queued_jobs": 2}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.4"})
    with server.client() as client:
        running = submit_raw(client, make_pdf(["a", "b", "c", "d", "e"])).json()
        wait_for_state(client, running["id"], {"running"})
        b, c = (submit_raw(client, PDF).json() for _ in range(2))
        assert submit_raw(client, PDF).status_code == 429  # b and c wait
        assert client.post(f"/api/v1/jobs/{b['id']}/cancel").json()["state"] == "cancelled"
        d = submit_raw(client, PDF)
        assert d.status_code == 202 and d.json()["position"] == 2  # c and d wait
        assert client.post(f"/api/v1/jobs/{b['id']}/retry").status_code == 429
        assert client.post(f"/api/v1/jobs/{d.json()['id']}/cancel").status_code == 202
        assert client.delete(f"/api/v1/jobs/{d.json()['id']}").status_code == 204  # gone, not counted twice
        retried = client.post(f"/api/v1/jobs/{b['id']}/retry")
        assert (retried.status_code, retried.json()["position"]) == (202, 2)  # c and b wait
        assert submit_raw(client, PDF).status_code == 429
        client.post(f"/api/v1/jobs/{running['id']}/cancel")
        wait_for_state(client, c["id"], {"running"})  # the worker took c (3 pages, 1.2 s): only b waits
        e = submit_raw(client, PDF)
        assert (e.status_code, e.json()["position"]) == (202, 2)
        assert submit_raw(client, PDF).status_code == 429
        waiting = client.get("/api/v1/jobs", params={"state": "queued"}).json()["jobs"]
        assert {j["id"] for j in waiting} == {b["id"], e.json()["id"]}


def test_idempotency_key_returns_the_same_job(server: Server) -> None:
    with server.client() as client:
        headers = {"Idempotency-Key": f"k-{time.time()}", "Content-Type": "application/pdf"}
        first = client.post("/api/v1/jobs", content=PDF, headers=headers)
        again = client.post("/api/v1/jobs", content=PDF, headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = client.post("/api/v1/jobs", content=make_pdf(["different"]), headers=headers)
        assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_conflict"


def test_unknown_jobs_routes_and_methods_answer_in_the_error_shape(server: Server) -> None:
    with server.client() as client:
        for method, path, status in [
            ("GET", "/api/v1/jobs/0123456789abcdef", 404),
            ("GET", "/api/v1/jobs/0123456789abcdef/result", 404),
            ("GET", "/api/v1/jobs/0123456789abcdef/events", 404),
            ("POST", "/api/v1/jobs/0123456789abcdef/cancel", 404),
            ("DELETE", "/api/v1/jobs/0123456789abcdef", 404),
            ("GET", "/api/v1/nothing-here", 404),
            ("PUT", "/api/v1/jobs", 405),
        ]:
            response = client.request(method, path)
            assert response.status_code == status, (method, path)
            assert set(response.json()["error"]) == {"code", "message"}


def test_list_filters_by_state_orders_and_paginates(server: Server) -> None:
    with server.client() as client:
        ids = [submit_raw(client, make_pdf([f"list {i}"])).json()["id"] for i in range(5)]
        for job_id in ids:
            wait_for_state(client, job_id, {"completed"})
        seen, cursor = [], None
        while True:
            params = {"limit": 2, "order": "oldest", "state": "completed"}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/v1/jobs", params=params).json()
            assert len(page["jobs"]) <= 2
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next"]
            if cursor is None:
                break
        assert [i for i in seen if i in ids] == ids
        newest = client.get("/api/v1/jobs", params={"limit": 5}).json()["jobs"]
        assert [j["id"] for j in newest] == ids[::-1]
        assert client.get("/api/v1/jobs", params={"state": "bogus"}).status_code == 400
        assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 400


def test_result_formats_and_409_until_finished(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        job = submit_raw(client, make_pdf(["alpha", "beta", "gamma", "delta"])).json()
        running = wait_for_state(client, job["id"], {"running"})
        early = client.get(f"/api/v1/jobs/{job['id']}/result")
        assert early.status_code == 409 and early.json()["error"]["code"] == "not_finished"
        deadline = time.monotonic() + 10
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        partial = client.get(f"/api/v1/jobs/{job['id']}/result", params={"partial": 1}).json()
        assert partial["partial"] is True and 1 <= len(partial["pages"]) < 4
        assert running["state"] == "running"
        wait_for_state(client, job["id"], {"completed"})
        text = client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "text"})
        assert text.headers["content-type"].startswith("text/plain")
        assert [t.strip() for t in text.text.split("\f")] == ["alpha", "beta", "gamma", "delta"]
        ndjson = client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "ndjson"})
        assert [line for line in ndjson.text.splitlines()][0].startswith('{"number":1')
        assert len(ndjson.text.splitlines()) == 4


def test_cancel_a_queued_job_removes_it_from_the_queue_at_once(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.5"})
    with server.client() as client:
        first = submit_raw(client, make_pdf(["a", "b", "c"])).json()
        second = submit_raw(client, PDF).json()
        third = submit_raw(client, PDF).json()
        wait_for_state(client, first["id"], {"running"})
        assert client.get(f"/api/v1/jobs/{third['id']}").json()["position"] == 2
        cancelled = client.post(f"/api/v1/jobs/{second['id']}/cancel")
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "cancelled"
        assert client.get(f"/api/v1/jobs/{third['id']}").json()["position"] == 1
        again = client.post(f"/api/v1/jobs/{second['id']}/cancel")
        assert again.status_code == 409


def test_retry_and_delete(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        job = submit_raw(client, make_pdf(["one", "two", "three", "four", "five"])).json()
        wait_for_state(client, job["id"], {"running"})
        assert client.delete(f"/api/v1/jobs/{job['id']}").status_code == 409
        assert client.post(f"/api/v1/jobs/{job['id']}/retry").status_code == 409
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
        cancelled = wait_for_state(client, job["id"], {"cancelled"})
        assert cancelled["pages_done"] < 5
        retried = client.post(f"/api/v1/jobs/{job['id']}/retry")
        assert retried.status_code == 202
        assert (retried.json()["state"], retried.json()["position"]) == ("queued", 1)  # as the retry committed it
        done = wait_for_state(client, job["id"], {"completed"})
        assert done["pages_done"] == 5
        pages = client.get(f"/api/v1/jobs/{job['id']}/result").json()["pages"]
        assert [p["number"] for p in pages] == [1, 2, 3, 4, 5]
        assert server.has_upload(job["id"])
        assert client.delete(f"/api/v1/jobs/{job['id']}").status_code == 204
        assert client.get(f"/api/v1/jobs/{job['id']}").status_code == 404
        assert not server.has_upload(job["id"])


def test_healthz_schemas_and_openapi(server: Server) -> None:
    with server.client() as client:
        health = client.get("/healthz").json()
        assert health["status"] == "ok"
        listing = client.get("/schemas/").json()["schemas"]
        assert "job.json" in listing and "events/page.json" in listing
        job_schema = client.get("/schemas/job.json")
        assert job_schema.status_code == 200 and job_schema.json()["title"]
        assert client.get("/schemas/nope.json").status_code == 404
        spec = client.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.1") and "/api/v1/jobs" in spec["paths"]


@pytest.mark.parametrize("password, outcome", [(None, "password_required"), ("nope", "wrong_password"),
                                                ("secret", "completed")])
def test_encrypted_pdf_password_option(server: Server, password: str | None, outcome: str) -> None:
    encrypted = make_pdf(["hidden text"], user_password="secret")
    with server.client() as client:
        params = {"password": password} if password else {}
        job = submit_raw(client, encrypted, **params).json()
        assert job["options"]["has_password"] is (password is not None)
        done = wait_for_state(client, job["id"], {"completed", "failed"})
        if outcome == "completed":
            assert done["state"] == "completed"
            text = client.get(f"/api/v1/jobs/{job['id']}/result", params={"format": "text"}).text
            assert "hidden text" in text
        else:
            assert done["state"] == "failed" and done["error"]["code"] == outcome


def test_page_ranges_select_pages(server: Server) -> None:
    with server.client() as client:
        job = submit_raw(client, make_pdf([f"p{i}" for i in range(1, 8)]), pages="2-3,6,40").json()
        done = wait_for_state(client, job["id"], {"completed"})
        assert done["pages_total"] == 3
        pages = client.get(f"/api/v1/jobs/{job['id']}/result").json()["pages"]
        assert [p["number"] for p in pages] == [2, 3, 6]
        none = submit_raw(client, make_pdf(["x"]), pages="5-9").json()
        failed = wait_for_state(client, none["id"], {"completed", "failed"})
        assert failed["state"] == "failed" and failed["error"]["code"] == "no_pages"


def test_a_pages_chars_and_words_are_counted_from_its_text_even_when_cut(make_server: type[Server]) -> None:
    server = make_server(settings={"max_page_chars": 28})
    body = "one two  three\n\tfour\fsolo\f\f" + "word " * 20
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=body.encode(), params={"filename": "a.txt"}).json()
        wait_for_state(client, job["id"], {"completed"})
        pages = client.get(f"/api/v1/jobs/{job['id']}/result").json()["pages"]
        with client.stream("GET", f"/api/v1/jobs/{job['id']}/events", params={"after": 0}) as response:
            events = [e.data["page"] for e in read_events(response) if e.type == "page"]
    figures = [(p["number"], p["chars"], p["words"], p["error"] is not None) for p in pages]
    # the last page's 100 characters were cut at 28: six words, the last of them "word" cut to "wor"
    assert figures == [(1, 20, 4, False), (2, 4, 1, False), (3, 0, 0, False), (4, 28, 6, True)]
    assert all(p["chars"] == len(p["text"]) and p["words"] == len(p["text"].split()) for p in pages)
    assert [{k: p[k] for k in ("number", "chars", "words", "error")} for p in pages] == \
        [{k: e[k] for k in ("number", "chars", "words", "error")} for e in events]


@pytest.mark.stores("sqlite")
def test_a_long_result_goes_out_as_it_is_read_and_slow_downloads_hold_little_of_it(
    make_server: type[Server],
) -> None:
    # 5,000 pages of 3 KB: 15 MB of text. Built whole, each download that its client read slowly kept
    # a copy in the server until it was read (364 MB for these 20). Sent as read, the kernel takes up to
    # 4 MB of each (not the server's memory) and the server holds a batch: 78 MB, most of it the
    # allocator keeping what the encoding of the 4 MB used.
    pages, stalled = 5000, 20
    server = make_server()
    assert server.process is not None
    with server.client() as client:
        job_id, _ = finished_long_text(client, pages)

        def answered() -> float:
            return metric(server, "pagestream_http_request_duration_seconds_count",
                          route="/api/v1/jobs/{job_id}/result")

        before_kb = proc_status(server.process.pid)["VmRSS"]
        with stalled_clients(server, f"/api/v1/jobs/{job_id}/result", stalled, lambda: answered() == stalled):
            grown_mb = (proc_status(server.process.pid)["VmRSS"] - before_kb) / 1024
            whole = client.get(f"/api/v1/jobs/{job_id}/result").json()
            text = client.get(f"/api/v1/jobs/{job_id}/result", params={"format": "text"}).text
            lines = client.get(f"/api/v1/jobs/{job_id}/result", params={"format": "ndjson"}).text.splitlines()
    assert whole["pages_done"] == pages and whole["state"] == "completed" and whole["partial"] is False
    assert [p["number"] for p in whole["pages"]] == list(range(1, pages + 1))
    assert text.split("\f") == [p["text"] for p in whole["pages"]]
    assert [orjson.loads(line) for line in lines] == whole["pages"]
    size_mb = len(text) / 2**20
    assert grown_mb < stalled * size_mb / 2, (grown_mb, size_mb)


@pytest.mark.stores("sqlite")
def test_a_result_whose_job_is_deleted_while_it_is_sent_is_cut_short_not_ended_as_whole(
    make_server: type[Server],
) -> None:
    server = make_server()
    with server.client() as client:
        job_id, body = finished_long_text(client, 5000)
        with socket.create_connection(("127.0.0.1", server.port)) as reader:
            reader.sendall(f"GET /api/v1/jobs/{job_id}/result?format=text HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = reader.recv(65536)  # the answer has begun; the rest waits for this client
            assert received.startswith(b"HTTP/1.1 200")
            assert client.delete(f"/api/v1/jobs/{job_id}").status_code == 204
            reader.settimeout(30)
            while chunk := reader.recv(1 << 20):
                received += chunk
        # chunked: a whole answer ends with the empty chunk; this one was closed before it
        assert not received.endswith(b"0\r\n\r\n")
        assert len(received) < len(body)
        assert client.get("/healthz").status_code == 200
