"""The SSE streams against a real server: order, ids, resume, the end, positions, the global stream."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .docs import make_pdf
from .server import Event, Server, finished_long_text, metric, proc_status, read_events, stalled_clients, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")

SLOW = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"}


def submit(client: httpx.Client, pages: list[str], **params: str) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", content=make_pdf(pages), params=params)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def stream(client: httpx.Client, job_id: str, headers: dict[str, str] | None = None, **params: Any) -> list[Event]:
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", params=params, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        return list(read_events(response))


def test_a_job_stream_is_snapshot_then_every_event_in_order_then_the_end(server: Server) -> None:
    pages = [f"page number {i}" for i in range(1, 13)]
    with server.client() as client:
        job = submit(client, pages)
        events = stream(client, job["id"])
    assert events[0].type == "snapshot" and events[0].id is None
    assert events[0].data["job"]["id"] == job["id"]
    logged = [e for e in events if e.id is not None]
    assert [e.id for e in logged] == list(range(1, len(logged) + 1))
    types = [e.type for e in logged]
    assert types[0] == "queued" and types[1] == "started" and types[-1] == "completed"
    page_events = [e for e in logged if e.type == "page"]
    assert [e.data["page"]["number"] for e in page_events] == list(range(1, 13))
    assert [e.data["pages_done"] for e in page_events] == list(range(1, 13))
    assert all("text" not in e.data["page"] for e in page_events)
    assert logged[-1].data["pages_total"] == 12


def test_text_1_puts_each_page_text_in_its_event(server: Server) -> None:
    with server.client() as client:
        job = submit(client, ["alpha beta", "gamma"])
        wait_for_state(client, job["id"], {"completed"})
        events = stream(client, job["id"], text=1)
    texts = [e.data["page"]["text"].strip() for e in events if e.type == "page"]
    assert texts == ["alpha beta", "gamma"]


def test_live_text_stream_carries_the_text_too(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    with server.client() as client:
        job = submit(client, ["one", "two", "three"])
        events = stream(client, job["id"], text=1)
    assert [e.data["page"]["text"].strip() for e in events if e.type == "page"] == ["one", "two", "three"]


def test_resume_with_last_event_id_or_after_gets_exactly_the_missed_events(server: Server) -> None:
    with server.client() as client:
        job = submit(client, [f"p{i}" for i in range(8)])
        wait_for_state(client, job["id"], {"completed"})
        full = [e for e in stream(client, job["id"]) if e.id is not None]
        by_header = [e for e in stream(client, job["id"], headers={"Last-Event-ID": "4"}) if e.id is not None]
        by_query = [e for e in stream(client, job["id"], after=4) if e.id is not None]
        # Last-Event-ID wins over ?after= (it is what a browser sends when it reconnects).
        both = [e for e in stream(client, job["id"], headers={"Last-Event-ID": "6"}, after=2) if e.id is not None]
    assert [(e.id, e.type, e.data) for e in by_header] == [(e.id, e.type, e.data) for e in full[4:]]
    assert [(e.id, e.data) for e in by_query] == [(e.id, e.data) for e in full[4:]]
    assert [e.id for e in both] == [e.id for e in full[6:]]


def test_a_client_that_saw_the_end_gets_204(server: Server) -> None:
    with server.client() as client:
        job = submit(client, ["only"])
        done = wait_for_state(client, job["id"], {"completed"})
        response = client.get(f"/api/v1/jobs/{job['id']}/events",
                              headers={"Last-Event-ID": str(done["last_event_id"])})
        assert response.status_code == 204
        assert client.get(f"/api/v1/jobs/{job['id']}/events", params={"after": "x"}).status_code == 400


def test_a_stream_opened_mid_job_replays_then_follows_live(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    with server.client() as client:
        job = submit(client, [f"p{i}" for i in range(10)])
        deadline = time.monotonic() + 10
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        events = stream(client, job["id"])
    logged = [e for e in events if e.id is not None]
    assert [e.id for e in logged] == list(range(1, len(logged) + 1))
    assert [e.data["page"]["number"] for e in logged if e.type == "page"] == list(range(1, 11))
    assert events[0].data["job"]["pages_done"] >= 3


def test_many_watchers_see_the_same_events(make_server: type[Server]) -> None:
    # 80 watchers: more than two of the hub's groups (STREAMS_PER_TURN), which wake in turn.
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.1"})
    results: list[list[tuple[int | None, str]]] = []
    with server.client() as client:
        job = submit(client, [f"p{i}" for i in range(15)])

        def watch() -> None:
            with server.client() as own:
                results.append([(e.id, e.type) for e in stream(own, job["id"]) if e.id is not None])

        threads = [threading.Thread(target=watch) for _ in range(80)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert len(results) == 80
    assert all(r == results[0] for r in results)
    assert results[0][-1][1] == "completed"


@pytest.mark.parametrize("ring_size", ["1024", "4"])
def test_watchers_opening_one_after_another_while_a_job_runs_each_get_the_whole_log(
    make_server: type[Server], ring_size: str
) -> None:
    # The first watcher reads the log from the store and its read fills the ring for the watchers
    # after it (a ring of 4 takes only what fits); text and plain watchers share it. Each one must
    # still get every event exactly once, in order, and a text watcher every page's text.
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.05", "PAGESTREAM_RING_SIZE": ring_size})
    results: dict[int, list[Event]] = {}
    with server.client() as client:
        job = submit(client, [f"words of page {i}" for i in range(1, 31)])
        wait_for_state(client, job["id"], {"running"})

        def watch(n: int) -> None:
            with server.client() as own:
                results[n] = stream(own, job["id"], **({"text": 1} if n % 2 else {}))

        threads = []
        for n in range(12):
            threads.append(threading.Thread(target=watch, args=(n,)))
            threads[-1].start()
            time.sleep(0.08)
        for t in threads:
            t.join(60)
    assert sorted(results) == list(range(12))
    ids = [[e.id for e in results[n] if e.id is not None] for n in range(12)]
    assert all(i == list(range(1, len(ids[0]) + 1)) for i in ids)
    for n, events in results.items():
        pages = [e.data["page"] for e in events if e.type == "page"]
        assert [p["number"] for p in pages] == list(range(1, 31))
        assert all(p["text"].strip() == f"words of page {p['number']}" for p in pages) if n % 2 else \
            all("text" not in p for p in pages)
        assert events[-1].type == "completed"


def test_the_ring_takes_only_events_that_keep_its_ids_contiguous() -> None:
    import asyncio

    from pagestream.hub import Channel
    from pagestream.jobs import EventType
    from pagestream.store import StoredEvent

    def events(first: int, last: int) -> list[StoredEvent]:
        return [StoredEvent.of("j", i, EventType.page, b"{}", None) for i in range(first, last + 1)]

    def ids(found: list[StoredEvent] | None) -> list[int] | None:
        return None if found is None else [e.id for e in found]

    loop = asyncio.new_event_loop()
    try:
        channel = Channel("j", 5, 0.005, loop)
        channel.keep(events(1, 3), newest=False)  # a read that may stop short of the newest: a gap could follow
        assert ids(channel.events_after(0)) is None
        channel.keep(events(1, 3), newest=True)
        for event in events(3, 4):  # 3 was committed during the read and is delivered after it: once only
            channel.append(event)
        assert ids(channel.events_after(0)) == [1, 2, 3, 4]
        assert ids(channel.events_after(2)) == [3, 4] and ids(channel.events_after(4)) == []

        channel = Channel("j", 5, 0.005, loop)
        for event in events(10, 12):
            channel.append(event)
        channel.keep(events(1, 7), newest=False)  # 8 and 9 missing: nothing goes in
        assert ids(channel.events_after(9)) == [10, 11, 12] and ids(channel.events_after(8)) is None
        channel.keep(events(1, 11), newest=False)  # only as many as fit, the newest of the older ones
        assert ids(channel.events_after(7)) == [8, 9, 10, 11, 12] and ids(channel.events_after(6)) is None
    finally:
        loop.close()


def test_the_hub_writes_to_parked_streams_and_wakes_those_it_cannot_write_to() -> None:
    # A stream that has sent everything parks; the hub gives it the next events by its write when that
    # takes them, and wakes its task for anything else: a write that would wait, a terminal event, text
    # the ring lacks, a rouse. Hundreds of parked streams are served over several turns of the loop.
    import asyncio

    from pagestream.hub import WRITES_PER_TURN, Channel, Write
    from pagestream.jobs import EventType
    from pagestream.store import StoredEvent

    def event(i: int, kind: EventType = EventType.page, text: bytes | None = b"text") -> StoredEvent:
        return StoredEvent.of("j", i, kind, b"{}", text)

    async def main() -> None:
        channel = Channel("j", 64, 0.0, asyncio.get_running_loop())
        got: dict[str, list[tuple[bytes, int]]] = {"fast": [], "text": [], "slow": []}

        def writer(name: str, takes: bool = True) -> Write:
            def write(frames: bytes, count: int) -> bool:
                if takes:
                    got[name].append((frames, count))
                return takes
            return write

        channel.append(event(1))
        fast = channel.park(1, False, writer("fast"))
        text = channel.park(1, True, writer("text"))
        slow = channel.park(1, False, writer("slow", takes=False))
        bare = channel.park(1, False, None)  # a connection the hub cannot write to
        for i in (2, 3):
            channel.append(event(i))
        channel.wake(now=True)
        await asyncio.sleep(0)
        assert got["fast"] == [(event(2).frame + event(3).frame, 2)]
        assert got["text"] == [(event(2).text_frame + event(3).text_frame, 2)]  # type: ignore[operator]
        assert not fast.future.done() and not text.future.done() and (fast.cursor, text.cursor) == (3, 3)
        assert slow.future.done() and bare.future.done() and (slow.cursor, bare.cursor) == (1, 1)

        channel.append(event(4, text=None))  # committed before a text stream watched: its task reads it
        channel.wake(now=True)
        await asyncio.sleep(0)
        assert got["fast"][-1] == (event(4).frame, 1) and fast.cursor == 4
        assert text.future.done() and text.cursor == 3 and len(got["text"]) == 1

        channel.rouse()  # the age tick, a queue position, the server's stop: every task looks itself
        await asyncio.sleep(0)
        assert fast.future.done() and fast.cursor == 4 and len(got["fast"]) == 2

        fast = channel.park(4, False, writer("fast"))
        channel.append(event(5, EventType.completed))  # the end: the task sends it and closes the response
        channel.wake(now=True)
        await asyncio.sleep(0)
        assert fast.future.done() and fast.cursor == 4 and len(got["fast"]) == 2

        many = Channel("m", 64, 0.0, asyncio.get_running_loop())
        written: list[int] = []

        def numbered(n: int) -> Write:
            def write(frames: bytes, count: int) -> bool:
                written.append(n)
                return True
            return write

        many.append(StoredEvent.of("m", 1, EventType.page, b"{}", None))
        streams = [many.park(1, False, numbered(n)) for n in range(3 * WRITES_PER_TURN + 5)]
        cancelled = streams[7]
        cancelled.future.cancel()  # its client left: it is dropped, not written to
        many.append(StoredEvent.of("m", 2, EventType.page, b"{}", None))
        many.wake(now=True)
        assert len(written) == WRITES_PER_TURN  # one turn's share; the rest in the turns after
        for _ in range(4):
            await asyncio.sleep(0)
        assert sorted(written) == [n for n in range(len(streams)) if n != 7]
        assert all(s.cursor == 2 and not s.future.done() for s in streams if s is not cancelled)

    asyncio.run(main())


def test_uvicorn_s_connection_is_one_the_hub_can_write_to(tmp_path: Path) -> None:
    # The writes to parked streams go to uvicorn's connection directly, which ASGI does not offer: if a
    # uvicorn changed what EventStream relies on, every write would go through the stream's task again
    # (right, but with a third more CPU at 100 watchers). This says so first. A real uvicorn on a free port.
    import uvicorn

    from pagestream.streams import _chunked_connection

    found: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        found.append(_chunked_connection(send) is not None)
        await send({"type": "http.response.body", "body": b"first ", "more_body": True})
        connection = _chunked_connection(send)
        if connection is not None:
            connection.transport.write(b"7\r\nsecond \r\n")  # what write_now writes
        await send({"type": "http.response.body", "body": b"third", "more_body": False})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", loop="uvloop", lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        response = httpx.get(f"http://127.0.0.1:{port}/")
    finally:
        server.should_exit = True
        thread.join(10)
    assert found == [True]
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.text == "first second third"


def test_streams_that_need_the_same_read_of_the_store_share_one(tmp_path: Path) -> None:
    # A job's watchers who open together, before the first read has filled the ring, share that
    # read (a real SQLite store; its reads are only counted). A watcher that leaves while the read
    # is under way does not cancel it for the others, and the read fills the ring.
    import asyncio

    from pagestream.hub import Channel
    from pagestream.jobs import DocumentKind, JobState
    from pagestream.store import NewJob, Store

    async def main() -> None:
        store = Store.from_url(f"sqlite:///{tmp_path / 'pagestream.db'}")
        await store.open()
        try:
            job = NewJob(id="j1", filename="a.txt", kind=DocumentKind.text, size=1, sha256="0" * 64,
                         spool_name="j1", pages_spec=None, password=None)
            await store.enqueue([job], 10, 10)
            await store.claim_next(3)
            await store.finish("j1", JobState.completed)
            whole = [e.id for e in await store.events_after("j1", 0, 100, text=False)]
            assert len(whole) >= 2  # queued, ..., completed

            reads = 0
            real = store.events_after

            async def counted(*args: object, **kwargs: object) -> list:  # type: ignore[type-arg]
                nonlocal reads
                reads += 1
                return await real(*args, **kwargs)  # type: ignore[arg-type]

            store.events_after = counted  # type: ignore[method-assign]
            channel = Channel("j1", 1024, 0.005, asyncio.get_running_loop())
            watchers = [asyncio.ensure_future(channel.read(store, 0, 100, False)) for _ in range(20)]
            await asyncio.sleep(0)
            watchers[0].cancel()  # the one whose read it is leaves
            results = await asyncio.gather(*watchers[1:])
            assert reads == 1
            assert all([e.id for e in events] == whole for events in results)
            assert [e.id for e in channel.events_after(0) or []] == whole  # the ring has them now
            await channel.read(store, 0, 100, True)  # another kind of read (with the text) is its own
            await channel.read(store, 0, 100, False)  # and one after the first ended reads again
            assert reads == 3
        finally:
            await store.close()

    asyncio.run(main())


def test_queued_jobs_see_their_position_fall(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        jobs = [submit(client, ["a", "b"]) for _ in range(4)]
        last = jobs[-1]
        assert client.get(f"/api/v1/jobs/{last['id']}").json()["position"] in (3, 4)
        events = stream(client, last["id"])
    snapshot_position = events[0].data["job"]["position"]
    positions = [e.data["position"] for e in events if e.type == "position"]
    assert positions, "no position event reached the last job's stream"
    assert positions == sorted(positions, reverse=True) and positions[-1] == 1
    assert all(p < snapshot_position for p in positions)
    assert all(e.id is None for e in events if e.type == "position")
    order = [e.type for e in events if e.id is not None]
    assert order[-1] == "completed"


def test_the_global_stream_syncs_then_sends_changes(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.1"})
    with server.client() as client:
        done = submit(client, ["before"])
        wait_for_state(client, done["id"], {"completed"})
        seen: list[Event] = []
        holder: dict[str, Any] = {}
        synced = threading.Event()

        def watch() -> None:
            with server.client() as own, own.stream("GET", "/api/v1/events") as response:
                assert response.status_code == 200
                for event in read_events(response):
                    seen.append(event)
                    synced.set()
                    states = {j["id"]: j["state"] for e in seen if e.type in ("sync", "jobs") for j in e.data["jobs"]}
                    if "id" in holder and states.get(holder["id"]) == "completed":
                        return

        watcher = threading.Thread(target=watch)
        watcher.start()
        # The job is submitted once the stream has its sync (a fixed sleep was too short on a loaded
        # machine: the sync came after the job had finished, and no change was left to follow).
        assert synced.wait(30)
        holder["id"] = submit(client, ["x", "y", "z"])["id"]
        watcher.join(30)
        assert not watcher.is_alive()
    assert seen[0].type == "sync"
    assert done["id"] in {j["id"] for j in seen[0].data["jobs"]}
    states = [j["state"] for e in seen[1:] for j in e.data["jobs"] if j["id"] == holder["id"]]
    assert states[-1] == "completed" and "running" in states


@pytest.mark.stores("sqlite")
def test_dashboards_opening_together_on_a_deep_queue_share_one_sync_and_keep_no_copy_each(
    make_server: type[Server],
) -> None:
    # 6,000 queued jobs make a sync of about 4 MB. Each of the stalled clients below reads nothing
    # through a small window, so what the server has not written yet stays in the server: a whole
    # copy of the sync per stream (several hundred MB), or only the piece being written.
    queued, stalled = 6000, 40
    server = make_server(settings={"max_queued_per_caller": queued}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "60"})
    assert server.process is not None
    with server.client() as client:
        blocker = client.post("/api/v1/jobs", content=b"one\ftwo", headers={"content-type": "text/plain"}).json()
        wait_for_state(client, blocker["id"], {"running"})  # its pages stall: the queue stays as it is
        for start in range(0, queued, 100):
            files = [("file", (f"q{start + i}.txt", b"a queued job", "text/plain")) for i in range(100)]
            assert client.post("/api/v1/jobs", files=files).status_code == 202
        before_kb = proc_status(server.process.pid)["VmRSS"]
        with stalled_clients(server, "/api/v1/events", stalled, lambda: open_streams(server, "global") == stalled):
            grown_mb = (proc_status(server.process.pid)["VmRSS"] - before_kb) / 1024
            # A client that reads gets the whole sync, every job in it, while the others stall.
            with client.stream("GET", "/api/v1/events") as response:
                sync = next(read_events(response))
            size_mb = len(orjson.dumps(sync.data)) / 2**20
    assert sync.type == "sync"
    assert len({j["id"] for j in sync.data["jobs"] if j["state"] == "queued"}) == queued
    assert size_mb > 3
    assert grown_mb < stalled * size_mb / 4, (grown_mb, size_mb)


@pytest.mark.stores("sqlite")
def test_watchers_catching_up_on_a_long_text_keep_no_copy_of_it_each(make_server: type[Server]) -> None:
    # A finished job of 2,000 pages of 3 KB: a text stream from the start has 6 MB to send.
    pages, stalled = 2000, 40
    server = make_server()
    assert server.process is not None
    with server.client() as client:
        job_id, _ = finished_long_text(client, pages)
        before_kb = proc_status(server.process.pid)["VmRSS"]
        with stalled_clients(server, f"/api/v1/jobs/{job_id}/events?text=1", stalled,
                             lambda: open_streams(server, "job") == stalled):
            grown_mb = (proc_status(server.process.pid)["VmRSS"] - before_kb) / 1024
            events = stream(client, job_id, text="1")
    texts = [e.data["page"]["text"] for e in events if e.type == "page"]
    assert [t.split()[1] for t in texts] == [str(i) for i in range(1, pages + 1)]
    size_mb = sum(len(t) for t in texts) / 2**20
    assert size_mb > 5
    assert grown_mb < stalled * size_mb / 4, (grown_mb, size_mb)


def open_streams(server: Server, kind: str) -> float:
    return metric(server, "pagestream_open_streams", kind=kind)


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.stores("sqlite")
def test_a_watcher_that_leaves_frees_its_stream_while_the_job_goes_on(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    with server.client() as client:
        job = submit(client, [f"p{i}" for i in range(100)])
        with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
            events = read_events(response)  # held: a generator let go closes the connection
            assert next(events).type == "snapshot"
            assert open_streams(server, "job") == 1
        wait_until(lambda: open_streams(server, "job") == 0, 10, "the stream stayed open after its client left")
        assert client.get(f"/api/v1/jobs/{job['id']}").json()["state"] == "running"


@pytest.mark.stores("sqlite")
def test_a_watcher_that_stops_reading_is_cut_after_send_timeout_and_the_others_get_everything(
    make_server: type[Server],
) -> None:
    # Pages of 60 KB with their text: megabytes that fill the socket and the server's buffer of a
    # client that reads nothing, so that the server's write to it waits.
    server = make_server(settings={"send_timeout": 1, "heartbeat": 1},
                         env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.02"})
    pages = 150
    body = "\f".join(f"page {i} " + "x" * 60_000 for i in range(pages)).encode()
    with server.client() as client:
        response = client.post("/api/v1/jobs", content=body, headers={"content-type": "text/plain"})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        with stalled_clients(server, f"/api/v1/jobs/{job_id}/events?text=1", 1,
                             lambda: open_streams(server, "job") == 1, settle=0):
            events = stream(client, job_id, text="1")
            assert [e.data["page"]["number"] for e in events if e.type == "page"] == list(range(1, pages + 1))
            assert events[-1].type == "completed"
            wait_until(lambda: open_streams(server, "job") == 0, 15, "the stream of a client that reads nothing "
                       "stayed open")


@pytest.mark.stores("sqlite")
def test_stopping_the_server_ends_its_open_streams(make_server: type[Server]) -> None:
    server = make_server(env=SLOW)
    ended = threading.Event()
    seen: list[Event] = []
    with server.client() as client:
        job = submit(client, [f"p{i}" for i in range(100)])

        def watch() -> None:
            with server.client() as own, own.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
                seen.extend(read_events(response))
            ended.set()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        wait_until(lambda: any(e.type == "page" for e in seen), 30, "no page reached the watcher")
    assert server.stop(timeout=20) in (0, -15)  # uvicorn raises SIGTERM again once it has shut down
    assert ended.wait(10), "the stream did not end with the server"
    assert seen[-1].type == "page"  # cut at an event's end, the job not over: a client resumes from there
