"""A full disk or an unwritable store gives a clear error (507, 503) and leaves no corrupt state.

The data folder is a small tmpfs mounted for the test (root only; CI runs as root), filled up
for real or remounted read-only. Also: retention removes finished jobs and their files.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from .corpus import unavailable
from .docs import make_pdf
from .server import Server, wait_for_state


@contextlib.contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs for the disk tests ({mounted.stderr.strip()}); run as root"
        unavailable(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (remove it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    with contextlib.suppress(OSError):
        with open(filler, "ab") as f:
            while True:
                f.write(b"\0")
                f.flush()
    return filler


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_full_disk_answers_507_and_nothing_is_corrupt(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        server = Server(disk / "data").start()
        try:
            with server.client() as client:
                first = client.post("/api/v1/jobs", content=make_pdf(["before the disk filled"])).json()
                wait_for_state(client, first["id"], {"completed"})
                filler = fill(disk)
                refused = client.post("/api/v1/jobs", content=make_pdf(["no room"] * 20))
                assert refused.status_code == 507, refused.text
                assert refused.json()["error"]["code"] == "insufficient_storage"
                assert client.get("/healthz").status_code == 200
                assert client.get(f"/api/v1/jobs/{first['id']}/result").status_code == 200
                filler.unlink()
                after = client.post("/api/v1/jobs", content=make_pdf(["after the space came back"]))
                assert after.status_code == 202
                assert wait_for_state(client, after.json()["id"], {"completed"})["pages_done"] == 1
                listed = [j["id"] for j in client.get("/api/v1/jobs").json()["jobs"]]
                assert listed == [after.json()["id"], first["id"]]
            # No half-written upload stays behind.
            assert sorted(p.name for p in (disk / "data" / "spool").iterdir()) == sorted(listed)
        finally:
            server.kill()
        assert integrity(disk / "data" / "pagestream.db") == "ok"


def test_a_disk_that_fills_during_a_job_loses_nothing_and_the_job_finishes(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        server = Server(disk / "data", env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.02"}).start()
        try:
            with server.client() as client:
                pages = [f"page {i} " + "text " * 200 for i in range(1, 201)]
                job = client.post("/api/v1/jobs", content=make_pdf(pages)).json()
                deadline = time.monotonic() + 30
                while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 20:
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
                filler = fill(disk)
                time.sleep(1.5)  # the worker meets the full disk (or the WAL still has room)
                assert client.get("/healthz").status_code == 200
                filler.unlink()
                done = wait_for_state(client, job["id"], {"completed", "failed"}, timeout=60)
                assert done["state"] == "completed", done
                numbers = [p["number"] for p in client.get(f"/api/v1/jobs/{job['id']}/result").json()["pages"]]
                assert numbers == list(range(1, 201))
        finally:
            server.kill()
        assert integrity(disk / "data" / "pagestream.db") == "ok"


def test_retention_removes_finished_jobs_with_their_files(make_server: type[Server]) -> None:
    # 0.0003 hours ≈ 1 s; the janitor looks at start-up and then every minute, so restart to see it.
    server = make_server(settings={"retention_hours": 0.0003})
    with server.client() as client:
        old = client.post("/api/v1/jobs", content=make_pdf(["old"])).json()
        wait_for_state(client, old["id"], {"completed"})
    time.sleep(1.5)
    server.kill()
    server.start()
    with server.client() as client:
        deadline = time.monotonic() + 10
        while client.get(f"/api/v1/jobs/{old['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the finished job outlived its retention"
            time.sleep(0.1)
    assert not (server.data_dir / "spool" / old["id"]).exists()
    with sqlite3.connect(server.data_dir / "pagestream.db") as db:
        assert db.execute("SELECT COUNT(*) FROM events WHERE job_id = ?", (old["id"],)).fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM pages WHERE job_id = ?", (old["id"],)).fetchone() == (0,)


def test_the_spool_holds_nothing_that_no_job_owns(make_server: type[Server]) -> None:
    server = make_server()
    spool = server.data_dir / "spool"
    with server.client() as client:
        job = client.post("/api/v1/jobs", content=make_pdf(["kept"])).json()
        wait_for_state(client, job["id"], {"completed"})
    server.kill()
    (spool / ".upload-0123456789abcdef").write_bytes(b"half an upload from a killed server")
    (spool / "fedcba9876543210").write_bytes(b"the file of a job that is gone")
    server.start()
    assert sorted(p.name for p in spool.iterdir()) == [job["id"]]
