"""The extraction child: a separate process that parses documents for the worker.

A parser that crashes, hangs or eats memory must never take the server with it, and
pypdfium2 is not thread-safe, so every parse happens here, one job at a time. The child is
kept between jobs (starting Python and pdfium for each job would cost more than a small
document takes) and replaced whenever it dies or is killed.

Protocol: length-prefixed messages (4-byte big-endian length, then orjson) on stdin and on
a private dup of stdout — fd 1 itself is pointed at stderr so that anything a C library
prints cannot corrupt the stream. Each message is written the moment it is ready (the worker
decides how often it reads them: see worker.Child).

    worker → child   {"op": "run", "job", "path", "kind", "password", "pages", "done", "limits"}
                     {"op": "stop", "job"}     (cancel or shutdown: stop that run at the next page boundary)
    child → worker   {"t": "open", "pages_total", "resume_from"}   the document opened
                     {"t": "page", "number", "chars", "words", "ms", "method", "error", "text"}
                     {"t": "end"} | {"t": "stopped"} | {"t": "fail", "code", "message"}

Every run ends with exactly one of end, stopped or fail, and runs answer in the order they
were given. The worker may give the next run while one is under way (so that the child goes
straight on to it): the child keeps it and starts it when the current one ends. A stop names
its run, so a stop that crosses its run's end never touches the next one; a run stopped
before it began answers "stopped" in its turn.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import resource
import select
import signal
import struct
import sys
import time
from typing import Any, BinaryIO

import orjson

# At the top, not in _run: the child starts before the first job arrives (see worker), and
# loading pdfium took 70-100 ms that the first job waited for.
from .extraction import ExtractionError, Limits, open_document
from .jobs import DocumentKind, ErrorCode, select_pages

_HEADER = struct.Struct(">I")


class Outbox:
    """The child's messages to the worker, each written at once, in order."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def send(self, message: dict[str, Any]) -> None:
        body = orjson.dumps(message)
        self._stream.write(_HEADER.pack(len(body)) + body)
        self._stream.flush()


class Inbox:
    """The worker's messages: runs waiting their turn, and which runs were asked to stop."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.runs: collections.deque[dict[str, Any]] = collections.deque()
        self.stops: set[str | None] = set()
        self.closed = False

    def next_run(self) -> dict[str, Any] | None:
        """The next run to start (waiting for one if none was given ahead), or None at the end."""
        while not self.runs:
            if self.closed or not self._take(read_message(self._stream)):
                return None
        return self.runs.popleft()

    def stop_requested(self, job: str | None) -> bool:
        """True if the run of ``job`` should stop: it was asked to, or the worker has gone.
        Reads whatever is waiting first, without waiting for more."""
        while not self.closed and select.select([self._stream], [], [], 0)[0]:
            self._take(read_message(self._stream))
        return self.closed or job in self.stops

    def _take(self, message: dict[str, Any] | None) -> bool:
        if message is None:
            self.closed = True
            return False
        if message.get("op") == "run":
            self.stops.discard(message.get("job"))  # a stop given before this run was for an earlier one
            self.runs.append(message)
        elif message.get("op") == "stop":
            self.stops.add(message.get("job"))
        return True


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


# Fault injection for the test suite and the benchmarks, set through the child's environment:
# PAGESTREAM_FAULT_PAGE_DELAY=<seconds> makes every page take at least that long, and
# PAGESTREAM_FAULT_CRASH=<file>:<page> kills the child at that page once (the file is the
# "once": it is removed as the child dies). Read once: two lookups a page were 0.2 % of B1.
_FAULT_DELAY = float(os.environ.get("PAGESTREAM_FAULT_PAGE_DELAY") or 0)
_FAULT_CRASH = os.environ.get("PAGESTREAM_FAULT_CRASH")


def _inject_faults(number: int) -> None:
    if _FAULT_DELAY:
        time.sleep(_FAULT_DELAY)
    if _FAULT_CRASH:
        marker, _, page = _FAULT_CRASH.rpartition(":")
        if int(page) == number and os.path.exists(marker):
            os.unlink(marker)  # the pages before it were written already: the crash is "at page N"
            os.kill(os.getpid(), signal.SIGKILL)


def _run(command: dict[str, Any], inbox: Inbox, out: Outbox) -> None:
    limits = Limits(**command["limits"])
    job = command.get("job")
    if inbox.stop_requested(job):  # stopped before it began
        out.send({"t": "stopped"})
        return
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
                if inbox.stop_requested(job):
                    out.send({"t": "stopped"})
                    return
                _inject_faults(number)
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
    # The server and this child share the CPU their group gets (a session's autogroup, a container's or
    # a service's cgroup): at equal priority the event loop waited behind this child for a CPU, and with
    # 200 watchers of a fast job its lag reached 5-10 ms (B5). A lower priority makes the child yield.
    nice = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if nice > 0:
        os.nice(nice)
    # Keep the protocol on a private descriptor; point fd 1 at stderr for stray C output.
    stream = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # A roomy pipe: the child goes on extracting while the worker is busy committing.
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    out = Outbox(stream)
    sys.stdout = sys.stderr
    inbox = Inbox(os.fdopen(0, "rb", buffering=0))
    while (command := inbox.next_run()) is not None:
        try:
            _run(command, inbox, out)
        except MemoryError:
            out.send({"t": "fail", "code": ErrorCode.memory_limit.value,
                      "message": f"the document needs more than the child's {memory_mb} MiB"})
            return  # the heap may be in any state: let the worker start a fresh child
        finally:
            inbox.stops.discard(command.get("job"))


if __name__ == "__main__":
    main()
