"""A real nginx on loopback in front of a pagestream server, configured with the README's snippet.

The snippet under test is the ```nginx block of the README's "Behind a reverse proxy" section;
until the README has that section, it is :data:`SNIPPET` below (the text proposed for it). So
the block people copy from the README is the block the tests run, once it is there.

:class:`Nginx` runs ``nginx -g 'daemon off;'`` with its own prefix, configuration, pid file,
logs and temp folders in a temporary folder; the snippet goes into the ``http {}`` block with
its ``listen`` and upstream ``server`` lines pointed at free loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .server import ROOT, child_processes, free_port

README_SECTION = "Behind a reverse proxy"

# The proposed README text, until the README has it: then the README's block is the one used,
# and this constant may go.
SNIPPET = """\
# In the http {} block, e.g. /etc/nginx/conf.d/pagestream.conf
upstream pagestream {
    server 127.0.0.1:8000;   # pagestream serve; one line per API replica
    keepalive 16;            # reuse connections to pagestream (with the two (1) lines below)
    keepalive_timeout 4s;    # shorter than pagestream's own 5 s, so nginx never reuses one it closes
}

server {
    listen 80;
    server_name pagestream.example.org;

    # Uploads: pagestream's limit is --max-upload-mb (200 MiB) per file. A little above it,
    # so that a file too large gets pagestream's JSON 413, not nginx's HTML page; raise it
    # if browsers send several large files in one request.
    client_max_body_size 201m;
    # Hand the upload on as it arrives: no temporary copy on the proxy.
    proxy_request_buffering off;

    location / {
        proxy_pass http://pagestream;
        proxy_http_version 1.1;             # (1) keep-alive to pagestream, chunked streams
        proxy_set_header Connection "";     # (1) and the client's Connection header not passed on
        proxy_set_header Host $http_host;   # with the port: a signed-in browser's Origin must match it
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;   # one id in nginx's and pagestream's logs

        # Server-Sent Events: each event is passed on the moment pagestream writes it (its
        # streams also send X-Accel-Buffering: no), and an idle stream, which gets a heartbeat
        # every 15 s (--heartbeat), is not cut; pagestream ends it after --max-stream-age.
        proxy_buffering off;
        proxy_cache off;
        proxy_read_timeout 1h;
    }
}
"""


def readme_section(readme: str, title: str) -> str | None:
    """The body of the README's ``## title`` section (to the next ``## `` or the end), if any."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n(.*?)(?=^## |\Z)", readme, re.S | re.M)
    return match.group(1) if match else None


def readme_snippet() -> str | None:
    """The ```nginx block of the README's proxy section; None while the README has no such section."""
    section = readme_section((ROOT / "README.md").read_text(), README_SECTION)
    if section is None:
        return None
    blocks = re.findall(r"^```nginx[ \t]*\n(.*?)^```", section, re.S | re.M)
    assert len(blocks) == 1, f"the README's {README_SECTION!r} section should have one ```nginx block"
    return str(blocks[0])


def snippet() -> str:
    """The snippet the tests run: the README's once it has one, else :data:`SNIPPET`."""
    return readme_snippet() or SNIPPET


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def point_at(text: str, listen_port: int, upstream_port: int) -> str:
    """The snippet listening on 127.0.0.1:listen_port, in front of 127.0.0.1:upstream_port.

    Exactly one ``listen`` and one upstream ``server 127.0.0.1:8000`` line are expected, so a
    snippet rewritten in some other shape fails loudly here rather than testing something else.
    """
    text, listens = re.subn(r"^(\s*)listen\s+[^;]+;", rf"\g<1>listen 127.0.0.1:{listen_port};", text, flags=re.M)
    assert listens == 1, f"expected one listen line in the snippet, found {listens}"
    text, servers = re.subn(r"^(\s*)server\s+(?:127\.0\.0\.1|localhost):8000\b",
                            rf"\g<1>server 127.0.0.1:{upstream_port}", text, flags=re.M)
    assert servers == 1, f"expected one upstream 'server 127.0.0.1:8000' line in the snippet, found {servers}"
    return text


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Nginx:
    """nginx on 127.0.0.1:``port`` with ``snippet`` in its http {} block, pointed at ``upstream_port``."""

    prefix: Path
    snippet: str
    upstream_port: int
    port: int = field(default_factory=free_port)
    binary: str | None = field(default_factory=find_nginx)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def config(self) -> str:
        p = self.prefix
        # As root, nginx's workers would otherwise run as nobody, who cannot enter pytest's
        # private (0700) temporary folders; as anyone else, 'user' is ignored with a warning.
        user = "user root;\n" if os.geteuid() == 0 else ""
        return (
            f"{user}worker_processes 1;\n"
            f"pid {p}/nginx.pid;\n"
            f"error_log {p}/error.log info;\n"
            "events { worker_connections 256; }\n"
            "http {\n"
            f"    access_log {p}/access.log;\n"
            f"    client_body_temp_path {p}/client_body;\n"
            f"    proxy_temp_path {p}/proxy;\n"
            f"    fastcgi_temp_path {p}/fastcgi;\n"
            f"    uwsgi_temp_path {p}/uwsgi;\n"
            f"    scgi_temp_path {p}/scgi;\n"
            f"{point_at(self.snippet, self.port, self.upstream_port)}\n"
            "}\n"
        )

    def command(self, *extra: str) -> list[str]:
        assert self.binary, "nginx is not installed"
        return [self.binary, "-p", f"{self.prefix}/", "-c", str(self.conf), "-e", "stderr", *extra]

    def start(self, timeout: float = 15) -> Nginx:
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config())
        check = subprocess.run(self.command("-t", "-q"), capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}\n{self.config()}"
        with open(self.prefix / "nginx.out", "ab") as out:
            self.process = subprocess.Popen(self.command("-g", "daemon off;"), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nginx did not listen within {timeout} s:\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        parts = [path.read_text(errors="replace")[-5000:] for path in (self.prefix / "nginx.out", self.error_log)
                 if path.exists()]
        return "\n".join(parts)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM) of the master and its worker; SIGKILL if it lingers."""
        if self.process is None:
            return
        workers = child_processes(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in workers:  # gone already after a clean exit; an orphan after a kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
