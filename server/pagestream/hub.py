"""The hub: where committed events meet the streams that watch them.

The store hands every committed batch to :meth:`Hub.deliver` (on the event loop, after the
commit, so no watcher ever sees an event a crash could take back). For each job with
watchers the hub keeps a :class:`Channel`: a small ring of the job's latest encoded events
and the streams parked at its end. Each stream is a cursor that, once woken, takes what it
has not sent yet (from the ring, or from the store if it has fallen behind the ring) and then
parks. Delivery appends to the ring, and each parked stream's new events go to its connection
at once through the stream's own ``write``, with no wake-up of its task — unless that cannot
be done without waiting (the client is slow), or the news is more than new events (the end,
a new queue position, the stream's age): then the stream's task is woken to do it. The hub
never waits for a stream. What a stream reads from the store goes into the ring where it
fits, so the watchers that open after it catch up from memory.

While events are dense, a channel delivers to its streams at most once per ``stream_pace_ms``, so
a fast document with many watchers costs one write per stream per pace interval, carrying
every event since the last one.

The global stream is state synchronisation rather than a log: the hub gathers the ids of the
jobs that changed and, at most every ``global_interval_ms``, reads their latest state once
and encodes one frame that every global stream sends. Queue positions (which change for
every queued job whenever the queue moves) go out the same way, and as id-less ``position``
events on the channels of queued jobs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from .jobs import EventType, GlobalEventType, rfc3339
from .settings import Settings
from .store import Commit, Store, StoredEvent, encode_frame

if TYPE_CHECKING:
    from .streams import EventStream

log = logging.getLogger("pagestream.hub")

#: Seconds of pace per watching stream, so that the writes to a job's streams take a bounded share of
#: the loop however many watch: a write costs about 12 µs of server CPU since the hub writes to parked
#: streams itself (B2 at 5,000 streams), a quarter of this. 100 µs was set when each write woke its
#: stream's task (40-50 µs). At 50 µs, in two alternated rounds of B2 against 100 µs: latency p50
#: 54-56 ms instead of 105 at 2,000 streams, 132-137 ms instead of 265-272 at 5,000, for 5.2 µs of
#: server CPU per delivered event instead of 3.3-3.6 (4.6-5.0 instead of 2.5 at 5,000; the baseline
#: spends 45-65). B5 (200 streams, so a pace of 10 ms instead of 20) was no worse: lag p99 3.3-4.9 ms
#: (median 4.1) in six rounds of ten jobs, against 3.3-5.7 (median 4.1) at 100 µs.
PER_STREAM_PACE = 50e-6
#: How often every stream is woken to look at its age (and end it when it is old enough).
AGE_TICK = 5.0
#: Streams woken in one turn of the event loop; the rest wake in the turns after (see Wakeup).
STREAMS_PER_TURN = 8
#: Parked streams written to in one turn of the event loop (see Channel._deliver); a stream woken
#: instead counts as WAKE_COST of them. Each write wakes a client, which on a busy machine takes the
#: loop's CPU there and then (with 100 watchers, about every second write), so a long run of writes
#: is a long turn: with 64 a turn, B5's lag p99 once all 200 streams were open was 2.7-4.8 ms in
#: eight runs (median 3.7), with 16 1.9-4.3 ms (median 2.4), with every stream's task woken 2.6-3.3
#: ms (median 3.0). B2's CPU per delivery at 100 watchers was the same with 16 as with 64.
WRITES_PER_TURN = 16
WAKE_COST = WRITES_PER_TURN // STREAMS_PER_TURN


class Wakeup:
    """One wake-up for many streams (the global ones), released a group at a time.

    Resolving a single future that hundreds of streams wait on runs all of them in one turn of
    the event loop, and every timer, request and commit waits behind them all (200 streams of a
    fast job held the loop for tens of milliseconds). Streams are spread over groups of about
    STREAMS_PER_TURN, by an ordinal of their own, and the groups are released one loop turn
    after another, so other work runs in between. Each stream waits on a future of its own: its
    task is woken directly, and a stream cancelled as its client leaves touches no other.
    """

    __slots__ = ("_loop", "_groups")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._groups: list[list[asyncio.Future[None]]] = [[]]

    def future(self, ordinal: int, held: asyncio.Future[None] | None = None) -> asyncio.Future[None]:
        """A future that the next wake-up resolves, for the stream numbered ``ordinal``: ``held``,
        the one it took before, while that is still pending (it is in the next wake-up's groups)."""
        if held is not None and not held.done():
            return held
        future = self._loop.create_future()
        self._groups[ordinal % len(self._groups)].append(future)
        return future

    def fire(self, streams: int) -> None:
        """Wake every waiting stream (``streams`` is how many there are: it sets the next groups)."""
        released = self._groups
        self._groups = [[] for _ in range(max(1, -(-streams // STREAMS_PER_TURN)))]
        self._release(released, 0)

    def _release(self, groups: list[list[asyncio.Future[None]]], index: int) -> None:
        for future in groups[index]:
            if not future.done():  # cancelled: its stream has ended
                future.set_result(None)
        if index + 1 < len(groups):
            self._loop.call_soon(self._release, groups, index + 1)


#: How a parked stream is given its new events: ``write(body, count)`` sends the frames ``body`` (``count``
#: events) at once and returns True, or returns False if it cannot without waiting.
Write = Callable[[bytes, int], bool]


@dataclasses.dataclass(slots=True)
class Parked:
    """A job stream that has sent everything up to ``cursor`` and waits for more (see Channel.park)."""

    cursor: int
    text: bool
    write: Write | None
    future: asyncio.Future[None]
    rousal: int


def lacks_text(events: list[StoredEvent]) -> bool:
    """True if a page event of ``events`` has no text frame, which a ``?text=1`` stream needs: it was
    committed before any such stream watched the job, and only the store can put the text back."""
    return any(e.text_frame is None and e.type is EventType.page for e in events)


class Channel:
    """The live side of one job's event log: recent events and the streams parked at its end."""

    __slots__ = ("job_id", "ring", "subscribers", "text_subscribers", "removed", "position", "position_frame",
                 "wanted", "filling", "_reads", "_parked", "_rousals", "_last_wake", "_wake_scheduled", "_pace",
                 "_loop")

    def __init__(self, job_id: str, ring_size: int, pace: float, loop: asyncio.AbstractEventLoop) -> None:
        self.job_id = job_id
        self.ring: collections.deque[StoredEvent] = collections.deque(maxlen=ring_size)
        self.subscribers = 0
        self.text_subscribers = 0
        self.removed = False
        #: The latest queue position sent to this job's streams, and its id-less frame.
        self.position: int | None = None
        self.position_frame: bytes | None = None
        #: Shared stores: the highest event id known to exist, and whether the ring is being filled to it.
        self.wanted = 0
        self.filling = False
        #: Reads of the store under way for this job's streams, by (after, limit, text): see read.
        self._reads: dict[tuple[int, int, bool], asyncio.Future[list[StoredEvent]]] = {}
        self._loop = loop
        self._parked: list[Parked] = []
        #: How many times every stream was asked to wake (rouse): a stream parked before the latest one
        #: is woken at the next delivery, whatever it brings.
        self._rousals = 0
        self._last_wake = 0.0
        self._wake_scheduled = False
        self._pace = pace

    @property
    def newest(self) -> int:
        """The id of the newest event in the ring (0 if it is empty)."""
        return self.ring[-1].id if self.ring else 0

    def position_after(self, sent: int | None) -> bytes | None:
        """The job's queue-position frame if its position is not ``sent`` (the one a stream sent last)."""
        return self.position_frame if self.position_frame is not None and self.position != sent else None

    def park(self, cursor: int, text: bool, write: Write | None) -> Parked:
        """Park a stream that has sent everything up to ``cursor`` (with the text of pages if ``text``):
        the next deliveries give it their events through ``write``, until one cannot (then, or at a
        rouse, its ``future`` is resolved: its task must look for itself). Await the future; the
        stream's cursor is then the Parked's. A stream must not park while the ring holds events
        after its cursor."""
        parked = Parked(cursor, text, write, self._loop.create_future(), self._rousals)
        self._parked.append(parked)
        return parked

    def rouse(self) -> None:
        """Wake every stream's task (for its age and heartbeat, a new queue position, the server's
        stop), not only those the next events cannot be written to directly."""
        self._rousals += 1
        self.wake(now=True)

    def wake(self, *, now: bool = False) -> None:
        """Deliver to the streams at once if the last delivery was long enough ago, else at the end of the pace.

        The pace grows with the number of streams (PER_STREAM_PACE each), so the event loop spends at
        most about half its time writing to them however many watch: a busy job with thousands of
        watchers gets fewer, fuller writes instead of a flooded loop."""
        if self._wake_scheduled:
            return
        pace = max(self._pace, self.subscribers * PER_STREAM_PACE)
        delay = self._last_wake + pace - time.monotonic()
        if now or delay <= 0:
            self._fire()
        else:
            self._wake_scheduled = True
            self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._wake_scheduled = False
        self._last_wake = time.monotonic()
        parked, self._parked = self._parked, []
        self._deliver(parked, 0)

    def _deliver(self, parked: list[Parked], start: int) -> None:
        """Give the parked streams from ``start`` on their new events, in this turn of the event loop as
        many as WRITES_PER_TURN writes take, and the rest in the turns after (so that other work runs in
        between): each by its own write, which leaves it parked, or else by waking its task, which
        parks it again when done. A woken task counts as WAKE_COST writes: it runs in the next turn.

        A write to a stream that keeps up costs far less than waking its task to make the same write
        (B2, 100 watchers: 25 µs of server CPU per delivered event with every task woken, 16–19 without)."""
        bodies: dict[tuple[int, bool], tuple[bytes, int] | None] = {}  # (cursor, text) → frames, events
        budget = WRITES_PER_TURN
        index = start
        while index < len(parked) and budget > 0:
            stream = parked[index]
            index += 1
            if stream.future.done():
                continue  # its task was cancelled: the stream has ended
            written = False
            if stream.write is not None and stream.rousal == self._rousals and not self.removed:
                key = (stream.cursor, stream.text)
                if key not in bodies:
                    bodies[key] = self._news(*key)
                news = bodies[key]
                written = news is not None and stream.write(*news)
            if written:
                stream.cursor = self.newest
                self._parked.append(stream)
                budget -= 1
            else:
                stream.future.set_result(None)
                budget -= WAKE_COST
        if index < len(parked):
            self._loop.call_soon(self._deliver, parked, index)

    def _news(self, cursor: int, text: bool) -> tuple[bytes, int] | None:
        """The frames after ``cursor`` as a parked stream may be given them by a write, and how many; None
        if there are none, or they need the stream's task: its end, or text the ring does not hold."""
        events = self.events_after(cursor)
        if not events or any(e.terminal for e in events) or (text and lacks_text(events)):
            return None
        return b"".join(e.frame_for(text) for e in events), len(events)

    def events_after(self, after: int) -> list[StoredEvent] | None:
        """The ring's events after id ``after``, or None if the ring no longer reaches back that far."""
        ring = self.ring
        if not ring:
            return None
        # Ids in the ring are contiguous (see keep), so the newest ``missing`` events are the ones after ``after``.
        missing = ring[-1].id - after
        if missing <= 0:
            return []
        if missing > len(ring):
            return None
        # Taken from the newest end: a live stream is a few events behind, and walking a full ring from
        # its oldest end for every write cost more than the rest of the stream's turn.
        events = list(itertools.islice(reversed(ring), missing))
        events.reverse()
        return events

    def append(self, event: StoredEvent) -> None:
        """A newly committed event (one a stream's read already put in the ring is not added twice)."""
        ring = self.ring
        if not ring or event.id > ring[-1].id:
            ring.append(event)

    async def read(self, store: Store, after: int, limit: int, text: bool) -> list[StoredEvent]:
        """Up to ``limit`` events after id ``after`` from the store, put in the ring (see keep).

        Streams that need the same read at the same time share one: a job's watchers often open
        together, before the first one's read has filled the ring, and when 200 opened a running
        job's stream at once, their separate reads of the same log were about a tenth of the
        server's CPU samples (the store's threads hold the GIL while they decode rows)."""
        key = (after, limit, text)
        reading = self._reads.get(key)
        if reading is None:
            reading = self._reads[key] = asyncio.ensure_future(store.events_after(self.job_id, after, limit, text))

            def done(task: asyncio.Future[list[StoredEvent]]) -> None:
                del self._reads[key]  # this task: only this callback removes an entry, and none replaces one
                if not task.cancelled() and task.exception() is None:
                    events = task.result()
                    self.keep(events, newest=len(events) < limit)

            reading.add_done_callback(done)
        # Shielded: a stream that is cancelled (its client left) does not cancel the others' read.
        return await asyncio.shield(reading)

    def keep(self, events: list[StoredEvent], newest: bool) -> None:
        """Events a stream read from the store, put in the ring where they fit, so that the streams
        opening after it catch up from memory instead of each reading and decoding the log again (a
        job's watchers often open together, while it runs). ``newest``: the read reached the end of the
        log, so an empty ring may start with it. Only events that keep the ring's ids contiguous go in."""
        ring = self.ring
        if not events or ring.maxlen is None:
            return
        if not ring:
            if newest and not self.filling:
                ring.extend(events)
            return
        room = ring.maxlen - len(ring)
        if room <= 0:  # a full ring has no room for older events
            return
        first = ring[0].id
        older = [event for event in events if event.id < first]
        if older and older[-1].id == first - 1:
            ring.extendleft(reversed(older[-room:]))


@dataclasses.dataclass(slots=True)
class GlobalFrame:
    """One frame of the global stream, before it is cut to what a caller may see.

    Each audience (every job, or one owner's) gets it encoded once, and the same bytes go to
    all the streams of that audience.
    """

    jobs: list[tuple[str, dict[str, Any]]]
    removed: list[tuple[str, str]]
    positions: list[tuple[str, str, int]] | None = None
    at: str = dataclasses.field(default_factory=lambda: rfc3339(time.time()) or "")
    _encoded: dict[str | None, bytes] = dataclasses.field(default_factory=dict)

    def encoded(self, scope: str | None) -> bytes:
        """The frame as the owner ``scope`` sees it (None: every job)."""
        frame = self._encoded.get(scope)
        if frame is None:
            body: dict[str, Any] = {
                "type": GlobalEventType.jobs.value,
                "at": self.at,
                "jobs": [job for owner, job in self.jobs if scope is None or owner == scope],
                "removed": [job_id for owner, job_id in self.removed if scope is None or owner == scope],
            }
            if self.positions is not None:
                body["positions"] = {
                    job_id: number for owner, job_id, number in self.positions if scope is None or owner == scope
                }
            if scope is not None and not (body["jobs"] or body["removed"] or body.get("positions")):
                frame = self._encoded[scope] = b""  # nothing of this owner's changed
                return frame
            frame = self._encoded[scope] = encode_frame(None, GlobalEventType.jobs.value, orjson.dumps(body))
        return frame


class Hub:
    """Fans committed events out to the streams. One per process; see the module docstring."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.channels: dict[str, Channel] = {}
        #: Open streams in this process, and per caller (an owner, or an address without keys).
        self.streams = 0
        self.streams_by_caller: collections.Counter[str] = collections.Counter()
        #: For the metrics: open streams and events written, by kind of stream ("job", "global").
        self.streams_by_kind: collections.Counter[str] = collections.Counter()
        self.delivered: collections.Counter[str] = collections.Counter()
        self.open_streams: set[EventStream] = set()
        self.closing = False
        self._loop = asyncio.get_running_loop()
        # The global stream: a short log of frames, each with a version.
        self.global_version = 0
        self.global_frames: collections.deque[tuple[int, GlobalFrame]] = collections.deque(maxlen=64)
        self._global_wakeup = Wakeup(self._loop)
        #: Sync frames by audience, with the version they stand at, until the next news (see global_sync).
        self._syncs: dict[str | None, tuple[int, asyncio.Future[bytes]]] = {}
        self._dirty: set[str] = set()
        self._removed: dict[str, str] = {}
        self._queue_moved = False
        self._news = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._aging: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_global(), name="pagestream-global-ticker")
        self._aging = asyncio.create_task(self._tick_ages(), name="pagestream-stream-ages")

    async def _tick_ages(self) -> None:
        # One timer for all streams, instead of one per stream per wait: every stream wakes to look
        # at its age and heartbeat, and a write stuck on a client that stopped reading is cut.
        interval = min(AGE_TICK, self.settings.heartbeat)
        while True:
            await asyncio.sleep(interval)
            for channel in list(self.channels.values()):
                channel.rouse()
            self._wake_global()
            stuck = time.monotonic() - self.settings.send_timeout
            for stream in list(self.open_streams):
                if stream.sending_since is not None and stream.sending_since < stuck and stream.task:
                    stream.timed_out = True
                    stream.task.cancel()

    def open_stream(self, stream: EventStream) -> None:
        self.open_streams.add(stream)
        self.streams += 1
        self.streams_by_caller[stream.caller] += 1
        self.streams_by_kind[stream.kind] += 1

    def close_stream(self, stream: EventStream) -> None:
        if stream not in self.open_streams:
            return
        self.open_streams.discard(stream)
        self.streams -= 1
        self.streams_by_kind[stream.kind] -= 1
        self.streams_by_caller[stream.caller] -= 1
        if self.streams_by_caller[stream.caller] <= 0:
            del self.streams_by_caller[stream.caller]

    def stop_streams(self) -> None:
        """The server is stopping: every stream ends after what it has sent (uvicorn waits for
        open connections before it runs the app's shutdown, so this comes from its exit signal)."""
        self.closing = True
        for channel in self.channels.values():
            channel.rouse()
        self._wake_global()

    async def close(self) -> None:
        """Wake every stream with ``closing`` set, so each ends after what it has sent."""
        self.stop_streams()
        for task in (self._ticker, self._aging):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- from the store

    def deliver(self, commit: Commit) -> None:
        """Take a committed batch: fill the rings, wake the channels, note what the global stream must send."""
        urgent: dict[str, bool] = {}  # channel → wake at once (a terminal event, or the job is gone)
        if self.store.shared:
            # Other processes append to the same logs: the rings are filled from the store, in order.
            for job_id, last in commit.last_ids.items():
                channel = self.channels.get(job_id)
                if channel is not None and last > channel.wanted:
                    channel.wanted = last
                    self._fill(channel)
        else:
            for event in commit.events:
                channel = self.channels.get(event.job_id)
                if channel is not None:
                    channel.append(event)
                    urgent[event.job_id] = urgent.get(event.job_id, False) or event.terminal
        for job_id in commit.removed:
            channel = self.channels.get(job_id)
            if channel is not None:
                channel.removed = True
                urgent[job_id] = True
        for job_id, now in urgent.items():
            self.channels[job_id].wake(now=now)
        self._dirty |= commit.touched
        self._removed.update(commit.removed)
        self._queue_moved |= commit.queue_moved
        self._news.set()

    def foreign(self, commit: Commit | None) -> None:
        """A commit of another process (shared stores), or None when some may have been missed."""
        if commit is not None:
            self.deliver(commit)
            return
        self._loop.create_task(self._resync())

    async def _resync(self) -> None:
        for job, _ in await self.store.jobs_with_positions(list(self.channels)):
            channel = self.channels.get(job.id)
            if channel is not None and job.last_event_id > channel.wanted:
                channel.wanted = job.last_event_id
                self._fill(channel)
        self.global_frames.clear()  # every global stream starts again with a sync
        self.global_version += 1
        self._wake_global()

    def _fill(self, channel: Channel) -> None:
        if not channel.filling:
            channel.filling = True
            self._loop.create_task(self._fill_ring(channel))

    async def _fill_ring(self, channel: Channel) -> None:
        """Read a channel's new events from the store into its ring, once for all its streams."""
        try:
            while True:
                # A new ring starts a little before the newest event; streams further behind read the store.
                have = channel.ring[-1].id if channel.ring else max(0, channel.wanted - 64)
                if have >= channel.wanted:
                    return
                events = await self.store.events_after(channel.job_id, have, self.settings.ring_size, text=True)
                if not events:
                    return
                for event in events:
                    channel.append(event)
                channel.wake(now=any(e.terminal for e in events))
        except Exception:
            log.exception("could not read the new events of job %s", channel.job_id)
        finally:
            channel.filling = False

    # -- per-job streams

    @contextlib.contextmanager
    def subscribe(self, job_id: str, text: bool = False) -> Iterator[Channel]:
        channel = self.channels.get(job_id)
        if channel is None:
            channel = Channel(job_id, self.settings.ring_size, self.settings.stream_pace_ms / 1000, self._loop)
            self.channels[job_id] = channel
        channel.subscribers += 1
        channel.text_subscribers += text
        if text and job_id not in self.store.text_watched:
            self.store.text_watched = self.store.text_watched | {job_id}
        try:
            yield channel
        finally:
            channel.subscribers -= 1
            channel.text_subscribers -= text
            if channel.text_subscribers == 0 and job_id in self.store.text_watched:
                self.store.text_watched = self.store.text_watched - {job_id}
            if channel.subscribers == 0 and self.channels.get(job_id) is channel:
                del self.channels[job_id]

    # -- the global stream

    def global_waiter(self, ordinal: int, held: asyncio.Future[None] | None = None) -> asyncio.Future[None]:
        return self._global_wakeup.future(ordinal, held)

    async def global_sync(self, scope: str | None, read: Callable[[], Awaitable[bytes]]) -> tuple[int, bytes]:
        """The global stream's sync frame for the audience ``scope`` (``read`` makes it) and the version
        of the short log it stands at. Streams that start, or start again, before any news share one:
        with 10,000 queued jobs a sync is 6.6 MB, and when each stream read and encoded its own, 100
        opening together took 36 s of the server's CPU and 2.3 GB (0.26 s and 80 MB shared)."""
        version = self.global_version
        entry = self._syncs.get(scope)
        if entry is None or entry[0] != version:
            entry = self._syncs[scope] = (version, asyncio.ensure_future(read()))

            def failed(made: asyncio.Future[bytes]) -> None:
                if (made.cancelled() or made.exception() is not None) and self._syncs.get(scope) is entry:
                    del self._syncs[scope]  # the next stream tries again

            entry[1].add_done_callback(failed)
        # Shielded: a stream that is cancelled (its client left) does not cancel the others' read.
        return entry[0], await asyncio.shield(entry[1])

    def global_frames_after(self, version: int) -> list[tuple[int, GlobalFrame]] | None:
        """Frames newer than ``version``, or None if the short log no longer reaches back that far."""
        frames = self.global_frames
        if version >= self.global_version:
            return []
        if not frames or frames[0][0] > version + 1:
            return None
        return [(v, f) for v, f in frames if v > version]

    def _wake_global(self) -> None:
        self._global_wakeup.fire(self.streams_by_kind["global"])

    async def _tick_global(self) -> None:
        interval = self.settings.global_interval_ms / 1000
        while True:
            await self._news.wait()
            self._news.clear()
            read = True
            try:
                read = await self._publish_global()
            except Exception:
                log.exception("could not build the global stream's frame")
            if read:  # the next read comes at most this often; news that needed none needs no pause
                await asyncio.sleep(interval)

    async def _publish_global(self) -> bool:
        """Make the global stream's next frame and the watched queued jobs' positions; whether the
        store was read for them."""
        dirty, removed, moved = self._dirty - self._removed.keys(), self._removed, self._queue_moved
        self._dirty, self._removed, self._queue_moved = set(), {}, False
        # A sync read before this news may lack it, and with no global stream open no frame will carry it:
        # streams that start from now on read their own.
        self._syncs.clear()
        if not self.streams_by_kind["global"]:
            # Nobody follows the global stream (one that opens starts with a sync read after this):
            # only watched queued jobs need their new places.
            if moved and self.channels:
                order = await self.store.queue_order()
                self._send_positions({job_id: number for number, (job_id, _) in enumerate(order, 1)})
                return True
            return False
        jobs = await self.store.jobs_with_positions(dirty) if dirty else []
        frame = GlobalFrame(
            jobs=[(job.owner, job.as_dict(position)) for job, position in jobs],
            removed=sorted((owner, job_id) for job_id, owner in removed.items()),
        )
        if moved:
            order = await self.store.queue_order()
            frame.positions = [(owner, job_id, number) for number, (job_id, owner) in enumerate(order, 1)]
            self._send_positions({job_id: number for _, job_id, number in frame.positions})
        self.global_version += 1
        self.global_frames.append((self.global_version, frame))
        self._wake_global()
        return True

    def _send_positions(self, positions: dict[str, int]) -> None:
        """Give each watched queued job whose place changed an id-less ``position`` event."""
        at = rfc3339(time.time())
        for job_id, channel in self.channels.items():
            position = positions.get(job_id)
            if position is None or position == channel.position:
                continue
            channel.position = position
            data = orjson.dumps({"type": EventType.position.value, "job_id": job_id, "at": at, "position": position})
            channel.position_frame = encode_frame(None, EventType.position.value, data)
            channel.rouse()
