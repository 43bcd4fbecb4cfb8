"""The contract in ``shared_schemas/`` and :mod:`pagestream.schemas`.

Checks that every file is a sound JSON Schema 2020-12 document whose refs resolve offline,
that its enums are exactly those of :mod:`pagestream.jobs`, that well-formed instances pass
and broken ones fail, and that the OpenAPI document built on it is complete and valid.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import referencing.exceptions
from jsonschema import Draft202012Validator, ValidationError

from pagestream import resources
from pagestream.jobs import PAGES_PATTERN, DocumentKind, ErrorCode, EventType, GlobalEventType, JobState
from pagestream.schemas import DIALECT, FORMAT_CHECKER, SCHEMA_BASE, Contract, component_name, openapi

from .corpus import unavailable

ROOT = resources.schemas_dir()
NAMES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.json"))
INDEXES = ("events/index.json", "events/global-index.json")


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract()


@pytest.fixture(scope="module")
def document(contract: Contract) -> dict[str, Any]:
    return openapi(contract, "9.9.9")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (JSON pointer, node) in a JSON document, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def _refs(node: Any) -> Iterator[tuple[str, str]]:
    for path, sub in _walk(node):
        if isinstance(sub, dict) and isinstance(sub.get("$ref"), str):
            yield path, sub["$ref"]


def _pointer(document: Any, pointer: str) -> Any:
    node = document
    for token in pointer.lstrip("/").split("/") if pointer else []:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _object_schemas(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that declares properties (the objects the server emits or accepts)."""
    for path, sub in _walk(schema):
        if isinstance(sub, dict) and isinstance(sub.get("properties"), dict) and not path.endswith("/properties"):
            # "if"/"then"/"else" only narrow properties declared elsewhere; they are not objects of their own.
            if path.rsplit("/", 1)[-1] in ("if", "then", "else"):
                continue
            yield path, sub


# -- the files ------------------------------------------------------------------------------


def test_contract_loads_every_file(contract: Contract) -> None:
    assert contract.names() == NAMES
    assert "job.json" in NAMES and "events/page.json" in NAMES
    assert "index.json" not in NAMES  # the server lists the files; there is no top-level index


@pytest.mark.parametrize("name", NAMES)
def test_file_is_a_valid_2020_12_schema(name: str) -> None:
    schema = json.loads((ROOT / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DIALECT
    assert schema["$id"] == f"https://pagestream.dev/schemas/{name}" == SCHEMA_BASE + name
    assert isinstance(schema["title"], str) and schema["title"]
    assert isinstance(schema["description"], str) and schema["description"]


@pytest.mark.parametrize("name", NAMES)
def test_every_ref_resolves_offline(contract: Contract, name: str) -> None:
    schema = contract.schema(name)
    resolver = contract.registry.resolver(base_uri=schema["$id"])
    refs = list(_refs(schema))
    for path, ref in refs:
        assert not ref.startswith(("http:", "https:")), f"{name}{path}: use a relative $ref, not {ref}"
        resolved = resolver.lookup(ref)
        assert isinstance(resolved.contents, dict), f"{name}{path}: {ref}"
    if name in INDEXES or name not in ("error.json", "page.json", "submit-options.json", "session.json"):
        assert refs, f"{name} was expected to reuse other schemas"


@pytest.mark.parametrize("name", NAMES)
def test_every_property_is_described_and_objects_are_closed(contract: Contract, name: str) -> None:
    schema = contract.schema(name)
    for path, obj in _object_schemas(schema):
        assert obj.get("additionalProperties") is False, f"{name}{path} must set additionalProperties: false"
        for key, sub in obj["properties"].items():
            assert isinstance(sub, dict) and sub.get("description"), (
                f"{name}{path}/properties/{key} lacks a description"
            )
        for key in obj.get("required", []):
            assert key in obj["properties"], f"{name}{path}: required {key!r} is not a property"


def test_raw_is_the_file_bytes_and_unknown_names_are_key_errors(contract: Contract) -> None:
    for name in NAMES:
        assert contract.raw(name) == (ROOT / name).read_bytes()
    for bad in ("nope.json", "../pyproject.toml", "/etc/passwd", "events", "events/"):
        with pytest.raises(KeyError):
            contract.raw(bad)
        with pytest.raises(KeyError):
            contract.validator(bad)


def test_schema_is_a_copy(contract: Contract) -> None:
    contract.schema("job.json")["properties"].clear()
    assert contract.schema("job.json")["properties"]


def test_a_wrong_id_is_refused(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps({"$id": SCHEMA_BASE + "other.json"}))
    with pytest.raises(ValueError, match=r"\$id"):
        Contract(tmp_path)


def test_an_unknown_ref_fails_instead_of_going_online(tmp_path: Path) -> None:
    (tmp_path / "events").mkdir()
    for name in INDEXES:  # a Contract needs both indexes, even empty ones
        (tmp_path / name).write_text(json.dumps({"$id": SCHEMA_BASE + name, "oneOf": []}))
    (tmp_path / "x.json").write_text(json.dumps({"$id": SCHEMA_BASE + "x.json", "$ref": "https://example.invalid/y"}))
    with pytest.raises(referencing.exceptions.Unresolvable):
        Contract(tmp_path).validate("x.json", {})


# -- enums agree with pagestream.jobs -------------------------------------------------------


def _values(enum: type[Any]) -> list[str]:
    return sorted(member.value for member in enum)


def test_job_state_enum(contract: Contract) -> None:
    assert sorted(contract.schema("job.json")["properties"]["state"]["enum"]) == _values(JobState)
    assert sorted(contract.schema("result.json")["properties"]["state"]["enum"]) == _values(JobState)


def test_document_kind_enum(contract: Contract) -> None:
    assert sorted(contract.schema("job.json")["properties"]["kind"]["enum"]) == _values(DocumentKind)


def test_error_code_enum(contract: Contract) -> None:
    codes = contract.schema("error.json")["$defs"]["detail"]["properties"]["code"]["enum"]
    assert sorted(codes) == _values(ErrorCode)
    assert len(codes) == len(set(codes))


def test_event_types(contract: Contract) -> None:
    assert sorted(contract.event_types()) == _values(EventType)
    for event_type in EventType:
        name = contract.event_schema_for(event_type.value)
        assert name == f"events/{event_type.value}.json"
        assert contract.schema(name)["properties"]["type"]["const"] == event_type.value
    with pytest.raises(KeyError):
        contract.event_schema_for("sync")


def test_global_event_types(contract: Contract) -> None:
    assert sorted(contract.global_event_types()) == _values(GlobalEventType)
    for event_type in GlobalEventType:
        name = contract.global_event_schema_for(event_type.value)
        assert name == f"events/global-{event_type.value}.json"
        assert contract.schema(name)["properties"]["type"]["const"] == event_type.value
    with pytest.raises(KeyError):
        contract.global_event_schema_for("page")


def test_every_event_file_is_in_an_index(contract: Contract) -> None:
    listed = {contract.event_schema_for(t) for t in contract.event_types()}
    listed |= {contract.global_event_schema_for(t) for t in contract.global_event_types()}
    on_disk = {n for n in NAMES if n.startswith("events/") and n not in INDEXES}
    assert listed == on_disk


def test_pages_pattern_is_the_one_in_jobs(contract: Contract) -> None:
    assert contract.schema("submit-options.json")["properties"]["pages"]["pattern"] == PAGES_PATTERN


# -- instances ------------------------------------------------------------------------------

AT = "2025-01-02T03:04:05.678Z"
JOB_ID = "0123456789abcdef"


def _job(**changes: Any) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": JOB_ID,
        "seq": 7,
        "state": "queued",
        "filename": "report.pdf",
        "kind": "pdf",
        "media_type": "application/pdf",
        "size": 12345,
        "sha256": "a" * 64,
        "options": {"pages": "1-10,15", "has_password": False},
        "position": 1,
        "pages_total": None,
        "pages_done": 0,
        "percent": None,
        "pages_per_second": None,
        "eta_seconds": None,
        "attempts": 0,
        "cancel_requested": False,
        "created_at": AT,
        "started_at": None,
        "finished_at": None,
        "duration_seconds": None,
        "error": None,
        "last_event_id": 1,
        "callback": None,
        "links": {
            "self": f"/api/v1/jobs/{JOB_ID}",
            "events": f"/api/v1/jobs/{JOB_ID}/events",
            "result": f"/api/v1/jobs/{JOB_ID}/result",
        },
    }
    job.update(changes)
    return job


RUNNING = _job(
    state="running",
    position=None,
    pages_total=11,
    pages_done=4,
    percent=36.36,
    pages_per_second=12.5,
    eta_seconds=0.6,
    attempts=1,
    started_at="2025-01-02T03:04:06+01:00",
    last_event_id=6,
)
FAILED = _job(
    state="failed",
    position=None,
    pages_total=None,
    attempts=1,
    started_at=AT,
    finished_at=AT,
    duration_seconds=0.25,
    error={"code": "password_required", "message": "the PDF is encrypted"},
    last_event_id=4,
)
PAGE = {"number": 3, "chars": 1200, "words": 210, "ms": 4.2, "method": "pdfium", "error": None}
PAGE_TEXT = {**PAGE, "text": "Hello"}
DETAIL = {"code": "child_crashed", "message": "the extraction child died"}


def _event(type: str, **fields: Any) -> dict[str, Any]:
    return {"type": type, "job_id": JOB_ID, "at": AT, **fields}


EVENTS: dict[str, dict[str, Any]] = {
    "snapshot": _event("snapshot", job=_job()),
    "queued": _event("queued", position=3),
    "position": _event("position", position=1),
    "started": _event("started", attempt=2, pages_total=11, resume_from=5, pages_done=4),
    "page": _event("page", page=PAGE, pages_done=5, pages_total=11),
    "retrying": _event("retrying", attempt=1, reason=DETAIL, pages_done=4),
    "completed": _event("completed", pages_done=11, pages_total=11, duration_seconds=1.5),
    "failed": _event("failed", error=DETAIL, pages_done=4),
    "cancelled": _event("cancelled", pages_done=2),
}

VALID: list[tuple[str, Any]] = [
    ("job.json", _job()),
    ("job.json", RUNNING),
    ("job.json", FAILED),
    (
        "job.json",
        _job(
            state="completed",
            position=None,
            kind="markdown",
            media_type="text/markdown",
            options={"pages": None, "has_password": True},
            finished_at=AT,
        ),
    ),
    ("page.json", PAGE),
    ("page.json", {**PAGE_TEXT, "method": "epub", "error": "no text layer", "chars": 0, "words": 0}),
    ("error.json", {"error": {"code": "queue_full", "message": "the queue is full"}}),
    (
        "result.json",
        {
            "job_id": JOB_ID,
            "state": "running",
            "partial": True,
            "pages_total": 11,
            "pages_done": 1,
            "pages": [PAGE_TEXT],
        },
    ),
    (
        "result.json",
        {"job_id": JOB_ID, "state": "queued", "partial": True, "pages_total": None, "pages_done": 0, "pages": []},
    ),
    ("submit-options.json", {}),
    ("submit-options.json", {"password": "s3cret", "pages": " 1 - 10 , 15 "}),
    ("job-list.json", {"jobs": [_job(), RUNNING], "next": "c3RhcnQ"}),
    ("job-list.json", {"jobs": [], "next": None}),
    ("job-batch.json", {"jobs": [_job(), _job(id="fedcba9876543210", seq=8, position=2)]}),
    ("health.json", {"status": "ok", "version": "0.1.0", "queued": 3, "running": JOB_ID, "streams": 12}),
    ("health.json", {"status": "ok", "version": "0.1.0", "queued": 0, "running": None, "streams": 0}),
    ("events/global-sync.json", {"type": "sync", "at": AT, "jobs": [_job(), RUNNING, FAILED]}),
    ("events/global-jobs.json", {"type": "jobs", "at": AT, "jobs": [RUNNING], "removed": ["fedcba9876543210"]}),
    ("events/global-jobs.json", {"type": "jobs", "at": AT, "jobs": [], "removed": [],
                                 "positions": {"0123456789abcdef": 1}}),
    ("events/global-index.json", {"type": "sync", "at": AT, "jobs": []}),
    ("events/page.json", _event("page", page=PAGE_TEXT, pages_done=5, pages_total=11)),
    *((f"events/{t}.json", e) for t, e in EVENTS.items()),
    *(("events/index.json", e) for e in EVENTS.values()),
]

INVALID: list[tuple[str, str, Any]] = [
    ("unknown state", "job.json", _job(state="paused")),
    ("unknown kind", "job.json", _job(kind="docx")),
    ("short id", "job.json", _job(id="0123")),
    ("upper-case id", "job.json", _job(id="0123456789ABCDEF")),
    ("bad sha256", "job.json", _job(sha256="xyz")),
    ("seq zero", "job.json", _job(seq=0)),
    ("password shown", "job.json", _job(options={"pages": None, "has_password": True, "password": "x"})),
    ("extra property", "job.json", _job(owner="someone")),
    ("missing links", "job.json", {k: v for k, v in _job().items() if k != "links"}),
    ("queued without position", "job.json", _job(position=None)),
    ("running with position", "job.json", {**RUNNING, "position": 2}),
    ("position zero", "job.json", _job(position=0)),
    ("percent over 100", "job.json", {**RUNNING, "percent": 101}),
    ("date not RFC 3339", "job.json", _job(created_at="yesterday")),
    ("date without zone", "job.json", _job(created_at="2025-01-02T03:04:05")),
    ("impossible date", "job.json", _job(created_at="2025-02-30T03:04:05Z")),
    ("unknown error code", "job.json", {**FAILED, "error": {"code": "oops", "message": "x"}}),
    ("error without message", "job.json", {**FAILED, "error": {"code": "internal"}}),
    ("unknown method", "page.json", {**PAGE, "method": "ocr"}),
    ("page zero", "page.json", {**PAGE, "number": 0}),
    ("page missing error", "page.json", {k: v for k, v in PAGE.items() if k != "error"}),
    (
        "result page without text",
        "result.json",
        {"job_id": JOB_ID, "state": "completed", "partial": False, "pages_total": 1, "pages_done": 1, "pages": [PAGE]},
    ),
    ("error not wrapped", "error.json", {"code": "internal", "message": "x"}),
    ("bad pages", "submit-options.json", {"pages": "1-"}),
    ("pages not a string", "submit-options.json", {"pages": 3}),
    ("unknown option", "submit-options.json", {"ocr": "1"}),
    ("long password", "submit-options.json", {"password": "x" * 1025}),
    ("long pages", "submit-options.json", {"pages": ",".join(["1"] * 501)}),
    ("empty batch", "job-batch.json", {"jobs": []}),
    ("list without next", "job-list.json", {"jobs": []}),
    ("health not ok", "health.json", {"status": "down", "version": "0", "queued": 0, "running": None, "streams": 0}),
    ("page event missing page", "events/page.json", {k: v for k, v in EVENTS["page"].items() if k != "page"}),
    ("page event missing page (index)", "events/index.json", {k: v for k, v in EVENTS["page"].items() if k != "page"}),
    ("unknown event type", "events/index.json", _event("paused")),
    ("event type in wrong file", "events/queued.json", {**EVENTS["queued"], "type": "position"}),
    ("started at page 0", "events/started.json", {**EVENTS["started"], "resume_from": 0}),
    ("failed without error", "events/failed.json", _event("failed", pages_done=0)),
    ("bad event time", "events/cancelled.json", {**EVENTS["cancelled"], "at": "2025-01-02"}),
    ("bad job in snapshot", "events/snapshot.json", _event("snapshot", job=_job(state="paused"))),
    ("global jobs without removed", "events/global-jobs.json", {"type": "jobs", "at": AT, "jobs": []}),
    ("global removed bad id", "events/global-jobs.json", {"type": "jobs", "jobs": [], "removed": ["x"]}),
    ("job event on global stream", "events/global-index.json", EVENTS["queued"]),
]


@pytest.mark.parametrize(("name", "instance"), VALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VALID)])
def test_valid_instances_pass(contract: Contract, name: str, instance: Any) -> None:
    contract.validate(name, instance)
    assert contract.errors(name, instance) == []


@pytest.mark.parametrize(("name", "instance"), [(n, i) for _, n, i in INVALID], ids=[r for r, _, _ in INVALID])
def test_broken_instances_fail(contract: Contract, name: str, instance: Any) -> None:
    with pytest.raises(ValidationError):
        contract.validate(name, instance)
    assert contract.errors(name, instance)


def test_every_event_type_has_a_sample() -> None:
    assert sorted(EVENTS) == _values(EventType)


def test_page_text_is_optional_in_events_and_required_in_results(contract: Contract) -> None:
    assert "text" not in contract.schema("page.json")["required"]
    contract.validate("events/page.json", EVENTS["page"])
    bad = {"job_id": JOB_ID, "state": "completed", "partial": False, "pages_total": 1, "pages_done": 1}
    with pytest.raises(ValidationError):
        contract.validate("result.json", {**bad, "pages": [PAGE]})
    contract.validate("result.json", {**bad, "pages": [PAGE_TEXT]})


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2025-01-02T03:04:05Z", True),
        ("2025-01-02t03:04:05.123456z", True),
        ("2025-01-02T03:04:05-07:30", True),
        ("2016-12-31T23:59:60Z", True),  # a leap second is RFC 3339
        ("2025-01-02 03:04:05Z", False),
        ("2025-01-02T03:04Z", False),
        ("2025-13-02T03:04:05Z", False),
        ("2025-01-02T25:04:05Z", False),
        ("2025-01-02T03:04:05+0100", False),
        ("２０２５-01-02T03:04:05Z", False),  # non-ASCII digits
    ],
)
def test_date_time_format_is_checked_without_extra_packages(contract: Contract, value: str, ok: bool) -> None:
    assert (contract.errors("events/cancelled.json", {**EVENTS["cancelled"], "at": value}) == []) is ok


def test_validators_are_cached(contract: Contract) -> None:
    assert contract.validator("job.json") is contract.validator("job.json")


def test_errors_name_the_field_and_never_echo_values(contract: Contract) -> None:
    secret = "hunter2-" * 200
    messages = contract.errors("submit-options.json", {"password": secret, "pages": "1-x", "ocr": "yes"})
    assert len(messages) == 3
    assert any(m.startswith("password:") and "1024" in m for m in messages)
    assert any(m.startswith("pages:") and "1-10,15" in m for m in messages)
    assert any("ocr" in m for m in messages)
    assert not any("hunter2" in m or "1-x" in m for m in messages)
    assert contract.errors("submit-options.json", {"password": 5}) == ["password: must be a string"]
    assert contract.errors("submit-options.json", []) == ["body: must be an object"]


# -- OpenAPI --------------------------------------------------------------------------------

ROUTES = {
    "/api/v1/jobs": {"post", "get"},
    "/api/v1/jobs/{job_id}": {"get", "delete"},
    "/api/v1/jobs/{job_id}/cancel": {"post"},
    "/api/v1/jobs/{job_id}/retry": {"post"},
    "/api/v1/jobs/{job_id}/result": {"get"},
    "/api/v1/jobs/{job_id}/events": {"get"},
    "/api/v1/events": {"get"},
    "/api/v1/session": {"get", "post", "delete"},
    "/metrics": {"get"},
    "/healthz": {"get"},
    "/schemas/{name}": {"get"},
    "/openapi.json": {"get"},
}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_openapi_header(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    assert document["jsonSchemaDialect"] == DIALECT
    assert document["info"]["version"] == "9.9.9"


def test_openapi_has_every_route(document: dict[str, Any]) -> None:
    assert {path: set(item) & METHODS for path, item in document["paths"].items()} == ROUTES


def test_openapi_describes_exactly_the_servers_routes(document: dict[str, Any]) -> None:
    from pagestream.api import routes

    served: dict[str, set[str]] = {}
    for route in routes():
        path = route.path.replace("{name:path}", "{name}")
        served.setdefault(path, set()).update(m.lower() for m in route.methods or () if m != "HEAD")
    assert {path: set(item) & METHODS for path, item in document["paths"].items()} == served


def test_openapi_statuses(document: dict[str, Any]) -> None:
    def statuses(path: str, method: str) -> set[str]:
        return set(document["paths"][path][method]["responses"])

    assert {"202", "400", "409", "413", "415", "429", "503", "507"} <= statuses("/api/v1/jobs", "post")
    assert {"200", "400"} <= statuses("/api/v1/jobs", "get")
    assert {"200", "404"} <= statuses("/api/v1/jobs/{job_id}", "get")
    assert {"204", "404", "409"} <= statuses("/api/v1/jobs/{job_id}", "delete")
    assert {"202", "404", "409"} <= statuses("/api/v1/jobs/{job_id}/cancel", "post")
    assert {"202", "404", "409"} <= statuses("/api/v1/jobs/{job_id}/retry", "post")
    assert {"200", "404", "409"} <= statuses("/api/v1/jobs/{job_id}/result", "get")
    assert {"200", "204", "404", "503"} <= statuses("/api/v1/jobs/{job_id}/events", "get")
    assert {"200", "503"} <= statuses("/api/v1/events", "get")
    assert "429" in statuses("/api/v1/jobs", "post")
    assert "Retry-After" in document["paths"]["/api/v1/jobs"]["post"]["responses"]["429"]["headers"]


def test_openapi_errors_use_the_error_schema(document: dict[str, Any]) -> None:
    for path, item in document["paths"].items():
        for method in set(item) & METHODS:
            for status, response in item[method]["responses"].items():
                if status == "default" or status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"


def test_openapi_component_names(contract: Contract, document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    expected = {
        "Job",
        "Page",
        "Result",
        "Error",
        "SubmitOptions",
        "JobList",
        "JobBatch",
        "Health",
        "Session",
        "Event",
        "GlobalEvent",
        "GlobalEventSync",
        "GlobalEventJobs",
        "ErrorDetail",
        "JobId",
        *(f"Event{t.value.capitalize()}" for t in EventType),
    }
    assert set(schemas) == expected
    assert {component_name(n) for n in NAMES} == expected - {"ErrorDetail", "JobId"}
    for body in schemas.values():
        assert not {"$id", "$schema", "$defs"} & set(body)


def test_openapi_refs_point_at_components(document: dict[str, Any]) -> None:
    refs = list(_refs(document))
    assert refs
    for path, ref in refs:
        assert ref.startswith("#/components/"), f"{path}: {ref}"
        _pointer(document, ref[1:])  # raises if it points nowhere


def test_openapi_events_cover_every_type(contract: Contract, document: dict[str, Any]) -> None:
    job_stream = document["paths"]["/api/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    events = job_stream["content"]["text/event-stream"]["x-events"]
    assert sorted(events) == _values(EventType)
    global_stream = document["paths"]["/api/v1/events"]["get"]["responses"]["200"]
    assert sorted(global_stream["content"]["text/event-stream"]["x-events"]) == _values(GlobalEventType)
    for event_type in EventType:
        assert f"`{event_type.value}`" in job_stream["description"]
    mapping = document["components"]["schemas"]["Event"]["discriminator"]["mapping"]
    assert mapping == {t.value: f"#/components/schemas/Event{t.value.capitalize()}" for t in EventType}


@pytest.mark.parametrize(("name", "instance"), VALID, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VALID)])
def test_openapi_components_mean_what_the_files_mean(
    contract: Contract, document: dict[str, Any], name: str, instance: Any
) -> None:
    # The rewritten refs must lead to the same verdicts as the files: validate through the document.
    validator = Draft202012Validator({**document, "$ref": f"#/components/schemas/{component_name(name)}"})
    validator.validate(instance)


@pytest.mark.parametrize(("name", "instance"), [(n, i) for _, n, i in INVALID], ids=[r for r, _, _ in INVALID])
def test_openapi_components_reject_what_the_files_reject(document: dict[str, Any], name: str, instance: Any) -> None:
    validator = Draft202012Validator(
        {**document, "$ref": f"#/components/schemas/{component_name(name)}"}, format_checker=FORMAT_CHECKER
    )
    assert not validator.is_valid(instance)


def test_openapi_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    try:
        import openapi_spec_validator as spec_validator
    except ImportError as exc:  # in the test extra
        unavailable(f"openapi-spec-validator is not installed: {exc}")
    spec_validator.validate(copy.deepcopy(document))
    # The validator really looks at both the routes and the component schemas.
    broken = copy.deepcopy(document)
    del broken["paths"]["/healthz"]["get"]["responses"]["200"]["description"]
    with pytest.raises(ValidationError):
        spec_validator.validate(broken)
    broken = copy.deepcopy(document)
    broken["components"]["schemas"]["Job"]["type"] = "objekt"
    with pytest.raises(ValidationError):
        spec_validator.validate(broken)


def test_openapi_is_json(document: dict[str, Any], contract: Contract) -> None:
    assert json.loads(json.dumps(document)) == document
    assert openapi(contract, "9.9.9") == document  # deterministic
