"""Server-Sent Event streams: each one a cursor over a log.

A per-job stream sends a ``snapshot`` (the job now, no id), then every event of the job's
log after ``Last-Event-ID`` / ``?after=`` in order, each with its id, and follows live
events until the terminal one. Replay and live delivery are one loop: take the events after
the cursor — from the hub's ring when it reaches back far enough, else from the store — and
send them together, in writes of up to PIECE bytes each; then park at the channel's end, where
the hub writes the next events straight to the connection while it takes them without
waiting, and wakes the stream's task when it does not (see hub.Channel.park). A slow client
only falls behind in the log: nothing is queued for it, and what it has not read yet is one
piece (or one frame, if that is longer).

The global stream sends a ``sync`` frame (every job the caller may see; streams that start
together share one, see hub.Hub.global_sync) and then the hub's coalesced ``jobs`` frames; a
stream that falls behind the hub's short frame log is sent a fresh ``sync``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import CallerStreamLimit, TooManyStreams
from .hub import Hub, Write, lacks_text
from .jobs import EventType, GlobalEventType, Job, rfc3339
from .store import encode_frame

# How many events one read of the store replays at most; a longer replay takes several reads.
REPLAY_BATCH = 5000
# Finished jobs the global stream's sync frame carries besides every unfinished one.
SYNC_RECENT = 1000
# What a stream has to send goes out in chunks of at most about this size (a longer frame is a chunk
# of its own), each written once the connection has taken the one before: a chunk that the client
# has not read yet stays in the server. Written whole, a global stream's sync (6.6 MB with 10,000
# queued jobs) or a text stream's catch-up (40 that read nothing, on a finished job of 2,000 pages
# of 3 KB: 511 MB) stayed there entire, a copy per stream. Each chunk in flight is held twice (the
# piece, and uvicorn's framed copy of it): 1,000 global streams syncing at once peaked at 280 MB
# with 64 KB, 217 MB with 32 KB, 185 MB with 16 KB, and replay (B6) was no slower.
PIECE = 16 * 1024


def event_stream_response(hub: Hub, caller: str, kind: str,
                          frames: Callable[[Write], AsyncIterator[bytes]]) -> EventStream:
    """An SSE response for the frames ``frames(write)`` yields, within the process's and the caller's
    stream limits; ``write`` sends frames at once, past the response's task (EventStream.write_now)."""
    settings = hub.settings
    if hub.streams >= settings.max_streams:
        raise TooManyStreams(f"this server has {hub.streams} streams open, its limit; try again later")
    if hub.streams_by_caller[caller] >= settings.max_streams_per_caller:
        raise CallerStreamLimit(f"you have {settings.max_streams_per_caller} streams open, the limit; "
                                "close one or try again later")
    return EventStream(hub, caller, kind, frames)


_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass every event on at once
]
_PING = b": ping\n\n"


class EventStream(Response):
    """The ASGI response of one event stream, kept lean because thousands may be open at once.

    Each chunk the frame iterator yields is already-encoded SSE and goes to ``send`` as it is
    (an empty chunk is a wake-up with nothing new: a heartbeat comment is written once the
    stream has been quiet for ``heartbeat`` seconds). The writes run in a task of their own; the
    request's task waits on ``receive()`` for the client's disconnect, which cancels them;
    the hub's periodic sweep cancels a stream whose write has waited longer than
    ``send_timeout`` for a client that stopped reading, and ends every stream when the server
    stops. (sse-starlette's response runs four tasks per stream and a cancel scope per write;
    at thousands of watchers that was most of the memory and a tenth of the CPU.) While a job
    stream is parked, the hub writes its next events to the connection itself (write_now),
    but never a write that would wait: that one is left to the stream's task.
    """

    def __init__(self, hub: Hub, caller: str, kind: str,  # noqa: D107
                 frames: Callable[[Write], AsyncIterator[bytes]]) -> None:
        # A Response only in type (handlers return one); nothing of Response.__init__ is needed.
        self.hub, self.caller, self.kind = hub, caller, kind
        self.frames = frames(self.write_now)
        self.task: asyncio.Task[Any] | None = None
        #: The server's connection, once a chunk can be written to it directly (see write_now).
        self.connection: Any = None
        self.last_write = 0.0
        #: When the write under way began (None between writes): for the send-timeout sweep.
        self.sending_since: float | None = None
        self.timed_out = False
        #: The client left (or the server is going down): the stream's task was cancelled for it.
        self.left = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        if scope["method"] == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        send = scope.get("pagestream.send", send)  # the chunks: past the middleware (see app.App)
        self.connection = _chunked_connection(send)
        await receive()  # a GET's empty body; the next message can only be the disconnect
        # The writes go on in a task of their own. The request's task is a dozen awaits deep in the
        # middleware, and every wake-up of the stream would resume each of them (B2, 100 watchers:
        # 12 % more server CPU per delivered event); it only waits here for the client to leave.
        request = asyncio.current_task()
        assert request is not None
        self.task = pump = asyncio.create_task(self._pump(send))
        listening = True

        def over(_: object) -> None:  # the stream ended by itself: stop waiting for the client
            if listening:
                request.cancel()

        pump.add_done_callback(over)
        try:
            await receive()  # the client left (or the stream's last write completed the response)
        except asyncio.CancelledError:
            if not pump.done():
                raise  # not ours: the server is going down
            request.uncancel()
        finally:
            listening = False
            if not pump.done():
                self.left = True
                pump.cancel()
            await asyncio.wait((pump,))
        pump.result()  # a stream that failed fails its request, as the server expects

    def write_now(self, frames: bytes, count: int) -> bool:
        """Send ``frames`` (``count`` events of a job) as the stream's next chunk at once, past its task,
        if the connection takes it without waiting (no write of the task's is under way then: its
        stream is parked); False if it does not, or is not one this can write to."""
        connection = self.connection
        if (connection is None or connection.disconnected or connection.flow.write_paused
                or connection.transport.is_closing()):
            return False
        try:
            connection.transport.write(b"%x\r\n%b\r\n" % (len(frames), frames))  # the chunk, as uvicorn frames it
        except (RuntimeError, ConnectionError):
            return False  # the task's own write through ``send`` meets it and ends the stream
        self.last_write = time.monotonic()
        self.hub.delivered["job"] += count
        return True

    async def _pump(self, send: Send) -> None:
        hub, heartbeat = self.hub, self.hub.settings.heartbeat
        hub.open_stream(self)
        self.last_write = time.monotonic()
        try:
            async for chunk in self.frames:
                now = time.monotonic()
                if not chunk:
                    if now - self.last_write < heartbeat:
                        continue
                    chunk = _PING
                self.sending_since = self.last_write = now
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self.sending_since = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not (self.left or self.timed_out):
                raise
            # the client left or stopped reading (or the server is going down): the stream just ends
        finally:
            hub.close_stream(self)
            await self.frames.aclose()  # type: ignore[attr-defined]


def _chunked_connection(send: Send) -> Any:
    """The connection behind ``send`` if it is uvicorn's (httptools) and sends the response in chunks
    that EventStream.write_now may write to it directly; else None, and every write goes through
    ``send``. This is not ASGI, so every attribute used is checked: a server (or a uvicorn) that
    lacks one is written to through ``send`` alone, at the cost of waking the stream's task for
    every write (see hub.Channel._deliver)."""
    connection = getattr(send, "__self__", None)
    flow = getattr(connection, "flow", None)
    transport = getattr(connection, "transport", None)
    if (getattr(connection, "chunked_encoding", None) is True
            and isinstance(getattr(connection, "disconnected", None), bool)
            and isinstance(getattr(flow, "write_paused", None), bool)
            and callable(getattr(transport, "write", None)) and callable(getattr(transport, "is_closing", None))):
        return connection
    return None


# Numbers the global streams, to spread them over the groups of a hub.Wakeup.
_ordinals = itertools.count()

# Sent as a stream closes for its age: come back at once (and jittered), not after the usual retry.
_RECONNECT_SOON = b"retry: %d\n\n"


async def _wait(waiter: asyncio.Future[None], deadline: float) -> bool:
    """Wait for the next wake-up; False once the stream is old enough to be closed.

    No timer per wait: the hub wakes every stream every AGE_TICK seconds, which is when the
    age is looked at."""
    if time.monotonic() >= deadline:
        return False
    await waiter
    return True


def _pieces(frames: list[bytes]) -> Iterator[bytes]:
    """``frames`` joined into chunks of at most about PIECE bytes; no frames, one empty chunk."""
    piece: list[bytes] = []
    size = 0
    for frame in frames:
        if piece and size + len(frame) > PIECE:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(frame)
        size += len(frame)
    yield b"".join(piece)


def _retry_frame(hub: Hub) -> bytes:
    # Jittered, so that after a restart the clients do not all come back in the same instant.
    base = hub.settings.retry_ms
    return b"retry: %d\n\n" % (base + random.randint(0, base))


async def _sync_frame(hub: Hub, scope: str | None) -> bytes:
    jobs = await hub.store.jobs_with_positions(None, scope, recent=SYNC_RECENT)
    body = {"type": GlobalEventType.sync.value, "at": _now(), "jobs": [j.as_dict(p) for j, p in jobs]}
    return encode_frame(None, GlobalEventType.sync.value, orjson.dumps(body))


def _snapshot(job: Job, position: int | None) -> bytes:
    data = {"type": EventType.snapshot.value, "job_id": job.id, "at": _now(), "job": job.as_dict(position)}
    return encode_frame(None, EventType.snapshot.value, orjson.dumps(data))


def _now() -> str:
    return rfc3339(time.time()) or ""


async def job_events(hub: Hub, job: Job, position: int | None, after: int, text: bool,
                     write: Write | None) -> AsyncIterator[bytes]:
    """The frames of one job's stream; ``job`` was read (and checked visible) by the caller. While
    the stream is parked, the hub gives it the job's next events through ``write`` when it can."""
    store = hub.store
    job_id = job.id
    with hub.subscribe(job_id, text) as channel:
        yield _retry_frame(hub) + _snapshot(job, position)
        del job  # held for the stream's whole life otherwise: a Job per watcher
        cursor = after
        sent_position = position
        deadline = time.monotonic() + hub.settings.max_stream_age
        while True:
            frames: list[bytes] = []
            ended = False
            events = channel.events_after(cursor)
            if text and events and lacks_text(events):
                events = None  # the store puts the text back
            from_store = events is None
            if events is None:  # behind the ring (or it is empty): the store has everything
                events = await channel.read(store, cursor, REPLAY_BATCH, text)
            for event in events:
                frames.append(event.frame_for(text))
                cursor = event.id
                if event.terminal:
                    ended = True
                    break
            if from_store and events and not ended:
                # Look again before parking: a longer replay goes on with the next batch.
                hub.delivered["job"] += len(frames)
                for chunk in _pieces(frames):
                    yield chunk
                continue
            position_frame = None if ended else channel.position_after(sent_position)
            if position_frame is not None:
                sent_position = channel.position
                frames.append(position_frame)
            hub.delivered["job"] += len(frames)
            for chunk in _pieces(frames):  # an empty chunk too: the writer decides on a heartbeat
                yield chunk
            if ended or channel.removed or hub.closing:
                return
            if time.monotonic() >= deadline:  # no timer per stream: the hub rouses each every AGE_TICK s
                yield _RECONNECT_SOON % random.randint(50, 500)
                return
            if channel.newest > cursor or channel.position_after(sent_position) is not None:
                continue  # news came while the store was read or the chunk was sent: no parking with news
            parked = channel.park(cursor, text, write)
            await parked.future  # resolved when the hub cannot give the stream its news by a write
            cursor = parked.cursor


async def global_events(hub: Hub, scope: str | None) -> AsyncIterator[bytes]:
    """The frames of the global stream as the owner ``scope`` sees them (None: every job)."""
    first = True
    version = -1
    ordinal = next(_ordinals)
    deadline = time.monotonic() + hub.settings.max_stream_age
    waiter = None
    while True:
        waiter = hub.global_waiter(ordinal, waiter)
        frames = None if version < 0 else hub.global_frames_after(version)
        if frames is None:
            version, sync = await hub.global_sync(scope, lambda: _sync_frame(hub, scope))
            if first:
                yield _retry_frame(hub)
                first = False
            for start in range(0, len(sync), PIECE):
                yield sync[start:start + PIECE]
        else:
            if frames:
                version = frames[-1][0]
            hub.delivered["global"] += len(frames)
            yield b"".join(f.encoded(scope) for _, f in frames)  # empty: a wake-up for the heartbeat
        if hub.closing:
            return
        if not await _wait(waiter, deadline):
            yield _RECONNECT_SOON % random.randint(50, 500)
            return
