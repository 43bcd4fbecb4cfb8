"""The store's writer: writes are committed in batches, and a write that fails leaves nothing.

Run against a real SQLite file and a real PostgreSQL database, through the Store itself:
whether a failing write is alone in its transaction or shares it with others is the writer's
timing, which a server never shows from outside.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pagestream.store import Store

pytestmark = pytest.mark.stores("sqlite", "postgresql")


@pytest.fixture
def store_url(tmp_path: Path, request: pytest.FixtureRequest, store_kind: str) -> Iterator[str]:
    if store_kind == "postgresql":
        yield request.getfixturevalue("postgres").new_database()
    else:
        yield f"sqlite:///{tmp_path / 'pagestream.sqlite3'}"


class Refused(Exception):
    pass


def _count(name: str, fail: bool = False) -> Any:
    def write(tx: Any) -> str:
        tx.conn.execute("INSERT INTO counters (name, value) VALUES (?, 1)", (name,))
        if fail:
            raise Refused(name)
        return name

    return write


def _names(conn: Any) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM counters WHERE name LIKE 't-%'").fetchall()}


def test_a_write_that_fails_leaves_nothing_alone_or_beside_others(store_url: str) -> None:
    async def scenario() -> None:
        store = Store.from_url(store_url)
        await store.open()
        try:
            # Alone in its transaction.
            with pytest.raises(Refused):
                await store.write(_count("t-alone", fail=True))
            assert await store.write(_count("t-after")) == "t-after"
            assert await store.read(_names) == {"t-after"}

            # In one transaction with others: the writer is held by a first write while three more
            # are queued, and then takes those three as one batch.
            entered, release = threading.Event(), threading.Event()

            def hold(tx: Any) -> None:
                entered.set()
                release.wait(10)

            holding = asyncio.ensure_future(store.write(hold))
            assert await asyncio.to_thread(entered.wait, 10)
            writes = [asyncio.ensure_future(store.write(_count(name, fail=name == "t-refused")))
                      for name in ("t-before", "t-refused", "t-beside")]
            await asyncio.sleep(0.05)  # every write is in the writer's queue
            release.set()
            await holding
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
            assert outcomes[0] == "t-before" and outcomes[2] == "t-beside"
            assert isinstance(outcomes[1], Refused)
            assert await store.read(_names) == {"t-after", "t-before", "t-beside"}
        finally:
            await store.close()

    asyncio.run(scenario())
