"""The Python client: typed results, errors, and event streams that resume without losing or repeating.

The stream's decisions are tested without a network through ``httpx.MockTransport``; the rest
runs against a real server, killed with SIGKILL and restarted in the middle of a job.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, get_args, get_origin, get_type_hints

import httpx
import orjson
import pytest

import pagestream
from pagestream import _client_models as models
from pagestream._client_streams import Reconnect, SSEDecoder
from pagestream.client import AsyncClient, Client

from .contract import CONTRACT, validate
from .docs import make_pdf
from .server import ROOT, Server

FAST = Reconnect(initial=0.01, maximum=0.05, give_up_after=60)
SLOW_PAGES = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"}


# -- SSE decoding


def _decode(chunks: list[bytes]) -> tuple[list[tuple[str, str, str | None]], int | None]:
    decoder = SSEDecoder()
    messages = [(m.event, m.data, m.id) for chunk in chunks for m in decoder.feed(chunk)]
    return messages, decoder.retry_ms


def test_sse_lines_end_at_cr_lf_or_crlf_even_across_chunks() -> None:
    body = b"retry: 2500\r\n\r\n: heartbeat\nid: 1\nevent: page\ndata: {\"a\":\r\ndata: 1}\r\n\r\nid: 2\rdata: x\r\r"
    expected = [("page", '{"a":\n1}', "1"), ("message", "x", "2")]
    for size in (1, 2, 3, 7, len(body)):  # every way of cutting it, CR and LF in separate chunks included
        assert _decode([body[i:i + size] for i in range(0, len(body), size)]) == (expected, 2500)


def test_sse_data_keeps_unicode_line_separators_and_form_feeds() -> None:
    # httpx's iter_lines() splits at these; a page's text holds them raw inside a data line.
    text = "one\u2028two\u2029three\x85four\x0cfive\x1cend"
    frame = b"id: 7\nevent: page\ndata: " + orjson.dumps({"t": text}) + b"\n\n"
    messages, _ = _decode([frame[:20], frame[20:]])
    assert [orjson.loads(data)["t"] for _, data, _ in messages] == [text]


# -- the typed results match the contract


def _schema_name(typed: type) -> str:
    names = {models.Job: "job.json", models.Page: "page.json", models.Result: "result.json",
             models.Health: "health.json", models.SyncFrame: "events/global-sync.json",
             models.JobsFrame: "events/global-jobs.json"}
    if typed in names:
        return names[typed]
    return CONTRACT.event_schema_for(str(get_args(get_type_hints(typed)["type"])[0]))


def _literal_values(hint: Any) -> set[str] | None:
    if get_origin(hint) is Literal:
        return set(get_args(hint))
    for arg in get_args(hint):
        found = _literal_values(arg)
        if found:
            return found
    return None


@pytest.mark.parametrize("typed", [models.Job, models.Page, models.Result, models.Health, models.SyncFrame,
                                   models.JobsFrame, *get_args(models.Event)], ids=lambda t: t.__name__)
def test_every_typed_dict_has_the_keys_required_keys_and_enums_of_its_schema(typed: type) -> None:
    schema = CONTRACT.schema(_schema_name(typed))
    hints = get_type_hints(typed)
    assert set(hints) == set(schema["properties"])
    assert typed.__required_keys__ == set(schema["required"])  # type: ignore[attr-defined]
    for key, hint in hints.items():
        enum = schema["properties"][key].get("enum") or (
            [schema["properties"][key]["const"]] if "const" in schema["properties"][key] else None)
        if enum is not None and _literal_values(hint) is not None:
            assert _literal_values(hint) == set(enum), key


def test_the_client_is_imported_only_when_used() -> None:
    # The server and its extraction child import the package too: they must not pay for httpx.
    code = ("import sys, pagestream; assert 'httpx' not in sys.modules and 'pagestream.client' not in sys.modules; "
            "assert pagestream.Client.__module__ == 'pagestream.client'; assert issubclass(pagestream.StreamGaveUp, "
            "pagestream.ConnectionFailed)")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(ROOT / "server")})


# -- streams, without a network


def _sse(*events: tuple[int | None, dict[str, Any]]) -> bytes:
    frames = [b"retry: 2000\n\n"]
    for event_id, data in events:
        head = b"" if event_id is None else b"id: %d\n" % event_id
        frames.append(head + b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")
    return b"".join(frames)


def _job(last_event_id: int, state: str = "running") -> dict[str, Any]:
    return {"id": "0123456789abcdef", "state": state, "last_event_id": last_event_id, "position": None}


def _snapshot(last_event_id: int, state: str = "running") -> tuple[None, dict[str, Any]]:
    return None, {"type": "snapshot", "job_id": "0123456789abcdef", "job": _job(last_event_id, state)}


def _event(event_id: int, kind: str, **data: Any) -> tuple[int, dict[str, Any]]:
    return event_id, {"type": kind, "job_id": "0123456789abcdef", **data}


class Script:
    """A fake server: one answer per connection, in order, recording each request's Last-Event-ID."""

    def __init__(self, *answers: bytes | int | Exception) -> None:
        self.answers = list(answers)
        self.resumed_after: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.resumed_after.append(request.headers.get("last-event-id"))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int):
            body = orjson.dumps({"error": {"code": "unavailable", "message": "stopping"}})
            return httpx.Response(answer, content=body, headers={"content-type": "application/json"})
        return httpx.Response(200, content=_chunks(answer), headers={"content-type": "text/event-stream"})

    @staticmethod
    def cut(body: bytes) -> bytes:
        """``body``, then the connection breaks (the server was killed)."""
        return body + CUT

    def client(self, reconnect: Reconnect = FAST) -> Client:
        return Client("http://pagestream.test", transport=httpx.MockTransport(self), reconnect=reconnect)


CUT = b"<cut>"


def _chunks(body: bytes) -> Iterator[bytes]:
    body, cut, _ = body.partition(CUT)
    yield from (body[i:i + 50] for i in range(0, len(body), 50))
    if cut:
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def _types(events: Iterator[models.Event]) -> list[str]:
    return [e["type"] for e in events]


def test_a_stream_resumes_after_the_last_event_it_handed_out_and_hands_out_one_snapshot() -> None:
    script = Script(
        Script.cut(_sse(_snapshot(3), _event(1, "queued", position=1), _event(2, "started"))),  # killed
        httpx.ConnectError("connection refused"),  # gone for a while …
        httpx.ConnectError("connection refused"),
        503,  # … then it answers, still starting
        _sse(_snapshot(5), _event(3, "page"), _event(4, "page")),  # closed before the end: a graceful restart
        _sse(_snapshot(5, "completed"), _event(5, "completed")),
    )
    with script.client() as client, client.events("0123456789abcdef") as events:
        assert _types(events) == ["snapshot", "queued", "started", "page", "page", "completed"]
        assert events.reconnects == 2 and events.last_event_id == 5
        assert events.job is not None and events.job["state"] == "completed"  # the latest snapshot
    assert script.resumed_after == [None, "2", "2", "2", "2", "4"]


@pytest.mark.parametrize(("ids", "what"), [((1, 3), "a gap"), ((1, 2, 2), "a repeat")])
def test_a_gap_or_a_repeat_in_event_ids_is_a_protocol_error(ids: tuple[int, ...], what: str) -> None:
    script = Script(_sse(_snapshot(9), *[_event(i, "page") for i in ids]))
    with script.client() as client, pytest.raises(pagestream.ProtocolError, match=what):
        list(client.events("0123456789abcdef"))


def test_a_stream_gives_up_after_give_up_after_seconds_without_its_server() -> None:
    script = Script(_sse(_snapshot(3), _event(1, "queued", position=1)),
                    *[httpx.ConnectError("connection refused")] * 1000)
    client = script.client(Reconnect(initial=0.01, maximum=0.02, give_up_after=0.3))
    seen: list[str] = []
    with client, pytest.raises(pagestream.StreamGaveUp) as caught:
        for event in client.events("0123456789abcdef"):
            seen.append(event["type"])
    assert seen == ["snapshot", "queued"]
    assert caught.value.code == "stream_gave_up" and caught.value.status is None
    # Not a speed check: a lower bound on the policy, the stream kept trying for give_up_after.
    assert caught.value.attempts > 3 and caught.value.elapsed >= 0.3
    assert "connection refused" in caught.value.message


def test_a_first_connection_that_fails_raises_at_once() -> None:
    script = Script(httpx.ConnectError("connection refused"))
    with script.client() as client, pytest.raises(pagestream.ConnectionFailed, match="connection refused"):
        next(client.events("0123456789abcdef"))
    assert len(script.resumed_after) == 1


def test_a_first_connection_that_fails_is_retried_once_the_server_has_answered() -> None:
    health = {"status": "ok", "version": "x", "queued": 0, "running": None, "streams": 0}
    script = Script(httpx.ConnectError("connection refused"), httpx.ConnectError("connection refused"),
                    _sse(_snapshot(1, "completed"), _event(1, "completed")))

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=health) if request.url.path == "/healthz" else script(request)

    with Client("http://pagestream.test", transport=httpx.MockTransport(answer), reconnect=FAST) as client:
        client.health()  # the server was there: a refused connection now is a restart
        assert _types(client.events("0123456789abcdef")) == ["snapshot", "completed"]


def test_a_final_error_is_not_retried() -> None:
    script = Script(_sse(_snapshot(3), _event(1, "queued", position=1)), 404)
    with script.client() as client, pytest.raises(pagestream.NotFound):
        list(client.events("0123456789abcdef"))


def test_backoff_grows_is_jittered_and_bounded() -> None:
    policy = Reconnect(initial=0.1, maximum=2.0, multiplier=2.0)
    assert [policy.delay(n, lambda: 1.0) for n in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert [policy.delay(n, lambda: 0.0) for n in range(3)] == pytest.approx([0.05, 0.1, 0.2])
    assert policy.delay(10_000) <= 2.0


def test_errors_without_the_error_shape_still_carry_status_and_a_message() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with Client("http://pagestream.test", transport=transport) as client, \
            pytest.raises(pagestream.ServerError) as caught:
        client.get("0123456789abcdef")
    assert (caught.value.status, caught.value.code) == (502, "unexpected_response")
    assert "Bad Gateway" in caught.value.message


def test_the_api_key_and_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok", "version": "x", "queued": 0, "running": None, "streams": 0})

    monkeypatch.setenv("PAGESTREAM_URL", "example.test:9000/")
    monkeypatch.setenv("PAGESTREAM_API_KEY", "s3cret")
    with Client(transport=httpx.MockTransport(answer)) as client:
        assert client.url == "http://example.test:9000"
        client.health()
    assert str(seen[0].url) == "http://example.test:9000/healthz"
    assert seen[0].headers["authorization"] == "Bearer s3cret"


# -- against a real server


def test_submit_get_list_result_cancel_retry_delete(server: Server, tmp_path: typing.Any) -> None:
    path = tmp_path / "three.pdf"
    path.write_bytes(make_pdf(["one", "two", "three"]))
    with Client(server.url) as client:
        job = client.submit(path, pages="1-2", idempotency_key="k-three")
        validate("job.json", job)
        assert job["filename"] == "three.pdf" and job["options"] == {"pages": "1-2", "has_password": False}
        assert client.submit(path, pages="1-2", idempotency_key="k-three")["id"] == job["id"]
        done = client.wait(job["id"], timeout=30)
        assert done["state"] == "completed" and done["pages_done"] == 2
        result = client.result(job["id"])
        validate("result.json", result)
        assert [p["text"].strip() for p in result["pages"]] == ["one", "two"]
        assert client.result(job["id"], "text").split("\f") == [p["text"] for p in result["pages"]]
        assert [orjson.loads(line)["number"] for line in client.result(job["id"], "ndjson").splitlines()] == [1, 2]
        assert job["id"] in {j["id"] for j in client.list(state="completed", page_size=1)}  # every page followed
        assert job["id"] not in {j["id"] for j in client.list(state=["queued", "running"])}

        locked = client.submit(make_pdf(["secret"], user_password="pw"), filename="locked.pdf")
        failed = client.wait(locked["id"], timeout=30)
        assert failed["state"] == "failed" and failed["error"] is not None
        assert failed["error"]["code"] == "password_required"
        assert client.retry(locked["id"])["state"] == "queued"  # as committed, however fast it fails again
        assert client.wait(locked["id"], timeout=30)["state"] == "failed"
        client.delete(locked["id"])
        with pytest.raises(pagestream.NotFound) as missing:
            client.get(locked["id"])
        assert (missing.value.status, missing.value.code) == (404, "not_found")
        assert "there is no job" in missing.value.message
        with pytest.raises(pagestream.BadRequest) as empty:
            client.submit(b"")
        assert (empty.value.status, empty.value.code) == (400, "empty_upload")
        with pytest.raises(pagestream.UnsupportedType):
            client.submit(b"\x00\x01\x02 not a document")
        assert client.health()["status"] == "ok"


def test_cancel_and_a_result_before_the_end(make_server: Callable[..., Server]) -> None:
    server = make_server(env=SLOW_PAGES)
    with Client(server.url) as client:
        job = client.submit(make_pdf([f"p{i}" for i in range(20)]))
        with pytest.raises(pagestream.Conflict) as early:
            client.result(job["id"])
        assert early.value.code == "not_finished"
        assert client.result(job["id"], partial=True)["partial"] is True
        with pytest.raises(pagestream.WaitTimeout):
            client.wait(job["id"], timeout=0.3)
        client.cancel(job["id"])
        assert client.wait(job["id"], timeout=30)["state"] == "cancelled"
        assert _types(client.events(job["id"]))[-1] == "cancelled"


def test_a_stream_with_text_carries_each_page_text(server: Server) -> None:
    text = "alpha\u2028beta\u2029gamma — the end"  # U+2028 and U+2029: orjson leaves them raw
    with Client(server.url) as client:
        job = client.submit(text.encode(), filename="odd.txt")
        pages = [e["page"] for e in client.events(job["id"], text=True) if e["type"] == "page"]
    assert [p.get("text") for p in pages] == [text]


def test_a_stream_goes_on_past_the_terminal_event_of_a_run_that_was_retried(server: Server) -> None:
    with Client(server.url) as client:
        job = client.submit(make_pdf(["secret"], user_password="pw"))
        client.wait(job["id"], timeout=30)
        client.retry(job["id"])
        client.wait(job["id"], timeout=30)
        events = list(client.events(job["id"]))
    types = [e["type"] for e in events]
    assert types[0] == "snapshot" and types[-1] == "failed"
    assert [t for t in types if t in ("queued", "failed")] == ["queued", "failed", "queued", "failed"]


def test_watch_all_syncs_then_sends_the_jobs_that_changed(server: Server) -> None:
    with Client(server.url) as client:
        with client.watch_all() as frames:
            first = next(frames)
            assert first["type"] == "sync"
            job = client.submit(make_pdf(["global"]))
            for frame in frames:
                validate(CONTRACT.global_event_schema_for(frame["type"]), frame)
                if any(j["id"] == job["id"] and j["state"] == "completed" for j in frame["jobs"]):
                    break
            assert frames.last_event_id is None


def _kill_and_restart_at(server: Server, job_id: str, pages: list[int], downtime: float = 0.6) -> threading.Thread:
    """A thread that SIGKILLs the server when the job has done each number of ``pages``, and starts it again."""

    def run() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            for target in pages:
                while True:
                    try:
                        if http.get(f"/api/v1/jobs/{job_id}").json()["pages_done"] >= target:
                            break
                    except httpx.TransportError:
                        pass  # still starting after the last kill
                    time.sleep(0.02)
                server.kill()
                time.sleep(downtime)
                server.start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _log(events: list[models.Event]) -> list[models.Event]:
    """The events of the job's log (no snapshot, no position), as a full replay gives them."""
    return [e for e in events if e["type"] not in ("snapshot", "position")]


def _check_against_a_full_replay(client: Client, job_id: str, seen: list[models.Event]) -> None:
    for event in seen:
        validate(CONTRACT.event_schema_for(event["type"]), event)
    replay = list(client.events(job_id))
    assert _log(seen) == _log(replay)  # the same events, each once, in the same order: none lost, none repeated
    pages = [e["page"]["number"] for e in _log(seen) if e["type"] == "page"]
    assert pages == list(range(1, 31))
    assert [e["type"] for e in seen].count("snapshot") == 1
    retrying = [e for e in seen if e["type"] == "retrying"]
    assert retrying and all(e["reason"]["code"] == "interrupted" for e in retrying)


def test_events_resume_across_sigkill_restarts_with_nothing_lost_or_repeated(
        make_server: Callable[..., Server]) -> None:
    server = make_server(env=SLOW_PAGES)
    with Client(server.url, reconnect=FAST) as client:
        job = client.submit(make_pdf([f"restart page {i}" for i in range(1, 31)]))
        killer = _kill_and_restart_at(server, job["id"], [8, 20])
        seen: list[models.Event] = []
        with client.events(job["id"]) as events:
            for event in events:
                seen.append(event)
        killer.join(60)
        assert seen[-1]["type"] == "completed"
        assert events.reconnects >= 2
        assert events.last_event_id == client.get(job["id"])["last_event_id"]
        _check_against_a_full_replay(client, job["id"], seen)


def test_the_async_client_resumes_across_a_restart_too(make_server: Callable[..., Server]) -> None:
    server = make_server(env=SLOW_PAGES)

    async def follow() -> tuple[str, list[models.Event], int]:
        async with AsyncClient(server.url, reconnect=FAST) as client:
            job = await client.submit(make_pdf([f"async page {i}" for i in range(1, 31)]))
            killer = _kill_and_restart_at(server, job["id"], [10])
            seen: list[models.Event] = []
            async with client.events(job["id"]) as events:
                async for event in events:
                    seen.append(event)
            await asyncio.to_thread(killer.join, 60)
            assert (await client.wait(job["id"], timeout=30))["state"] == "completed"
            return job["id"], seen, events.reconnects

    job_id, seen, reconnects = asyncio.run(follow())
    assert reconnects >= 1
    with Client(server.url) as client:
        _check_against_a_full_replay(client, job_id, seen)
