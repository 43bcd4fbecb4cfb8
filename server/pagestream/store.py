"""The store: jobs, their pages and their event logs, in SQLite (WAL).

One writer thread owns the only writing connection. Every write is a function queued to it;
the thread takes everything that is waiting, runs it in one transaction (each write in its
own savepoint, so one failing write does not spoil the others) and commits once — group
commit: a lone write goes at once, writes that arrive while the thread is busy share the
next commit. After the commit it hands the batch's events to ``on_commit`` on the event
loop, so nobody learns of an event before it is durable.

Reads run on a small thread pool, each thread with its own connection, so neither reads nor
writes ever block the event loop. WAL with ``synchronous=NORMAL`` survives a killed process
(not a power cut) at a fraction of the cost of FULL.

Event ids are assigned inside the writing transaction from ``jobs.last_event_id``, so a
job's ids run 1, 2, 3, … with no gap and no repeat whatever is killed when; pages are keyed
by (job, number) and a page event is appended only when its page row is new, so a page
re-extracted after a crash is stored and announced exactly once.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from .database import Connection, Database, PostgreSQL, open_database
from .errors import Conflict, IdempotencyConflict, QueueFull, Unavailable
from .jobs import FINISHED, CallbackState, DocumentKind, ErrorCode, EventType, Job, JobState, rfc3339

T = TypeVar("T")
# One step of a job's progress (Store.run_opened, Store.pages_extracted), committed with others in one write.
Write = Callable[["_Tx"], None]

log = logging.getLogger("pagestream.store")

#: Delivery attempts of a webhook kept on its job.
MAX_CALLBACK_ATTEMPTS = 50
#: Uploads kept in a shared store are cut into chunks of this many bytes.
FILE_CHUNK = 1024 * 1024
#: A NOTIFY payload must stay under PostgreSQL's 8,000 bytes.
_NOTIFY_BYTES = 7000

SCHEMA_VERSION = 4

# Written once for both databases: {blob} and {without_rowid} are filled in by database.py (where
# PostgreSQL needs other words, _SHARED_MIGRATIONS has them).
_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq BIGINT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        filename TEXT NOT NULL,
        kind TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        spool_name TEXT NOT NULL,
        pages_spec TEXT,
        password TEXT,
        owner TEXT NOT NULL DEFAULT '',
        idempotency_key TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        run_started_at DOUBLE PRECISION,
        run_pages_start BIGINT NOT NULL DEFAULT 0,
        finished_at DOUBLE PRECISION,
        pages_total BIGINT,
        pages_done BIGINT NOT NULL DEFAULT 0,
        attempts BIGINT NOT NULL DEFAULT 0,
        cancel_requested BIGINT NOT NULL DEFAULT 0,
        error_code TEXT,
        error_message TEXT,
        last_event_id BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_state_seq ON jobs (state, seq);
    CREATE INDEX jobs_owner_state ON jobs (owner, state, seq);
    CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
    CREATE TABLE pages (
        job_id TEXT NOT NULL,
        number BIGINT NOT NULL,
        chars BIGINT NOT NULL,
        words BIGINT NOT NULL,
        ms DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL,
        PRIMARY KEY (job_id, number)
    ) {without_rowid};
    CREATE TABLE events (
        job_id TEXT NOT NULL,
        id BIGINT NOT NULL,
        type TEXT NOT NULL,
        page BIGINT,
        data {blob} NOT NULL,
        PRIMARY KEY (job_id, id)
    ) {without_rowid};
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    INSERT INTO counters VALUES ('seq', 0);
    -- The uploaded files, for stores shared by several machines (PostgreSQL): in chunks.
    CREATE TABLE files (
        name TEXT NOT NULL,
        chunk BIGINT NOT NULL,
        data {blob} NOT NULL,
        PRIMARY KEY (name, chunk)
    ) {without_rowid}
    """,
    # Webhooks: where to tell that a job ended, and every attempt to tell it.
    2: """
    ALTER TABLE jobs ADD COLUMN callback_url TEXT;
    ALTER TABLE jobs ADD COLUMN callback_state TEXT;
    ALTER TABLE jobs ADD COLUMN callback_due_at DOUBLE PRECISION;
    ALTER TABLE jobs ADD COLUMN callback_since DOUBLE PRECISION;
    ALTER TABLE jobs ADD COLUMN callback_attempts TEXT;
    CREATE INDEX jobs_callback_due ON jobs (callback_due_at) WHERE callback_state = 'pending'
    """,
    # Page rows are big (they hold the text), and SQLite's WITHOUT ROWID keeps whole rows inside
    # the primary key's B-tree: writing 3,600 pages of 1.3 KB took twice the CPU and three times
    # the disk of a rowid table, whose rows are appended in order beside a small key index.
    # (SQLite only: a PostgreSQL table is a heap already; see _SHARED_MIGRATIONS.)
    3: """
    CREATE TABLE pages_v3 (
        job_id TEXT NOT NULL,
        number BIGINT NOT NULL,
        chars BIGINT NOT NULL,
        words BIGINT NOT NULL,
        ms DOUBLE PRECISION NOT NULL,
        method TEXT NOT NULL,
        error TEXT,
        text TEXT NOT NULL,
        PRIMARY KEY (job_id, number)
    );
    INSERT INTO pages_v3 SELECT job_id, number, chars, words, ms, method, error, text FROM pages;
    DROP TABLE pages;
    ALTER TABLE pages_v3 RENAME TO pages
    """,
}

# The queued jobs of each owner, kept by triggers: the queue's limits are checked on every
# submission, and counting the queue's index there grew with the queue (two counts took
# 1.3 ms of the writer with 5,000 jobs queued, 2.6 ms with 10,000). Triggers, so that no
# path that moves a job in or out of the queue can forget it. Their syntax differs.
_QUEUE_COUNTS = """
    CREATE TABLE queue_counts (owner TEXT PRIMARY KEY, queued BIGINT NOT NULL);
    INSERT INTO queue_counts (owner, queued) SELECT owner, COUNT(*) FROM jobs WHERE state = 'queued' GROUP BY owner;
"""
_MIGRATIONS[4] = _QUEUE_COUNTS + """
    CREATE TRIGGER jobs_queue_in AFTER INSERT ON jobs WHEN NEW.state = 'queued' BEGIN
        INSERT INTO queue_counts (owner, queued) VALUES (NEW.owner, 1)
            ON CONFLICT (owner) DO UPDATE SET queued = queued + 1;
    END;
    CREATE TRIGGER jobs_queue_out AFTER DELETE ON jobs WHEN OLD.state = 'queued' BEGIN
        UPDATE queue_counts SET queued = queued - 1 WHERE owner = OLD.owner;
    END;
    CREATE TRIGGER jobs_queue_moved AFTER UPDATE OF state, owner ON jobs
            WHEN OLD.state = 'queued' OR NEW.state = 'queued' BEGIN
        UPDATE queue_counts SET queued = queued - 1 WHERE OLD.state = 'queued' AND owner = OLD.owner;
        INSERT INTO queue_counts (owner, queued) SELECT NEW.owner, 1 WHERE NEW.state = 'queued'
            ON CONFLICT (owner) DO UPDATE SET queued = queued + 1;
    END
"""
#: The migrations a shared store (PostgreSQL) writes otherwise; empty: it only records the version.
_SHARED_MIGRATIONS: dict[int, str] = {
    3: "",  # how SQLite lays the pages out
    # (The lock first: a process of the previous version may be submitting while this one migrates.)
    4: "LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;" + _QUEUE_COUNTS + """
    CREATE FUNCTION pagestream_queue_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' AND OLD.state = 'queued' THEN
            UPDATE queue_counts SET queued = queued - 1 WHERE owner = OLD.owner;
        END IF;
        IF TG_OP <> 'DELETE' AND NEW.state = 'queued' THEN
            INSERT INTO queue_counts (owner, queued) VALUES (NEW.owner, 1)
                ON CONFLICT (owner) DO UPDATE SET queued = queue_counts.queued + 1;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER jobs_queue_counts AFTER INSERT OR DELETE OR UPDATE OF state, owner ON jobs
        FOR EACH ROW EXECUTE FUNCTION pagestream_queue_counts()
    """,
}
_QUEUED_TOTAL = "SELECT CAST(COALESCE(SUM(queued), 0) AS BIGINT) FROM queue_counts"

_JOB_COLUMNS = (
    "id, seq, state, filename, kind, size, sha256, spool_name, pages_spec, password, owner, idempotency_key, "
    "created_at, started_at, run_started_at, run_pages_start, finished_at, pages_total, pages_done, attempts, "
    "cancel_requested, error_code, error_message, last_event_id, "
    "callback_url, callback_state, callback_due_at, callback_since, callback_attempts"
)


# The first queued jobs (as many as the parameter says), in the first-in first-out order claims take.
_HEAD_OF_QUEUE = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT ?"


def _job(row: Sequence[Any]) -> Job:
    values = list(row)
    values[2] = JobState(values[2])
    values[4] = DocumentKind(values[4])
    values[20] = bool(values[20])
    return Job(*values)


@dataclass(slots=True, frozen=True)
class StoredEvent:
    """A durable event as its SSE frame, encoded once; ``text_frame`` adds the page text.

    The frame is all that is kept of the event's JSON: a watched job's ring holds up to
    ``ring_size`` events, and with the JSON kept beside its frame a full ring of page events
    took about 600 KB, against 350 KB for the frames alone. ``data`` cuts it out of the frame
    for the few that read it (the metrics)."""

    job_id: str
    id: int
    type: EventType
    frame: bytes
    text_frame: bytes | None = None
    #: A field, not a property: streams look at it for every event they send.
    terminal: bool = False

    @classmethod
    def of(cls, job_id: str, event_id: int, event_type: EventType, data: bytes,
           text_frame: bytes | None) -> StoredEvent:
        return cls(job_id, event_id, event_type, encode_frame(event_id, event_type.value, data), text_frame,
                   event_type.terminal)

    def frame_for(self, text: bool) -> bytes:
        """The frame a stream sends: the one with the page text if the stream asked for it (``text``)
        and there is one."""
        return self.text_frame if text and self.text_frame is not None else self.frame

    @property
    def data(self) -> bytes:
        """The event's JSON: the frame's one ``data:`` line (JSON never holds a raw line break)."""
        return self.frame[self.frame.index(b"\ndata: ") + 7:-2]


def encode_frame(event_id: int | None, event_type: str, data: bytes) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event_type.encode() + b"\ndata: " + data + b"\n\n"


@dataclass(slots=True)
class Commit:
    """What one committed batch changed: its events, the jobs it touched, the jobs it removed."""

    events: list[StoredEvent] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    #: Removed job id → its owner (the global stream tells only that owner's streams).
    removed: dict[str, str] = field(default_factory=dict)
    queue_moved: bool = False
    #: The last event id of each job this batch appended to (for other processes; see notifications()).
    last_ids: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.events or self.touched or self.removed or self.queue_moved or self.last_ids)

    def merge(self, other: Commit) -> None:
        self.events.extend(other.events)
        self.touched |= other.touched
        self.removed.update(other.removed)
        self.queue_moved |= other.queue_moved
        for event in other.events:
            self.last_ids[event.job_id] = event.id

    def notifications(self, token: str) -> list[str]:
        """This commit as NOTIFY payloads for the other processes (several if it is large)."""
        last = dict(self.last_ids)
        touched = sorted(self.touched - last.keys())
        removed = dict(self.removed)
        payloads = []
        while True:
            note: dict[str, Any] = {"from": token, "moved": self.queue_moved, "last": {}, "touched": [],
                                    "removed": {}}
            size = 100
            while last and size < _NOTIFY_BYTES:
                job_id, event_id = last.popitem()
                note["last"][job_id] = event_id
                note["touched"].append(job_id)
                size += 50
            while touched and size < _NOTIFY_BYTES:
                note["touched"].append(touched.pop())
                size += 20
            while removed and size < _NOTIFY_BYTES:
                job_id, owner = removed.popitem()
                note["removed"][job_id] = owner
                size += 30 + len(owner)
            payloads.append(orjson.dumps(note).decode())
            if not (last or touched or removed):
                return payloads


class _Tx:
    """The writer's view of one write: its connection and what it has changed."""

    def __init__(self, conn: Connection, text_watched: frozenset[str] | set[str] = frozenset()) -> None:
        self.conn = conn
        self.text_watched = text_watched
        self.commit = Commit()
        self.tick()

    def tick(self) -> None:
        """Take the time again: every event and timestamp of the write has it (formatted once)."""
        self.now = time.time()
        self.at = rfc3339(self.now)

    def job(self, job_id: str) -> Job | None:
        row = self.conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def existing(self, job_id: str) -> Job:
        """The job, which this write knows to be there."""
        job = self.job(job_id)
        assert job is not None
        return job

    def update(self, job_id: str, **columns: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in columns)
        self.conn.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*columns.values(), job_id))
        self.commit.touched.add(job_id)

    def lock_queue(self) -> None:
        """Take the queue's end for the rest of this transaction, before counting the queue: on
        PostgreSQL another process's write waits here until this one commits, and then counts what
        it added (READ COMMITTED: each statement sees what was committed before it began), so two
        replicas cannot both pass a queue limit or give out the same position. (SQLite's writes are
        one at a time already: BEGIN IMMEDIATE.)"""
        self.conn.execute("UPDATE counters SET value = value WHERE name = 'seq'")

    def next_seq(self) -> int:
        (seq,) = self.conn.execute(
            "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value"
        ).fetchone()
        return int(seq)

    def append(
        self, job_id: str, event_type: EventType, payload: dict[str, Any], *, page: int | None = None,
        text: str | None = None, event_id: int | None = None,
    ) -> StoredEvent:
        """Append an event to the job's log; ``event_id`` is given when the caller has taken it already
        (raised the job's ``last_event_id`` in an update of its own)."""
        if event_id is None:
            (event_id,) = self.conn.execute(
                "UPDATE jobs SET last_event_id = last_event_id + 1 WHERE id = ? RETURNING last_event_id", (job_id,)
            ).fetchone()
        body = {"type": event_type.value, "job_id": job_id, "at": self.at, **payload}
        # Used and dropped: orjson (3.12 on) returns a buffer of at least 4 KB however short the JSON, and what
        # the event keeps is its frame, a new bytes of the right size.
        data = orjson.dumps(body)
        self.conn.execute(
            "INSERT INTO events (job_id, id, type, page, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, event_id, event_type.value, page, data),
        )
        text_frame = None
        if text is not None and job_id in self.text_watched:  # encoded only if a ?text=1 stream may need it
            text_frame = encode_frame(event_id, event_type.value, _with_page_text(body, text))
        event = StoredEvent.of(job_id, event_id, event_type, data, text_frame)
        self.commit.events.append(event)
        self.commit.touched.add(job_id)
        return event


def _with_page_text(body: dict[str, Any], text: str) -> bytes:
    return orjson.dumps({**body, "page": {**body["page"], "text": text}})


def page_event_with_text(data: bytes, text: str | None) -> bytes:
    """A stored page event's data with its page text put back (replay of a ?text=1 stream)."""
    return _with_page_text(orjson.loads(data), text or "")


@dataclass(slots=True)
class NewJob:
    """What intake knows of an upload before it becomes a job."""

    id: str
    filename: str
    kind: DocumentKind
    size: int
    sha256: str
    spool_name: str
    pages_spec: str | None
    password: str | None
    owner: str = ""
    idempotency_key: str | None = None
    callback_url: str | None = None


@dataclass(slots=True)
class PageRow:
    number: int
    chars: int
    words: int
    ms: float
    method: str
    error: str | None
    text: str

    def figures(self) -> dict[str, Any]:
        return {
            "number": self.number, "chars": self.chars, "words": self.words, "ms": self.ms,
            "method": self.method, "error": self.error,
        }


#: A write waiting for the writer thread: what it does, and the event loop's future for its result.
_Write = tuple[Callable[["_Tx"], Any], "asyncio.Future[Any]"]
#: What became of a write: its future, and its result or its error.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class Store:
    """Jobs, pages and event logs in one database. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, db: Database, on_commit: Callable[[Commit], None] | None = None) -> None:
        self.db = db
        self.on_commit = on_commit
        #: Set by a shared store (PostgreSQL) for what other processes commit; see :meth:`listen`.
        self.on_foreign: Callable[[Commit | None], None] | None = None
        self.token = secrets.token_hex(6)  # this process, in its own notifications
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-read")
        self._local = threading.local()
        self._all_reader_conns: list[Connection] = []
        self._conns_lock = threading.Lock()
        self._listening = threading.Event()
        self._listener: threading.Thread | None = None
        #: Jobs watched by a ?text=1 stream (kept by the hub): only their page events get a text frame
        #: when written. Read by the writer thread; replaced whole, never mutated, so no lock is needed.
        self.text_watched: frozenset[str] = frozenset()

    @classmethod
    def from_url(cls, url: str, on_commit: Callable[[Commit], None] | None = None) -> Store:
        return cls(open_database(url), on_commit)

    @property
    def shared(self) -> bool:
        return self.db.shared

    # -- lifecycle

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready: Future[None] = Future()
        self._writer = threading.Thread(target=self._write_loop, args=(ready,), name="store-writer", daemon=True)
        self._writer.start()
        await asyncio.wrap_future(ready)

    def listen(self, on_foreign: Callable[[Commit | None], None]) -> None:
        """Hear the commits of other processes (a shared store only): ``on_foreign`` gets each one on
        the event loop, or None after a lost connection, when anything may have been missed."""
        if not isinstance(self.db, PostgreSQL):
            return
        self.on_foreign = on_foreign
        self._listener = threading.Thread(target=self.db.listen, args=(self._heard, self._listening),
                                          name="store-listener", daemon=True)
        self._listener.start()

    def _heard(self, payload: str | None) -> None:
        commit = None
        if payload is not None:
            note = orjson.loads(payload)
            if note.get("from") == self.token:
                return  # our own commit: delivered already
            commit = Commit(touched=set(note.get("touched", ())), removed=dict(note.get("removed", {})),
                            queue_moved=bool(note.get("moved")), last_ids=dict(note.get("last", {})))
        if self._loop is not None and self.on_foreign is not None:
            self._loop.call_soon_threadsafe(self.on_foreign, commit)

    async def close(self) -> None:
        self._listening.set()
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join)
        if self._writer is not None:
            self._writes.put(None)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._readers.shutdown(wait=True)
        with self._conns_lock:
            for conn in self._all_reader_conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all_reader_conns.clear()

    def _migrate(self, conn: Connection) -> None:
        with self.db.migration_lock(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            current = 0 if row is None else int(row[0])
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"the store has schema version {current}; this pagestream knows {SCHEMA_VERSION}")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                migration = _MIGRATIONS[version]
                if self.db.shared:
                    migration = _SHARED_MIGRATIONS.get(version, migration)
                script = self.db.ddl(migration) + ";\n" if migration else ""
                script += f"DELETE FROM schema_version;\nINSERT INTO schema_version VALUES ({version})"
                self.db.run_script(conn, script)
                log.info("migrated the store to schema version %d", version)

    # -- the writer

    def _write_loop(self, ready: Future[None]) -> None:
        try:
            conn: Connection | None = self.db.connect()
            assert conn is not None
            self._migrate(conn)
        except BaseException as exc:  # hand any start-up failure to open()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        stopping = False
        while not stopping:
            item = self._writes.get()
            batch = []
            while item is not None:
                batch.append(item)
                if len(batch) >= 512:
                    break
                try:
                    item = self._writes.get_nowait()
                except queue.Empty:
                    break
            else:
                stopping = True
            if not batch:
                continue
            if conn is None:  # lost with the previous batch: connect again
                try:
                    conn = self.db.connect()
                except Exception as exc:
                    failure = self.db.failure(exc) or Unavailable(f"cannot reach the store: {exc}")
                    self._settle(None, [(future, None, failure) for _, future in batch])
                    continue
            conn = self._run_batch(conn, batch)
        if conn is not None:
            conn.close()

    def _run_batch(self, conn: Connection, batch: list[_Write]) -> Connection | None:
        """Run a batch in one transaction; returns the connection, or None if it was lost."""
        # Each write of a batch of several runs in a savepoint, so that one that fails fails alone; a
        # write alone needs none (it fails with its transaction), which spares a page of a slow
        # document, a batch of its own, two of its statements (round trips, on PostgreSQL).
        savepoints = len(batch) > 1
        for attempt in range(1, 4):
            done: list[_Outcome] = []
            commit = Commit()
            try:
                conn = self._begin(conn)
                for fn, future in batch:
                    tx = _Tx(conn, self.text_watched)
                    if savepoints:
                        conn.execute("SAVEPOINT w")
                    try:
                        result = fn(tx)
                    except Exception as exc:
                        if self.db.failure(exc) is not None:
                            raise  # a database failure spoils the whole transaction
                        if savepoints:
                            conn.execute("ROLLBACK TO SAVEPOINT w")
                            conn.execute("RELEASE SAVEPOINT w")
                        else:
                            conn.execute("ROLLBACK")
                        done.append((future, None, exc))  # the write fails alone; the batch goes on
                        continue
                    if savepoints:
                        conn.execute("RELEASE SAVEPOINT w")
                    commit.merge(tx.commit)
                    done.append((future, result, None))
                if self.db.in_transaction(conn):  # not after a lone write's rollback
                    if isinstance(self.db, PostgreSQL) and not commit.empty:
                        for payload in commit.notifications(self.token):
                            self.db.notify(conn, payload)
                    conn.execute("COMMIT")
            except Exception as exc:  # the transaction failed: nothing of it was written
                failure = self.db.failure(exc)
                if failure is None:
                    raise
                lost = self.db.lost(exc)
                if not lost:
                    with contextlib.suppress(Exception):
                        if self.db.in_transaction(conn):
                            conn.execute("ROLLBACK")
                if self.db.retryable(exc) and attempt < 3:
                    log.info("retrying a write batch after %s", exc.__class__.__name__)
                    continue
                self._settle(None, [(future, None, failure) for _, future in batch])
                if lost:
                    with contextlib.suppress(Exception):
                        conn.close()
                    return None
                return conn
            self._settle(None if commit.empty else commit, done)
            return conn
        return conn  # pragma: no cover - the loop always returns

    def _begin(self, conn: Connection) -> Connection:
        """Begin a transaction; a connection found dead (the database restarted since the last batch)
        is replaced once — nothing was sent on it, so nothing can be written twice."""
        try:
            self.db.begin(conn)
            return conn
        except Exception as exc:
            if not self.db.lost(exc):
                raise
        with contextlib.suppress(Exception):
            conn.close()
        conn = self.db.connect()
        self.db.begin(conn)
        return conn

    def _settle(self, commit: Commit | None, outcomes: list[_Outcome]) -> None:
        """From the writer thread: hand a batch's commit to ``on_commit`` and its outcomes to the writes'
        futures, in one trip to the event loop (a page of a slow document is one batch, so that trip is
        a good part of what the page costs the loop)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._settled, commit, outcomes)

    def _settled(self, commit: Commit | None, outcomes: list[_Outcome]) -> None:
        # on_commit first: the hub has a write's events before the writer goes on
        if commit is not None and self.on_commit is not None:
            self.on_commit(commit)
        for future, result, error in outcomes:
            if future.done():  # its waiter was cancelled; the write stands all the same
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    async def write(self, fn: Callable[[_Tx], T]) -> T:
        """Run ``fn`` in the writer thread, inside the next group commit; return its result once durable."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.put((fn, future))
        return await future

    # -- reads

    def _reader(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.db.connect()
            self._local.conn = conn
            with self._conns_lock:
                self._all_reader_conns.append(conn)
        return conn

    def _drop_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._conns_lock:
                if conn in self._all_reader_conns:
                    self._all_reader_conns.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def _read(self, fn: Callable[[Connection], T]) -> T:
        for attempt in (1, 2):
            try:
                return fn(self._reader())
            except Exception as exc:
                if not self.db.lost(exc):
                    failure = self.db.failure(exc)
                    if failure is not None:
                        raise failure from exc
                    raise
                self._drop_reader()  # a lost connection (the database restarted): once more, afresh
                if attempt == 2:
                    raise Unavailable(f"cannot reach the store: {exc.__class__.__name__}") from exc
        raise AssertionError("unreachable")

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with a reading connection on the read pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    # -- files (a shared store keeps the uploads, so that the worker can run on any machine)

    async def put_file(self, name: str, path: Path) -> None:
        """Copy an uploaded file into the store (shared stores only), in its own transaction."""

        def put(conn: Connection) -> None:
            self.db.begin(conn)
            try:
                conn.execute("DELETE FROM files WHERE name = ?", (name,))
                with open(path, "rb") as f:
                    for number, chunk in enumerate(iter(lambda: f.read(FILE_CHUNK), b"")):
                        conn.execute("INSERT INTO files (name, chunk, data) VALUES (?, ?, ?)", (name, number, chunk))
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
                raise

        await self.read(put)

    async def delete_file(self, name: str) -> None:
        await self.write(lambda tx: tx.conn.execute("DELETE FROM files WHERE name = ?", (name,)))

    async def fetch_file(self, name: str, path: Path) -> bool:
        """Write a stored file to ``path``; False if the store does not have it."""

        def fetch(conn: Connection) -> bool:
            rows = conn.execute("SELECT chunk FROM files WHERE name = ? ORDER BY chunk", (name,)).fetchall()
            if not rows:
                return False
            partial = path.with_name(path.name + ".part")
            with open(partial, "wb") as f:
                for (number,) in rows:
                    (data,) = conn.execute("SELECT data FROM files WHERE name = ? AND chunk = ?",
                                           (name, number)).fetchone()
                    f.write(data)
            partial.replace(path)
            return True

        return await self.read(fetch)

    # -- intake

    async def enqueue(self, uploads: Sequence[NewJob], max_queued: int,
                      max_per_owner: int) -> list[tuple[Job, int | None, bool]]:
        """Add jobs at the end of the queue, all or none; (job, queue position, created) for each,
        as committed. An upload whose Idempotency-Key was seen before returns that earlier job
        instead (created is False)."""

        def write(tx: _Tx) -> list[tuple[Job, int | None, bool]]:
            tx.lock_queue()  # before the Idempotency-Key lookup and the counts, which another replica changes
            results: list[Job | None] = []
            for new in uploads:
                results.append(_earlier_submission(tx, new))
            fresh = sum(1 for r in results if r is None)
            (queued,) = tx.conn.execute(_QUEUED_TOTAL).fetchone()
            if fresh and queued + fresh > max_queued:
                raise QueueFull(f"the queue holds {queued} jobs and its limit is {max_queued}; try again later")
            if fresh and uploads[0].owner:
                row = tx.conn.execute("SELECT queued FROM queue_counts WHERE owner = ?", (uploads[0].owner,)).fetchone()
                mine = 0 if row is None else row[0]
                if mine + fresh > max_per_owner:
                    raise QueueFull(f"you have {mine} jobs queued and the limit is {max_per_owner}; try again later")
            done: list[tuple[Job, int | None, bool]] = []
            position = queued  # every queued job is ahead of the new ones (a new seq is the largest)
            for new, earlier in zip(uploads, results):
                if earlier is not None:
                    done.append((earlier, _position(tx.conn, earlier), False))
                    continue
                seq = tx.next_seq()
                tx.conn.execute(
                    "INSERT INTO jobs (id, seq, state, filename, kind, size, sha256, spool_name, pages_spec, password, "
                    "owner, idempotency_key, created_at, callback_url, callback_state) "
                    "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new.id, seq, new.filename, new.kind.value, new.size, new.sha256, new.spool_name, new.pages_spec,
                     new.password, new.owner, new.idempotency_key, tx.now, new.callback_url,
                     CallbackState.waiting.value if new.callback_url else None),
                )
                position += 1
                tx.append(new.id, EventType.queued, {"position": position})
                job = tx.existing(new.id)
                done.append((job, position, True))
            return done

        return await self.write(write)

    # -- the worker's writes

    async def claim_next(self, max_attempts: int) -> Job | None:
        """The job to run now: one left running by a crash or restart first, else the oldest queued one.

        A job left running is taken up again (attempts + 1, a ``retrying`` event) unless it has had
        ``max_attempts`` runs already, in which case it fails and the next job is looked at.
        """
        return await self.write(lambda tx: _claim_next(tx, max_attempts))

    async def finish_and_claim(self, job_id: str, state: JobState, code: ErrorCode | None, message: str,
                               max_attempts: int, progress: Sequence[Write] = (),
                               then: Sequence[tuple[str, Sequence[Write]]] = ()) -> tuple[list[Job], Job | None]:
        """End a job and claim the next one in the same commit (after the ``progress`` writes of its
        run not yet committed): between two jobs the extraction child waits for one commit, not two.

        ``then``: runs the child has already completed for the next jobs, (job id, their writes)
        each, in order. Each is committed here too, and completed, if the claim picks its very job;
        the first one the claim does not pick ends the chain. Returns the jobs ended (``job_id``'s
        first) and the one claimed last."""

        def write(tx: _Tx) -> tuple[list[Job], Job | None]:
            for step in progress:
                step(tx)
            ended = [_finish(tx, tx.existing(job_id), state, code, message)]
            claimed = _claim_next(tx, max_attempts)
            for next_id, steps in then:
                if claimed is None or claimed.id != next_id or claimed.pages_done:
                    break  # (a run given ahead extracts every page: it was given for a job with none done)
                tx.tick()  # its end comes after its start, and the jobs' times follow one another
                for step in steps:
                    step(tx)
                ended.append(_finish(tx, tx.existing(next_id), JobState.completed, None, ""))
                claimed = _claim_next(tx, max_attempts)
            return ended, claimed

        return await self.write(write)

    async def write_all(self, steps: Sequence[Write]) -> None:
        """Commit ``steps`` (from run_opened and pages_extracted) together, in order."""

        def write(tx: _Tx) -> None:
            for step in steps:
                step(tx)

        await self.write(write)

    @staticmethod
    def run_opened(job_id: str, pages_total: int, resume_from: int) -> Write:
        """The write that begins a run: the document opened with ``pages_total`` pages (the ``started`` event)."""

        def write(tx: _Tx) -> None:
            job = tx.existing(job_id)
            tx.update(job_id, pages_total=pages_total)
            tx.append(job_id, EventType.started, {
                "attempt": job.attempts, "pages_total": pages_total, "resume_from": resume_from,
                "pages_done": job.pages_done,
            })

        return write

    @staticmethod
    def pages_extracted(job_id: str, pages: Iterable[PageRow]) -> Write:
        """The write that stores pages and appends their events; a page already stored is skipped."""
        pages = list(pages)

        def write(tx: _Tx) -> None:
            for p in pages:
                cursor = tx.conn.execute(
                    "INSERT INTO pages (job_id, number, chars, words, ms, method, error, text) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (job_id, p.number, p.chars, p.words, p.ms, p.method, p.error, p.text),
                )
                if cursor.rowcount == 0:
                    continue
                # The page's count and its event's id in one statement: a page of a slow document is a
                # transaction of its own, and each statement is a good part of its cost.
                done, total, event_id = tx.conn.execute(
                    "UPDATE jobs SET pages_done = pages_done + 1, last_event_id = last_event_id + 1 WHERE id = ? "
                    "RETURNING pages_done, pages_total, last_event_id", (job_id,)
                ).fetchone()
                tx.append(job_id, EventType.page, {"page": p.figures(), "pages_done": done, "pages_total": total},
                          page=p.number, text=p.text, event_id=event_id)

        return write

    async def retrying(self, job_id: str, code: ErrorCode, message: str) -> Job:
        """A run died (child crash): record it and begin the next run of the same job."""

        def write(tx: _Tx) -> Job:
            job = tx.existing(job_id)
            tx.append(job_id, EventType.retrying, {
                "attempt": job.attempts, "reason": {"code": code.value, "message": message},
                "pages_done": job.pages_done,
            })
            return _begin_run(tx, job)

        return await self.write(write)

    async def requeue(self, job_id: str) -> None:
        """Put a running job back at the head of the queue (the server is stopping); the run
        that was cut short does not count as an attempt. Its seq is the smallest queued one."""

        def write(tx: _Tx) -> None:
            job = tx.existing(job_id)
            tx.update(job_id, state=JobState.queued.value, attempts=max(job.attempts - 1, 0))
            tx.commit.queue_moved = True
            tx.append(job_id, EventType.queued, {"position": _queue_position(tx.conn, job.seq)})

        await self.write(write)

    async def finish(self, job_id: str, state: JobState, code: ErrorCode | None = None, message: str = "",
                     progress: Sequence[Write] = ()) -> Job:
        def write(tx: _Tx) -> Job:
            for step in progress:
                step(tx)
            job = tx.existing(job_id)
            return _finish(tx, job, state, code, message)

        return await self.write(write)

    # -- user actions

    async def cancel(self, job_id: str, owner: str | None = None) -> Job | None:
        """Cancel a queued job at once, or mark a running one for the worker. None: no such job."""

        def write(tx: _Tx) -> Job | None:
            job = _visible(tx.job(job_id), owner)
            if job is None:
                return None
            if job.state is JobState.queued:
                tx.commit.queue_moved = True
                return _finish(tx, job, JobState.cancelled, None, "")
            if job.state is JobState.running:
                if not job.cancel_requested:
                    tx.update(job_id, cancel_requested=1)
                    job.cancel_requested = True
                return job
            raise Conflict(f"job {job_id} is already {job.state.value}")

        return await self.write(write)

    async def retry(self, job_id: str, max_queued: int, owner: str | None = None) -> tuple[Job, int] | None:
        """Put a failed or cancelled job at the end of the queue again; its finished pages are kept.
        The job and its position as committed: the worker may run it before anyone reads it again."""

        def write(tx: _Tx) -> tuple[Job, int] | None:
            tx.lock_queue()  # before the job's state too: two replicas retrying it must not both requeue it
            job = _visible(tx.job(job_id), owner)
            if job is None:
                return None
            if job.state not in (JobState.failed, JobState.cancelled):
                raise Conflict(f"only a failed or cancelled job can be retried; job {job_id} is {job.state.value}")
            (queued,) = tx.conn.execute(_QUEUED_TOTAL).fetchone()
            if queued >= max_queued:
                raise QueueFull(f"the queue holds {queued} jobs, its limit; try again later")
            seq = tx.next_seq()
            tx.update(job_id, seq=seq, state=JobState.queued.value, attempts=0, finished_at=None, error_code=None,
                      error_message=None, cancel_requested=0)
            if job.callback_url:
                tx.update(job_id, callback_state=CallbackState.waiting.value, callback_due_at=None)
            position = queued + 1  # every queued job is ahead of it (its new seq is the largest)
            tx.append(job_id, EventType.queued, {"position": position})
            job = tx.existing(job_id)
            return job, position

        return await self.write(write)

    async def delete(self, job_id: str, owner: str | None = None) -> Job | None:
        """Remove a finished job with its pages and events; the caller removes its spool file."""

        def write(tx: _Tx) -> Job | None:
            job = _visible(tx.job(job_id), owner)
            if job is None:
                return None
            if job.state not in FINISHED:
                raise Conflict(f"job {job_id} is {job.state.value}; cancel it before deleting it")
            _remove(tx, job)
            return job

        return await self.write(write)

    # -- reads

    async def get(self, job_id: str, owner: str | None = None) -> tuple[Job, int | None] | None:
        """The job and its queue position (None unless queued); None if there is no such job for this owner."""

        def read(conn: Connection) -> tuple[Job, int | None] | None:
            row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            job = _visible(None if row is None else _job(row), owner)
            if job is None:
                return None
            return job, _position(conn, job)

        return await self.read(read)

    async def jobs_with_positions(self, job_ids: Iterable[str] | None, owner: str | None = None,
                                  recent: int = 0) -> list[tuple[Job, int | None]]:
        """Given jobs (or, with ``job_ids`` None, every unfinished job and the ``recent`` newest finished ones)."""
        ids = None if job_ids is None else list(job_ids)

        def read(conn: Connection) -> list[tuple[Job, int | None]]:
            if ids is None:
                rows = conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') UNION ALL "
                    f"SELECT * FROM (SELECT {_JOB_COLUMNS} FROM jobs WHERE state NOT IN ('queued', 'running') "
                    "ORDER BY seq DESC LIMIT ?) AS recent", (recent,),
                ).fetchall()
            else:
                rows = []
                for start in range(0, len(ids), 500):
                    chunk = ids[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", chunk).fetchall()
            jobs = [j for j in map(_job, rows) if _visible(j, owner) is not None]
            return _with_positions(conn, jobs)

        return await self.read(read)

    async def list_jobs(self, states: Sequence[JobState], newest_first: bool, limit: int, after_seq: int | None,
                        owner: str | None = None) -> tuple[list[tuple[Job, int | None]], int | None]:
        """A page of the job list and the seq to continue after (None at the end)."""

        def read(conn: Connection) -> tuple[list[tuple[Job, int | None]], int | None]:
            where: list[str] = []
            args: list[str | int] = []
            if states:
                where.append(f"state IN ({','.join('?' * len(states))})")
                args += [s.value for s in states]
            if owner is not None:
                where.append("owner = ?")
                args.append(owner)
            if after_seq is not None:
                where.append("seq < ?" if newest_first else "seq > ?")
                args.append(after_seq)
            sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
            rows = conn.execute(sql, (*args, limit + 1)).fetchall()
            jobs = [_job(r) for r in rows[:limit]]
            more = len(rows) > limit
            return _with_positions(conn, jobs), (jobs[-1].seq if more and jobs else None)

        return await self.read(read)

    async def events_after(self, job_id: str, after: int, limit: int, text: bool) -> list[StoredEvent]:
        """Up to ``limit`` events of a job after id ``after``, their frames encoded here, off the event
        loop; with ``text`` page events also get their ``text_frame`` (the page text put back)."""

        def read(conn: Connection) -> list[StoredEvent]:
            if text:
                rows = conn.execute(
                    "SELECT e.id, e.type, e.data, p.text FROM events e LEFT JOIN pages p "
                    "ON e.page IS NOT NULL AND p.job_id = e.job_id AND p.number = e.page "
                    "WHERE e.job_id = ? AND e.id > ? ORDER BY e.id LIMIT ?", (job_id, after, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT id, type, data, NULL FROM events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
                    (job_id, after, limit),
                ).fetchall()
            events = []
            for event_id, event_type, data, page_text in rows:
                data = bytes(data)
                text_frame = None
                if text and event_type == EventType.page.value:
                    text_frame = encode_frame(event_id, event_type, page_event_with_text(data, page_text))
                events.append(StoredEvent.of(job_id, int(event_id), EventType(event_type), data, text_frame))
            return events

        return await self.read(read)

    # -- webhooks

    async def due_callbacks(self, now: float, limit: int) -> list[Job]:
        """Finished jobs whose webhook is due."""

        def read(conn: Connection) -> list[Job]:
            rows = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE callback_state = 'pending' AND callback_due_at <= ? "
                "ORDER BY callback_due_at LIMIT ?", (now, limit),
            ).fetchall()
            return [_job(r) for r in rows]

        return await self.read(read)

    async def record_callback(self, job_id: str, attempt: dict[str, Any], state: CallbackState,
                              due_at: float | None) -> None:
        """Keep one delivery attempt (the last MAX_CALLBACK_ATTEMPTS are kept) and what comes next."""

        def write(tx: _Tx) -> None:
            row = tx.conn.execute("SELECT callback_attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return  # deleted meanwhile
            attempts = orjson.loads(row[0]) if row[0] else []
            attempts = [*attempts, attempt][-MAX_CALLBACK_ATTEMPTS:]
            tx.update(job_id, callback_attempts=orjson.dumps(attempts).decode(), callback_state=state.value,
                      callback_due_at=due_at)

        await self.write(write)

    async def pages(self, job_id: str, after: int, limit: int) -> list[PageRow]:
        """The job's pages numbered above ``after``, in order, at most ``limit`` of them."""

        def read(conn: Connection) -> list[PageRow]:
            rows = conn.execute(
                "SELECT number, chars, words, ms, method, error, text FROM pages "
                "WHERE job_id = ? AND number > ? ORDER BY number LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
            return [PageRow(*r) for r in rows]

        return await self.read(read)

    async def queue_head(self, count: int) -> list[Job]:
        """The first ``count`` queued jobs, in the order the worker will claim them (none is claimed)."""

        def read(conn: Connection) -> list[Job]:
            return [_job(row) for row in conn.execute(_HEAD_OF_QUEUE, (count,))]

        return await self.read(read)

    async def done_pages(self, job_id: str) -> set[int]:
        def read(conn: Connection) -> set[int]:
            return {n for (n,) in conn.execute("SELECT number FROM pages WHERE job_id = ?", (job_id,))}

        return await self.read(read)

    async def counts(self) -> tuple[int, str | None]:
        """(jobs queued, id of the running job or None)."""

        def read(conn: Connection) -> tuple[int, str | None]:
            (queued,) = conn.execute(_QUEUED_TOTAL).fetchone()
            running = conn.execute("SELECT id FROM jobs WHERE state = 'running' LIMIT 1").fetchone()
            return int(queued), None if running is None else running[0]

        return await self.read(read)

    async def queue_order(self) -> list[tuple[str, str]]:
        """(id, owner) of the queued jobs, next to run first."""

        def read(conn: Connection) -> list[tuple[str, str]]:
            return [(i, o) for i, o in conn.execute("SELECT id, owner FROM jobs WHERE state = 'queued' ORDER BY seq")]

        return await self.read(read)

    async def purge_finished(self, finished_before: float, limit: int = 500) -> list[Job]:
        """Remove up to ``limit`` jobs that finished before the given time; the caller removes their files."""

        def write(tx: _Tx) -> list[Job]:
            rows = tx.conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') "
                "AND finished_at < ? ORDER BY finished_at LIMIT ?", (finished_before, limit),
            ).fetchall()
            jobs = [_job(r) for r in rows]
            for job in jobs:
                _remove(tx, job)
            return jobs

        return await self.write(write)

    async def spool_names(self) -> set[str]:
        def read(conn: Connection) -> set[str]:
            return {n for (n,) in conn.execute("SELECT spool_name FROM jobs")}

        return await self.read(read)


def _earlier_submission(tx: _Tx, new: NewJob) -> Job | None:
    if new.idempotency_key is None:
        return None
    row = tx.conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?", (new.owner, new.idempotency_key)
    ).fetchone()
    if row is None:
        return None
    earlier = _job(row)
    if earlier.sha256 != new.sha256:
        raise IdempotencyConflict("this Idempotency-Key was used before for a different upload")
    return earlier


def _remove(tx: _Tx, job: Job) -> None:
    for table, column in (("events", "job_id"), ("pages", "job_id"), ("files", "name"), ("jobs", "id")):
        tx.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (job.id,))
    tx.commit.removed[job.id] = job.owner


def _visible(job: Job | None, owner: str | None) -> Job | None:
    """The job if ``owner`` may see it (None means: every owner)."""
    if job is None or (owner is not None and job.owner != owner):
        return None
    return job


def _position(conn: Connection, job: Job) -> int | None:
    return _queue_position(conn, job.seq) if job.state is JobState.queued else None


def _queue_position(conn: Connection, seq: int) -> int:
    """1 + the queued jobs ahead of ``seq``: a count over the queue's index, so it grows with the
    queue (where every queued job is known to be ahead, the writes use the total instead)."""
    (ahead,) = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?", (seq,)).fetchone()
    return int(ahead) + 1


def _with_positions(conn: Connection, jobs: list[Job]) -> list[tuple[Job, int | None]]:
    queued = [j for j in jobs if j.state is JobState.queued]
    if len(queued) <= 8:
        return [(j, _position(conn, j)) for j in jobs]
    # Many queued jobs: one pass over the queue's index beats a count per job.
    seqs = [s for (s,) in conn.execute("SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq")]
    return [(j, bisect.bisect_left(seqs, j.seq) + 1 if j.state is JobState.queued else None) for j in jobs]


def _claim_next(tx: _Tx, max_attempts: int) -> Job | None:
    while True:
        row = tx.conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state = 'running' ORDER BY seq LIMIT 1"
        ).fetchone()
        if row is None:
            break
        job = _job(row)
        if job.attempts >= max_attempts:
            _finish(tx, job, JobState.failed, ErrorCode.too_many_attempts,
                    f"interrupted {job.attempts} times; the last run stopped at page {job.pages_done}")
            continue
        tx.append(job.id, EventType.retrying, {
            "attempt": job.attempts,
            "reason": {"code": ErrorCode.interrupted.value, "message": "the server restarted during the run"},
            "pages_done": job.pages_done,
        })
        return _begin_run(tx, job)
    row = tx.conn.execute(_HEAD_OF_QUEUE, (1,)).fetchone()
    if row is None:
        return None
    tx.commit.queue_moved = True
    return _begin_run(tx, _job(row))


def _begin_run(tx: _Tx, job: Job) -> Job:
    tx.update(job.id, state=JobState.running.value, attempts=job.attempts + 1, run_started_at=tx.now,
              run_pages_start=job.pages_done, started_at=job.started_at or tx.now)
    return tx.existing(job.id)


def _finish(tx: _Tx, job: Job, state: JobState, code: ErrorCode | None, message: str) -> Job:
    tx.update(job.id, state=state.value, finished_at=tx.now, cancel_requested=0,
              error_code=None if code is None else code.value, error_message=message if code else None)
    if job.callback_url:  # the webhook is due now, in the same transaction: it cannot be forgotten
        tx.update(job.id, callback_state=CallbackState.pending.value, callback_due_at=tx.now, callback_since=tx.now)
    payload: dict[str, Any] = {"pages_done": job.pages_done}
    if state is JobState.completed:
        payload["pages_total"] = job.pages_total or job.pages_done
        payload["duration_seconds"] = round(tx.now - (job.started_at or tx.now), 3)
    elif state is JobState.failed:
        assert code is not None
        payload["error"] = {"code": code.value, "message": message}
    tx.append(job.id, EventType(state.value), payload)
    return tx.existing(job.id)
