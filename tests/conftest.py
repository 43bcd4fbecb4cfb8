from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for a test module (tests that need a fresh one start their own)."""
    data = tmp_path_factory.mktemp("data")
    server = Server(data).start()
    yield server
    server.kill()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[type[Server]]:
    """Start servers of one's own: ``make_server(settings={...}, env={...})``; all killed at the end."""
    started: list[Server] = []

    def make(**kwargs: object) -> Server:
        server = Server(tmp_path / f"data{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server.start()

    yield make  # type: ignore[misc]
    for s in started:
        s.kill()
