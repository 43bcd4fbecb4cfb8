"""B4's floor: what the HTTP server alone costs an upload, with no work done on the body.

A bare ASGI app, served by uvicorn with the same loop and HTTP implementation as pagestream
(uvloop and httptools when installed), that reads each request body to its end, keeps none of
it, and answers 202 with ``{}``; any GET answers 200 with ``{}`` (the health check). B4 runs
the same load against it, in the same run, so the table shows how much of a submission's
latency is the HTTP server's intake before pagestream writes, hashes or stores a byte.

    python intake_floor.py --port P
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    status = 200
    if scope["method"] == "POST":
        status = 202
        while (await receive()).get("more_body", False):
            pass
    await send({"type": "http.response.start", "status": status, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="auto", http="auto", lifespan="off",
                access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
