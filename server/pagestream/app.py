"""The app factory: builds the Starlette app whose lifespan opens the store, hub and worker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from . import __version__
from .api import Services, api_error, http_exception, internal_error, routes
from .errors import ApiError
from .hub import Hub
from .intake import sweep_spool
from .resources import web_dir
from .schemas import Contract, openapi
from .settings import Settings
from .store import Store
from .worker import Worker

log = logging.getLogger("pagestream")


def create_app(settings: Settings | None = None, *, run_worker: bool = True) -> Starlette:
    """The whole server as an ASGI app. ``run_worker=False`` serves the API without consuming the queue."""
    settings = settings or Settings.from_env()
    contract = Contract()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        hub: Hub | None = None
        store = Store.from_url(settings.store_url, on_commit=lambda commit: hub.deliver(commit) if hub else None)
        await store.open()
        hub = Hub(store, settings)
        hub.start()
        removed = await sweep_spool(settings.spool_dir, await store.spool_names())
        if removed:
            log.info("removed %d spool files no job owns", removed)
        worker = Worker(store, settings)
        app.state.services = Services(settings, store, hub, worker, contract)
        if run_worker:
            worker.start()
        try:
            yield
        finally:
            await worker.stop()
            await hub.close()
            await store.close()

    app = Starlette(
        routes=[*routes(), Mount("/", StaticFiles(directory=web_dir(), html=True), name="web")],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, ApiError: api_error, Exception: internal_error},
    )
    app.state.openapi = orjson.dumps(openapi(contract, __version__))
    return app
