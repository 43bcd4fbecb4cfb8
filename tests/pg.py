"""A throwaway PostgreSQL cluster in a temporary folder, for the tests of the shared store.

It runs Debian's PostgreSQL binaries (``tests/run`` installs them when missing) as the
``postgres`` user when the tests run as root — the server refuses to run as root — and on
a free port on loopback, with fsync off: it is thrown away with the test session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .corpus import unavailable
from .server import free_port


def _binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    postgres = shutil.which("postgres")
    return Path(postgres).parent if postgres else None


@dataclass
class Cluster:
    bin: Path
    folder: Path
    port: int

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync",
                  "-E", "UTF8")
        self.start()

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop and start the server, cutting every connection (immediate mode: like a crash)."""
        self.stop("immediate")
        time.sleep(0.5)
        self.start()

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def start_cluster() -> Cluster:
    binaries = _binaries()
    if binaries is None:
        message = "PostgreSQL is not installed (tests/run installs Debian's postgresql when run as root)"
        unavailable(message)
    folder = Path(tempfile.mkdtemp(prefix="pagestream-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
    cluster = Cluster(binaries, folder, free_port())
    cluster.init()
    return cluster
