"""The real documents of ../shared/corpus through a real server (skipped without the corpus, failed in CI).

Every file ends completed or failed with a code; the server never stops serving; the text of
every page of a 429-page PDF equals raw pypdfium2's.
"""

from __future__ import annotations

import csv
import threading
import time

import httpx
import pytest

from .corpus import require_corpus
from .docs import raw_pypdfium2
from .server import Server, read_events, wait_for_state

pytestmark = pytest.mark.corpus

FAILURE_CODES = {"password_required", "wrong_password", "invalid_document", "no_pages", "too_many_pages",
                 "archive_too_large", "page_timeout", "job_timeout", "memory_limit", "child_crashed"}


def test_a_429_page_pdf_streams_every_page_and_its_text_is_pypdfium2s(server: Server) -> None:
    path = require_corpus() / "pdf" / "govdocs" / "027613.pdf"
    health: list[int] = []
    stop = threading.Event()

    def probe() -> None:  # /healthz must answer while the job runs
        with httpx.Client(base_url=server.url, timeout=5) as client:
            while not stop.is_set():
                health.append(client.get("/healthz").status_code)
                time.sleep(0.01)

    with server.client() as client:
        job = client.post("/api/v1/jobs", content=path.read_bytes(), params={"filename": path.name}).json()
        prober = threading.Thread(target=probe)
        prober.start()
        try:
            with client.stream("GET", f"/api/v1/jobs/{job['id']}/events") as response:
                events = list(read_events(response))
        finally:
            stop.set()
            prober.join()
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
    logged = [e for e in events if e.id is not None]
    assert events[0].type == "snapshot"
    assert [e.id for e in logged] == list(range(1, len(logged) + 1))
    pages = [e for e in logged if e.type == "page"]
    assert len(pages) == 429 and [e.data["page"]["number"] for e in pages] == list(range(1, 430))
    assert "started" in [e.type for e in logged] and logged[-1].type == "completed"
    assert [p["text"] for p in result["pages"]] == raw_pypdfium2(path)
    assert health and set(health) == {200}


def test_every_corpus_file_ends_completed_or_failed_with_a_code(make_server: type[Server]) -> None:
    corpus = require_corpus()
    with open(corpus / "MANIFEST.tsv") as manifest:
        rows = list(csv.DictReader(manifest, delimiter="\t"))
    assert len(rows) > 100
    server = make_server(settings={"page_timeout": 30, "max_queued_jobs": 1000})
    with server.client() as client:
        jobs: dict[str, dict[str, str]] = {}
        refused: dict[str, str] = {}
        for row in rows:
            path = corpus / row["path"]
            response = client.post("/api/v1/jobs", content=path.read_bytes(), params={"filename": path.name})
            if response.status_code == 202:
                jobs[response.json()["id"]] = row
            else:  # refused at intake: must be a clear client error (not a PDF or EPUB by its bytes)
                assert response.status_code in (400, 415), (row["path"], response.text)
                refused[row["path"]] = response.json()["error"]["code"]
        outcomes: dict[str, dict[str, object]] = {}
        for job_id, row in jobs.items():
            job = wait_for_state(client, job_id, {"completed", "failed"}, timeout=300)
            outcomes[row["path"]] = job
            if job["state"] == "failed":
                assert job["error"]["code"] in FAILURE_CODES, (row["path"], job["error"])
            assert client.get("/healthz").status_code == 200
        # At least as good as raw pypdfium2: every PDF it read fully, we complete with at least its characters.
        for path, job in outcomes.items():
            row = next(r for r in rows if r["path"] == path)
            if row["outcome_pypdfium2"] == "ok" and path.endswith(".pdf"):
                assert job["state"] == "completed", (path, job["error"])
                result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
                assert sum(p["chars"] for p in result["pages"]) >= int(row["chars_pypdfium2"] or 0), path
            if row["outcome_pypdfium2"] == "password":
                assert job["state"] == "failed" and job["error"]["code"] == "password_required", path
        # Real PDFs and EPUBs are never refused at intake, whatever is broken inside them.
        assert not [p for p in refused if p.startswith(("pdf/govdocs", "pdf/encrypted", "epub/idpf"))], refused
