"""The extraction child: a separate process that parses documents for the worker.

A parser that crashes, hangs or eats memory must never take the server with it, and
pypdfium2 is not thread-safe, so every parse happens here, one job at a time. The child is
kept between jobs (starting Python and pdfium for each job would cost more than a small
document takes) and replaced whenever it dies or is killed.

Protocol: length-prefixed messages (4-byte big-endian length, then orjson) on stdin and on
a private dup of stdout — fd 1 itself is pointed at stderr so that anything a C library
prints cannot corrupt the stream. Pages of a fast document go several to a write (see Outbox).

    worker → child   {"op": "run", "path", "kind", "password", "pages", "done", "limits", "page_interval"}
                     {"op": "stop"}            (cancel or shutdown: stop at the next page boundary)
    child → worker   {"t": "open", "pages_total", "resume_from"}   the document opened
                     {"t": "page", "number", "chars", "words", "ms", "method", "error", "text"}
                     {"t": "end"} | {"t": "stopped"} | {"t": "fail", "code", "message"}
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import select
import signal
import struct
import sys
import threading
import time
from typing import Any, BinaryIO

import orjson

_HEADER = struct.Struct(">I")
# Seconds between two writes of pages unless the run says otherwise (the server sends its
# stream_pace_ms: streams write no more often than that either). A page that comes after a pause
# goes at once; pages that come faster wait for the next write (at most this long), so that the
# server wakes once for several of them instead of once each: on a fast document that halves its
# CPU per page.
PAGE_WRITE_INTERVAL = 0.005


def encode_message(message: dict[str, Any]) -> bytes:
    body = orjson.dumps(message)
    return _HEADER.pack(len(body)) + body


class Outbox:
    """The child's messages to the worker, in order. Anything but a page is written at once (with
    the pages before it); pages are written at most every ``interval`` seconds, by a thread that
    wakes for the ones still waiting while the next page is being parsed."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._ready = threading.Condition()
        self._pending: list[bytes] = []
        self._last_write = 0.0
        self.interval = PAGE_WRITE_INTERVAL
        threading.Thread(target=self._write_late_pages, name="outbox", daemon=True).start()

    def send(self, message: dict[str, Any]) -> None:
        data = encode_message(message)
        with self._ready:
            self._pending.append(data)
            if message["t"] != "page" or time.monotonic() - self._last_write >= self.interval:
                self._write()
            else:
                self._ready.notify()

    def flush(self) -> None:
        with self._ready:
            self._write()

    def _write(self) -> None:  # with the lock held: a full pipe holds the sender back too
        if self._pending:
            self._stream.write(b"".join(self._pending))
            self._stream.flush()
            self._pending.clear()
        self._last_write = time.monotonic()

    def _write_late_pages(self) -> None:
        with self._ready:
            while True:
                if not self._pending:
                    self._ready.wait()
                    continue
                wait = self._last_write + self.interval - time.monotonic()
                if wait > 0:
                    self._ready.wait(wait)
                    continue
                self._write()


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream: BinaryIO) -> dict[str, Any] | None:
    """The next message, or None at the end of the stream. ``stream`` is unbuffered, so that
    select() on it tells the truth about what is waiting."""
    head = _read_exactly(stream, _HEADER.size)
    if head is None:
        return None
    body = _read_exactly(stream, _HEADER.unpack(head)[0])
    if body is None:
        return None
    message: dict[str, Any] = orjson.loads(body)
    return message


def _stop_requested(stdin: BinaryIO) -> bool:
    """True if the worker has asked us to stop (a message is waiting on stdin)."""
    ready, _, _ = select.select([stdin], [], [], 0)
    if not ready:
        return False
    message = read_message(stdin)
    return message is None or message.get("op") == "stop"


def _inject_faults(number: int, out: Outbox) -> None:
    """Fault injection for the test suite and the benchmarks, set through the environment:
    PAGESTREAM_FAULT_PAGE_DELAY=<seconds> makes every page take at least that long, and
    PAGESTREAM_FAULT_CRASH=<file>:<page> kills the child at that page once (the file is the
    "once": it is removed as the child dies)."""
    delay = os.environ.get("PAGESTREAM_FAULT_PAGE_DELAY")
    if delay:
        time.sleep(float(delay))
    crash = os.environ.get("PAGESTREAM_FAULT_CRASH")
    if crash:
        marker, _, page = crash.rpartition(":")
        if int(page) == number and os.path.exists(marker):
            os.unlink(marker)
            out.flush()  # the pages before it were reported: the crash is "at page N", not before
            os.kill(os.getpid(), signal.SIGKILL)


def _run(command: dict[str, Any], stdin: BinaryIO, out: Outbox) -> None:
    from .extraction import ExtractionError, Limits, open_document
    from .jobs import DocumentKind, ErrorCode, select_pages

    limits = Limits(**command["limits"])
    out.interval = float(command.get("page_interval", PAGE_WRITE_INTERVAL))
    try:
        with open_document(command["path"], DocumentKind(command["kind"]), password=command["password"],
                           limits=limits) as document:
            ranges = [(int(lo), int(hi)) for lo, hi in command["pages"]] if command["pages"] else None
            selected = select_pages(ranges, document.page_count)
            if not selected:
                out.send({"t": "fail", "code": ErrorCode.no_pages.value,
                                    "message": f"the page range selects none of the document's "
                                               f"{document.page_count} pages"})
                return
            done = set(command["done"])
            todo = [n for n in selected if n not in done]
            # resume_from: the first page this run extracts (past the last one when all are done).
            resume_from = todo[0] if todo else selected[-1] + 1
            out.send({"t": "open", "pages_total": len(selected), "resume_from": resume_from})
            for number in todo:
                if _stop_requested(stdin):
                    out.send({"t": "stopped"})
                    return
                _inject_faults(number, out)
                page = document.extract(number)
                if page.chars > limits.max_page_chars:  # the server never handles a page bigger than this
                    page.text = page.text[: limits.max_page_chars]
                    page.chars, page.words = len(page.text), len(page.text.split())
                    page.error = f"the page's text was cut at {limits.max_page_chars} characters"
                out.send({
                    "t": "page", "number": page.number, "chars": page.chars, "words": page.words, "ms": page.ms,
                    "method": page.method, "error": page.error, "text": page.text,
                })
    except ExtractionError as exc:
        out.send({"t": "fail", "code": exc.code.value, "message": exc.message})
        return
    out.send({"t": "end"})


def main() -> None:
    memory_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Keep the protocol on a private descriptor; point fd 1 at stderr for stray C output.
    stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # A roomy pipe: the child goes on extracting while the worker is busy committing.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    out = Outbox(stream)
    sys.stdout = sys.stderr
    stdin = os.fdopen(0, "rb", buffering=0)
    from .jobs import ErrorCode

    while True:
        command = read_message(stdin)
        if command is None:
            return
        if command.get("op") != "run":
            continue  # a stop that arrived after the job had ended
        try:
            _run(command, stdin, out)
        except MemoryError:
            out.send({"t": "fail", "code": ErrorCode.memory_limit.value,
                                "message": f"the document needs more than the child's {memory_mb} MiB"})
            return  # the heap may be in any state: let the worker start a fresh child


if __name__ == "__main__":
    main()
