"""The worker against a real server: FIFO, one job at a time, cancel, limits, crashes of the child."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .docs import make_pdf
from .server import ROOT, Server, child_processes, free_port, read_events, scrape, value, wait_for_state

pytestmark = pytest.mark.stores("sqlite", "postgresql")


def submit(client: httpx.Client, body: bytes, **params: str) -> dict[str, Any]:
    response = client.post("/api/v1/jobs", content=body, params=params)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def log_of(client: httpx.Client, job_id: str) -> list[tuple[int | None, str, dict[str, Any]]]:
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as response:
        return [(e.id, e.type, e.data) for e in read_events(response) if e.id is not None]


def test_five_jobs_run_one_at_a_time_in_submission_order(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.05"})
    with server.client() as client:
        jobs = [submit(client, make_pdf([f"job {i} page {p}" for p in range(4)]), filename=f"{i}.pdf")
                for i in range(5)]
        finished = [wait_for_state(client, j["id"], {"completed"}) for j in jobs]
    # Each started after the one before it finished: never two at once, never out of order.
    for before, after in zip(finished, finished[1:]):
        assert before["finished_at"] <= after["started_at"]
    assert [j["seq"] for j in finished] == sorted(j["seq"] for j in finished)


def test_cancel_a_running_job_stops_at_a_page_boundary_and_keeps_its_pages(make_server: type[Server]) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"})
    with server.client() as client:
        job = submit(client, make_pdf([f"page {i}" for i in range(1, 41)]))
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{job['id']}").json()["pages_done"] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        response = client.post(f"/api/v1/jobs/{job['id']}/cancel")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        done_at_cancel = response.json()["pages_done"]
        cancelled = wait_for_state(client, job["id"], {"cancelled"}, timeout=10)
        # It stops within a page: at most the page under way (and one already in the pipe) finishes.
        assert done_at_cancel <= cancelled["pages_done"] <= done_at_cancel + 2
        result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
        assert len(result["pages"]) == cancelled["pages_done"] and result["partial"] is True
        assert [p["text"].strip() for p in result["pages"]] == [f"page {i}" for i in range(1, len(result["pages"]) + 1)]
        events = log_of(client, job["id"])
        assert events[-1][1] == "cancelled"
        # The worker goes on with the next job.
        after = submit(client, make_pdf(["next"]))
        assert wait_for_state(client, after["id"], {"completed"})["pages_done"] == 1


def test_a_stalled_page_fails_the_job_with_page_timeout_and_the_next_job_runs(make_server: type[Server]) -> None:
    server = make_server(settings={"page_timeout": 0.5}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "2"})
    with server.client() as client:
        stalled = submit(client, make_pdf(["a", "b"]))
        failed = wait_for_state(client, stalled["id"], {"failed"}, timeout=20)
        assert failed["error"]["code"] == "page_timeout"
        assert log_of(client, stalled["id"])[-1][2]["error"]["code"] == "page_timeout"


def test_the_total_timeout_fails_the_job_with_job_timeout(make_server: type[Server]) -> None:
    server = make_server(settings={"job_timeout": 1.0, "page_timeout": 5}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.3"})
    with server.client() as client:
        job = submit(client, make_pdf([f"p{i}" for i in range(20)]))
        failed = wait_for_state(client, job["id"], {"failed"}, timeout=20)
        assert failed["error"]["code"] == "job_timeout"
        assert 1 <= failed["pages_done"] < 20


@pytest.mark.stores("sqlite")  # the child's priority; the store plays no part
def test_the_extraction_child_runs_child_nice_below_the_server(make_server: type[Server]) -> None:
    server = make_server(settings={"child_nice": 7})
    with server.client() as client:
        job = submit(client, make_pdf(["one page"]))
        assert wait_for_state(client, job["id"], {"completed"})["pages_done"] == 1
    assert server.process is not None
    children = child_processes(server.process.pid)
    assert len(children) == 1
    server_nice = os.getpriority(os.PRIO_PROCESS, server.process.pid)
    assert os.getpriority(os.PRIO_PROCESS, children[0]) == min(19, server_nice + 7)


def test_a_child_nice_outside_0_to_19_is_refused(tmp_path: Path) -> None:
    for nice in ("-1", "20"):
        refused = subprocess.run([sys.executable, "-m", "pagestream", "serve", "--port", str(free_port()),
                                  "--data-dir", str(tmp_path), "--child-nice", nice],
                                 capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert refused.returncode == 2 and f"child_nice is {nice}; it must be from 0 to 19" in refused.stderr


@pytest.mark.stores("sqlite")  # the child's limit; the store only adds minutes of copying 330 MB
def test_the_memory_limit_fails_the_job_with_memory_limit(make_server: type[Server], tmp_path: Path) -> None:
    server = make_server(settings={"child_memory_mb": 400, "max_upload_mb": 400})
    big = (b"lorem ipsum dolor sit amet " * 40 + b"\n") * 300_000  # about 330 MB of plain text
    with server.client() as client:
        job = submit(client, big, filename="huge.txt")
        failed = wait_for_state(client, job["id"], {"failed", "completed"}, timeout=120)
        assert failed["state"] == "failed" and failed["error"]["code"] == "memory_limit", failed
        small = submit(client, make_pdf(["still fine"]))
        assert wait_for_state(client, small["id"], {"completed"})["pages_done"] == 1


def test_a_crashed_child_is_replaced_and_the_job_resumes_at_the_next_page(make_server: type[Server],
                                                                          tmp_path: Path) -> None:
    marker = tmp_path / "crash-once"
    marker.touch()
    server = make_server(env={"PAGESTREAM_FAULT_CRASH": f"{marker}:4"})
    with server.client() as client:
        job = submit(client, make_pdf([f"page {i}" for i in range(1, 9)]))
        done = wait_for_state(client, job["id"], {"completed", "failed"})
        assert done["state"] == "completed" and done["attempts"] == 2
        events = log_of(client, job["id"])
        types = [t for _, t, _ in events]
        assert types.count("retrying") == 1 and types.count("started") == 2
        retrying = next(d for _, t, d in events if t == "retrying")
        assert retrying["reason"]["code"] == "child_crashed" and retrying["pages_done"] == 3
        second_start = [d for _, t, d in events if t == "started"][1]
        assert second_start["resume_from"] == 4 and second_start["attempt"] == 2
        assert [d["page"]["number"] for _, t, d in events if t == "page"] == list(range(1, 9))
        assert [e[0] for e in events] == list(range(1, len(events) + 1))


def test_a_child_that_keeps_crashing_fails_the_job_after_max_attempts(make_server: type[Server],
                                                                     tmp_path: Path) -> None:
    server = make_server(settings={"max_attempts": 2}, env={"PAGESTREAM_FAULT_CRASH": f"{tmp_path}/x:2"})
    # The marker is put back each time the child removes it, so every attempt crashes at page 2.
    marker = tmp_path / "x"
    with server.client() as client:
        marker.touch()
        job = submit(client, make_pdf(["a", "b", "c"]))
        deadline = time.monotonic() + 30
        while (state := client.get(f"/api/v1/jobs/{job['id']}").json())["state"] not in ("failed", "completed"):
            marker.touch()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert state["state"] == "failed" and state["error"]["code"] == "child_crashed"
        assert state["pages_done"] == 1 and state["attempts"] == 2


# The head start: while a job runs, the child is already given the next jobs of the queue, and starts
# each the moment the one before ends, before that end and the next claim are committed. The claims
# decide.


def submit_together(client: httpx.Client, *bodies: bytes) -> list[dict[str, Any]]:
    """Jobs queued in one request (one commit): the first one starts with the others already behind it."""
    response = client.post("/api/v1/jobs", files=[("file", (f"{i}.pdf", b)) for i, b in enumerate(bodies)])
    assert response.status_code == 202, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def dropped_head_starts(server: Server) -> list[str]:
    """Jobs whose early run the worker stopped and dropped, from its log."""
    return [line for line in server.log_path.read_text().splitlines() if "started early but not claimed" in line]


@pytest.mark.parametrize("how", ["cancel", "cancel and delete"])
def test_a_job_that_leaves_the_queue_after_the_head_start_was_planned_never_runs(
        make_server: type[Server], store_kind: str, how: str) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"})
    with server.client() as client:
        running, head = submit_together(client, make_pdf(["a1", "a2", "a3", "a4"]),
                                        make_pdf([f"b{i}" for i in range(1, 6)]))
        after = submit(client, make_pdf(["c1", "c2"]))
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{running['id']}").json()["pages_done"] < 1:  # the head was looked up
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post(f"/api/v1/jobs/{head['id']}/cancel").json()["state"] == "cancelled"
        if how == "cancel and delete":  # its upload is gone too
            assert client.delete(f"/api/v1/jobs/{head['id']}").status_code == 204
        done = wait_for_state(client, after["id"], {"completed", "failed"})
        assert done["state"] == "completed" and done["attempts"] == 1
        result = client.get(f"/api/v1/jobs/{after['id']}/result").json()
        assert [p["text"].strip() for p in result["pages"]] == ["c1", "c2"]
        events = log_of(client, after["id"])
        assert [d["page"]["number"] for _, t, d in events if t == "page"] == [1, 2]
        assert wait_for_state(client, running["id"], {"completed"})["pages_done"] == 4
        if how == "cancel":
            assert [t for _, t, _ in log_of(client, head["id"])] == ["queued", "cancelled"]
            assert client.get(f"/api/v1/jobs/{head['id']}/result").json()["pages"] == []
        else:
            assert client.get(f"/api/v1/jobs/{head['id']}").status_code == 404
        # The child was stopped, not killed, and goes on with the next job.
        metrics = client.get("/metrics").text
        assert "pagestream_child_restarts_total{" not in metrics
        last = submit(client, make_pdf(["d1"]))
        assert wait_for_state(client, last["id"], {"completed"})["pages_done"] == 1
    if store_kind == "sqlite":  # a shared store's worker fetches each upload first: no head start
        assert len(dropped_head_starts(server)) == 1 and head["id"] in dropped_head_starts(server)[0]


def test_a_head_start_dropped_when_the_queue_empties_leaves_the_child_clean(make_server: type[Server],
                                                                          store_kind: str) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.2"})
    with server.client() as client:
        # The cancel must land while the first job still runs: 6 pages leave it a second after page 1
        # (3 left 0.4 s, which a loaded CI machine once used up).
        running, head = submit_together(client, make_pdf([f"a{i}" for i in range(1, 7)]),
                                        make_pdf([f"b{i}" for i in range(1, 9)]))
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{running['id']}").json()["pages_done"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        client.post(f"/api/v1/jobs/{head['id']}/cancel")
        wait_for_state(client, running["id"], {"completed"})
        time.sleep(0.5)  # the queue is empty: the early run is stopped while the worker waits
        later = submit(client, make_pdf(["z1", "z2", "z3"]))
        assert wait_for_state(client, later["id"], {"completed"})["pages_done"] == 3
        result = client.get(f"/api/v1/jobs/{later['id']}/result").json()
        assert [p["text"].strip() for p in result["pages"]] == ["z1", "z2", "z3"]
        assert [t for _, t, _ in log_of(client, head["id"])] == ["queued", "cancelled"]
    if store_kind == "sqlite":
        assert len(dropped_head_starts(server)) == 1


def test_a_job_cancelled_among_those_given_ahead_is_dropped_and_the_ones_behind_it_run(
        make_server: type[Server], store_kind: str) -> None:
    server = make_server(env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.1"})
    with server.client() as client:
        running, second, cancelled, fourth = submit_together(
            client, *(make_pdf([f"{name}{i}" for i in range(1, 4)]) for name in "abcd"))
        deadline = time.monotonic() + 20
        while client.get(f"/api/v1/jobs/{running['id']}").json()["pages_done"] < 1:  # the others were given
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert client.post(f"/api/v1/jobs/{cancelled['id']}/cancel").json()["state"] == "cancelled"
        for job, name in ((running, "a"), (second, "b"), (fourth, "d")):
            assert wait_for_state(client, job["id"], {"completed", "failed"})["state"] == "completed"
            result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
            assert [p["text"].strip() for p in result["pages"]] == [f"{name}{i}" for i in range(1, 4)]
            assert [d["page"]["number"] for _, t, d in log_of(client, job["id"]) if t == "page"] == [1, 2, 3]
        assert [t for _, t, _ in log_of(client, cancelled["id"])] == ["queued", "cancelled"]
        assert client.get(f"/api/v1/jobs/{cancelled['id']}/result").json()["pages"] == []
        assert "pagestream_child_restarts_total{" not in client.get("/metrics").text
    if store_kind == "sqlite":  # the third job's early run, and only it, was dropped
        dropped = dropped_head_starts(server)
        assert len(dropped) == 1 and cancelled["id"] in dropped[0], dropped


def test_short_jobs_the_child_finished_ahead_are_committed_together_each_whole_and_in_order(
        make_server: type[Server], store_kind: str) -> None:
    # While the child's messages are dense, the worker reads its pipe once per stream_pace_ms: at
    # 300 ms, the child finishes many one-page jobs given ahead between two reads, and the worker
    # finds their runs whole after the end of the job it was on.
    server = make_server(settings={"stream_pace_ms": 300})
    with server.client() as client:
        commits = value(scrape(server), "pagestream_store_commits_total")
        jobs = submit_together(client, *(make_pdf([f"short {i}"]) for i in range(30)))
        # Before its claim: given ahead or not yet, the claims go past it and so must the commits.
        assert client.post(f"/api/v1/jobs/{jobs[20]['id']}/cancel").json()["state"] == "cancelled"
        finished = [wait_for_state(client, job["id"], {"completed", "cancelled", "failed"}) for job in jobs]
        commits = value(scrape(server), "pagestream_store_commits_total") - commits
        assert [job["state"] for job in finished] == ["completed"] * 20 + ["cancelled"] + ["completed"] * 9
        assert [t for _, t, _ in log_of(client, jobs[20]["id"])] == ["queued", "cancelled"]
        ran = [(i, job) for i, job in enumerate(finished) if i != 20]
        for i, job in ran:
            events = log_of(client, job["id"])
            assert [(n, t) for n, t, _ in events] == [(1, "queued"), (2, "started"), (3, "page"), (4, "completed")]
            result = client.get(f"/api/v1/jobs/{job['id']}/result").json()
            assert [p["text"].strip() for p in result["pages"]] == [f"short {i}"]
            assert job["started_at"] <= job["finished_at"] and job["attempts"] == 1
        for (_, before), (_, after) in zip(ran, ran[1:]):  # one at a time, in the order of the queue
            assert before["finished_at"] <= after["started_at"]
        assert "pagestream_child_restarts_total{" not in client.get("/metrics").text
    if store_kind == "sqlite":  # a shared store's worker fetches each upload first: no head start
        assert 0 < commits < len(ran) - 5, commits  # one each would be 29 and more (the upload's, the cancel's)


def test_a_stretch_of_short_jobs_that_nobody_touches_drops_no_head_start(make_server: type[Server],
                                                                        store_kind: str) -> None:
    # Requests of 50 one-line files back to back, as a batch upload sends them: the child finishes
    # them faster than the worker commits, so a commit often ends every run given ahead and claims
    # the next job. A look at the queue that crossed such a commit once gave the runs behind the
    # claimed job without it, and the next claim dropped them all (67 and 149 of 400 in two rounds
    # of five): the child did them twice. Three stretches of 400 jobs.
    server = make_server(settings={"max_queued_per_caller": 10000})
    with server.client() as client:
        for stretch in range(3):
            jobs = []
            for start in range(0, 400, 50):
                files = [("file", (f"{stretch}-{i}.txt", b"line %d\n" % i)) for i in range(start, start + 50)]
                response = client.post("/api/v1/jobs", files=files)
                assert response.status_code == 202, response.text
                jobs += response.json()["jobs"]
            finished = wait_for_state(client, jobs[-1]["id"], {"completed", "failed"}, timeout=60)
            assert finished["state"] == "completed"
        attempts = server.query("SELECT state, attempts, pages_done FROM jobs")
        assert attempts == [("completed", 1, 1)] * 1200
    if store_kind == "sqlite":  # a shared store's worker fetches each upload first: no head start
        assert dropped_head_starts(server) == []


def test_a_child_that_crashes_in_a_head_started_job_resumes_it_at_the_next_page(make_server: type[Server],
                                                                               tmp_path: Path) -> None:
    marker = tmp_path / "crash-once"
    marker.touch()
    server = make_server(env={"PAGESTREAM_FAULT_CRASH": f"{marker}:3", "PAGESTREAM_FAULT_PAGE_DELAY": "0.05"})
    with server.client() as client:
        # Two one-page jobs first (they never reach page 3), then the one that crashes at its page 3.
        first = [submit(client, make_pdf([f"one {i}"])) for i in range(2)]
        crashing = submit(client, make_pdf([f"page {i}" for i in range(1, 7)]))
        done = wait_for_state(client, crashing["id"], {"completed", "failed"})
        assert done["state"] == "completed" and done["attempts"] == 2
        events = log_of(client, crashing["id"])
        assert [d["page"]["number"] for _, t, d in events if t == "page"] == list(range(1, 7))
        assert [e[0] for e in events] == list(range(1, len(events) + 1))
        result = client.get(f"/api/v1/jobs/{crashing['id']}/result").json()
        assert [p["text"].strip() for p in result["pages"]] == [f"page {i}" for i in range(1, 7)]
        assert all(wait_for_state(client, j["id"], {"completed"})["pages_done"] == 1 for j in first)


def test_pages_that_come_fast_are_handed_over_at_most_once_per_stream_pace(make_server: type[Server]) -> None:
    # A page every 20 ms, a pace of 250 ms: the worker reads the child's pages about a dozen at a time
    # (it wakes and commits once for each group), and a page after a pause is read at once.
    server = make_server(settings={"stream_pace_ms": 250}, env={"PAGESTREAM_FAULT_PAGE_DELAY": "0.02"})
    with server.client() as client:
        job = submit(client, "\f".join(f"page {i}" for i in range(1, 41)).encode(), filename="fast.txt")
        assert wait_for_state(client, job["id"], {"completed"})["pages_done"] == 40
        pages = [d for _, t, d in log_of(client, job["id"]) if t == "page"]
    assert [d["page"]["number"] for d in pages] == list(range(1, 41))
    commits = sorted({d["at"] for d in pages})
    assert 2 <= len(commits) <= 8, commits  # one commit per page would be 40


def test_a_cancel_meant_for_an_ended_job_never_applies_to_the_next_run() -> None:
    # A cancel can reach the worker's inbox just after its job's last message (the window is a
    # commit long: too short to hit reliably from outside). It names its job, and the next run
    # (started early or not) leaves it alone; a shutdown or a lost lease applies to any run.
    from pagestream.worker import _meant_for

    assert _meant_for({"t": "_cancel", "job": "next"}, "next")
    assert not _meant_for({"t": "_cancel", "job": "ended"}, "next")
    assert not _meant_for({"t": "_cancel", "job": "ended"}, None)
    assert _meant_for({"t": "_shutdown"}, "next") and _meant_for({"t": "_lease_lost"}, None)


class ChildProcess:
    """The extraction child on its own, spoken to over its pipes as the worker does."""

    def __init__(self, tmp_path: Path) -> None:
        import subprocess
        import sys

        from .server import ROOT

        self.tmp_path = tmp_path
        env = {**os.environ, "PYTHONPATH": str(ROOT / "server"), "PAGESTREAM_FAULT_PAGE_DELAY": "0.05"}
        self.process = subprocess.Popen([sys.executable, "-m", "pagestream.child", "0"], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)

    def run(self, job: str, pages: int) -> None:
        path = self.tmp_path / f"{job}.txt"
        path.write_text("\f".join(f"{job} {n}" for n in range(1, pages + 1)))
        self.send({"op": "run", "job": job, "path": str(path), "kind": "text", "password": None, "pages": None,
                   "done": [], "limits": {}})

    def send(self, message: dict[str, Any]) -> None:
        import orjson

        from pagestream.child import _HEADER

        body = orjson.dumps(message)
        assert self.process.stdin is not None
        self.process.stdin.write(_HEADER.pack(len(body)) + body)
        self.process.stdin.flush()

    def until_end_of_run(self) -> list[str]:
        """What one run answered: "open", page texts, then "end", "stopped" or "fail"."""
        import select

        from pagestream.child import read_message

        assert self.process.stdout is not None
        said = []
        while not said or said[-1] not in ("end", "stopped", "fail"):
            assert select.select([self.process.stdout], [], [], 20)[0], f"the child went quiet after {said}"
            message = read_message(self.process.stdout)
            assert message is not None, f"the child ended its output after {said}"
            said.append(message["text"] if message["t"] == "page" else message["t"])
        return said

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(10) == 0
        assert self.process.stdout is not None
        self.process.stdout.close()


def test_the_child_starts_a_run_given_ahead_the_moment_the_current_one_ends(tmp_path: Path) -> None:
    child = ChildProcess(tmp_path)
    try:
        child.run("a", 3)
        child.run("b", 2)
        assert child.until_end_of_run() == ["open", "a 1", "a 2", "a 3", "end"]
        assert child.until_end_of_run() == ["open", "b 1", "b 2", "end"]
    finally:
        child.close()


def test_a_stop_names_its_run_so_one_that_crosses_its_end_never_stops_the_next(tmp_path: Path) -> None:
    child = ChildProcess(tmp_path)
    try:
        # A run stopped before its turn answers "stopped" in its turn, and nothing else.
        child.run("a", 3)
        child.run("b", 2)
        child.send({"op": "stop", "job": "b"})
        assert child.until_end_of_run() == ["open", "a 1", "a 2", "a 3", "end"]
        assert child.until_end_of_run() == ["stopped"]
        # A stop for a run that has ended (the worker sent it as the end was on its way) is ignored...
        child.run("c", 2)
        child.run("d", 4)
        assert child.until_end_of_run() == ["open", "c 1", "c 2", "end"]
        child.send({"op": "stop", "job": "c"})
        # ...and one for the running job stops it at the next page boundary.
        d = child.until_end_of_run()
        assert d == ["open", "d 1", "d 2", "d 3", "d 4", "end"]
        child.run("e", 40)
        time.sleep(0.2)
        child.send({"op": "stop", "job": "e"})
        e = child.until_end_of_run()
        assert e[0] == "open" and e[-1] == "stopped" and 2 <= len(e) < 40, e
        # The same job run again later (a retry) is not stopped by the stop of its earlier run.
        child.run("e", 2)
        assert child.until_end_of_run() == ["open", "e 1", "e 2", "end"]
    finally:
        child.close()
