"""The app factory: builds the Starlette app whose lifespan opens the store, hub, worker and janitor."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .api import Services, api_error, http_exception, internal_error, routes
from .auth import Keys, is_loopback
from .errors import ApiError
from .hub import Hub
from .janitor import Janitor
from .logs import RequestLog
from .metrics import Metrics
from .resources import web_dir
from .schemas import Contract, openapi
from .settings import Settings
from .store import Commit, Store
from .turns import Turns
from .worker import Worker

log = logging.getLogger("pagestream")

# The UI is plain files of our own: nothing inline, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Pure ASGI middleware (no BaseHTTPMiddleware: it breaks streaming and disconnects)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if not scope["path"].startswith("/api/"):
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class App(Starlette):
    """The Starlette app, which also hands the server's own ``send`` down in the scope (as
    ``pagestream.send``): an event stream writes its chunks there, past the middleware, which act
    only on a response's start. Four wrappers per write were a tenth of the server's CPU with
    100 watchers of a job (B2)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["pagestream.send"] = send
        await super().__call__(scope, receive, send)


class Turnstile:
    """Pure ASGI middleware: every HTTP request begins in its turn of the event loop (see turns.Turns)."""

    def __init__(self, app: ASGIApp, turns: Turns) -> None:
        self.app = app
        self.turns = turns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.turns.wait()
        await self.app(scope, receive, send)


class InsecureListen(ValueError):
    """Listening beyond loopback without API keys, and without allow_open."""


def check_settings(settings: Settings) -> None:
    if settings.webhook_hosts.strip() and not settings.webhook_secret:
        raise ValueError("webhook_hosts is set but webhook_secret is empty: webhooks must be signed")
    if not 0 <= settings.child_nice <= 19:
        raise ValueError(f"child_nice is {settings.child_nice}; it must be from 0 to 19 (Unix nice: how much "
                         "lower the child's priority is than the server's)")


def load_keys(settings: Settings) -> Keys:
    keys = Keys.load(settings.api_keys, settings.api_keys_file)
    if not keys.enabled and not is_loopback(settings.host):
        if not settings.allow_open:
            raise InsecureListen(
                f"refusing to listen on {settings.host} without API keys: anyone who reaches it could read and "
                "delete every job. Set api_keys (or api_keys_file), or allow_open to accept that."
            )
        log.warning("LISTENING ON %s WITHOUT API KEYS: anyone who reaches this port can see, submit and delete "
                    "every job (allow_open is set)", settings.host)
    return keys


def create_app(settings: Settings | None = None, *, run_worker: bool = True, api: bool = True) -> Starlette:
    """The server as an ASGI app.

    ``run_worker=False`` serves the API without consuming the queue (``serve --no-worker``);
    ``api=False`` is ``pagestream worker``: the consumer, with only ``/healthz`` and ``/metrics``.
    With a PostgreSQL store, every process that runs a worker takes part in the lease: one works,
    the others wait as standbys.
    """
    settings = settings or Settings.from_env()
    contract = Contract()
    keys = load_keys(settings)
    check_settings(settings)
    metrics = Metrics()
    turns = Turns()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
        hub: Hub | None = None

        def committed(commit: Commit) -> None:  # this process's own commits, once durable
            metrics.observe_commit(commit)
            if hub is not None:
                hub.deliver(commit)

        store = Store.from_url(settings.store_url, on_commit=committed)
        await store.open()
        hub = Hub(store, settings)
        hub.start()
        metrics.sample(lambda: _stream_figures(hub))
        janitor = Janitor(store, settings)
        await janitor.start()
        worker = Worker(store, settings, metrics)
        app.state.services = Services(settings, store, hub, worker, contract, keys, metrics, turns)

        def foreign(commit: Commit | None) -> None:  # another process committed (PostgreSQL)
            assert hub is not None
            hub.foreign(commit)
            if run_worker:
                worker.foreign(commit)

        store.listen(foreign)
        if run_worker:
            worker.start()
        lag_probe = asyncio.create_task(metrics.watch_loop_lag())
        # Everything made so far lives as long as the server: out of the collector's way, so that a
        # full collection looks only at what came later (with the modules and app in it, one took
        # 37 ms of the event loop while 200 watchers opened a running job's stream).
        gc.collect()
        gc.freeze()
        if sys.version_info < (3, 14):  # three generations (3.14's collector is incremental)
            # The middle generation collected after 3 young collections, not 10: each then looks
            # at fewer survivors. Watchers arriving together leave thousands of objects that live
            # as long as their streams (coroutines, futures, closures), and with 200 of them one
            # such collection held the loop 1.5-2.6 ms; now 0.5-1.3 ms (B5). A full collection
            # still comes after about as many young ones as before (90, not 100).
            gc.set_threshold(gc.get_threshold()[0], 3, 30)
        try:
            yield
        finally:
            lag_probe.cancel()
            await worker.stop()
            await janitor.stop()
            await hub.close()
            await store.close()

    # The UI answers GET and HEAD only, so that a wrong method on an API path is that route's 405.
    ui = Route("/{path:path}", StaticFiles(directory=web_dir(), html=True), methods=["GET", "HEAD"])
    mounts = [*routes(), ui] if api else [route for route in routes() if route.path in ("/healthz", "/metrics")]
    app = App(
        routes=mounts,
        middleware=[Middleware(Turnstile, turns=turns), Middleware(RequestLog, metrics=metrics),
                    Middleware(SecurityHeaders)],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_exception, ApiError: api_error, Exception: internal_error},
    )
    app.state.openapi = orjson.dumps(openapi(contract, __version__))
    return app


def _stream_figures(hub: Hub) -> list[GaugeMetricFamily | CounterMetricFamily]:
    streams = GaugeMetricFamily("pagestream_open_streams", "Open event streams, by kind.", labels=["kind"])
    delivered = CounterMetricFamily("pagestream_events_delivered", "Events written to streams, by kind of stream.",
                                    labels=["kind"])
    for kind in ("job", "global"):
        streams.add_metric([kind], hub.streams_by_kind[kind])
        delivered.add_metric([kind], hub.delivered[kind])
    return [streams, delivered]
