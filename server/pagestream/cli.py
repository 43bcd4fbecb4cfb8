"""The ``pagestream`` command.

``pagestream serve`` runs the server; every setting of :mod:`pagestream.settings` is also a
flag (``--max-upload-mb 50``), and a flag wins over its environment variable.

The other commands are a client of a running server (``--url``, or ``$PAGESTREAM_URL``):
``submit``, ``watch``, ``status``, ``ls``, ``result``, ``cancel``, ``retry``, ``rm``. They speak
only the HTTP API, through :mod:`pagestream.client`, imported when one of them runs — so
``serve`` needs neither httpx nor rich. ``submit --watch`` and ``watch`` show a live progress
bar per job in a terminal (rich), one line per event otherwise, or one JSON event per line
with ``--json``; their exit code is the jobs' outcome (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__
from .settings import Settings, settings_table

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from ._client_models import Event, Job
    from .client import AsyncClient, Client

#: The command's exit codes, for scripts (also in ``pagestream --help`` and the README).
EXIT_OK = 0  #: the job(s) completed, or the command did what it was asked
EXIT_FAILED = 1  #: a job failed
EXIT_ERROR = 2  #: bad arguments, or the server refused the request (unknown job, bad options, conflict)
EXIT_CANCELLED = 3  #: a job was cancelled
EXIT_UNREACHABLE = 4  #: the server could not be reached (or stayed away too long while watching)
EXIT_INTERRUPTED = 130  #: Ctrl-C: the command stopped; the job goes on on the server

EXIT_CODES = {
    EXIT_OK: "completed (with several jobs: all of them); any other command: done",
    EXIT_FAILED: "a job failed",
    EXIT_ERROR: "usage error, or the server refused the request (its message is printed)",
    EXIT_CANCELLED: "a job was cancelled (and none failed)",
    EXIT_UNREACHABLE: "cannot reach the server",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); the job goes on",
}
_OUTCOME_CODES = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
_SEVERITY = [EXIT_OK, EXIT_CANCELLED, EXIT_FAILED]  # with several jobs, the worst outcome is the exit code


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the server (API, UI and worker)",
                           description="Run the server. Every flag can also be set by its environment variable.")
    _settings_flags(serve)
    serve.add_argument("--no-worker", action="store_true", help="serve the API only; do not run the queue's worker")
    worker = sub.add_parser(
        "worker", help="run only the queue's worker",
        description="Run only the queue's consumer, without HTTP. On a PostgreSQL store run it on several "
                    "machines: one holds the lease and works, the others wait and take over when it goes.")
    _settings_flags(worker)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name, env, default, help_text in settings_table():
        kind = type(fields[name].default)
        flag, help_text = f"--{name.replace('_', '-')}", f"{help_text} [{env}; default: {default!r}]"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                                help=help_text)


def _settings(args: argparse.Namespace) -> Settings | None:
    overrides = {name: getattr(args, name) for name, *_ in settings_table()}
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"pagestream: {exc}", file=sys.stderr)
        return None
    from .logs import configure

    configure(settings.log_level, settings.log_format)
    return settings


def _stopping_server(config: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        _exiting: asyncio.Event | None = None

        async def main_loop(self) -> None:
            # uvicorn's own loop looks for should_exit every 0.1 s. Each of those wake-ups of an idle
            # server cost it about 0.1 ms of CPU on our VMs, half of them between two pages of a job
            # at 20 pages/s. Once a second is enough for what on_tick does (the Date header is the
            # time to the second); a signal wakes the loop at once (handle_exit).
            self._exiting = asyncio.Event()
            ticks = 0
            while not await self.on_tick(ticks):
                ticks += 10  # on_tick counts tenths of a second
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._exiting.wait(), 1.0)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn waits for open connections before it shuts the app down; streams never end
            # by themselves, so end them now (this runs in the loop's thread).
            loop = asyncio.get_event_loop()
            services = getattr(config.app.state, "services", None)
            if services is not None:
                loop.call_soon_threadsafe(services.hub.stop_streams)
            super().handle_exit(sig, frame)
            if self._exiting is not None:
                loop.call_soon_threadsafe(self._exiting.set)

    return Server(config)


def serve(args: argparse.Namespace, *, api: bool = True) -> int:
    """``serve`` (API, UI and worker), ``serve --no-worker`` (API replicas), ``worker`` (the consumer only)."""
    import uvicorn

    from .app import create_app
    from .database import redacted

    settings = _settings(args)
    if settings is None:
        return 2
    try:
        app = create_app(settings, run_worker=not getattr(args, "no_worker", False), api=api)
    except (ValueError, OSError) as exc:  # a bad or missing key file, listening in the open without keys…
        print(f"pagestream: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on",
        loop="auto", http="auto", timeout_graceful_shutdown=int(settings.shutdown_grace) + 5, access_log=False,
        log_config=None,  # logs.configure() has set up the one format
        proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = _stopping_server(config)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    what = "serving" if api else "worker, health and metrics on"
    print(f"pagestream {__version__} {what} http://{host}:{settings.port}/  (store: {redacted(settings.store_url)})",
          flush=True)
    server.run()
    return 0


# -- the client commands


def _client_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ._client_models import DEFAULT_URL, URL_ENV

    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", metavar="URL", help=f"the server [{URL_ENV}; default: {DEFAULT_URL}]")

    def command(name: str, run: Callable[[argparse.Namespace, Client], int], help: str,
                json_help: str | None = None) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[server], help=help, description=help[0].upper() + help[1:] + ".")
        if json_help is not None:
            parser.add_argument("--json", action="store_true", help=json_help)
        parser.set_defaults(run=run)
        return parser

    events_json = "one JSON event per line (each as shared_schemas/events/ defines it), for scripts and jq"
    submit = command("submit", _submit, "upload documents: one job each, queued in this order; prints the job ids",
                     "print each job as JSON; with --watch, " + events_json)
    submit.add_argument("files", nargs="+", type=Path, metavar="FILE")
    submit.add_argument("--watch", action="store_true",
                        help="then follow the jobs until they finish; the exit code is their outcome")
    submit.add_argument("--password", help="the password of an encrypted PDF")
    submit.add_argument("--pages", metavar="PAGES", help="the pages to extract, e.g. 1-10,15")
    watch = command("watch", _watch, "follow jobs until they finish: a progress bar each in a terminal, "
                    "else one line per event; the exit code is their outcome", events_json)
    watch.add_argument("ids", nargs="+", metavar="ID")
    status = command("status", _status, "show a job: state, queue position, pages, rate, error",
                     "print the job as JSON")
    status.add_argument("id", metavar="ID")
    ls = command("ls", _ls, "list the jobs, newest first", "one job per line, as JSON")
    ls.add_argument("--state", help="only jobs in these states, e.g. queued,running")
    ls.add_argument("--limit", type=int, metavar="N", help="at most N jobs")
    result = command("result", _result, "print (or save) a job's extracted text")
    result.add_argument("id", metavar="ID")
    result.add_argument("--format", choices=["text", "json", "ndjson"], default="text",
                        help="text (form feed between pages, the default), json, or ndjson (a JSON page per line)")
    result.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it to FILE")
    result.add_argument("--partial", action="store_true", help="the pages done so far, while the job runs")
    for name, run, help in (("cancel", _cancel, "cancel a job: a queued one at once, a running one at its next page"),
                            ("retry", _retry, "queue a failed or cancelled job again; it resumes at its next page"),
                            ("rm", _rm, "remove a finished job, its pages and its file")):
        command(name, run, help).add_argument("id", metavar="ID")


def _epilog() -> str:
    codes = "\n".join(f"  {code:<4} {meaning}" for code, meaning in EXIT_CODES.items())
    return (f"exit codes of the client commands:\n{codes}\n\n"
            "environment:\n"
            "  PAGESTREAM_URL      the server the client commands talk to (default http://127.0.0.1:8000)\n"
            "  PAGESTREAM_API_KEY  the API key to send, for a server that has keys")


def _run_client(args: argparse.Namespace) -> int:
    """Run a client command; every error becomes a message and an exit code, never a traceback."""
    from ._client_errors import ApiError, ConnectionFailed, PagestreamError
    from .client import Client

    try:
        with Client(args.url) as client:
            code: int = args.run(args, client)
            return code
    except ConnectionFailed as error:
        _say(f"{error.message} (is the server running? --url or PAGESTREAM_URL names it)")
        return EXIT_UNREACHABLE
    except ApiError as error:
        _say(f"{error.message} ({error.code})")
        return EXIT_ERROR
    except PagestreamError as error:
        _say(error.message)
        return EXIT_ERROR
    except BrokenPipeError:  # `pagestream watch --json ID | head`: the reader is gone, and that is fine
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's last flush is silent
        return EXIT_OK
    except OSError as error:
        _say(f"{error.filename or ''}: {error.strerror or error}")
        return EXIT_ERROR
    except ValueError as error:  # a malformed --url
        _say(str(error))
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("interrupted; the jobs go on on the server (pagestream cancel ID stops one)")
        return EXIT_INTERRUPTED


def _say(message: str) -> None:
    print(f"pagestream: {message}", file=sys.stderr, flush=True)


def _print_json(value: object) -> None:
    # ASCII-only: no line separator (U+2028) inside a line, for readers that split lines on it.
    print(json.dumps(value, separators=(",", ":")), flush=True)


def _submit(args: argparse.Namespace, client: Client) -> int:
    from ._client_errors import ApiError

    for path in args.files:
        if not path.is_file():
            _say(f"{path}: no such file")
            return EXIT_ERROR
    jobs: list[Job] = []
    refused = False
    for path in args.files:
        try:
            job = client.submit(path, password=args.password, pages=args.pages)
        except ApiError as error:
            _say(f"{path}: {error.message} ({error.code})")
            refused = True
            continue
        jobs.append(job)
        if not args.watch:
            if args.json:
                _print_json(job)
            else:
                print(job["id"], flush=True)
    code = _follow_jobs(client.url, jobs, args.json) if args.watch and jobs else EXIT_OK
    return EXIT_ERROR if refused and code == EXIT_OK else code


def _watch(args: argparse.Namespace, client: Client) -> int:
    return _follow_jobs(client.url, [client.get(job_id) for job_id in args.ids], args.json)


def _status(args: argparse.Namespace, client: Client) -> int:
    job = client.get(args.id)
    if args.json:
        _print_json(job)
        return EXIT_OK
    rows = [("id", job["id"]), ("file", f"{job['filename']} ({job['kind']}, {job['size']:,} bytes)"),
            ("state", _summary(job)), ("attempts", str(job["attempts"])), ("created", job["created_at"])]
    if job["started_at"]:
        rows.append(("started", job["started_at"]))
    if job["finished_at"]:
        rows.append(("finished", f"{job['finished_at']} ({job['duration_seconds'] or 0:.2f} s)"))
    if job["options"]["pages"]:
        rows.append(("pages", job["options"]["pages"]))
    for label, value in rows:
        print(f"{label:<9} {value}")
    return EXIT_OK


def _ls(args: argparse.Namespace, client: Client) -> int:
    if args.limit is not None and args.limit < 1:
        _say("--limit must be at least 1")
        return EXIT_ERROR
    states = [s.strip() for s in args.state.split(",") if s.strip()] if args.state else None
    if sys.stdout.isatty() and not args.json:
        print(f"{'ID':<16}  {'STATE':<11}  {'PAGES':>11}  FILE")
    for count, job in enumerate(client.list(states, page_size=min(args.limit or 200, 200)), 1):
        if args.json:
            _print_json(job)
        else:
            state = f"queued #{job['position']}" if job["state"] == "queued" else job["state"]
            pages = _pages(job["pages_done"], job["pages_total"])
            print(f"{job['id']:<16}  {state:<11}  {pages:>11}  {job['filename']}")
        if count == args.limit:
            break
    return EXIT_OK


def _result(args: argparse.Namespace, client: Client) -> int:
    body = client.result(args.id, args.format, args.partial)
    text = body if isinstance(body, str) else json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        return EXIT_OK
    sys.stdout.write(text if text.endswith("\n") or not sys.stdout.isatty() else text + "\n")
    sys.stdout.flush()
    return EXIT_OK


def _cancel(args: argparse.Namespace, client: Client) -> int:
    return _print_state(client.cancel(args.id))


def _retry(args: argparse.Namespace, client: Client) -> int:
    return _print_state(client.retry(args.id))


def _print_state(job: Job) -> int:
    print(f"{job['id']} {_summary(job)}")
    return EXIT_OK


def _rm(args: argparse.Namespace, client: Client) -> int:
    client.delete(args.id)
    print(f"{args.id} removed")
    return EXIT_OK


def _pages(done: int, total: int | None) -> str:
    return f"{done}/{'?' if total is None else total}"


def _summary(job: Job) -> str:
    """A job's state in a few words: ``queued, position 2``, ``running, 12/30 pages (40%), 3.1 pages/s``."""
    state = job["state"]
    pages = f"{_pages(job['pages_done'], job['pages_total'])} pages"
    if state == "queued":
        return f"queued, position {job['position']}"
    if state == "running":
        extra = [f"{job['percent']:.0f}%"] if job["percent"] is not None else []
        if job["pages_per_second"] is not None:
            extra.append(f"{job['pages_per_second']:g} pages/s")
        if job["eta_seconds"] is not None:
            extra.append(f"ETA {_duration(job['eta_seconds'])}")
        cancelling = ", cancel requested: it stops at the next page" if job["cancel_requested"] else ""
        return f"running, {pages}" + (f" ({', '.join(extra)})" if extra else "") + cancelling
    if state == "failed" and job["error"] is not None:
        return f"failed, {pages}: {job['error']['code']}: {job['error']['message']}"
    return f"{state}, {pages}"


def _duration(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def describe_event(event: Event) -> str:
    """One line for an event, after the job id: ``page 3 (3/30)``, ``failed password_required: …``."""
    if event["type"] == "snapshot":
        return f"snapshot {_summary(event['job'])}"
    if event["type"] == "queued" or event["type"] == "position":
        return f"{event['type']} position {event['position']}"
    if event["type"] == "started":
        resumed = f", resuming at page {event['resume_from']}" if event["pages_done"] else ""
        return f"started attempt {event['attempt']}, {event['pages_total']} pages{resumed}"
    if event["type"] == "page":
        page = event["page"]
        problem = f", error: {page['error']}" if page["error"] else ""
        return f"page {page['number']} ({event['pages_done']}/{event['pages_total']}{problem})"
    if event["type"] == "retrying":
        reason = event["reason"]
        return (f"retrying after attempt {event['attempt']}: {reason['code']}: {reason['message']} "
                f"({event['pages_done']} pages kept)")
    if event["type"] == "completed":
        return f"completed {event['pages_done']}/{event['pages_total']} pages in {event['duration_seconds']:.2f} s"
    if event["type"] == "failed":
        error = event["error"]
        return f"failed {error['code']}: {error['message']} ({event['pages_done']} pages done)"
    if event["type"] == "cancelled":
        return f"cancelled ({event['pages_done']} pages done)"
    return str(event.get("type", "?"))  # a type this client does not know (a newer server)


# -- following jobs: submit --watch, watch


def _follow_jobs(url: str, jobs: list[Job], as_json: bool) -> int:
    """Follow every job's events at once until each has finished; the exit code of the worst outcome."""
    output: _Output = _JsonLines() if as_json else _ProgressBars(jobs) if sys.stdout.isatty() else _EventLines()
    with output:
        outcomes = asyncio.run(_follow_all(url, jobs, output))
    return max((_OUTCOME_CODES.get(state, EXIT_ERROR) for state in outcomes), key=_severity)


def _severity(code: int) -> int:
    return _SEVERITY.index(code) if code in _SEVERITY else len(_SEVERITY)


# Streams followed at once: well under the server's streams per caller (100 by default). Jobs
# run one at a time in FIFO order, so the first ones in the list are the ones moving; a job
# further down is shown as it was until a stream is free for it, then its whole log follows.
MAX_STREAMS = 32


async def _follow_all(url: str, jobs: list[Job], output: _Output) -> list[str]:
    from .client import AsyncClient

    slots = asyncio.Semaphore(MAX_STREAMS)

    async def follow(job_id: str) -> str:
        async with slots:
            return await _follow(client, job_id, output)

    async with AsyncClient(url) as client:
        # The server has just answered (the submit, or the job's status): a stream whose first
        # connection fails now meets a server restarting, and waits for it rather than giving up.
        await client.health()
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(follow(job["id"])) for job in jobs]
        except ExceptionGroup as errors:  # the first error stands for all: they are likely the same
            raise errors.exceptions[0] from None
        return [task.result() for task in tasks]


async def _follow(client: AsyncClient, job_id: str, output: _Output) -> str:
    """Show one job's events until its end; its final state."""
    from ._client_models import TERMINAL_EVENTS

    outcome = None
    async with client.events(job_id) as events:
        async for event in events:
            output.show(job_id, event)
            if event["type"] in TERMINAL_EVENTS:
                outcome = event["type"]
    return outcome or (await client.get(job_id))["state"]


class _Output:
    """Where followed events go; a context manager around the whole watch."""

    def show(self, job_id: str, event: Event) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


class _JsonLines(_Output):
    """``--json``: each event as the server sent it, one JSON object a line."""

    def show(self, job_id: str, event: Event) -> None:
        _print_json(event)


class _EventLines(_Output):
    """Not a terminal: ``<job id> <event type> <details>``, one line per event."""

    def show(self, job_id: str, event: Event) -> None:
        print(f"{job_id} {describe_event(event)}", flush=True)


@dataclasses.dataclass
class JobProgress:
    """What a progress bar shows of one job, kept up to date by its events.

    The rate is measured from the server's timestamps of the last pages of the current run,
    so replaying a job's history at once does not make it look fast.
    """

    name: str
    state: str
    position: int | None = None
    done: int = 0
    total: int | None = None
    rate: float | None = None
    duration: float | None = None
    error: str | None = None
    samples: deque[tuple[float, int]] = dataclasses.field(default_factory=lambda: deque(maxlen=20))

    @classmethod
    def of(cls, job: Job) -> JobProgress:
        progress = cls(job["filename"], job["state"])
        progress._take(job)
        return progress

    def _take(self, job: Job) -> None:
        self.name, self.state, self.position = job["filename"], job["state"], job["position"]
        self.done, self.total, self.duration = job["pages_done"], job["pages_total"], job["duration_seconds"]
        self.rate = job["pages_per_second"]
        self.error = f"{job['error']['code']}: {job['error']['message']}" if job["error"] else None

    def apply(self, event: Event) -> None:
        if event["type"] == "snapshot":
            self._take(event["job"])
        elif event["type"] == "queued" or event["type"] == "position":
            self.state, self.position = "queued", event["position"]
        elif event["type"] == "started":
            self.state, self.position, self.error = "running", None, None
            self.total, self.done = event["pages_total"], event["pages_done"]
            self.samples.clear()
            self._sample(event["at"])
        elif event["type"] == "page":
            self.state, self.done, self.total = "running", event["pages_done"], event["pages_total"]
            self._sample(event["at"])
        elif event["type"] == "retrying":
            self.state, self.done = "retrying", event["pages_done"]
        elif event["type"] == "completed":
            self.state, self.done, self.total = "completed", event["pages_done"], event["pages_total"]
            self.duration = event["duration_seconds"]
        elif event["type"] == "failed":
            self.state, self.done = "failed", event["pages_done"]
            self.error = f"{event['error']['code']}: {event['error']['message']}"
        elif event["type"] == "cancelled":
            self.state, self.done = "cancelled", event["pages_done"]

    def _sample(self, at: str) -> None:
        self.samples.append((datetime.fromisoformat(at).timestamp(), self.done))
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 > t0 and d1 > d0:
            self.rate = (d1 - d0) / (t1 - t0)

    @property
    def eta(self) -> float | None:
        if self.state != "running" or not self.rate or self.total is None:
            return None
        return max(self.total - self.done, 0) / self.rate


_STATUS_STYLE = {"queued": "yellow", "running": "cyan", "retrying": "magenta", "completed": "green",
                 "failed": "red", "cancelled": "dim"}


class _ProgressBars(_Output):
    """A terminal: a live progress bar per job (rich) — state or queue place, pages done/total,
    pages per second, ETA — left on screen at the end, with the reason of each failure below."""

    def __init__(self, jobs: list[Job], file: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self._console = Console(file=file or sys.stdout, highlight=False)
        self._progress: Progress = Progress(
            TextColumn("{task.description}", table_column=Column(max_width=32, no_wrap=True, overflow="ellipsis")),
            TextColumn("{task.fields[status]}", table_column=Column(min_width=12)),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[pages]}", justify="right", table_column=Column(min_width=15)),
            TextColumn("{task.fields[rate]}", justify="right", table_column=Column(min_width=13)),
            TextColumn("{task.fields[time]}", justify="right", table_column=Column(min_width=10)),
            console=self._console, refresh_per_second=8, expand=True,
        )
        self._jobs: dict[str, JobProgress] = {}
        self._tasks: dict[str, TaskID] = {}
        for job in jobs:
            self._jobs[job["id"]] = JobProgress.of(job)
            self._tasks[job["id"]] = self._progress.add_task("", total=None)
            self._render(job["id"])

    def __enter__(self) -> _ProgressBars:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()
        for job in self._jobs.values():
            if job.state == "failed" and job.error:
                self._console.print(f"[red]✘[/] {_escape(job.name)}: {_escape(job.error)}")

    def show(self, job_id: str, event: Event) -> None:
        self._jobs[job_id].apply(event)
        self._render(job_id)

    def _render(self, job_id: str) -> None:
        job = self._jobs[job_id]
        if job.state == "queued":
            status = f"queued #{job.position}" if job.position else "queued"
        else:
            status = {"completed": "✔ completed", "failed": "✘ failed"}.get(job.state, job.state)
        if job.state == "completed":
            time_text = f"in {_duration(job.duration)}" if job.duration is not None else ""
        else:
            time_text = f"ETA {_duration(job.eta)}" if job.eta is not None else ""
        rate = f"{job.rate:.1f} pages/s" if job.rate and job.state in ("running", "completed") else ""
        if job.total:
            total, completed = job.total, job.done
        elif job.state in ("running", "retrying"):
            total, completed = None, 0  # the document is being opened: rich pulses the bar
        else:
            total, completed = 1, 1 if job.state == "completed" else 0  # queued, or ended without pages
        self._progress.update(
            self._tasks[job_id], description=_escape(job.name), total=total, completed=completed,
            status=f"[{_STATUS_STYLE.get(job.state, 'default')}]{_escape(status)}[/]",
            pages=f"{_pages(job.done, job.total)} pages", rate=rate, time=time_text,
        )


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagestream", description="A document job server that streams every page.",
                                     epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"pagestream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _client_parsers(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "worker":
        return serve(args, api=False)
    return _run_client(args)


if __name__ == "__main__":
    sys.exit(main())
