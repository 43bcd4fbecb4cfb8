"""The HTTP API: thin handlers that turn requests into calls on the store, hub and worker.

Every error leaves through :func:`error_response` in the one error shape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import __version__
from .auth import SESSION_COOKIE, Caller, Keys, authenticate
from .errors import (
    ApiError,
    BadRequest,
    EmptyUpload,
    Forbidden,
    InvalidOptions,
    NotFinished,
    NotFound,
    Unauthorized,
    UnsupportedType,
)
from .hub import Hub
from .intake import MultipartReceiver, SpoolFile, receive_raw
from .jobs import ErrorCode, Job, JobState, parse_pages
from .metrics import CONTENT_TYPE, Metrics
from .schemas import Contract
from .settings import Settings
from .store import NewJob, PageRow, Store
from .streams import event_stream_response, global_events, job_events
from .turns import Turns
from .webhooks import check_callback_url
from .worker import Worker

log = logging.getLogger("pagestream.api")

API = "/api/v1"

T = TypeVar("T")


@dataclass
class Services:
    """What the handlers work with; built by the app factory's lifespan."""

    settings: Settings
    store: Store
    hub: Hub
    worker: Worker
    contract: Contract
    keys: Keys
    metrics: Metrics
    turns: Turns


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def error_response(exc: ApiError) -> Response:
    return json_response(exc.body(), exc.status, exc.headers or None)


_HTTP_CODES = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed}


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown route, wrong method) in the one error shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.bad_request)
    body = {"error": {"code": code.value, "message": f"{request.method} {request.url.path}: {exc.detail}"}}
    return json_response(body, exc.status_code, dict(exc.headers or {}))


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError("the server failed to answer this request"))


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def caller(request: Request) -> Caller:
    """Who is calling; set by :func:`authenticated` before an API handler runs."""
    found: Caller = request.state.caller
    return found


def _owner(request: Request) -> str | None:
    """The owner whose jobs this caller may see; None means every job."""
    return caller(request).scope


def _stream_key(request: Request) -> str:
    """Whose stream limit a new stream counts against: the owner, or the address when keys are off."""
    if services(request).keys.enabled:
        return "owner:" + caller(request).owner
    return "addr:" + (request.client.host if request.client else "?")


def authenticated(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an API handler: authenticate the caller (401/403 in the error shape) before it runs."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        host = request.headers.get("host", "")
        request.state.caller = authenticate(services(request).keys, dict(request.headers), request.cookies,
                                            request.method, host)
        return await handler(request)

    return wrapper


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "0").lower()
    if value not in ("0", "1", "true", "false", ""):
        raise BadRequest(f"{name} must be 0 or 1, not {value!r}")
    return value in ("1", "true")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


# -- submit


async def submit(request: Request) -> Response:
    svc = services(request)
    settings = svc.settings
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    content_type = request.headers.get("content-type", "")
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 200:
        raise BadRequest("Idempotency-Key must be 1 to 200 characters")
    if content_type.lower().startswith("multipart/form-data"):
        receiver = MultipartReceiver(content_type, settings.spool_dir, settings.max_upload_bytes,
                                     settings.max_files_per_request)
        await receiver.receive(request.stream())
        files, fields = receiver.files, receiver.fields
        if not files:
            raise BadRequest("the multipart body has no file part (send the document as a part named 'file')")
    else:
        filename = request.query_params.get("filename") or "upload"
        files = [await receive_raw(request.stream(), settings.spool_dir, filename, settings.max_upload_bytes)]
        fields = {}
    try:
        options = _options(svc.contract, settings, {**dict(request.query_params), **fields})
        for spool in files:
            _check_upload(spool)
        uploads = []
        for index, spool in enumerate(files):
            uploads.append(NewJob(
                id=spool.job_id, filename=spool.filename if spool.filename != "upload" else _default_name(spool),
                kind=spool.kind, size=spool.size, sha256=spool.sha256,  # type: ignore[arg-type]
                spool_name=spool.job_id, pages_spec=options.get("pages"), password=options.get("password"),
                callback_url=options.get("callback_url"),
                owner=caller(request).owner,
                idempotency_key=None if key is None else (key if len(files) == 1 else f"{key}#{index}"),
            ))
        if svc.store.shared:  # the worker may run on another machine: the store keeps the upload
            for upload, spool in zip(uploads, files):
                await svc.store.put_file(upload.spool_name, spool.path)
        results = await svc.store.enqueue(uploads, settings.max_queued_jobs, settings.max_queued_per_caller)
    except BaseException:
        for spool in files:
            await spool.discard()
        raise
    for upload, spool, (_, _, created) in zip(uploads, files, results):
        if not created or svc.store.shared:  # a repeated Idempotency-Key, or the store has the bytes
            await spool.discard()
        if not created and svc.store.shared:
            await svc.store.delete_file(upload.spool_name)
    svc.worker.wake()
    accepted = [job for job, _, new in results if new]
    svc.metrics.jobs_submitted.inc(len(accepted))
    svc.metrics.upload_bytes.inc(sum(job.size for job in accepted))
    bodies = [job.as_dict(position) for job, position, _ in results]  # as committed, without a read each
    location = {"Location": f"{API}/jobs/{results[0][0].id}"}
    if len(bodies) == 1:
        return json_response(bodies[0], 202, location)
    return json_response({"jobs": bodies}, 202, location)


def _options(contract: Contract, settings: Settings, values: dict[str, str]) -> dict[str, str]:
    options = {k: v for k, v in values.items() if k in ("password", "pages", "callback_url") and v != ""}
    problems = contract.errors("submit-options.json", options)
    if problems:
        raise InvalidOptions("; ".join(problems))
    if "callback_url" in options:
        refused = check_callback_url(options["callback_url"], settings)
        if refused:
            raise InvalidOptions(refused)
    if "pages" in options:
        try:
            parse_pages(options["pages"])
        except ValueError as exc:
            raise InvalidOptions(str(exc)) from None
    return options


def _check_upload(spool: SpoolFile) -> None:
    if spool.size == 0:
        raise EmptyUpload(f"{spool.filename} is empty")
    if spool.kind is None:  # sniffed as the upload was finished
        raise UnsupportedType(
            f"{spool.filename} is not a PDF, EPUB, plain text, Markdown or HTML document (judged by its bytes)"
        )


def _default_name(spool: SpoolFile) -> str:
    assert spool.kind is not None
    extension = {"pdf": "pdf", "epub": "epub", "text": "txt", "markdown": "md", "html": "html"}[spool.kind.value]
    return f"upload.{extension}"


def _exists(found: T | None, job_id: str) -> T:
    """What the store found, or 404 — for a missing job and another owner's job alike."""
    if found is None:
        raise NotFound(f"there is no job {job_id}")
    return found


async def _job_body(svc: Services, job_id: str, owner: str | None = None) -> dict[str, Any]:
    job, position = _exists(await svc.store.get(job_id, owner), job_id)
    return job.as_dict(position)


# -- reading jobs


async def get_job(request: Request) -> Response:
    return json_response(await _job_body(services(request), request.path_params["job_id"], _owner(request)))


async def list_jobs(request: Request) -> Response:
    svc = services(request)
    states = []
    for name in filter(None, request.query_params.get("state", "").split(",")):  # state= is no filter
        try:
            states.append(JobState(name.strip()))
        except ValueError:
            raise BadRequest(f"unknown state {name!r}; states are {', '.join(s.value for s in JobState)}") from None
    order = request.query_params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise BadRequest("order must be newest or oldest")
    limit = _int_param(request, "limit", 50, 1, 200)
    cursor = request.query_params.get("cursor")
    after_seq = None
    if cursor:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:  # as the contract says
            raise BadRequest("cursor must be the value of an earlier page's next")
        after_seq = int(cursor)
    jobs, next_seq = await svc.store.list_jobs(states, order == "newest", limit, after_seq, _owner(request))
    return json_response({"jobs": [j.as_dict(p) for j, p in jobs], "next": None if next_seq is None else str(next_seq)})


async def result(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    job, _ = _exists(await svc.store.get(job_id, _owner(request)), job_id)
    fmt = request.query_params.get("format", "json")
    if fmt not in ("json", "text", "ndjson"):
        raise BadRequest("format must be json, text or ndjson")
    partial = _flag(request, "partial")
    if not job.state.finished and not partial:
        raise NotFinished(f"job {job_id} is {job.state.value}; add ?partial=1 for the pages done so far")
    extension = {"json": "json", "text": "txt", "ndjson": "ndjson"}[fmt]
    disposition = {"Content-Disposition": _download_name(job.filename, extension)}
    batches = _result_pages(svc.store, job)
    if fmt == "text":
        return StreamingResponse(_text_result(batches), media_type="text/plain; charset=utf-8", headers=disposition)
    if fmt == "ndjson":
        return StreamingResponse(_ndjson_result(batches), media_type="application/x-ndjson", headers=disposition)
    head = orjson.dumps({
        "job_id": job.id, "state": job.state.value, "partial": job.state is not JobState.completed,
        "pages_total": job.pages_total, "pages_done": job.pages_done,
    })
    return StreamingResponse(_json_result(head, batches), media_type="application/json")


#: Pages per read of the store while a result is sent. A result goes out as it is read, a batch to a
#: write, each once the client took the one before: the server holds a batch of it, whatever the
#: job's length. (Built whole, a 10,000-page result of 30 MB held about 38 MB per download until its
#: client had read it: ten slow downloads, 378 MB.)
RESULT_BATCH = 200


async def _result_pages(store: Store, job: Job) -> AsyncIterator[list[PageRow]]:
    after = sent = 0
    while True:
        batch = await store.pages(job.id, after, RESULT_BATCH)
        if batch:
            yield batch
            after, sent = batch[-1].number, sent + len(batch)
        if len(batch) < RESULT_BATCH:
            break
    if job.state.finished and sent < job.pages_done:
        # Deleted while it was being sent: the transfer is cut short (the error closes the connection
        # before the response's end), not ended as if the result were whole.
        log.warning("job %s was deleted while its result was being sent; the transfer is cut short", job.id)
        raise RuntimeError(f"job {job.id} was deleted while its result was being sent")


def _page_json(page: PageRow) -> bytes:
    return orjson.dumps({**page.figures(), "text": page.text})


async def _text_result(batches: AsyncIterator[list[PageRow]]) -> AsyncIterator[bytes]:
    first = True
    async for batch in batches:
        text = "\f".join(p.text for p in batch)
        yield (text if first else "\f" + text).encode()
        first = False


async def _ndjson_result(batches: AsyncIterator[list[PageRow]]) -> AsyncIterator[bytes]:
    async for batch in batches:
        yield b"".join(_page_json(p) + b"\n" for p in batch)


async def _json_result(head: bytes, batches: AsyncIterator[list[PageRow]]) -> AsyncIterator[bytes]:
    """``head`` (an object) with the pages as its last member, ``"pages": [...]``."""
    yield head[:-1] + b',"pages":['
    first = True
    async for batch in batches:
        rows = b",".join(_page_json(p) for p in batch)
        yield rows if first else b"," + rows
        first = False
    yield b"]}"


def _download_name(filename: str, extension: str) -> str:
    """``inline`` with the upload's name and the result's extension: an ASCII fallback and RFC 5987's
    UTF-8 form, so no file name can break the header."""
    stem = filename.rsplit(".", 1)[0] or "result"
    ascii_stem = "".join(c if c.isascii() and (c.isalnum() or c in " ._-") else "_" for c in stem)[:100]
    return f"inline; filename=\"{ascii_stem}.{extension}\"; filename*=UTF-8''{quote(stem[:100])}.{extension}"


# -- acting on jobs


async def cancel(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    _exists(await svc.store.cancel(job_id, _owner(request)), job_id)
    svc.worker.request_cancel(job_id)
    svc.worker.wake()  # a queued job cancelled at once may have a webhook due
    return json_response(await _job_body(svc, job_id), 202)


async def retry(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    job, position = _exists(await svc.store.retry(job_id, svc.settings.max_queued_jobs, _owner(request)), job_id)
    svc.worker.wake()
    return json_response(job.as_dict(position), 202)  # as committed: a re-read may find a quick job run again


async def delete(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    job = _exists(await svc.store.delete(job_id, _owner(request)), job_id)
    await asyncio.to_thread((svc.settings.spool_dir / job.spool_name).unlink, missing_ok=True)
    return Response(status_code=204)


# -- streams


async def job_stream(request: Request) -> Response:
    svc = services(request)
    job_id = request.path_params["job_id"]
    text = _flag(request, "text")
    header = request.headers.get("last-event-id")
    raw_after = header if header is not None and header.strip() != "" else request.query_params.get("after", "0")
    try:
        after = int(raw_after)
        if not 0 <= after < 2**63:
            raise ValueError
    except ValueError:
        raise BadRequest(f"Last-Event-ID / after must be an event id (a whole number ≥ 0), not {raw_after!r}") from None
    job, position = _exists(await svc.store.get(job_id, _owner(request)), job_id)
    await svc.turns.wait()  # the reads of watchers who came together come back together (see Turns)
    if job.state.finished and after >= job.last_event_id:
        # The client has seen the end: 204 tells a browser's EventSource to stop reconnecting.
        return Response(status_code=204)
    return event_stream_response(svc.hub, _stream_key(request), "job",
                                 lambda write: job_events(svc.hub, job, position, after, text, write))


async def global_stream(request: Request) -> Response:
    svc = services(request)
    owner = _owner(request)
    return event_stream_response(svc.hub, _stream_key(request), "global", lambda _: global_events(svc.hub, owner))


# -- signing in (browsers: EventSource cannot send headers, so it rides on a cookie)


async def session_info(request: Request) -> Response:
    svc = services(request)
    if not svc.keys.enabled:
        return json_response({"keys": False, "owner": None, "role": None})
    try:
        who = authenticate(svc.keys, dict(request.headers), request.cookies, "GET", "")
    except ApiError:
        return json_response({"keys": True, "owner": None, "role": None})
    return json_response({"keys": True, "owner": who.owner, "role": who.role.value})


async def sign_in(request: Request) -> Response:
    """Trade an API key for an HttpOnly, SameSite=Strict session cookie."""
    svc = services(request)
    try:
        body = orjson.loads(await request.body())
        key = body["key"] if isinstance(body, dict) else None
    except (orjson.JSONDecodeError, KeyError):
        key = None
    if not isinstance(key, str):
        raise BadRequest('send {"key": "<your API key>"}')
    if not svc.keys.enabled:
        return json_response({"keys": False, "owner": None, "role": None})
    who = svc.keys.check(key)
    if who is None:
        raise Unauthorized("the API key is not valid")
    response = json_response({"keys": True, "owner": who.owner, "role": who.role.value})
    lifetime = svc.settings.session_hours * 3600
    response.set_cookie(SESSION_COOKIE, svc.keys.session_for(key, lifetime), max_age=int(lifetime), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


async def sign_out(request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- the server itself


async def healthz(request: Request) -> Response:
    svc = services(request)
    queued, running = await svc.store.counts()
    return json_response({
        "status": "ok", "version": __version__, "queued": queued, "running": running, "streams": svc.hub.streams,
    })


async def metrics(request: Request) -> Response:
    """Prometheus text format. With keys on, for admins only: the figures are the whole server's."""
    svc = services(request)
    if svc.keys.enabled and caller(request).scope is not None:
        raise Forbidden("the metrics are for admin keys")
    queued, _ = await svc.store.counts()
    svc.metrics.queue_depth.set(queued)
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE)


async def schema_file(request: Request) -> Response:
    contract = services(request).contract
    name = request.path_params["name"]
    if name in ("", "index.json"):
        return json_response({"schemas": contract.names()})
    if name not in contract.names():
        raise NotFound(f"there is no schema {name}")
    return Response(contract.raw(name), media_type="application/schema+json")


async def openapi_document(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type="application/json")


Handler = Callable[[Request], Awaitable[Response]]


class _Endpoint:
    """One path's handlers as a plain ASGI app.

    Starlette wraps a function endpoint in two more layers (request_response and its exception
    wrapper) that stay on the stack for as long as the response runs: for an event stream that
    is hours, and about 1.5 KB per stream. Errors are rendered in the error shape all the same,
    by the app's ExceptionMiddleware."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers["GET" if scope["method"] == "HEAD" else scope["method"]]
        # The request (with its parsed headers and cookies) is not kept while the response runs.
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)


def routes() -> list[Route]:
    """One route per path, with all its methods, so that a wrong method gets a 405 naming them."""
    a = authenticated
    table: dict[str, dict[str, Handler]] = {
        f"{API}/jobs": {"GET": a(list_jobs), "POST": a(submit)},
        f"{API}/jobs/{{job_id}}": {"GET": a(get_job), "DELETE": a(delete)},
        f"{API}/jobs/{{job_id}}/cancel": {"POST": a(cancel)},
        f"{API}/jobs/{{job_id}}/retry": {"POST": a(retry)},
        f"{API}/jobs/{{job_id}}/result": {"GET": a(result)},
        f"{API}/jobs/{{job_id}}/events": {"GET": a(job_stream)},
        f"{API}/events": {"GET": a(global_stream)},
        f"{API}/session": {"GET": session_info, "POST": sign_in, "DELETE": sign_out},
        "/healthz": {"GET": healthz},
        "/metrics": {"GET": a(metrics)},
        "/schemas/{name:path}": {"GET": schema_file},
        "/openapi.json": {"GET": openapi_document},
    }
    return [Route(path, _Endpoint(handlers), methods=list(handlers)) for path, handlers in table.items()]

