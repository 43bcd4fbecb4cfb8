"""Webhooks: a receiver on loopback verifies the signature and sees the retries after it fails twice."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from .docs import make_pdf
from .server import Server, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")

SECRET = "webhook-secret-for-tests"


class Receiver:
    """An HTTP server on loopback that answers 500 to the first ``failures`` POSTs, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[float, dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((time.monotonic(), dict(self.headers), body))
                self.send_response(500 if len(receiver.received) <= receiver.failures else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(failures=2)
    yield r
    r.close()


def verify(headers: dict[str, str], body: bytes) -> bool:
    """The README's verification, as a receiver would write it."""
    parts = dict(item.split("=", 1) for item in headers["Pagestream-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_a_finished_job_is_posted_signed_and_retried_after_two_failures(make_server: type[Server],
                                                                         receiver: Receiver) -> None:
    server = make_server(settings={"webhook_hosts": f"127.0.0.1:{receiver.port}", "webhook_secret": SECRET,
                                   "webhook_backoff": 0.3})
    url = f"http://127.0.0.1:{receiver.port}/hook"
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(["a", "b"]), params={"callback_url": url}).json()
        assert job["callback"] == {"url": url, "state": "waiting", "attempts": []}
        wait_for_state(client, job["id"], {"completed"})
        deadline = time.monotonic() + 20
        while (callback := client.get(f"/api/v1/jobs/{job['id']}").json()["callback"])["state"] != "delivered":
            assert time.monotonic() < deadline, callback
            time.sleep(0.1)
    assert [a["status"] for a in callback["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in callback["attempts"]] == [1, 2, 3]
    assert callback["attempts"][0]["error"] == "the receiver answered 500" and callback["attempts"][2]["error"] is None
    assert len(receiver.received) == 3
    for _, headers, body in receiver.received:
        assert verify(headers, body)
        assert headers["Pagestream-Event"] == "completed"
        sent = orjson.loads(body)
        assert sent["type"] == "completed" and sent["job"]["id"] == job["id"]
        assert sent["job"]["pages_done"] == 2
    # Exponential backoff: each retry waits at least its delay, 0.3 s and then 0.6 s (less the 0.05 s
    # the sender looks ahead). A loaded machine only makes the waits longer, so no upper bound.
    times = [t for t, _, _ in receiver.received]
    assert times[1] - times[0] >= 0.3 - 0.06 and times[2] - times[1] >= 0.6 - 0.06
    # A forged body does not verify.
    _, headers, body = receiver.received[0]
    assert not verify(headers, body.replace(b"completed", b"failed"))


def test_cancelled_and_failed_jobs_are_posted_too(make_server: type[Server], receiver: Receiver) -> None:
    receiver.failures = 0
    server = make_server(settings={"webhook_hosts": "127.0.0.1", "webhook_secret": SECRET},
                         env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.5"})
    url = f"http://127.0.0.1:{receiver.port}/hook"
    with server.client() as client:
        running = client.post("/api/v1/jobs", content=make_pdf(["x"] * 5), params={"callback_url": url}).json()
        queued = client.post("/api/v1/jobs", content=make_pdf(["y"]), params={"callback_url": url}).json()
        client.post(f"/api/v1/jobs/{queued['id']}/cancel")
        bad = client.post("/api/v1/jobs", content=make_pdf(["z"], user_password="pw"),
                          params={"callback_url": url}).json()
        client.post(f"/api/v1/jobs/{running['id']}/cancel")
        for job in (running, queued, bad):
            wait_for_state(client, job["id"], {"cancelled", "failed"})
        deadline = time.monotonic() + 20
        while len(receiver.received) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    events = {orjson.loads(body)["job"]["id"]: headers["Pagestream-Event"] for _, headers, body in receiver.received}
    assert events == {running["id"]: "cancelled", queued["id"]: "cancelled", bad["id"]: "failed"}


def test_a_callback_url_off_the_allow_list_is_refused(make_server: type[Server]) -> None:
    server = make_server(settings={"webhook_hosts": "hooks.example.com", "webhook_secret": SECRET})
    with server.client() as client:
        for url in ("http://127.0.0.1:9/internal", "http://169.254.169.254/latest/meta-data",
                    "file:///etc/passwd", "http://user:pw@hooks.example.com/x", "not a url"):
            response = client.post("/api/v1/jobs", content=make_pdf(["a"]), params={"callback_url": url})
            assert response.status_code == 400, url
            assert response.json()["error"]["code"] == "invalid_options"
        assert client.post("/api/v1/jobs", content=make_pdf(["a"]),
                           params={"callback_url": "https://hooks.example.com/pagestream"}).status_code == 202
    plain = make_server()
    with plain.client() as client:
        response = client.post("/api/v1/jobs", content=make_pdf(["a"]),
                               params={"callback_url": "https://hooks.example.com/x"})
        assert response.status_code == 400 and "webhook_hosts" in response.json()["error"]["message"]
