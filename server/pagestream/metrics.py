"""Prometheus metrics (``GET /metrics``, text format, prometheus-client).

Job and page figures are counted from the commits this process makes — each event is
committed exactly once, by one process, so the sum over the processes of a cluster is exact
(an API replica counts the submissions and cancels it writes, the worker the pages and the
ends). Labels are bounded: error codes, route templates, stream kinds — never a job id or an
owner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.types import Scope

from .jobs import EventType
from .store import Commit

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_DURATIONS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_RATES = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
_LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
# Millisecond steps up to 5 ms (the loop's timers wake on whole milliseconds, so an idle loop lags 0-1 ms).
_LAGS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1)

#: How often the event loop's lag is sampled: 600 samples a minute. Each wakes an idle loop, which
#: costs about 0.1 ms of CPU here: every 20 ms, B2's server CPU per delivery at 100 watchers grew 9 %.
LAG_INTERVAL = 0.1


class Metrics:
    """Every metric of one process, in a registry of its own (so tests and apps never share one)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.jobs_submitted = Counter("pagestream_jobs_submitted", "Jobs accepted into the queue (counted by the "
                                      "process that accepted them).", registry=r)
        self.jobs_completed = Counter("pagestream_jobs_completed", "Jobs that completed.", registry=r)
        self.jobs_failed = Counter("pagestream_jobs_failed", "Jobs that failed, by error code.", ["code"], registry=r)
        self.jobs_cancelled = Counter("pagestream_jobs_cancelled", "Jobs that were cancelled.", registry=r)
        self.pages = Counter("pagestream_pages_processed", "Pages extracted and stored.", registry=r)
        self.job_duration = Histogram("pagestream_job_duration_seconds", "From a job's start to its completion.",
                                      buckets=_DURATIONS, registry=r)
        self.job_rate = Histogram("pagestream_job_pages_per_second", "Pages per second of each completed job.",
                                  buckets=_RATES, registry=r)
        self.child_restarts = Counter("pagestream_child_restarts", "Extraction children replaced, by cause.",
                                      ["cause"], registry=r)
        self.child_timeouts = Counter("pagestream_child_timeouts", "Jobs stopped by a timeout, by kind.",
                                      ["kind"], registry=r)
        self.upload_bytes = Counter("pagestream_upload_bytes", "Bytes of accepted uploads.", registry=r)
        self.webhooks = Counter("pagestream_webhook_attempts", "Webhook delivery attempts, by outcome.",
                                ["outcome"], registry=r)
        self.http_requests = Counter("pagestream_http_requests", "HTTP requests, by route, method and status.",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("pagestream_http_request_duration_seconds",
                                      "Time to the response's start, by route.", ["route"], buckets=_LATENCIES,
                                      registry=r)
        self.commits = Counter("pagestream_store_commits", "Transactions this process's store writer committed "
                               "(each holds one or more writes).", registry=r)
        self.loop_lag = Histogram("pagestream_event_loop_lag_seconds", "How much later than asked a task "
                                  f"sleeping on the event loop ran again, sampled every {LAG_INTERVAL * 1000:g} ms: "
                                  "what every request and stream write waits on top of its own work.",
                                  buckets=_LAGS, registry=r)
        self.queue_depth = Gauge("pagestream_queue_depth", "Jobs waiting in the queue.", registry=r)
        self._sampled: list[Callable[[], Iterable[Metric]]] = []
        r.register(_Sampled(self._sampled))

    def sample(self, collect: Callable[[], Iterable[Metric]]) -> None:
        """Add figures read at scrape time (open streams, events delivered)."""
        self._sampled.append(collect)

    def observe_commit(self, commit: Commit) -> None:
        self.commits.inc()
        for event in commit.events:
            kind = event.type
            if kind is EventType.page:
                self.pages.inc()
            elif kind is EventType.completed:
                self.jobs_completed.inc()
                data = orjson.loads(event.data)
                duration = float(data.get("duration_seconds") or 0)
                self.job_duration.observe(duration)
                if duration > 0:
                    self.job_rate.observe(data.get("pages_total", 0) / duration)
            elif kind is EventType.failed:
                self.jobs_failed.labels(orjson.loads(event.data)["error"]["code"]).inc()
            elif kind is EventType.cancelled:
                self.jobs_cancelled.inc()

    async def watch_loop_lag(self) -> None:
        """Sample the event loop's lag into ``loop_lag`` until cancelled."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(LAG_INTERVAL)
            # The same measure as the benchmark's B5 probe: from asking to wake to running again.
            self.loop_lag.observe(max(0.0, time.perf_counter() - asked - LAG_INTERVAL))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _Sampled(Collector):
    def __init__(self, sources: list[Callable[[], Iterable[Metric]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterable[Any]:
        for source in self.sources:
            yield from source()


def route_of(scope: Scope) -> str:
    """The matched route's template (bounded), or "static" for the UI's files and "other"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return str(path)
    return "static" if route is not None else "other"
