"""The README's "Use it from Python" and "Use it from the shell" sections run as written.

Each Python block is a script of its own; the shell blocks run one after the other in one
shell, as a person would type them. The URL in them is replaced by the test server's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .docs import make_pdf
from .server import ROOT, Server
from .test_readme import section, shell_blocks

README_URL = "http://127.0.0.1:8000"
SLOW_PAGES = {"PAGESTREAM_FAULT_PAGE_DELAY": "0.25"}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with the README's documents, and ``pagestream`` on the PATH of the scripts run in it."""
    (tmp_path / "document.pdf").write_bytes(make_pdf([f"readme page {i}" for i in range(1, 11)]))
    (tmp_path / "notes.md").write_text("# Notes\n\nsome *markdown*\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "pagestream"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pagestream "$@"\n')
    shim.chmod(0o755)
    return tmp_path


def _env(workdir: Path) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT / "server"), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k not in ("PAGESTREAM_URL", "PAGESTREAM_API_KEY")}
    return {**env, "PYTHONPATH": path, "PATH": f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


def _python(block: str, server: Server, workdir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", block.replace(README_URL, server.url)], cwd=workdir,
                            env=_env(workdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_every_python_example_runs(server: Server, workdir: Path) -> None:
    blocks = python_blocks(section("Use it from Python"))
    assert len(blocks) == 3 and all(README_URL in block for block in blocks)
    outputs = []
    for block in blocks:
        process = _python(block, server, workdir)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    streamed, waited, async_streamed = outputs
    assert re.findall(r"^--- page (\d+) of 10$", streamed, re.M) == [str(i) for i in range(1, 11)]
    assert "readme page 7" in streamed
    assert "completed 2 pages in" in waited and "readme page 1" in waited
    assert "404 not_found there is no job 0000000000000000" in waited
    lines = async_streamed.split()
    assert lines[0] == "snapshot" and lines[-1] == "completed" and lines.count("page") == 10


def test_the_shell_examples_run_in_one_shell(make_server: Callable[..., Server], workdir: Path) -> None:
    server = make_server(env=SLOW_PAGES)  # slow enough that a job submitted second is still queued when cancelled
    text = section("Use it from the shell")
    script = "\n".join(shell_blocks(text)).replace(README_URL, server.url)
    assert script.count(server.url) == 1
    run = subprocess.run(["bash", "-eu", "-o", "pipefail", "-c", script], cwd=workdir, env=_env(workdir),
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"^[0-9a-f]{16} completed 10/10 pages in ", out, re.M), out  # watch, into a pipe
    assert re.search(r"^state +completed, 10/10 pages$", out, re.M)  # status
    assert (workdir / "document.txt").read_text().split("\f")[2].strip() == "readme page 3"  # result -o
    assert re.search(r"^10$", out, re.M)  # the page events counted in the --json output
    assert "watch exited with 3" in out  # cancelled
    assert out.rstrip().endswith("removed") and "\ncompleted\n" in out
    assert "Traceback" not in run.stderr
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |"):
        assert code in text


def test_the_first_python_example_prints_every_page_once_across_a_server_restart(
        make_server: Callable[..., Server], workdir: Path) -> None:
    server = make_server(env=SLOW_PAGES)
    (workdir / "document.pdf").write_bytes(make_pdf([f"restart page {i}" for i in range(1, 31)]))
    process = _python(python_blocks(section("Use it from Python"))[0], server, workdir)
    try:
        with server.client() as client:
            deadline = time.monotonic() + 60
            while not any(job["pages_done"] >= 10 for job in client.get("/api/v1/jobs").json()["jobs"]):
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.02)
        server.kill()
        time.sleep(1)
        server.start()
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert re.findall(r"^--- page (\d+) of 30$", out, re.M) == [str(i) for i in range(1, 31)]
    assert re.findall(r"^restart page (\d+)$", out, re.M) == [str(i) for i in range(1, 31)]
