"""Lean benchmark clients: raw asyncio sockets (uvloop when installed), run in child processes.

Nothing here uses an HTTP library on the hot path: a subscriber is an ``asyncio.Protocol``
that scans what it receives for ``\\nid: `` lines (SSE frames; chunked transfer framing in
between does not matter, since a job stream's frame never spans two HTTP chunks and the scan
only looks for ``\\nid: N\\n``), parses each event's ``at`` once per process, and records
``receive time - at`` for the events of the measuring window. Each process reports its own
CPU time, so the client side's cost is visible next to the server's.

Processes talk to the parent over a ``multiprocessing`` pipe: the parent says when the
window starts and ends; the children answer with counts and latencies.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import math
import os
import time
from datetime import datetime
from typing import Any


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def parse_at(raw: bytes) -> float:
    """'2025-01-01T12:00:00.123Z' → epoch seconds."""
    return datetime.fromisoformat(raw.decode()).timestamp()


def percentile(values: Any, q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank, of a sequence of numbers."""
    if not len(values):
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


# -- SSE fan-out subscribers (B2, B5)


class _Shared:
    """What the subscribers of one process share: the parsed ``at`` of each event id, the window."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.t0 = math.inf  # window on the event's commit time (``at``)
        self.t1 = -math.inf
        self.r0 = math.inf  # window on the receive time (for CPU per delivered event)
        self.r1 = -math.inf
        self.latencies = array.array("q")  # (event id, µs) pairs: events with at in [t0, t1]
        self.numbers: dict[int, int] = {}  # event id → page number (when the event has one)
        self.received_in_window = 0
        self.max_window_id = 0
        self.min_window_id = 1 << 62


class Subscriber(asyncio.Protocol):
    def __init__(self, shared: _Shared, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.shared = shared
        self.request = request
        self.ready: asyncio.Future[bool] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head = True
        self.status = 0
        self.window_count = 0
        self.last_id = 0
        self.last_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.head:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            self.status = int(data[9:12])
            self.head = False
            data = data[end + 3:]  # keep one "\n" before the body
            self.buf = b""
            if self.status != 200:
                self.ready.set_result(False)
                self.transport.close()  # type: ignore[union-attr]
                return
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 1:]
        if not self.ready.done():
            self.ready.set_result(True)
        s = self.shared
        pos = buf.find(b"\nid: ", 0, end)
        while pos >= 0:
            nl = buf.find(b"\n", pos + 5)
            eid = int(buf[pos + 5:nl])
            at = s.at.get(eid)
            if at is None:
                j = buf.find(b'"at":', nl) + 5
                j = buf.find(b'"', j) + 1  # after an optional space (json.dumps writes one)
                at = s.at[eid] = parse_at(buf[j:j + 24])
                k = buf.find(b'"number":', j)
                if k > 0 and k < buf.find(b"\n", j):
                    k += 9
                    if buf[k] == 32:
                        k += 1
                    s.numbers[eid] = int(buf[k:buf.find(b",", k)])
            if s.t0 <= at <= s.t1:
                s.latencies.append(eid)
                s.latencies.append(int((now - at) * 1e6))
                self.window_count += 1
                if eid > s.max_window_id:
                    s.max_window_id = eid
                if eid < s.min_window_id:
                    s.min_window_id = eid
            if s.r0 <= now <= s.r1:
                s.received_in_window += 1
            self.last_id = eid
            self.last_at = at
            pos = buf.find(b"\nid: ", nl, end)


def subscribers_process(host: str, port: int, path: str, count: int, pipe: Any, connect_parallel: int = 64) -> None:
    """Child process: open ``count`` SSE streams on ``path``, then follow the parent's commands.

    Commands (tuples on ``pipe``): ("window", t0, t1) — measure events whose ``at`` is in
    [t0, t1] and deliveries received in [t0, t1]; ("report", timeout) — wait until every stream
    has received an event after the window (or the timeout), then answer; ("close",).
    """
    loop = new_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_subscribers(loop, host, port, path, count, pipe, connect_parallel))
    loop.close()


async def _subscribers(loop: asyncio.AbstractEventLoop, host: str, port: int, path: str, count: int, pipe: Any,
                       connect_parallel: int) -> None:
    shared = _Shared()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n").encode()
    subs: list[Subscriber] = []
    gate = asyncio.Semaphore(connect_parallel)
    failed = 0
    statuses: dict[int, int] = {}

    async def one() -> None:
        nonlocal failed
        async with gate:
            sub = Subscriber(shared, request, loop)
            try:
                await loop.create_connection(lambda: sub, host, port)
                ok = await asyncio.wait_for(sub.ready, 60)
            except (OSError, TimeoutError):
                ok = False
            statuses[sub.status] = statuses.get(sub.status, 0) + 1
            if ok:
                subs.append(sub)
            else:
                failed += 1

    cpu0 = time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(count)))
    pipe.send(("connected", len(subs), failed, statuses, time.monotonic() - started, time.process_time() - cpu0))

    cpu_window = 0.0
    while True:
        # A blocking recv in a thread: add_reader would make the pipe non-blocking, and a large
        # report would then fail to send.
        command = await loop.run_in_executor(None, pipe.recv)
        if command[0] == "window":
            _, shared.t0, shared.t1 = command
            shared.r0, shared.r1 = shared.t0, shared.t1
            await asyncio.sleep(max(0.0, shared.t0 - time.time()))
            c0 = time.process_time()
            await asyncio.sleep(max(0.0, shared.t1 - time.time()))
            cpu_window = time.process_time() - c0
        elif command[0] == "report":
            # Wait until every stream has had an event committed after the window (events come
            # in order, so it has had all of the window's), or it closed, or the time is up.
            _, timeout = command
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(s.last_at <= shared.t1 and not s.closed.done() for s in subs):
                await asyncio.sleep(0.05)
            pipe.send(("report", {
                "streams": len(subs),
                "open": sum(1 for s in subs if not s.closed.done()),
                "behind": sum(1 for s in subs if s.last_at <= shared.t1 and not s.closed.done()),
                "reported_at": time.time(),
                "last_seen": max(shared.at.items()) if shared.at else None,
                "window_counts": [s.window_count for s in subs],
                "min_window_id": shared.min_window_id if shared.max_window_id else None,
                "max_window_id": shared.max_window_id or None,
                "received_in_window": shared.received_in_window,
                "latencies_us": shared.latencies.tobytes(),
                "events": {i: (shared.at[i], shared.numbers.get(i)) for i in shared.at
                           if shared.t0 <= shared.at[i] <= shared.t1},
                "cpu_window": cpu_window,
            }))
        elif command[0] == "close":
            break
    for s in subs:
        if s.transport is not None:
            s.transport.close()
    await asyncio.sleep(0.1)


# -- a small keep-alive HTTP/1.1 client (B4, B6 and the parent's probes)


class Http:
    """One keep-alive connection. ``call`` returns (status, body); bodies must have a Content-Length."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                   ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}"
        if body or method in ("POST", "PUT"):
            head += f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n")
        if body:
            self.writer.write(body)
        await self.writer.drain()
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = 0
        close = False
        for line in raw.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def load_process(host: str, port: int, clients: int, method: str, path: str, body: bytes, seconds: float,
                 max_requests: int, start_at: float, pipe: Any, interval: float = 0.0) -> None:
    """Child process: ``clients`` connections each sending requests in a closed loop (or one every
    ``interval`` s) from ``start_at`` for ``seconds`` or ``max_requests`` per client; answers with
    (latencies in s, statuses, CPU seconds)."""
    loop = new_loop()
    asyncio.set_event_loop(loop)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def client(index: int) -> None:
        conn = Http(host, port)
        await asyncio.sleep(max(0.0, start_at - time.time()) + (index * interval / max(clients, 1)))
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end and n < max_requests:
            t = time.perf_counter()
            try:
                status, _ = await conn.call(method, path, body)
            except (OSError, asyncio.IncompleteReadError):
                status = 0
                conn.close()
            latencies.append(time.perf_counter() - t)
            statuses[status] = statuses.get(status, 0) + 1
            n += 1
            if interval:
                await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t)))
        conn.close()

    async def main() -> None:
        await asyncio.gather(*(client(i) for i in range(clients)))

    cpu0 = time.process_time()
    loop.run_until_complete(main())
    pipe.send((latencies, statuses, time.process_time() - cpu0))
    loop.close()


# -- whole-stream readers (B3, B6)


async def read_stream(host: str, port: int, path: str, on_event: Any = None, headers: dict[str, str] | None = None,
                      until: tuple[bytes, ...] = (b"\nevent: completed\n", b"\nevent: failed\n",
                                                  b"\nevent: cancelled\n")) -> dict[str, Any]:
    """Read one SSE stream to the end (or to the frame containing ``until``). With ``on_event``,
    each complete frame is handed over as (receive time, frame bytes); without it the frames are
    only counted (lean: the replay benchmark)."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    t0 = time.perf_counter()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode())
    raw = await reader.readuntil(b"\r\n\r\n")
    status = int(raw[9:12])
    first_byte = time.perf_counter() - t0
    ids = 0
    size = 0
    buf = b"\n"
    done = False
    while not done:
        data = await reader.read(1 << 20)
        if not data:
            break
        now = time.time()
        size += len(data)
        buf += data
        end = buf.rfind(b"\n\n")
        if end < 0:
            continue
        part, buf = buf[:end + 2], buf[end + 1:]
        ids += part.count(b"\nid: ")
        if on_event is not None:
            for frame in part.split(b"\n\n"):
                if b"data: " in frame:
                    on_event(now, frame)
        if any(marker in part for marker in until):
            done = True
    elapsed = time.perf_counter() - t0
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return {"status": status, "events": ids, "bytes": size, "seconds": elapsed, "first_byte_s": first_byte}


def global_streams_process(host: str, port: int, count: int, pipe: Any) -> None:
    """``count`` global streams opened at once, each read until its ``sync`` frame is whole; sends
    ("synced", streams, seconds until the last was, bytes of each), and keeps them open until the
    pipe says "close"."""
    loop = new_loop()

    async def synced() -> tuple[asyncio.StreamWriter, int]:
        # A small buffer each: 500 streams that may each buffer 8 MB slowed this process down, and it
        # then read more slowly than the server wrote.
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
        writer.write(f"GET /api/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        size, tail, in_sync = 0, b"", False  # only a few bytes are kept: a sync is megabytes
        marker = b"\nevent: sync\n"
        while True:
            data = await reader.read(1 << 16)
            if not data:
                raise ConnectionError("the stream ended before its sync was whole")
            size += len(data)
            window = tail + data
            if not in_sync:
                at = window.find(marker)
                if at < 0:
                    tail = window[-len(marker):]
                    continue
                in_sync, window = True, window[at + len(marker):]
            # The sync's own end. (Should chunk framing split its "\n\n", the next heartbeat ends it.)
            if b"\n\n" in window:
                return writer, size
            tail = window[-1:]

    async def main() -> None:
        t0 = time.perf_counter()
        done = await asyncio.gather(*(synced() for _ in range(count)))
        pipe.send(("synced", len(done), time.perf_counter() - t0, [size for _, size in done]))
        await loop.run_in_executor(None, pipe.recv)  # "close"
        for writer, _ in done:
            writer.close()

    loop.run_until_complete(main())


def frame_fields(frame: bytes) -> tuple[int | None, str | None, bytes]:
    """(id, event type, data) of one SSE frame (chunk framing lines are ignored)."""
    eid = etype = None
    data = b""
    for line in frame.split(b"\n"):
        line = line.rstrip(b"\r")
        if line.startswith(b"id: "):
            eid = int(line[4:])
        elif line.startswith(b"event: "):
            etype = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
    return eid, etype, data


def process_cpu(pid: int) -> float:
    """utime + stime of a process (not of its children), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss(pid: int) -> int:
    """Resident set size in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0
