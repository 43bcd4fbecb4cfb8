"""Measuring probes put into a pagestream server from outside (no server code is changed).

This folder goes first on PYTHONPATH of a benchmark's server only when a probe is wanted
(B2's pagestream runs, B3, B5). Python imports
``sitecustomize`` at start-up, in the server and in its extraction child alike.

PAGESTREAM_BENCH_LAG_LOG=<file>
    In the server: a task on the event loop sleeps 10 ms again and again and appends to the
    file, as "<wall time> <lag µs>" lines, how much later than asked it woke up (perf_counter):
    the event-loop lag. Started when the hub starts. (B5 only: it is work on the loop.)

PAGESTREAM_BENCH_CHILD_LOG=<file>
    In the extraction child only: "run <job id> <wall time>" when a job's run begins, and
    "<page number> <wall time>" when a page is done — taken as the child encodes the page's
    message to the worker, right after extracting it (orjson.dumps is wrapped, in the child;
    the server process is untouched, so its CPU figures are not).
"""

from __future__ import annotations

import os
import sys

_lag_log = os.environ.get("PAGESTREAM_BENCH_LAG_LOG")
_child_log = os.environ.get("PAGESTREAM_BENCH_CHILD_LOG")

if _child_log and "pagestream.child" in getattr(sys, "orig_argv", ()):
    import time as _time

    import orjson as _orjson

    _dumps, _loads = _orjson.dumps, _orjson.loads
    _fd = os.open(_child_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _logging_dumps(obj, *args, **kwargs):  # type: ignore[no-untyped-def]
        # The child encodes each page's message right after extracting it: that is "page done".
        if type(obj) is dict and obj.get("t") == "page":
            os.write(_fd, b"%d %.6f\n" % (obj["number"], _time.time()))
        return _dumps(obj, *args, **kwargs)

    def _logging_loads(data, *args, **kwargs):  # type: ignore[no-untyped-def]
        obj = _loads(data, *args, **kwargs)
        if type(obj) is dict and obj.get("op") == "run":
            os.write(_fd, b"run %s %.6f\n" % (os.path.basename(obj["path"]).encode(), _time.time()))
        return obj

    _orjson.dumps = _logging_dumps
    _orjson.loads = _logging_loads

if _lag_log:
    try:
        import pagestream.hub as _hub
    except Exception:  # noqa: BLE001 - not a pagestream process
        _hub = None  # type: ignore[assignment]
    if _hub is not None:
        _start = _hub.Hub.start

        async def _probe(path: str) -> None:
            import asyncio
            import time

            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            lines: list[bytes] = []
            while True:
                t = time.perf_counter()
                await asyncio.sleep(0.010)
                lag = time.perf_counter() - t - 0.010
                lines.append(b"%.4f %d\n" % (time.time(), int(lag * 1e6)))
                if len(lines) >= 20:
                    os.write(fd, b"".join(lines))
                    lines.clear()

        def _start_with_probe(self):  # type: ignore[no-untyped-def]
            import asyncio

            _start(self)
            self._bench_lag_probe = asyncio.get_running_loop().create_task(_probe(_lag_log))

        _hub.Hub.start = _start_with_probe  # type: ignore[method-assign]
