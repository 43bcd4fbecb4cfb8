"""Fixtures: real servers on free ports, on the embedded store or on PostgreSQL.

A test module that says ``pytestmark = pytest.mark.stores("sqlite", "postgresql")`` runs all
its tests once per store: its ``server`` and ``make_server`` fixtures then give servers on
that store (a fresh PostgreSQL database for each). Without the marker, SQLite only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .pg import Cluster, start_cluster
from .server import Server

STORES = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stores(*names): run the module's tests against each of these stores")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = list(marker.args) if marker else ["sqlite"]
        metafunc.parametrize("store_kind", kinds, scope="module")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the whole session."""
    cluster = start_cluster()
    yield cluster
    cluster.stop("immediate")


def _store_settings(request: pytest.FixtureRequest, kind: str) -> dict[str, Any]:
    if kind == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres")
        return {"db": cluster.new_database()}
    return {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
           store_kind: str) -> Iterator[Server]:
    """One real server for a test module (tests that need a fresh one start their own)."""
    data = tmp_path_factory.mktemp("data")
    server = Server(data, settings=_store_settings(request, store_kind)).start()
    yield server
    server.kill()


@pytest.fixture
def make_server(tmp_path: Path, request: pytest.FixtureRequest, store_kind: str) -> Iterator[type[Server]]:
    """Start servers of one's own: ``make_server(settings={...}, env={...})``; all killed at the end."""
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        settings = {**_store_settings(request, store_kind), **kwargs.pop("settings", {})}
        server = Server(tmp_path / f"data{len(started)}", settings=settings, **kwargs)
        started.append(server)
        return server.start()

    yield make  # type: ignore[misc]
    for s in started:
        s.kill()
