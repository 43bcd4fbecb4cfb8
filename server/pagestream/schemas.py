"""The contract: the JSON Schema files of ``shared_schemas/``, loaded once, and the OpenAPI document built on them.

:class:`Contract` is what the server (and its tests) validate against: it loads every
``*.json`` under :func:`pagestream.resources.schemas_dir`, keys it by its relative POSIX path
(``"job.json"``, ``"events/page.json"``) and resolves the files' relative ``$ref``\\ s through
an in-memory :class:`referencing.Registry` — nothing is ever fetched over the network.

:func:`openapi` turns the same files into ``components.schemas`` of an OpenAPI 3.1 document,
so ``/openapi.json`` can never drift from ``/schemas/…``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin

import jsonschema
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from . import resources
from .jobs import DocumentKind, JobState

__all__ = [
    "DIALECT",
    "FORMAT_CHECKER",
    "SCHEMA_BASE",
    "Contract",
    "component_name",
    "openapi",
]

#: Every file's ``$id`` is this plus its path relative to ``shared_schemas/``.
SCHEMA_BASE = "https://pagestream.dev/schemas/"
#: The JSON Schema dialect of every file, and the ``jsonSchemaDialect`` of the OpenAPI document.
DIALECT = "https://json-schema.org/draft/2020-12/schema"

_INDEX = "events/index.json"
_GLOBAL_INDEX = "events/global-index.json"

# -- format checking -----------------------------------------------------------------------
# jsonschema's own "date-time" check needs the optional rfc3339-validator package, which the
# server does not depend on; without it the format would silently go unchecked in production
# yet be checked wherever that package happens to be installed. One small check of our own
# makes validation behave the same everywhere. Only "date-time" is checked: it is the only
# format the contract relies on ("uri-reference" on links is documentation).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,
)
#: The format checker every validator of the contract uses: "date-time" only, no extra packages.
FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    """RFC 3339 ``date-time``: the grammar by regex, the calendar by :meth:`datetime.fromisoformat`."""
    if not isinstance(value, str):
        return True  # formats only constrain strings; "type" catches the rest
    if not _RFC3339.match(value):
        return False
    # fromisoformat knows no leap second; RFC 3339 allows second 60, so check :59 instead.
    normal = value[:17] + "59" + value[19:] if value[17:19] == "60" else value
    datetime.fromisoformat(normal.upper())  # raises ValueError for e.g. February 30th
    return True


class Contract:
    """The schemas of ``shared_schemas/``, loaded once, with validators that resolve refs offline.

    Names are paths relative to the schema folder, with forward slashes: ``"job.json"``,
    ``"events/page.json"``. Every method taking a name raises :class:`KeyError` for a name
    that is not a file of the contract — so ``raw(name)`` can back ``GET /schemas/{name}``
    without any path ever reaching the file system.
    """

    def __init__(self, root: Path | None = None) -> None:
        """Load every ``*.json`` under *root* (default: :func:`resources.schemas_dir`).

        Raises ValueError if a file's ``$id`` does not match its path: relative ``$ref``\\ s
        are resolved against ``$id``, so a wrong one would silently point elsewhere.
        """
        self.root: Path = resources.schemas_dir() if root is None else root
        self._raw: dict[str, bytes] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        for path in sorted(self.root.rglob("*.json")):
            name = path.relative_to(self.root).as_posix()
            data = path.read_bytes()
            schema = json.loads(data)
            if not isinstance(schema, dict) or schema.get("$id") != SCHEMA_BASE + name:
                raise ValueError(f"{path}: $id must be {SCHEMA_BASE + name!r}")
            self._raw[name] = data
            self._schemas[name] = schema
        #: Every file under its ``$id``; no ``retrieve`` callback, so an unknown ref fails
        #: instead of going to the network.
        self.registry: Registry[Any] = (
            Registry()
            .with_resources(
                (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
                for schema in self._schemas.values()
            )
            .crawl()
        )
        self._validators: dict[str, Draft202012Validator] = {}
        self._event_schemas = self._schemas_by_type(_INDEX)
        self._global_event_schemas = self._schemas_by_type(_GLOBAL_INDEX)

    # -- the files -------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every schema name, sorted."""
        return list(self._schemas)  # filled from a sorted walk

    def raw(self, name: str) -> bytes:
        """The file's bytes as they are on disk, to serve at ``/schemas/<name>``; KeyError if no such file."""
        return self._raw[name]

    def schema(self, name: str) -> dict[str, Any]:
        """A deep copy of the parsed schema (a copy, so a caller cannot corrupt the validators)."""
        return copy.deepcopy(self._schemas[name])

    @staticmethod
    def uri(name: str) -> str:
        """The ``$id`` a schema named *name* has."""
        return SCHEMA_BASE + name

    def name_of(self, uri: str) -> str:
        """The name of the file an absolute schema URI (fragment ignored) points at; KeyError if none."""
        url, _ = urldefrag(uri)
        if not url.startswith(SCHEMA_BASE) or url[len(SCHEMA_BASE) :] not in self._schemas:
            raise KeyError(uri)
        return url[len(SCHEMA_BASE) :]

    # -- validation ------------------------------------------------------------------------

    def validator(self, name: str) -> Draft202012Validator:
        """A validator for schema *name*, built once and reused (validators are immutable)."""
        found = self._validators.get(name)
        if found is None:
            # A race between two threads only builds the same validator twice; no lock needed.
            found = Draft202012Validator(self._schemas[name], registry=self.registry, format_checker=FORMAT_CHECKER)
            self._validators[name] = found
        return found

    def validate(self, name: str, instance: Any) -> None:
        """Raise :class:`jsonschema.ValidationError` (the most relevant one) if *instance* does not match."""
        self.validator(name).validate(instance)

    def errors(self, name: str, instance: Any) -> list[str]:
        """Every way *instance* fails schema *name*, as short human messages (empty when valid).

        Meant for the ``invalid_options`` answer: messages name the field and the rule but
        never repeat the value, because the value may be a password.
        """
        found = sorted(
            self.validator(name).iter_errors(instance),
            key=lambda e: ([str(p) for p in e.absolute_path], str(e.validator)),
        )
        return [_describe(error) for error in found]

    # -- events ----------------------------------------------------------------------------

    def event_types(self) -> list[str]:
        """The ``type`` of every per-job event, in the order of ``events/index.json``."""
        return list(self._event_schemas)

    def event_schema_for(self, type: str) -> str:
        """The schema name of per-job event *type* (``"page"`` → ``"events/page.json"``)."""
        return self._event_schemas[type]

    def global_event_types(self) -> list[str]:
        """The ``type`` of every global-stream event, in the order of ``events/global-index.json``."""
        return list(self._global_event_schemas)

    def global_event_schema_for(self, type: str) -> str:
        """The schema name of global event *type* (``"sync"`` → ``"events/global-sync.json"``)."""
        return self._global_event_schemas[type]

    def _schemas_by_type(self, index: str) -> dict[str, str]:
        """``type`` const → schema name, for the ``oneOf`` of an index file."""
        out: dict[str, str] = {}
        for branch in self._schemas[index]["oneOf"]:
            name = self.name_of(urljoin(self.uri(index), branch["$ref"]))
            out[self._schemas[name]["properties"]["type"]["const"]] = name
        return out


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _describe(error: jsonschema.ValidationError) -> str:
    """One validation error as ``"<field>: <rule>"``, without the offending value."""
    where = "/".join(str(p) for p in error.absolute_path)
    rule: Any = error.validator_value  # its type depends on the keyword
    text: str
    match error.validator:
        case "required" | "additionalProperties" | "dependentRequired":
            # jsonschema's messages name properties, never values: keep them.
            return f"{where}: {error.message}" if where else error.message
        case "type":
            kinds = rule if isinstance(rule, list) else [rule]
            text = "must be " + " or ".join(k if k == "null" else f"{_article(str(k))} {k}" for k in kinds)
        case "maxLength":
            text = f"must be at most {rule} characters long"
        case "minLength":
            text = f"must be at least {rule} characters long"
        case "pattern":
            examples = error.schema.get("examples") if isinstance(error.schema, Mapping) else None
            text = "is malformed"
            if examples:
                text += f" (expected something like {examples[0]})"
        case "enum":
            text = "must be one of " + ", ".join(str(v) for v in rule)
        case "const":
            text = f"must be {rule}"
        case "minimum" | "exclusiveMinimum" | "maximum" | "exclusiveMaximum":
            sign = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
            text = f"must be {sign[str(error.validator)]} {rule}"
        case "format":
            text = f"must be a valid {rule}"
        case _:
            text = f"does not satisfy {error.validator}"
    return f"{where or 'body'}: {text}"


# -- OpenAPI -------------------------------------------------------------------------------


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_/ ]+", text) if part)


def component_name(name: str) -> str:
    """The ``components.schemas`` key of schema *name*.

    ``job.json`` → ``Job``, ``submit-options.json`` → ``SubmitOptions``,
    ``events/page.json`` → ``EventPage``, ``events/index.json`` → ``Event``,
    ``events/global-sync.json`` → ``GlobalEventSync``, ``events/global-index.json`` → ``GlobalEvent``.
    """
    stem = name.removesuffix(".json")
    folder, _, leaf = stem.rpartition("/")
    if folder == "events":
        prefix = "Event"
        if leaf.startswith("global-"):
            prefix, leaf = "GlobalEvent", leaf.removeprefix("global-")
        return prefix + ("" if leaf == "index" else _camel(leaf))
    return _camel(folder) + _camel(leaf)


def _def_component_name(name: str, key: str) -> str:
    """A ``$defs`` entry becomes a component of its own: ``error.json#/$defs/detail`` → ``ErrorDetail``."""
    return component_name(name) + _camel(key)


def _ref(component: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{component}"}


def _rewrite_refs(node: Any, base: str, contract: Contract) -> Any:
    """Copy *node* with every ``$ref`` (relative to *base*) pointing into ``#/components/schemas``."""
    if isinstance(node, list):
        return [_rewrite_refs(item, base, contract) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            target, fragment = urldefrag(urljoin(base, value))
            name = contract.name_of(target)
            match = re.fullmatch(r"/\$defs/([^/]+)(/.*)?", fragment)
            if match:  # $defs are hoisted into components of their own (see _components)
                out[key] = _ref(_def_component_name(name, match.group(1)))["$ref"] + (match.group(2) or "")
            else:
                # A pointer elsewhere inside a file stays a pointer, now into its component.
                out[key] = _ref(component_name(name))["$ref"] + fragment
        else:
            out[key] = _rewrite_refs(value, base, contract)
    return out


def _components(contract: Contract) -> dict[str, Any]:
    """``components.schemas``: every file, and every ``$defs`` entry hoisted to a component of its own."""
    out: dict[str, Any] = {}

    def add(key: str, schema: Any) -> None:
        if key in out:  # two files whose names camel-case alike would silently overwrite
            raise ValueError(f"two schemas map to the component name {key!r}")
        out[key] = schema

    for name in contract.names():
        schema = contract.schema(name)
        base = schema.pop("$id")
        schema.pop("$schema", None)  # the document's jsonSchemaDialect says it once
        defs = schema.pop("$defs", {})
        body = _rewrite_refs(schema, base, contract)
        if name in (_INDEX, _GLOBAL_INDEX):
            # OpenAPI tooling picks the branch of a oneOf by this; plain JSON Schema does not need it.
            types = contract.event_types() if name == _INDEX else contract.global_event_types()
            schema_for = contract.event_schema_for if name == _INDEX else contract.global_event_schema_for
            body["discriminator"] = {
                "propertyName": "type",
                "mapping": {t: _ref(component_name(schema_for(t)))["$ref"] for t in types},
            }
        add(component_name(name), body)
        for key, sub in defs.items():
            add(_def_component_name(name, key), _rewrite_refs(sub, base, contract))
    return out


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _ok(description: str, schema: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _json(schema), **extra}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    """An error answer: always the Error schema, whatever the status."""
    return {"description": description, "content": _json(_ref("Error")), **extra}


def _errors(statuses: Iterable[tuple[int, str]]) -> dict[str, Any]:
    """The error responses of one operation, plus ``default`` for anything unforeseen (500 and the like)."""
    out: dict[str, Any] = {}
    for status, description in statuses:
        if status == 429:
            out[str(status)] = _error(description, headers={"Retry-After": {"$ref": "#/components/headers/RetryAfter"}})
        else:
            out[str(status)] = _error(description)
    out["default"] = _error("Any other error (500 internal, 405 method_not_allowed, …), in the same shape.")
    return out


def _flag(description: str) -> dict[str, Any]:
    """A 0/1 query switch."""
    return {
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "enum": [0, 1], "default": 0},
    }


_RAW_TYPES = (
    "application/pdf",
    "application/epub+zip",
    "text/plain",
    "text/markdown",
    "text/html",
    "application/octet-stream",
)


def _submit(contract: Contract) -> dict[str, Any]:
    options = contract.schema("submit-options.json")["properties"]
    form_fields = {
        "file": {
            "description": "The document(s): one part per file, all named file. "
            "Each part's filename is kept as the job's filename.",
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "contentMediaType": "application/octet-stream"},
        },
        **options,
    }
    option_params = [
        {
            "name": key,
            "in": "query",
            "required": False,
            "description": schema["description"] + " Also accepted as a multipart field.",
            "schema": {k: v for k, v in schema.items() if k != "description"},
        }
        for key, schema in options.items()
    ]
    return {
        "tags": ["jobs"],
        "operationId": "submitJobs",
        "summary": "Submit one or more documents",
        "description": (
            "Either a multipart/form-data body with one or more `file` parts (and optional `password` "
            "and `pages` fields), or the raw document as the body with its name in `?filename=`. "
            "The document's kind is sniffed from its bytes; the Content-Type of a part or body is only "
            "a hint. Submit options may also be query parameters; they are checked against the "
            "SubmitOptions schema (400 invalid_options). A query string may end up in access logs: "
            "prefer the form field for a password."
        ),
        "parameters": [
            {
                "name": "filename",
                "in": "query",
                "required": False,
                "description": "Name of the document when it is sent as a raw body.",
                "schema": {"type": "string", "maxLength": 1000},
            },
            *option_params,
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "A repeat of a submission with the same key and the same upload answers the "
                "original job(s) instead of creating new ones; the same key with a different upload is a "
                "409 idempotency_conflict.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["file"], "properties": form_fields},
                    "encoding": {"file": {"contentType": ", ".join(_RAW_TYPES)}},
                },
                **{media_type: {} for media_type in _RAW_TYPES},
            },
        },
        "responses": {
            "202": {
                "description": "Accepted into the queue. A single file answers its Job (with a Location "
                "header); a multipart request with several files answers a JobBatch.",
                "headers": {"Location": {"$ref": "#/components/headers/Location"}},
                "content": _json({"oneOf": [_ref("Job"), _ref("JobBatch")]}),
            },
            **_errors(
                [
                    (400, "bad_request (malformed body or parameter), invalid_options, or empty_upload."),
                    (409, "idempotency_conflict: the Idempotency-Key was used with a different upload."),
                    (413, "too_large: the upload is over max_upload_mb."),
                    (415, "unsupported_type: the bytes are no supported document."),
                    (429, "queue_full: the queue holds max_queued_jobs; try again after Retry-After seconds."),
                    (503, "unavailable: the server is stopping or its store cannot be written."),
                    (507, "insufficient_storage: the disk is full."),
                ]
            ),
        },
    }


def _sse_description(contract: Contract, global_stream: bool) -> str:
    if global_stream:
        lines = [
            (
                "A Server-Sent Events stream of job states for a dashboard. It opens with a `sync` frame "
                "(every job), then sends `jobs` frames (the jobs that changed, coalesced, and the ids removed) "
                "at a bounded rate. Each frame's `data:` is one JSON object whose `type` names its schema:"
            ),
        ]
        types = [(t, contract.global_event_schema_for(t)) for t in contract.global_event_types()]
    else:
        lines = [
            (
                "A Server-Sent Events stream of one job's events, lossless and in order. It opens with a "
                "`snapshot` (no SSE id), replays the events after `Last-Event-ID` (or `?after=`; the header "
                "wins, as a browser sends it on reconnect), then follows live events, and ends after the "
                "terminal event (`completed`, `failed` or `cancelled`). Event ids are 1, 2, 3, … per job. "
                "Each frame's `data:` is one JSON object whose `type` names its schema:"
            ),
        ]
        types = [(t, contract.event_schema_for(t)) for t in contract.event_types()]
    lines += [f"- `{t}`: {component_name(name)} (`/schemas/{name}`)" for t, name in types]
    return "\n".join(lines)


def _sse_response(contract: Contract, global_stream: bool) -> dict[str, Any]:
    index = _GLOBAL_INDEX if global_stream else _INDEX
    types = contract.global_event_types() if global_stream else contract.event_types()
    schema_for = contract.global_event_schema_for if global_stream else contract.event_schema_for
    return {
        "description": _sse_description(contract, global_stream),
        "content": {
            "text/event-stream": {
                "schema": {"type": "string", "description": "SSE frames; see x-events for each data payload."},
                # OpenAPI 3.1 cannot describe the items of a stream; these extensions can.
                "x-event-schema": _ref(component_name(index)),
                "x-events": {t: _ref(component_name(schema_for(t))) for t in types},
            }
        },
    }


def openapi(contract: Contract, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API, its schemas taken from *contract*.

    *version* is the server's version (``info.version``). The result is plain JSON data,
    built fresh on each call; the server builds it once and serves the bytes.
    """
    job_id_param = {"$ref": "#/components/parameters/JobId"}
    not_found = (404, "not_found: no such job.")
    paths: dict[str, Any] = {
        "/api/v1/jobs": {
            "post": _submit(contract),
            "get": {
                "tags": ["jobs"],
                "operationId": "listJobs",
                "summary": "List jobs, a page at a time",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs in these states, comma-separated (e.g. queued,running).",
                        "style": "form",
                        "explode": False,
                        "schema": {"type": "array", "items": {"enum": [s.value for s in JobState]}},
                    },
                    {
                        "name": "order",
                        "in": "query",
                        "required": False,
                        "description": "newest (highest seq first) or oldest (FIFO order).",
                        "schema": {"enum": ["newest", "oldest"], "default": "newest"},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "Most jobs in one page.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "description": "The `next` of the previous page.",
                        "schema": {"type": "string", "pattern": "^[0-9]{0,18}$"},
                    },
                ],
                "responses": {
                    "200": _ok("One page of jobs.", _ref("JobList")),
                    **_errors([(400, "bad_request: a malformed parameter or cursor.")]),
                },
            },
        },
        "/api/v1/jobs/{job_id}": {
            "parameters": [job_id_param],
            "get": {
                "tags": ["jobs"],
                "operationId": "getJob",
                "summary": "A job's status",
                "responses": {"200": _ok("The job.", _ref("Job")), **_errors([not_found])},
            },
            "delete": {
                "tags": ["jobs"],
                "operationId": "deleteJob",
                "summary": "Delete a finished job, its pages and its events",
                "responses": {
                    "204": {"description": "Deleted."},
                    **_errors([not_found, (409, "conflict: the job has not finished; cancel it first.")]),
                },
            },
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "parameters": [job_id_param],
            "post": {
                "tags": ["jobs"],
                "operationId": "cancelJob",
                "summary": "Cancel a queued or running job",
                "description": "A queued job is cancelled at once; a running one at the next page boundary "
                "(`cancel_requested` is true until then). Pages done are kept.",
                "responses": {
                    "202": _ok("The cancel was accepted; the job as it is now.", _ref("Job")),
                    **_errors([not_found, (409, "conflict: the job has already finished.")]),
                },
            },
        },
        "/api/v1/jobs/{job_id}/retry": {
            "parameters": [job_id_param],
            "post": {
                "tags": ["jobs"],
                "operationId": "retryJob",
                "summary": "Queue a failed or cancelled job again",
                "responses": {
                    "202": _ok("Queued again; the job as it is now.", _ref("Job")),
                    **_errors(
                        [
                            not_found,
                            (409, "conflict: the job is neither failed nor cancelled."),
                            (429, "queue_full: the queue holds max_queued_jobs."),
                            (503, "unavailable: the server is stopping or its store cannot be written."),
                        ]
                    ),
                },
            },
        },
        "/api/v1/jobs/{job_id}/result": {
            "parameters": [job_id_param],
            "get": {
                "tags": ["jobs"],
                "operationId": "getResult",
                "summary": "The extracted text",
                "parameters": [
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "description": "json (a Result), text (the pages' plain text, in page order) "
                        "or ndjson (one Page with its text per line).",
                        "schema": {"enum": ["json", "text", "ndjson"], "default": "json"},
                    },
                    {"name": "partial", **_flag("1: answer the pages done so far even if the job has not completed.")},
                ],
                "responses": {
                    "200": {
                        "description": "The result in the format asked for.",
                        "content": {
                            "application/json": {"schema": _ref("Result")},
                            "text/plain": {"schema": {"type": "string"}},
                            "application/x-ndjson": {
                                "schema": {"type": "string", "description": "One JSON Page (with text) per line."},
                                # Like OpenAPI 3.2's itemSchema: the schema of each line.
                                "x-item-schema": {"allOf": [_ref("Page")], "required": ["text"]},
                            },
                        },
                    },
                    **_errors(
                        [
                            (400, "bad_request: a malformed parameter."),
                            not_found,
                            (409, "not_finished: the job has not completed and partial=1 was not given."),
                        ]
                    ),
                },
            },
        },
        "/api/v1/jobs/{job_id}/events": {
            "parameters": [job_id_param],
            "get": {
                "tags": ["events"],
                "operationId": "streamJobEvents",
                "summary": "Follow one job's events (Server-Sent Events)",
                "parameters": [
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "Replay the events with an id above this (for a first connection, "
                        "which carries no Last-Event-ID).",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
                    },
                    {"name": "text", **_flag("1: page events carry the page's text.")},
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "description": "The id of the last event seen; sent by a browser on reconnect.",
                        "schema": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807},
                    },
                ],
                "responses": {
                    "200": _sse_response(contract, global_stream=False),
                    "204": {"description": "The client has already seen the terminal event: nothing more to send."},
                    **_errors(
                        [
                            (400, "bad_request: a malformed parameter or Last-Event-ID."),
                            not_found,
                            (503, "too_many_streams or unavailable."),
                        ]
                    ),
                },
            },
        },
        "/api/v1/events": {
            "get": {
                "tags": ["events"],
                "operationId": "streamEvents",
                "summary": "Follow every job's state (Server-Sent Events)",
                "responses": {
                    "200": _sse_response(contract, global_stream=True),
                    **_errors([(503, "too_many_streams or unavailable.")]),
                },
            },
        },
        "/api/v1/session": {
            "get": {
                "tags": ["session"],
                "operationId": "getSession",
                "summary": "Whether keys are on, and who is signed in",
                "responses": {"200": _ok("The session.", _ref("Session")), **_errors([])},
            },
            "post": {
                "tags": ["session"],
                "operationId": "signIn",
                "summary": "Trade an API key for an HttpOnly, SameSite=Strict session cookie",
                "requestBody": {"required": True, "content": _json({
                    "type": "object", "required": ["key"], "properties": {"key": {"type": "string"}},
                })},
                "responses": {"200": _ok("Signed in (or keys are off).", _ref("Session")),
                              **_errors([(400, "No key in the body."), (401, "The key is not valid.")])},
            },
            "delete": {
                "tags": ["session"],
                "operationId": "signOut",
                "summary": "Forget the session cookie",
                "responses": {"204": {"description": "Signed out."}, **_errors([])},
            },
        },
        "/metrics": {
            "get": {
                "tags": ["meta"],
                "operationId": "metrics",
                "summary": "Prometheus metrics (admin keys only when keys are on)",
                "responses": {
                    "200": {"description": "The metrics, in Prometheus's text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    **_errors([(401, "No valid key."), (403, "Not an admin key.")]),
                },
            },
        },
        "/healthz": {
            "get": {
                "tags": ["meta"],
                "operationId": "health",
                "summary": "Liveness and load",
                "responses": {"200": _ok("The server is up.", _ref("Health")), **_errors([])},
            },
        },
        "/schemas/{name}": {
            "get": {
                "tags": ["meta"],
                "operationId": "getSchema",
                "summary": "One JSON Schema file of the contract",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "description": "The file's path under /schemas/; it may contain a slash (events/page.json).",
                        "schema": {"enum": contract.names()},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The schema file, byte for byte.",
                        "content": {
                            "application/schema+json": {"schema": {"type": "object"}},
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    **_errors([(404, "not_found: no such schema.")]),
                },
            },
        },
        "/openapi.json": {
            "get": {
                "tags": ["meta"],
                "operationId": "getOpenapi",
                "summary": "This document",
                "responses": {"200": _ok("The OpenAPI 3.1 document.", {"type": "object"}), **_errors([])},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": DIALECT,
        "info": {
            "title": "pagestream",
            "version": version,
            "summary": "A self-hosted document job server.",
            "description": (
                "Upload PDFs, EPUBs, plain text, Markdown and HTML; one worker extracts them first-in "
                "first-out, page by page, and every finished page is an event on a Server-Sent Events "
                'stream. Every error answers `{"error": {"code", "message"}}`. Supported kinds: '
                + ", ".join(k.value for k in DocumentKind)
                + ". The JSON Schema files behind these components are served at /schemas/."
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "jobs", "description": "Submit, inspect, cancel, retry and delete jobs; read results."},
            {"name": "events", "description": "Server-Sent Events streams."},
            {"name": "meta", "description": "Health, the schemas and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": _components(contract),
            "parameters": {
                "JobId": {
                    "name": "job_id",
                    "in": "path",
                    "required": True,
                    "description": "The job's id.",
                    "schema": _ref("JobId"),
                }
            },
            "headers": {
                "Location": {"description": "The new job's URL.", "schema": {"type": "string"}},
                "RetryAfter": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer", "minimum": 0},
                },
            },
        },
    }
