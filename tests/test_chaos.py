"""Nothing is lost: SIGKILL the server at random moments, again and again, while work keeps coming.

A submitter thread keeps a few documents queued for the whole run (real corpus documents when
the corpus is there, generated PDFs and EPUBs besides), each with an ``Idempotency-Key`` and
retried with the same key after a failed attempt, as a careful client would. For every
accepted job a watcher thread reads the job's event stream and, after every disconnect,
resumes with ``Last-Event-ID``. Meanwhile the server is killed with SIGKILL (with its
extraction child) :data:`KILLS` times and restarted each time, at moments of four kinds:

- ``upload``: while a slow chunked upload is in flight (its body half sent);
- ``page``: while a job runs with every page taking 20 ms (the kill lands mid-page);
- ``commit``: while a fast document streams pages (thousands a second: the writer commits
  batch after batch, so the kill lands in or next to a commit);
- ``recovery``: within 100 ms of a start, while the interrupted job is being taken up again.

At the end every job the server ever took is checked, in SQLite and through the API: every
submission answered 202 exists and completed (every document is valid, and attempts are not
limited here); no job is left queued or running; every page exists once and has its text;
every job's event ids run 1..N with one terminal event, last; every watcher saw each event
exactly once and its sequence is the stored log; the spool holds exactly the jobs' files.

``CHAOS_SEED`` repeats a run's choices (kill kinds and moments, documents, cut points; the
timing of threads still varies); it is printed, and in every failure message.
``CHAOS_KILLS`` changes the number of kills (default 24).
"""

from __future__ import annotations

import contextlib
import csv
import os
import random
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from .corpus import CORPUS
from .docs import make_epub, make_pdf
from .hostile import many_pages_pdf
from .server import Server, read_events

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(2**32))
KILLS = int(os.environ.get("CHAOS_KILLS", "24"))
TAG = f"[CHAOS_SEED={SEED}]"

PAGE_DELAY = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.02"}
SETTINGS = {
    "max_attempts": 1000,  # kills must not fail jobs: every one should complete
    "heartbeat": 1.0,
    "max_streams_per_caller": 1000,
}
#: Jobs queued or running at most before the submitter waits: enough that a job is nearly
#: always running, few enough that the queue drains within the final phase.
MAX_OUTSTANDING = 4
TERMINAL = {"completed", "failed", "cancelled"}
KINDS = ("upload", "page", "commit", "recovery")


@dataclass
class Document:
    name: str
    data: bytes
    pages: int
    #: The text of each page, when we wrote it (generated documents).
    texts: list[str] | None = None


def documents(rng: random.Random) -> list[Document]:
    """Corpus PDFs and EPUBs that open cleanly (when the corpus is there), and generated ones."""
    docs: list[Document] = []
    if CORPUS.is_dir():
        with open(CORPUS / "MANIFEST.tsv") as manifest:
            for row in csv.DictReader(manifest, delimiter="\t"):
                if row["outcome_pypdfium2"] != "ok" or not row["path"].startswith(
                        ("pdf/govdocs", "pdf/pdfplumber", "epub/idpf")):
                    continue
                if 2 <= int(row["pages"]) <= 110:
                    docs.append(Document(row["path"], (CORPUS / row["path"]).read_bytes(), int(row["pages"])))
    elif os.environ.get("CI") == "true":
        pytest.fail(f"the corpus is missing at {CORPUS}; CI must provide it")
    for i in range(6):
        texts = [f"chaos {SEED} pdf {i} page {p}" for p in range(1, rng.randint(5, 40) + 1)]
        docs.append(Document(f"generated-{i}.pdf", make_pdf(texts), len(texts), texts))
    for i in range(3):
        chapters = [f"chaos {SEED} epub {i} chapter {c}" for c in range(1, rng.randint(3, 12) + 1)]
        docs.append(Document(f"generated-{i}.epub", make_epub(chapters), len(chapters), chapters))
    for i in range(3):  # fast and long: for kills that land while the writer commits
        count = rng.randint(300, 800)
        docs.append(Document(f"generated-long-{i}.pdf", many_pages_pdf(count), count,
                             [f"page {p} of {count}" for p in range(1, count + 1)]))
    return docs


class Deadline:
    """When the watchers and the submitter give up: far away during the kills, set once they end."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() > self.at


@dataclass
class Submission:
    document: Document
    key: str
    job_id: str | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Watcher:
    """Reads one job's stream until its terminal event, resuming with Last-Event-ID after each drop."""

    server: Server
    job_id: str
    deadline: Deadline
    seen: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    connections: int = 0
    done: bool = False
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=f"watch-{self.job_id}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        # One client for the whole run (a new one per connection costs the test's CPU an SSL context).
        with httpx.Client(base_url=self.server.url, timeout=httpx.Timeout(10, connect=2)) as client:
            self._follow(client)

    def _follow(self, client: httpx.Client) -> None:
        last = 0
        while not self.done and not self.deadline.passed():
            headers = {"Last-Event-ID": str(last)} if last else {}
            try:
                with client.stream("GET", f"/api/v1/jobs/{self.job_id}/events", headers=headers) as response:
                    if response.status_code == 204:
                        self.problems.append(f"204 before a terminal event was seen (last id {last})")
                        self.done = True
                        break
                    if response.status_code != 200:
                        if response.status_code not in (429, 503):  # limits: come back later
                            self.problems.append(f"status {response.status_code} on reconnect after {last}")
                        time.sleep(0.2)
                        continue
                    self.connections += 1
                    first = True
                    for event in read_events(response):
                        if first and (event.type != "snapshot" or event.id is not None):
                            self.problems.append(f"connection {self.connections} began with {event.type}")
                        first = False
                        if event.id is None:
                            continue
                        if event.id != last + 1:
                            self.problems.append(f"event {event.id} after {last}")
                        self.seen.append((event.id, event.type, event.data))
                        last = event.id
                        if event.type in TERMINAL:
                            self.done = True
                            break
            except httpx.HTTPError:
                pass  # the server was killed under us: come back with Last-Event-ID
            if not self.done:
                time.sleep(0.1)


class Submitter:
    """Keeps up to MAX_OUTSTANDING jobs in the server; every accepted job gets a Watcher."""

    def __init__(self, server: Server, docs: list[Document], rng: random.Random, deadline: Deadline) -> None:
        self.server = server
        self.docs = docs
        self.rng = rng
        self.deadline = deadline
        self.submissions: list[Submission] = []
        self.watchers: dict[str, Watcher] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="submitter", daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=httpx.Timeout(15, connect=2)) as client:
            self._submit(client)

    def _submit(self, client: httpx.Client) -> None:
        pending: Submission | None = None
        while True:
            if pending is None:
                if self.stop.is_set():
                    return
                if self._outstanding(client) >= MAX_OUTSTANDING:
                    time.sleep(0.1)
                    continue
                pending = Submission(self.rng.choice(self.docs), uuid.uuid4().hex)
                self.submissions.append(pending)
            if self.deadline.passed():
                return
            pending.attempts += 1
            try:
                response = client.post("/api/v1/jobs", content=pending.document.data,
                                       params={"filename": Path(pending.document.name).name},
                                       headers={"Idempotency-Key": pending.key})
                if response.status_code == 202:
                    pending.job_id = response.json()["id"]
                    self._watch(pending.job_id)
                    pending = None
                else:
                    pending.errors.append(f"{response.status_code} {response.text[:200]}")
                    time.sleep(0.1)
            except httpx.HTTPError as exc:
                pending.errors.append(type(exc).__name__)
                time.sleep(0.1)  # the server is down: the same key again once it is back

    def _outstanding(self, client: httpx.Client) -> int:
        try:
            health = client.get("/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return MAX_OUTSTANDING  # down: wait
        return int(health["queued"]) + (health["running"] is not None)

    def _watch(self, job_id: str) -> None:
        if job_id not in self.watchers:
            watcher = Watcher(self.server, job_id, self.deadline)
            self.watchers[job_id] = watcher
            watcher.start()


class SlowUpload:
    """A chunked upload that sends 16 KiB every 30 ms, so that a kill can land while it is in flight."""

    def __init__(self, server: Server, data: bytes, chunks_before_ready: int) -> None:
        self.server, self.data = server, data
        self.sent = 0
        self.ready = threading.Event()
        self.chunks_before_ready = chunks_before_ready
        self.status: int | str | None = None
        self.job_id: str | None = None
        self.thread = threading.Thread(target=self.run, name="slow-upload", daemon=True)
        self.thread.start()

    def body(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), 16384):
            yield self.data[start:start + 16384]
            self.sent += 1
            if self.sent >= self.chunks_before_ready:
                self.ready.set()
            time.sleep(0.03)

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.server.url, timeout=httpx.Timeout(15, connect=2)) as client:
                response = client.post("/api/v1/jobs", content=self.body(), params={"filename": "slow.pdf"})
            self.status = response.status_code
            if response.status_code == 202:
                self.job_id = response.json()["id"]
        except httpx.HTTPError as exc:
            self.status = type(exc).__name__
        finally:
            self.ready.set()


def _health(client: httpx.Client) -> dict[str, Any] | None:
    try:
        health: dict[str, Any] = client.get("/healthz").json()
        return health
    except (httpx.HTTPError, ValueError):
        return None


def _pages_done(client: httpx.Client, job_id: str) -> int | None:
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        return int(client.get(f"/api/v1/jobs/{job_id}").json()["pages_done"])
    return None


def _wait_for(condition: Any, timeout: float, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(step)
    return None


@dataclass
class Kill:
    kind: str
    uptime: float
    #: Whether the moment was what the kind asks for (an upload in flight, a job mid-page, pages streaming).
    landed: bool
    detail: str = ""
    #: The job of the slow upload, if it was answered 202 before the kill (then it must not be lost).
    accepted: str | None = None
    #: Seconds the restart after this kill took (until /healthz answered).
    restart: float = 0.0


def kill_at_a_moment(server: Server, kind: str, rng: random.Random, upload_data: bytes, client: httpx.Client) -> Kill:
    """Wait for a moment of ``kind`` (a few seconds at most), then SIGKILL the server."""
    started = time.monotonic()
    landed, detail = False, ""
    upload: SlowUpload | None = None
    if kind == "upload":
        upload = SlowUpload(server, upload_data, rng.randint(2, 8))
        upload.ready.wait(5)
        time.sleep(rng.uniform(0, 0.03))
        landed = upload.status is None and upload.thread.is_alive()
        detail = f"{upload.sent} chunks sent"
    elif kind == "page":
        health = _wait_for(lambda: (h := _health(client)) and h["running"] and h, 3)
        time.sleep(rng.uniform(0.0, 0.3))
        landed = bool(health) and (_health(client) or {}).get("running") is not None
        detail = f"job {health and health['running']}"
    elif kind == "commit":
        def streaming() -> str | None:
            health = _health(client)
            if not health or not health["running"]:
                return None
            before = _pages_done(client, health["running"])
            time.sleep(0.01)
            after = _pages_done(client, health["running"])
            return health["running"] if before is not None and after is not None and after > before else None
        job = _wait_for(streaming, 5)
        time.sleep(rng.uniform(0, 0.005))
        landed = job is not None
        detail = f"job {job} streaming pages" if job else "no pages streaming"
    else:  # recovery: right after the start, while the interrupted job is taken up again
        time.sleep(rng.uniform(0, 0.1))
        landed = True
    uptime = time.monotonic() - started
    server.kill()
    if upload is not None:
        upload.thread.join(10)
        detail += f", upload ended {upload.status}"
        landed = landed and upload.status != 202
    return Kill(kind, uptime, landed, detail, upload.job_id if upload is not None else None)


def env_for(kind: str | None, rng: random.Random) -> dict[str, str]:
    """The fault environment of the incarnation that a kill of ``kind`` ends: slow pages for a kill
    mid-page, full speed for one mid-commit, either for the others; full speed at the end."""
    if kind == "page":
        return PAGE_DELAY
    if kind in ("upload", "recovery"):
        return PAGE_DELAY if rng.random() < 0.5 else {}
    return {}


def test_sigkill_at_random_moments_loses_nothing(make_server: type[Server]) -> None:
    rng = random.Random(SEED)
    print(f"\n{TAG} {KILLS} kills; corpus {'used' if CORPUS.is_dir() else 'absent: generated documents only'}")
    docs = documents(rng)
    plan = [KINDS[i % len(KINDS)] for i in range(KILLS)]
    rng.shuffle(plan)
    upload_data = many_pages_pdf(600)  # ~170 kB: ~11 chunks, a third of a second on the wire
    started = time.monotonic()
    deadline = Deadline(600)  # moved in once the kills are over

    server = make_server(settings=SETTINGS, env=env_for(plan[0], rng))
    submitter = Submitter(server, docs, random.Random(SEED + 1), deadline)
    submitter.thread.start()
    kills: list[Kill] = []
    for index, kind in enumerate(plan):
        with httpx.Client(base_url=server.url, timeout=2) as client:
            kill = kill_at_a_moment(server, kind, rng, upload_data, client)
        kills.append(kill)
        server.env = env_for(plan[index + 1] if index + 1 < len(plan) else None, rng)
        restart = time.monotonic()
        server.start()
        kill.restart = time.monotonic() - restart
    kill_phase = time.monotonic() - started

    # The end: no more kills and no more submissions; every job must finish.
    deadline.at = time.monotonic() + 60
    submitter.stop.set()
    submitter.thread.join(30)
    assert not submitter.thread.is_alive(), f"{TAG} the submitter did not finish its last submission"
    with httpx.Client(base_url=server.url, timeout=5) as client:
        drained = _wait_for(lambda: (h := _health(client)) and h["queued"] == 0 and h["running"] is None and h, 60, 0.1)
        still = _health(client)
    for watcher in submitter.watchers.values():
        assert watcher.thread is not None
        watcher.thread.join(max(deadline.at - time.monotonic(), 1))
    total = time.monotonic() - started

    counts = Counter(k.kind for k in kills)
    landed = Counter(k.kind for k in kills if k.landed)
    accepted = [s for s in submitter.submissions if s.job_id is not None]
    retried = [s for s in accepted if s.attempts > 1]
    print(f"{TAG} {len(kills)} kills in {kill_phase:.1f} s ({dict(counts)}; landed as intended: {dict(landed)}); "
          f"{len(accepted)} submissions accepted, {len(retried)} of them after a retry; "
          f"{sum(w.connections for w in submitter.watchers.values())} stream connections; total {total:.1f} s")
    for kill in kills:
        print(f"  {kill.kind:<8} after {kill.uptime:5.2f} s, back in {kill.restart:4.2f} s  "
              f"{'landed' if kill.landed else 'missed'}  {kill.detail}")

    assert drained, f"{TAG} the queue did not drain after the last restart: {still}"
    assert len(kills) >= 20 or KILLS < 20
    for kind in KINDS:
        assert landed[kind] >= min(3, counts[kind]), f"{TAG} only {landed[kind]} {kind} kills landed: {kills}"

    db = sqlite3.connect(f"file:{server.data_dir / 'pagestream.db'}?mode=ro", uri=True)
    with contextlib.closing(db):
        check_the_store(db, server, submitter, [k.accepted for k in kills if k.accepted])


def check_the_store(db: sqlite3.Connection, server: Server, submitter: Submitter, extra_ids: list[str]) -> None:
    jobs = {row[0]: row for row in db.execute(
        "SELECT id, state, pages_total, pages_done, attempts, last_event_id, error_code, idempotency_key, spool_name "
        "FROM jobs")}
    accepted = {s.job_id: s for s in submitter.submissions if s.job_id is not None}

    # Every submission answered 202 exists, and completed; the same key never made two jobs.
    missing = [job_id for job_id in [*accepted, *extra_ids] if job_id not in jobs]
    assert not missing, f"{TAG} accepted jobs are gone: {missing}"
    keys = Counter(row[7] for row in jobs.values() if row[7] is not None)
    assert all(n == 1 for n in keys.values()), f"{TAG} an Idempotency-Key made two jobs: {keys.most_common(3)}"
    for submission in submitter.submissions:
        if submission.job_id is not None:
            assert jobs[submission.job_id][7] == submission.key
    # No job the server ever took is left behind, accepted by us or not (a 202 lost in a kill).
    unfinished = {job_id: row[1] for job_id, row in jobs.items() if row[1] not in TERMINAL}
    assert not unfinished, f"{TAG} jobs left unfinished: {unfinished}"
    failed = {job_id: row[6] for job_id, row in jobs.items() if row[1] != "completed"}
    assert not failed, f"{TAG} jobs that did not complete: {failed}"

    # Every page exactly once, and every completed job has all its pages.
    duplicates = db.execute("SELECT job_id, number, COUNT(*) FROM pages GROUP BY 1, 2 HAVING COUNT(*) > 1").fetchall()
    assert not duplicates, f"{TAG} pages stored twice: {duplicates[:5]}"
    with server.client() as client:
        for job_id, (_, state, total, done, attempts, last_event_id, _, _, _) in jobs.items():
            numbers = [n for (n,) in db.execute("SELECT number FROM pages WHERE job_id = ? ORDER BY number",
                                                (job_id,))]
            assert numbers == list(range(1, total + 1)) and done == total, (
                f"{TAG} job {job_id}: {done}/{total} done, pages {numbers[:5]}…{numbers[-5:]}")
            submission = accepted.get(job_id)
            if submission is not None:
                assert total == submission.document.pages, f"{TAG} {submission.document.name}: {total} pages"
                if submission.document.texts is not None:
                    texts = [t for (t,) in db.execute("SELECT text FROM pages WHERE job_id = ? ORDER BY number",
                                                      (job_id,))]
                    assert [" ".join(t.split()) for t in texts] == submission.document.texts, (
                        f"{TAG} job {job_id}: the text of {submission.document.name} differs")

            # The log: ids 1..N, queued first, one terminal event and it is last, each page announced once.
            log = db.execute("SELECT id, type, page, data FROM events WHERE job_id = ? ORDER BY id",
                             (job_id,)).fetchall()
            ids = [row[0] for row in log]
            assert ids == list(range(1, last_event_id + 1)), f"{TAG} job {job_id}: event ids {_runs(ids)}"
            types = [row[1] for row in log]
            assert types[0] == "queued" and types[-1] == state, f"{TAG} job {job_id}: {types[:2]}…{types[-2:]}"
            assert sum(t in TERMINAL for t in types) == 1, f"{TAG} job {job_id}: {Counter(types)}"
            page_numbers = [row[2] for row in log if row[1] == "page"]
            assert sorted(page_numbers) == list(range(1, total + 1)), (
                f"{TAG} job {job_id}: page events {Counter(page_numbers).most_common(3)} for {total} pages")
            # Each run after the first was announced: a retrying event for every interruption.
            assert types.count("retrying") == attempts - 1, (
                f"{TAG} job {job_id}: {attempts} attempts, {types.count('retrying')} retrying events")

            # The watcher saw every event once, in order, exactly as stored.
            watcher = submitter.watchers.get(job_id)
            if watcher is not None:
                assert not watcher.problems, f"{TAG} watcher of {job_id}: {watcher.problems[:5]}"
                stored = [(row[0], row[1], orjson.loads(row[3])) for row in log]
                assert watcher.seen == stored, (
                    f"{TAG} watcher of {job_id} saw {len(watcher.seen)} events "
                    f"({_runs([e[0] for e in watcher.seen])}), the log has {len(stored)}")
            # And the API says the same as the store.
            job = client.get(f"/api/v1/jobs/{job_id}").json()
            assert (job["state"], job["pages_done"], job["last_event_id"]) == (state, done, last_event_id)

    assert set(accepted) <= set(submitter.watchers), f"{TAG} an accepted job had no watcher"
    # The spool holds exactly the files of the jobs: half-received uploads were swept at the next start.
    spooled = {p.name for p in (server.data_dir / "spool").iterdir()}
    owned = {row[8] for row in jobs.values()}
    assert spooled == owned, f"{TAG} spool files without a job: {spooled - owned}; jobs without one: {owned - spooled}"


def _runs(ids: list[int]) -> str:
    """1..5, 7..9 — a short picture of a sequence of ids, gaps and repeats visible."""
    if not ids:
        return "none"
    parts, start, previous = [], ids[0], ids[0]
    for i in ids[1:]:
        if i != previous + 1:
            parts.append(f"{start}..{previous}")
            start = i
        previous = i
    parts.append(f"{start}..{previous}")
    return ", ".join(parts)
