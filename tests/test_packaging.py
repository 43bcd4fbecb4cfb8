"""A wheel installed into a fresh virtual environment is a working server that finds its UI and contract."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from .server import ROOT, free_port

pytestmark = pytest.mark.slow


def test_the_wheel_installs_into_a_fresh_venv_and_serves_schemas_and_ui(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
                   check=True, timeout=300)
    wheel = next(dist.glob("pagestream-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=600)
    port = free_port()
    # Run from an empty folder, so nothing can be found through the source tree.
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    server = subprocess.Popen([str(venv / "bin" / "pagestream"), "serve", "--port", str(port),
                               "--data-dir", str(tmp_path / "data")], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        schema = httpx.get(url + "/schemas/job.json")
        assert schema.status_code == 200 and schema.json()["$id"].endswith("/schemas/job.json")
        assert httpx.get(url + "/").status_code == 200
        assert "/api/v1/jobs" in httpx.get(url + "/openapi.json").json()["paths"]
        location = subprocess.run([str(venv / "bin" / "python"), "-c",
                                   "import pagestream.resources as r; print(r.schemas_dir())"],
                                  capture_output=True, text=True, cwd=workdir, check=True).stdout
        assert "site-packages" in location
    finally:
        server.kill()
        server.wait()
        if server.stdout:
            server.stdout.close()
