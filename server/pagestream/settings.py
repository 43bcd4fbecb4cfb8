"""Every setting of the server, in one typed place.

Each setting has a default, an environment variable (``PAGESTREAM_`` + its name in upper
case) and a line of help; the README's settings table is checked against this module by a
test, and ``pagestream serve --help`` shows the same help.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "PAGESTREAM_"


def _setting(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """The server's configuration. Build it with :meth:`from_env` and override with ``replace``."""

    data_dir: str = _setting("./pagestream-data", "Folder for the SQLite database and the spool of uploaded files.")
    db: str = _setting("", "Store URL: sqlite:///path/to.db. Empty means sqlite:///<data_dir>/pagestream.db.")
    host: str = _setting("127.0.0.1", "Address to listen on.")
    port: int = _setting(8000, "Port to listen on.")
    forwarded_allow_ips: str = _setting("127.0.0.1,::1", "Proxies whose X-Forwarded-For and X-Forwarded-Proto are "
                                                         "believed (comma separated; * for any).")
    api_keys: str = _setting("", "API keys as KEY:OWNER[:ROLE] items (role user or admin), comma separated. "
                                 "Empty, with no keys file, turns keys off.")
    api_keys_file: str = _setting("", "A file of API keys, one KEY:OWNER[:ROLE] a line (# starts a comment).")
    allow_open: bool = _setting(False, "Allow listening beyond loopback without API keys: anyone who reaches "
                                       "the port can see and do everything.")
    session_hours: float = _setting(12.0, "How long a browser's sign-in cookie lasts.")
    max_upload_mb: float = _setting(200.0, "Largest accepted upload, in MiB; a larger body is refused with 413.")
    max_files_per_request: int = _setting(100, "Most files one multipart request may carry.")
    max_queued_jobs: int = _setting(10000, "Most jobs waiting in the queue; past it a submission gets 429.")
    max_queued_per_caller: int = _setting(1000, "Most queued jobs of one owner; past it their submission gets 429.")
    max_pages: int = _setting(20000, "Most pages one job may have; a larger document fails with too_many_pages.")
    page_timeout: float = _setting(60.0, "Seconds one page may take before the job fails with page_timeout.")
    job_timeout: float = _setting(3600.0, "Seconds one job may run in all before it fails with job_timeout.")
    child_memory_mb: int = _setting(2048, "Address-space limit of the extraction child, in MiB (memory_limit).")
    child_nice: int = _setting(5, "How much lower the extraction child's CPU priority is than the server's (Unix "
                                   "nice, 0-19): when both want a CPU, the event loop that serves every stream and "
                                   "request goes first. 0 makes them equal.")
    max_attempts: int = _setting(3, "Runs of a job interrupted by a crash or restart before it fails.")
    cancel_grace: float = _setting(2.0, "Seconds a cancelled job's child may take to reach a page boundary.")
    text_page_chars: int = _setting(4000, "Characters per page for plain text and Markdown without form feeds.")
    max_page_chars: int = _setting(2_000_000, "Most characters of one page's text; a longer page is cut there, "
                                              "with a page error saying so.")
    epub_max_uncompressed_mb: int = _setting(512, "Largest total uncompressed size of an EPUB, in MiB.")
    epub_max_entries: int = _setting(10000, "Most entries an EPUB archive may have.")
    heartbeat: float = _setting(15.0, "Seconds between SSE heartbeat comments on an idle stream.")
    retry_ms: int = _setting(2000, "Base of the SSE retry: hint in ms; each stream adds up to the same again.")
    stream_pace_ms: float = _setting(5.0, "While events are dense, a stream writes at most once per this many ms "
                                    "(and the worker reads the extraction child's pages no more often).")
    global_interval_ms: float = _setting(250.0, "The global stream sends coalesced job states at most this often.")
    max_streams: int = _setting(10000, "Most open event streams in one process; past it a stream gets 503.")
    max_streams_per_caller: int = _setting(100, "Most open event streams of one owner (or one address without "
                                                "keys); past it a stream gets 429.")
    max_stream_age: float = _setting(1800.0, "Seconds after which a stream is closed; the client reconnects "
                                             "and resumes where it was.")
    send_timeout: float = _setting(30.0, "Seconds a write to a stream may wait for a client that stopped "
                                         "reading before the stream is closed.")
    retention_hours: float = _setting(168.0, "Finished jobs, their pages, events and files are removed this "
                                             "long after they finish; 0 keeps them.")
    webhook_hosts: str = _setting("", "Hosts a job's callback_url may name (host or host:port, comma separated); "
                                      "empty refuses every callback_url.")
    webhook_secret: str = _setting("", "The HMAC-SHA256 key that signs webhooks; needed when webhook_hosts is set.")
    webhook_timeout: float = _setting(10.0, "Seconds one webhook delivery attempt may take.")
    webhook_backoff: float = _setting(1.0, "Seconds before the first retry of a failed webhook; doubled each time, "
                                           "at most 5 minutes.")
    webhook_retry_for: float = _setting(3600.0, "Seconds during which a failing webhook is retried before it is "
                                                "given up.")
    ring_size: int = _setting(1024, "Recent encoded events kept in memory per job for live delivery.")
    shutdown_grace: float = _setting(5.0, "Seconds open streams get to close when the server stops.")
    log_level: str = _setting("info", "Log level: debug, info, warning or error.")
    log_format: str = _setting("auto", "Log lines as json (one object a line), text, or auto: text at a terminal, "
                                       "else JSON.")

    @property
    def store_url(self) -> str:
        return self.db or f"sqlite:///{Path(self.data_dir) / 'pagestream.db'}"

    @property
    def spool_dir(self) -> Path:
        return Path(self.data_dir) / "spool"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``PAGESTREAM_*`` variables, then explicit overrides (None is ignored)."""
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind: type[Any] = type(f.default)
    if kind is bool:
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not true or false")
        return raw.lower() in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def settings_table() -> list[tuple[str, str, Any, str]]:
    """(name, environment variable, default, help) for every setting, in declaration order."""
    return [
        (f.name, ENV_PREFIX + f.name.upper(), f.default, f.metadata["help"]) for f in dataclasses.fields(Settings)
    ]


def settings_markdown() -> str:
    """The README's settings table, made from the code (a test checks that the README holds it)."""
    rows = ["| Setting | Environment variable | Default | What it does |", "|---|---|---|---|"]
    for name, env, default, help_text in settings_table():
        shown = f"`{default}`" if default != "" else "(empty)"
        rows.append(f"| `--{name.replace('_', '-')}` | `{env}` | {shown} | {help_text} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
