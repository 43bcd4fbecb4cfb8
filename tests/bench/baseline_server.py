"""The B2 baseline: the usual recipe for SSE fan-out, done plainly.

A Starlette app served by uvicorn (same loop and HTTP implementation as pagestream: uvloop
and httptools when installed) with one sse-starlette ``EventSourceResponse`` per subscriber.
Each subscriber has its own unbounded ``asyncio.Queue``; a producer makes one page event per
tick of a fixed schedule — the same JSON shape as pagestream's ``page`` event, ``at`` the
time the tick was due (the baseline's "page done") — and puts the event's dict into every
queue. Each subscriber's generator takes the dict and yields a dict for sse-starlette, which
encodes it for that subscriber (``json.dumps`` then sse-starlette's framing: the work is done
once per subscriber, not once per event).

The frames use ``sep="\\n"`` so the bytes on the wire have the same shape as pagestream's
(``id:``, ``event:``, ``data:``). The first frame is a ``snapshot`` without id, like
pagestream's, so a client knows its stream is open.

    python baseline_server.py --port P --rate 20 [--pages 100000]   # then POST /start
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

JOB_ID = "baseline00000000"
subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
started = asyncio.Event()


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    subscribers.add(queue)

    async def stream() -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"event": "snapshot", "data": json.dumps({"type": "snapshot", "job_id": JOB_ID,
                                                            "at": rfc3339(time.time())})}
            while True:
                event = await queue.get()
                yield {"id": str(event["id"]), "event": "page", "data": json.dumps(event["data"])}
        finally:
            subscribers.discard(queue)

    return EventSourceResponse(stream(), sep="\n", ping=15)


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "streams": len(subscribers)})


async def start(request: Request) -> JSONResponse:
    """Start the producer (the benchmark connects its subscribers first)."""
    started.set()
    return JSONResponse({"started": True})


async def produce(rate: float, pages: int) -> None:
    """One page event every 1/rate s, on a fixed schedule (no drift), into every subscriber's queue."""
    await started.wait()
    loop = asyncio.get_running_loop()
    start, wall = loop.time(), time.time()
    for number in range(1, pages + 1):
        # A fixed schedule: a late tick is not skipped, it is made at once (the pages "arrive"
        # whether or not the loop keeps up), and "at" is the time the page was due.
        await asyncio.sleep(max(0.0, start + number / rate - loop.time()))
        data = {
            "type": "page", "job_id": JOB_ID, "at": rfc3339(wall + number / rate),
            "page": {"number": number, "chars": 1200, "words": 200, "ms": 0.8, "method": "text", "error": None},
            "pages_done": number, "pages_total": pages,
        }
        event = {"id": number, "data": data}
        for queue in list(subscribers):
            queue.put_nowait(event)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--pages", type=int, default=1_000_000)
    args = parser.parse_args()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(produce(args.rate, args.pages))
        yield
        task.cancel()

    app = Starlette(routes=[Route("/events", events), Route("/healthz", healthz),
                           Route("/start", start, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="info", loop="auto", http="auto",
                timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()
