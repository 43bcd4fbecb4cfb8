"""The two databases the store runs on, and every difference between them, in one place.

The store writes its SQL once, in the subset SQLite and PostgreSQL share (``?`` placeholders,
``ON CONFLICT DO NOTHING``, ``RETURNING``, savepoints, partial indexes). What differs is here:
how to connect, how a write transaction begins, the column types of the schema, which driver
errors mean a full disk, a read-only store or a lost connection, and — PostgreSQL only — how
other processes learn of a commit (NOTIFY) and who holds the worker's lease (an advisory lock).

    sqlite:///path/to/pagestream.db     one machine, one process (the embedded default)
    postgresql://user@host:port/name    any number of API processes and workers
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import ApiError, InsufficientStorage, Unavailable

log = logging.getLogger("pagestream.database")

#: The NOTIFY channel on which a PostgreSQL store announces its commits to the other processes.
CHANNEL = "pagestream"
#: The advisory lock key the active worker holds (any number, the same in every process).
WORKER_LEASE = 0x7061676573747265


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Cursor: ...
    def close(self) -> None: ...


class Database(Protocol):
    url: str
    #: True when several processes share the store (PostgreSQL): commits must be announced.
    shared: bool

    def connect(self) -> Connection: ...
    def begin(self, conn: Connection) -> None: ...
    def in_transaction(self, conn: Connection) -> bool: ...
    def ddl(self, script: str) -> str: ...
    def run_script(self, conn: Connection, script: str) -> None: ...
    def migration_lock(self, conn: Connection) -> contextlib.AbstractContextManager[None]: ...
    def failure(self, exc: BaseException) -> ApiError | None: ...
    def retryable(self, exc: BaseException) -> bool: ...
    def lost(self, exc: BaseException) -> bool: ...


def redacted(url: str) -> str:
    """The store URL without its password, for logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_database(url: str) -> Database:
    if url.startswith("sqlite:///"):
        return SQLite(url)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgreSQL(url)
    raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///path or postgresql://…")


class SQLite:
    """The embedded default: WAL, ``synchronous=NORMAL`` (survives a killed process, not a power cut)."""

    shared = False

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = Path(url.removeprefix("sqlite:///"))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def connect(self) -> Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn  # type: ignore[return-value]

    def begin(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def in_transaction(self, conn: Connection) -> bool:
        return bool(conn.in_transaction)  # type: ignore[attr-defined]

    def ddl(self, script: str) -> str:
        return script.format(blob="BLOB", without_rowid="WITHOUT ROWID")

    def run_script(self, conn: Connection, script: str) -> None:
        # One script, one transaction: a migration is applied whole or not at all.
        conn.executescript(f"BEGIN IMMEDIATE; {script}; COMMIT;")  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def migration_lock(self, conn: Connection) -> Iterator[None]:
        yield  # one process: the writer thread migrates before anything else runs

    def failure(self, exc: BaseException) -> ApiError | None:
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc).lower()
        if "full" in text:
            return InsufficientStorage("the disk is full; the write was not made")
        return Unavailable(f"the store cannot be written: {exc}")

    def retryable(self, exc: BaseException) -> bool:
        return False

    def lost(self, exc: BaseException) -> bool:
        return False


class PostgreSQL:
    """Several processes on one PostgreSQL: NOTIFY announces commits, an advisory lock is the worker's lease."""

    shared = True

    def __init__(self, url: str) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError:  # pragma: no cover - psycopg is a dependency; this is for a broken install
            raise ValueError("a postgresql:// store needs psycopg: pip install 'psycopg[binary]'") from None
        self.url = url

    def connect(self) -> Connection:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        return _PgConnection(conn)

    def begin(self, conn: Connection) -> None:
        conn.execute("BEGIN")

    def in_transaction(self, conn: Connection) -> bool:
        import psycopg

        assert isinstance(conn, _PgConnection)
        status = conn.raw.info.transaction_status
        return bool(status != psycopg.pq.TransactionStatus.IDLE)

    def ddl(self, script: str) -> str:
        return script.format(blob="BYTEA", without_rowid="")

    def run_script(self, conn: Connection, script: str) -> None:
        assert isinstance(conn, _PgConnection)
        with conn.raw.transaction():
            conn.raw.execute(script)

    @contextlib.contextmanager
    def migration_lock(self, conn: Connection) -> Iterator[None]:
        # Processes starting together must not migrate at once.
        conn.execute("SELECT pg_advisory_lock(?)", (WORKER_LEASE - 1,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(?)", (WORKER_LEASE - 1,))

    def failure(self, exc: BaseException) -> ApiError | None:
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return None
        if isinstance(exc, psycopg.errors.DiskFull):
            return InsufficientStorage("the database's disk is full; the write was not made")
        return Unavailable(f"the store cannot be written: {exc.__class__.__name__}: {str(exc).strip()[:200]}")

    def retryable(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure)

    def lost(self, exc: BaseException) -> bool:
        import psycopg

        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)

    def notify(self, conn: Connection, payload: str) -> None:
        conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, payload))

    def listen(self, on_payload: Callable[[str | None], None], stop: threading.Event) -> None:
        """Call ``on_payload`` with each notification (in this thread) until ``stop`` is set; after a
        lost connection it reconnects and calls ``on_payload(None)``: notifications may have been
        missed, so everything must be looked at again."""
        import psycopg

        first = True
        while not stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        on_payload(None)
                    first = False
                    while not stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            on_payload(note.payload)
            except psycopg.Error as exc:
                if stop.is_set():
                    return
                log.warning("lost the notification connection (%s); reconnecting", exc.__class__.__name__)
                stop.wait(1.0)


_PLACEHOLDER = re.compile(r"\?")


class _PgConnection:
    """A psycopg connection that takes the store's ``?`` placeholders."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._sql: dict[str, str] = {}

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        query = self._sql.get(sql)
        if query is None:
            query = self._sql[sql] = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        cursor: Cursor = self.raw.execute(query, params)
        return cursor

    def close(self) -> None:
        self.raw.close()


class Lease:
    """The right to be the one worker: held by at most one process of a store at a time.

    SQLite: an exclusive ``flock`` on a file beside the database (one machine). PostgreSQL: a
    session advisory lock on a connection of its own, which the server releases when that
    connection ends — the process killed, the machine gone (TCP keepalives), the link cut — so
    that a standby can take over within seconds.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None
        self._file: Any = None

    def try_acquire(self) -> bool:
        """Blocking; True once held."""
        if isinstance(self.db, SQLite):
            import fcntl

            handle = open(self.db.path.with_name(self.db.path.name + ".worker-lease"), "a+b")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            self._file = handle
            return True
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.db.url, autocommit=True, connect_timeout=10, keepalives=1,
                                         keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
            # The server side too must notice a vanished worker quickly, to free the lock.
            for name, value in (("tcp_keepalives_idle", 5), ("tcp_keepalives_interval", 2),
                                ("tcp_keepalives_count", 3)):
                self._conn.execute(f"SET {name} = {value}")
        row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (WORKER_LEASE,)).fetchone()
        return bool(row[0])

    def held(self) -> bool:
        """Blocking; False once the lease is lost (its connection is gone)."""
        if self._file is not None:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except Exception:
            self.release()
            return False

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the flock
            self._file = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
