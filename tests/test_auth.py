"""Nobody sees what is not theirs: two owners and an admin try every endpoint and both streams."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest

from .docs import make_pdf
from .server import ROOT, Server, free_port, read_events, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")

ALICE, BOB, ADMIN = "alice-key-0123456789", "bob-key-0123456789ab", "admin-key-0123456789"
KEYS = f"{ALICE}:alice,{BOB}:bob:user,{ADMIN}:root:admin"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, store_kind: str) -> Any:
    settings: dict[str, Any] = {"api_keys": KEYS}
    if store_kind == "postgresql":
        settings["db"] = request.getfixturevalue("postgres").new_database()
    server = Server(tmp_path_factory.mktemp("keyed"), settings=settings).start()
    yield server
    server.kill()


def submit(server: Server, key: str, pages: list[str]) -> dict[str, Any]:
    with server.client(headers=bearer(key)) as client:
        response = client.post("/api/v1/jobs", content=make_pdf(pages))
        assert response.status_code == 202
        job: dict[str, Any] = response.json()
        return wait_for_state(client, job["id"], {"completed"})


def test_without_a_key_every_api_call_is_401_but_the_ui_and_contract_are_open(keyed: Server) -> None:
    with keyed.client() as client:
        for method, path in [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/events"),
                             ("GET", "/api/v1/jobs/0123456789abcdef"), ("GET", "/api/v1/jobs/0123456789abcdef/events")]:
            response = client.request(method, path)
            assert response.status_code == 401, path
            assert response.json()["error"]["code"] == "unauthorized"
        wrong = client.get("/api/v1/jobs", headers=bearer("not-a-key-at-all-xxxx"))
        assert wrong.status_code == 401
        assert "not-a-key" not in wrong.text
        for path in ("/", "/healthz", "/schemas/job.json", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        assert "unauthorized" not in (keyed.log() or "").lower() or "not-a-key" not in keyed.log()


def test_owners_see_only_their_own_jobs_on_every_endpoint(keyed: Server) -> None:
    mine = submit(keyed, ALICE, ["alice's page"])
    theirs = submit(keyed, BOB, ["bob's page"])
    with keyed.client(headers=bearer(ALICE)) as alice:
        listed = {j["id"] for j in alice.get("/api/v1/jobs", params={"limit": 200}).json()["jobs"]}
        assert mine["id"] in listed and theirs["id"] not in listed
        other = theirs["id"]
        # Another owner's job answers exactly like a job that does not exist.
        for method, path in [("GET", f"/api/v1/jobs/{other}"), ("GET", f"/api/v1/jobs/{other}/result"),
                             ("GET", f"/api/v1/jobs/{other}/events"), ("POST", f"/api/v1/jobs/{other}/cancel"),
                             ("POST", f"/api/v1/jobs/{other}/retry"), ("DELETE", f"/api/v1/jobs/{other}")]:
            response = alice.request(method, path)
            missing = alice.request(method, path.replace(other, "0123456789abcdef"))
            assert response.status_code == missing.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == missing.json()["error"]["code"]
        assert alice.get(f"/api/v1/jobs/{mine['id']}/result").status_code == 200
    with keyed.client(headers=bearer(BOB)) as bob:
        assert bob.get(f"/api/v1/jobs/{theirs['id']}").status_code == 200
        assert bob.get(f"/api/v1/jobs/{mine['id']}").status_code == 404
    with keyed.client(headers=bearer(ADMIN)) as admin:
        listed = {j["id"] for j in admin.get("/api/v1/jobs", params={"limit": 200}).json()["jobs"]}
        assert {mine["id"], theirs["id"]} <= listed
        assert admin.get(f"/api/v1/jobs/{theirs['id']}/result").status_code == 200
        assert admin.delete(f"/api/v1/jobs/{theirs['id']}").status_code == 204


def test_the_global_stream_shows_each_owner_only_their_jobs(keyed: Server) -> None:
    seen: dict[str, set[str]] = {"alice": set(), "bob": set(), "root": set()}
    done = threading.Event()

    def watch(name: str, key: str) -> None:
        # A stream sends nothing while none of its owner's jobs change: a short read timeout ends it.
        try:
            with httpx.Client(base_url=keyed.url, timeout=httpx.Timeout(30, read=5), headers=bearer(key)) as client, \
                    client.stream("GET", "/api/v1/events") as response:
                for event in read_events(response):
                    seen[name] |= {j["id"] for j in event.data["jobs"]}
                    seen[name] |= set(event.data.get("positions", {}))
        except httpx.ReadTimeout:
            if not done.is_set():
                raise

    watchers = [threading.Thread(target=watch, args=a) for a in (("alice", ALICE), ("bob", BOB), ("root", ADMIN))]
    for w in watchers:
        w.start()
    time.sleep(0.5)
    a = submit(keyed, ALICE, ["a1", "a2"])
    b = submit(keyed, BOB, ["b1", "b2"])
    time.sleep(1.0)
    done.set()
    for w in watchers:
        w.join(30)
    assert a["id"] in seen["alice"] and b["id"] not in seen["alice"]
    assert b["id"] in seen["bob"] and a["id"] not in seen["bob"]
    assert {a["id"], b["id"]} <= seen["root"]


def test_the_browser_signs_in_once_and_gets_a_strict_httponly_cookie(keyed: Server) -> None:
    job = submit(keyed, ALICE, ["cookie page"])
    with keyed.client() as browser:
        assert browser.get("/api/v1/session").json() == {"keys": True, "owner": None, "role": None}
        assert browser.post("/api/v1/session", json={"key": "wrong-key-wrong-key"}).status_code == 401
        signed = browser.post("/api/v1/session", json={"key": ALICE})
        assert signed.status_code == 200 and signed.json()["owner"] == "alice"
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert ALICE.lower() not in cookie  # the key itself never travels in the cookie
        assert browser.get(f"/api/v1/jobs/{job['id']}").status_code == 200
        with browser.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            assert response.status_code == 200
            assert [e.type for e in read_events(response)][-1] == "completed"
        # A state change with the cookie must come from the server's own pages (Origin).
        no_origin = browser.post(f"/api/v1/jobs/{job['id']}/retry")
        assert no_origin.status_code == 403 and no_origin.json()["error"]["code"] == "forbidden"
        evil = browser.post(f"/api/v1/jobs/{job['id']}/retry", headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403
        own = browser.delete(f"/api/v1/jobs/{job['id']}", headers={"Origin": keyed.url})
        assert own.status_code == 204
        assert browser.delete("/api/v1/session").status_code == 204
        assert browser.get("/api/v1/jobs").status_code == 401


def test_limits_per_caller_on_queued_jobs_and_streams(make_server: type[Server]) -> None:
    server = make_server(settings={"api_keys": KEYS, "max_queued_per_caller": 2, "max_streams_per_caller": 2},
                         env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.5"})
    with server.client(headers=bearer(ALICE)) as alice, server.client(headers=bearer(BOB)) as bob:
        codes = [alice.post("/api/v1/jobs", content=make_pdf(["x", "y"])).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]  # one runs, two wait, the fourth is over alice's limit
        assert bob.post("/api/v1/jobs", content=make_pdf(["b"])).status_code == 202  # bob has his own limit
        streams = [alice.send(alice.build_request("GET", "/api/v1/events"), stream=True) for _ in range(2)]
        try:
            assert all(s.status_code == 200 for s in streams)
            third = alice.get("/api/v1/events")
            assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_streams"
            with bob.stream("GET", "/api/v1/events") as response:
                assert response.status_code == 200
        finally:
            for s in streams:
                s.close()


def test_security_headers_on_the_ui_and_nosniff_everywhere(keyed: Server) -> None:
    with keyed.client() as client:
        page = client.get("/")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"


def test_without_keys_the_server_refuses_to_listen_beyond_loopback(tmp_path: Any) -> None:
    args = [sys.executable, "-m", "pagestream", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
            "--data-dir", str(tmp_path)]
    refused = subprocess.run(args, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert refused.returncode == 2 and "without API keys" in refused.stderr
    allowed = subprocess.Popen([*args, "--allow-open"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        output = b""
        assert allowed.stdout is not None
        while b"WITHOUT API KEYS" not in output:
            assert time.monotonic() < deadline and allowed.poll() is None, output
            output += allowed.stdout.readline()
    finally:
        allowed.kill()
        allowed.wait()
        allowed.stdout.close()  # type: ignore[union-attr]
