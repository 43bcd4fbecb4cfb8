"""The ``pagestream`` client commands, run as a user runs them: a subprocess, against a real server."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from pagestream.cli import EXIT_CANCELLED, EXIT_ERROR, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, JobProgress

from .contract import CONTRACT, validate
from .docs import make_pdf
from .server import ROOT, Server, free_port, wait_for_state

SLOW_PAGES = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"}


def _env(url: str, **extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "server"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PAGESTREAM_URL": url, **extra}


def pagestream(url: str, *args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pagestream", *args], env=_env(url), cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def in_background(url: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The command running while the test goes on; reaped at the end whatever happens."""
    process = subprocess.Popen([sys.executable, "-m", "pagestream", *args], env=_env(url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    (tmp_path / "three.pdf").write_bytes(make_pdf(["one", "two", "three"]))
    (tmp_path / "locked.pdf").write_bytes(make_pdf(["secret"], user_password="x"))
    (tmp_path / "long.pdf").write_bytes(make_pdf([f"long page {i}" for i in range(1, 31)]))
    (tmp_path / "endless.pdf").write_bytes(make_pdf([f"endless page {i}" for i in range(1, 301)]))  # a minute
    return tmp_path


def test_json_output_is_one_event_per_line_each_valid_against_its_schema(server: Server, docs: Path) -> None:
    done = pagestream(server.url, "submit", "--watch", "--json", "three.pdf", "locked.pdf", cwd=docs)
    assert done.returncode == EXIT_FAILED, done.stderr  # one of the two failed
    events = [orjson.loads(line) for line in done.stdout.splitlines()]
    for event in events:
        validate(CONTRACT.event_schema_for(event["type"]), event)
    # The jobs' streams are followed at once: either job's lines may come first.
    names = {e["job_id"]: e["job"]["filename"] for e in events if e["type"] == "snapshot"}
    by_name: dict[str, list[str]] = {}
    for event in events:
        by_name.setdefault(names[event["job_id"]], []).append(event["type"])
    three, locked = by_name["three.pdf"], by_name["locked.pdf"]
    assert three[0] == "snapshot" and three[-1] == "completed" and three.count("page") == 3
    assert locked[0] == "snapshot" and locked[-1] == "failed"
    assert [e["error"]["code"] for e in events if e["type"] == "failed"] == ["password_required"]


def test_exit_codes_completed_failed_cancelled_unreachable_and_refused(make_server: Callable[..., Server],
                                                                       docs: Path) -> None:
    server = make_server(env=SLOW_PAGES)
    completed = pagestream(server.url, "submit", "--watch", "three.pdf", cwd=docs)
    assert completed.returncode == EXIT_OK, completed.stderr

    failed = pagestream(server.url, "submit", "--watch", "locked.pdf", cwd=docs)
    assert failed.returncode == EXIT_FAILED
    assert "failed password_required: the PDF is encrypted" in failed.stdout  # not a terminal: a line per event
    assert "Traceback" not in failed.stderr

    # A long job runs; a second one waits behind it and is cancelled while it waits.
    first = pagestream(server.url, "submit", "endless.pdf", cwd=docs).stdout.strip()
    second = pagestream(server.url, "submit", "three.pdf", cwd=docs).stdout.strip()
    with in_background(server.url, "watch", second) as watcher:
        with server.client() as client:
            wait_for_state(client, first, {"running"})
        busy = pagestream(server.url, "rm", first)  # a running job cannot be removed: the server's message
        assert busy.returncode == EXIT_ERROR and busy.stderr.startswith("pagestream: ")
        assert "(conflict)" in busy.stderr
        assert pagestream(server.url, "cancel", second).returncode == EXIT_OK
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == EXIT_CANCELLED, err
    assert f"{second} cancelled" in out and "position 1" in out
    assert pagestream(server.url, "cancel", first).returncode == EXIT_OK

    nobody = f"http://127.0.0.1:{free_port()}"
    for args in (["status", first], ["submit", "three.pdf"], ["watch", first]):
        unreachable = pagestream(nobody, *args, cwd=docs)
        assert unreachable.returncode == EXIT_UNREACHABLE, args
        assert "cannot reach" in unreachable.stderr and "connection refused" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr

    unknown = pagestream(server.url, "status", "0123456789abcdef")
    assert unknown.returncode == EXIT_ERROR
    assert unknown.stderr.strip() == "pagestream: there is no job 0123456789abcdef (not_found)"
    assert pagestream(server.url, "submit", "missing.pdf", cwd=docs).returncode == EXIT_ERROR
    assert pagestream(server.url, "result").returncode == EXIT_ERROR  # usage: argparse's own 2
    help_text = pagestream(server.url, "--help").stdout
    assert "exit codes" in help_text and "cannot reach the server" in help_text


def test_the_other_commands(server: Server, docs: Path) -> None:
    job_id = pagestream(server.url, "submit", "three.pdf", "--pages", "2-3", cwd=docs).stdout.strip()
    assert len(job_id) == 16
    assert pagestream(server.url, "watch", job_id).returncode == EXIT_OK
    status = pagestream(server.url, "status", job_id).stdout
    assert "completed, 2/2 pages" in status and "three.pdf" in status
    validate("job.json", orjson.loads(pagestream(server.url, "status", job_id, "--json").stdout))
    listed = [orjson.loads(line) for line in pagestream(server.url, "ls", "--json", "--state", "completed").stdout
              .splitlines()]
    assert job_id in {job["id"] for job in listed} and {job["state"] for job in listed} == {"completed"}
    assert job_id in pagestream(server.url, "ls", "--limit", "5").stdout
    assert pagestream(server.url, "result", job_id).stdout.split("\f") == ["two", "three"]
    pagestream(server.url, "result", job_id, "--format", "json", "-o", str(docs / "out.json"))
    validate("result.json", orjson.loads((docs / "out.json").read_bytes()))
    ndjson = pagestream(server.url, "result", job_id, "--format", "ndjson").stdout.splitlines()
    assert [orjson.loads(line)["number"] for line in ndjson] == [2, 3]
    refused = pagestream(server.url, "retry", job_id)  # only a failed or cancelled job can be retried
    assert refused.returncode == EXIT_ERROR and "(conflict)" in refused.stderr
    assert pagestream(server.url, "rm", job_id).stdout.strip() == f"{job_id} removed"
    assert pagestream(server.url, "status", job_id).returncode == EXIT_ERROR


def test_watch_follows_a_job_across_a_server_restart(make_server: Callable[..., Server], docs: Path) -> None:
    server = make_server(env=SLOW_PAGES)
    job_id = pagestream(server.url, "submit", "long.pdf", cwd=docs).stdout.strip()
    with in_background(server.url, "watch", "--json", job_id) as watcher:
        with server.client() as client:  # the watcher is following the job, halfway through
            while client.get(f"/api/v1/jobs/{job_id}").json()["pages_done"] < 8 or client.get("/healthz").json()[
                    "streams"] < 1:
                assert watcher.poll() is None
                time.sleep(0.02)
        server.kill()
        time.sleep(0.5)
        server.start()
        out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == EXIT_OK, err
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [e["page"]["number"] for e in events if e["type"] == "page"] == list(range(1, 31))
    assert [e["type"] for e in events].count("retrying") == 1


def _run_in_a_terminal(url: str, args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its stdin, stdout and stderr; its exit code and all it wrote."""
    controller, terminal = pty.openpty()
    env = _env(url, TERM="xterm-256color", COLUMNS="120", LINES="40")
    process = subprocess.Popen([sys.executable, "-m", "pagestream", *args], stdin=terminal, stdout=terminal,
                               stderr=terminal, env=env, cwd=cwd, close_fds=True)
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: the command has exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(10), output.decode("utf-8", "replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()


def test_in_a_terminal_watch_shows_a_progress_bar_per_job(make_server: Callable[..., Server], docs: Path) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.05"})
    code, screen = _run_in_a_terminal(server.url, ["submit", "--watch", "long.pdf", "locked.pdf"], docs)
    assert code == EXIT_FAILED
    assert "\x1b[" in screen  # drawn with terminal control sequences, redrawn in place
    assert "━" in screen  # the bar
    assert "30/30 pages" in screen and "pages/s" in screen and "✔ completed" in screen
    assert "queued #1" in screen  # locked.pdf waited behind long.pdf
    assert "✘ failed" in screen and "locked.pdf: password_required" in screen
    assert "Traceback" not in screen


def test_job_progress_measures_the_rate_from_the_servers_clock() -> None:
    progress = JobProgress("a.pdf", "queued", position=2)
    progress.apply({"type": "position", "job_id": "x", "at": "2024-01-01T00:00:00.000Z", "position": 1})
    assert (progress.state, progress.position) == ("queued", 1)
    progress.apply({"type": "started", "job_id": "x", "at": "2024-01-01T00:00:00.000Z", "attempt": 1,
                    "pages_total": 10, "resume_from": 1, "pages_done": 0})
    for page in range(1, 5):  # 2 pages a second, replayed in one burst: the rate is still 2
        progress.apply({"type": "page", "job_id": "x", "at": f"2024-01-01T00:00:0{page // 2}.{page % 2 * 5}00Z",
                        "page": {"number": page, "chars": 1, "words": 1, "ms": 1.0, "method": "pdfium", "error": None},
                        "pages_done": page, "pages_total": 10})
    assert progress.rate == pytest.approx(2.0) and progress.eta == pytest.approx(3.0)
    progress.apply({"type": "failed", "job_id": "x", "at": "2024-01-01T00:00:03.000Z", "pages_done": 4,
                    "error": {"code": "page_timeout", "message": "page 5 took too long"}})
    assert (progress.state, progress.eta) == ("failed", None)
    assert progress.error == "page_timeout: page 5 took too long"
