"""A real pagestream server in a subprocess on a free port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """``pagestream serve`` on 127.0.0.1 with its own data folder. Start, kill -9, restart at will.

    ``command="worker"`` runs ``pagestream worker`` instead (no HTTP: started once its log says
    it is the worker or a standby); ``args`` adds flags such as ``--no-worker``.
    """

    data_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    command: str = "serve"
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        args = [sys.executable, "-m", "pagestream", self.command, "--port", str(self.port),
                "--data-dir", str(self.data_dir), *self.args]
        for name, value in self.settings.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.log_path = self.data_dir.parent / f"{self.command}-{self.port}.log"
        with open(self.log_path, "ab") as log:  # the process keeps its own descriptor
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        seen = self.log_path.stat().st_size
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            if self.command == "worker":
                text = self.log_path.read_text(errors="replace")[seen:]
                if "is the worker now" in text or "as a standby" in text:
                    return self
                time.sleep(0.05)
                continue
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"the server did not answer within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server and, like a crash of the machine's process tree, its extraction child."""
        if self.process is None:
            return
        children = child_processes(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and wait for a graceful exit."""
        if self.process is None:
            return 0
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.kill()
        self.process = None
        return code

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a query on the server's store (SQLite or PostgreSQL), with ``?`` placeholders."""
        url = str(self.settings.get("db") or "")
        if url.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(url) as conn:
                return [tuple(r) for r in conn.execute(sql.replace("?", "%s"), params).fetchall()]
        import sqlite3

        with contextlib.closing(sqlite3.connect(self.data_dir / "pagestream.db")) as db:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]

    def has_upload(self, job_id: str) -> bool:
        """Whether the store still keeps a job's uploaded file (the spool, or PostgreSQL's files table)."""
        if str(self.settings.get("db") or "").startswith("postgresql://"):
            return bool(self.query("SELECT COUNT(*) FROM files WHERE name = ?", (job_id,))[0][0])
        return (self.data_dir / "spool" / job_id).exists()

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server that checks every response against the contract."""
        from .contract import check_response

        return httpx.Client(base_url=self.url, timeout=30, event_hooks={"response": [check_response]}, **kwargs)


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_server(data_dir: Path, **kwargs: Any) -> Iterator[Server]:
    server = Server(data_dir, **kwargs).start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Event:
    """One SSE event as a client sees it."""

    type: str
    data: dict[str, Any]
    id: int | None


def sse_lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """Lines as an EventSource cuts them: at CRLF, LF or CR only (not at U+2028 and the other
    line breaks Python's splitlines knows, which a page's text may hold)."""
    pending = b""
    for chunk in chunks:
        *lines, pending = re.split(rb"\r\n|\n|\r", pending + chunk)
        for line in lines:
            yield line.decode()


def sse_events(lines: Iterable[str]) -> Iterator[Event]:
    """The events those lines dispatch (a blank line ends one; comments are skipped)."""
    fields: dict[str, str] = {}
    data_lines: list[str] = []
    for line in lines:
        if line == "":
            if data_lines:
                yield Event(fields.get("event", "message"), orjson.loads("\n".join(data_lines)),
                            int(fields["id"]) if "id" in fields else None)
            fields, data_lines = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data_lines.append(value)
        else:
            fields[name] = value


def read_events(response: httpx.Response, stop: Any = None) -> Iterator[Event]:
    """Parse an SSE response into events, each checked against the contract, stopping when
    ``stop(event)`` is true."""
    from .contract import check_event

    global_stream = response.request.url.path == "/api/v1/events"
    for event in sse_events(sse_lines(response.iter_bytes())):
        check_event(event.type, event.data, global_stream)
        yield event
        if stop is not None and stop(event):
            return


def collect_events(url: str, job_id: str, last_event_id: int | None, seen: list[Event]) -> None:
    """Read a job's stream (resuming after ``last_event_id``) until it ends or the connection drops,
    appending what arrives to ``seen`` — the way a client follows a job across server deaths."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    try:
        with httpx.Client(base_url=url, timeout=30) as client, \
                client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as response:
            if response.status_code == 204:
                return
            for event in read_events(response):
                seen.append(event)
    except httpx.HTTPError:
        pass  # the server was killed under us


def wait_for_state(client: httpx.Client, job_id: str, states: set[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout} s")
        time.sleep(0.05)


@contextlib.contextmanager
def stalled_clients(server: Server, path: str, count: int, ready: Callable[[], bool],
                    settle: float = 1.0) -> Iterator[None]:
    """``count`` clients that GET ``path`` and read nothing, through a small window so that the server
    soon has more to send than their connections take. This yields once ``ready()`` (their requests
    are being answered) and ``settle`` seconds more, in which the server writes what it can."""
    sockets = []
    try:
        for _ in range(count):
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
            stuck.connect(("127.0.0.1", server.port))
            stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            sockets.append(stuck)
        deadline = time.monotonic() + 60
        while not ready():
            assert time.monotonic() < deadline, f"the stalled clients of {path} were not answered"
            time.sleep(0.05)
        time.sleep(settle)
        yield
    finally:
        for stuck in sockets:
            stuck.close()


def finished_long_text(client: httpx.Client, pages: int) -> tuple[str, bytes]:
    """A completed plain-text job of ``pages`` pages of about 3 KB ("page N lorem ipsum ..."): its id
    and what was uploaded."""
    body = "\f".join(f"page {i} " + "lorem ipsum dolor " * 170 for i in range(1, pages + 1)).encode()
    response = client.post("/api/v1/jobs", content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    wait_for_state(client, job_id, {"completed"})
    return job_id, body


def proc_status(pid: int) -> dict[str, int]:
    """The kB figures of /proc/<pid>/status (VmRSS, VmHWM, VmPeak, ...)."""
    figures = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                figures[name] = int(value.split()[0])
    return figures


def scrape(server: Server, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every figure of ``/metrics``, by name and labels (read with ``value``)."""
    with server.client(headers=headers) as client:
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
    figures = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            figures[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return figures


def value(figures: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def metric(server: Server, name: str, **labels: str) -> float:
    """One figure of the server's ``/metrics`` now."""
    return value(scrape(server), name, **labels)
