"""Webhooks: when a job ends, POST it, signed, to its ``callback_url`` — retried, never in the queue's way.

A job carries a callback URL whose host is on the ``webhook_hosts`` allow-list (a document
server must not become a way to reach internal addresses, so nothing else is allowed, and
redirects are not followed). When the job ends, the same transaction marks its webhook due;
the :class:`Deliverer` — a task of the process that holds the worker's lease, beside the
worker and never inside it — POSTs it and records every attempt on the job, retrying with
exponential backoff for ``webhook_retry_for`` seconds.

Each request carries ``Pagestream-Signature: t=<unix time>,v1=<hex>``, where ``v1`` is the
HMAC-SHA256, keyed with ``webhook_secret``, of ``"<t>.<body>"`` (see :func:`sign`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from .jobs import CallbackState, Job, rfc3339
from .metrics import Metrics
from .settings import Settings
from .store import Store

log = logging.getLogger("pagestream.webhooks")

POLL = 1.0
MAX_BACKOFF = 300.0
CONCURRENCY = 4


def allowed_hosts(settings: Settings) -> set[str]:
    return {h.strip().lower() for h in settings.webhook_hosts.split(",") if h.strip()}


def check_callback_url(url: str, settings: Settings) -> str | None:
    """Why ``url`` may not be a callback, or None if it may."""
    hosts = allowed_hosts(settings)
    if not hosts:
        return "callback_url is not allowed: this server has no webhook_hosts"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "callback_url is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an http:// or https:// URL"
    if parts.username or parts.password:
        return "callback_url must not carry credentials"
    host = parts.hostname.lower()
    if host not in hosts and f"{host}:{port or (443 if parts.scheme == 'https' else 80)}" not in hosts:
        return f"callback_url's host {host} is not on this server's webhook_hosts allow-list"
    return None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Pagestream-Signature`` header for a body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Deliverer:
    """Delivers the due webhooks of finished jobs, while this process holds the worker's lease."""

    def __init__(self, store: Store, settings: Settings, metrics: Metrics) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if allowed_hosts(self.settings) and self._task is None:
            self._task = asyncio.create_task(self._run(), name="pagestream-webhooks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        limit = asyncio.Semaphore(CONCURRENCY)
        in_flight: set[str] = set()
        # Deliveries that have ended. One leaves in_flight as the next look begins, not as it ends: a
        # look already under way may have read the store before its outcome was recorded, and would
        # find its job still due and post it a second time.
        ended: set[str] = set()
        async with httpx.AsyncClient(timeout=self.settings.webhook_timeout, follow_redirects=False) as client:
            while True:
                # Cleared before the look, not after it: a wake-up that comes while the store is read
                # (a retry's timer firing) then makes the next look at once, instead of after POLL.
                self._wake.clear()
                in_flight -= ended
                ended.clear()
                try:
                    # A little ahead: a timer may fire a hair before the due time it was set for.
                    for job in await self.store.due_callbacks(time.time() + 0.05, 50):
                        if job.id not in in_flight:
                            in_flight.add(job.id)
                            asyncio.create_task(self._deliver(client, limit, job, ended))
                except Exception:
                    log.exception("could not look for due webhooks")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL)

    async def _deliver(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, job: Job,
                       ended: set[str]) -> None:
        try:
            async with limit:
                await self._attempt(client, job)
        except Exception:
            log.exception("job %s: the webhook delivery failed unexpectedly", job.id)
        finally:
            ended.add(job.id)

    async def _attempt(self, client: httpx.AsyncClient, job: Job) -> None:
        assert job.callback_url is not None
        settings = self.settings
        number = len(job.callback["attempts"]) + 1 if job.callback else 1
        body = orjson.dumps({"type": job.state.value, "job": job.as_dict()})
        now = time.time()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "pagestream-webhook",
            "Pagestream-Event": job.state.value,
            "Pagestream-Delivery": f"{job.id}-{number}",
            "Pagestream-Signature": sign(settings.webhook_secret, int(now), body),
        }
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        try:
            response = await client.post(job.callback_url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered {status}"
        except httpx.HTTPError as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:300]
        attempt: dict[str, Any] = {"attempt": number, "at": rfc3339(now), "status": status, "error": error,
                                   "ms": round((time.monotonic() - started) * 1000, 1)}
        self.metrics.webhooks.labels("delivered" if error is None else "failed").inc()
        if error is None:
            state, due = CallbackState.delivered, None
            log.info("job %s: webhook delivered on attempt %d", job.id, number)
        else:
            delay = min(settings.webhook_backoff * 2 ** (number - 1), MAX_BACKOFF)
            since = job.callback_since or now
            if time.time() + delay > since + settings.webhook_retry_for:
                state, due = CallbackState.failed, None
                log.warning("job %s: webhook given up after %d attempts: %s", job.id, number, error)
            else:
                state, due = CallbackState.pending, time.time() + delay
                log.info("job %s: webhook attempt %d failed (%s); next in %.1f s", job.id, number, error, delay)
        await self.store.record_callback(job.id, attempt, state, due)
        if due is not None:  # look again when it is due, not at the next poll
            asyncio.get_running_loop().call_later(max(due - time.time(), 0), self._wake.set)
