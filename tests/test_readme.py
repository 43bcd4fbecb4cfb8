"""The README says what the code does: its curl walkthrough runs as written, its settings table is the code's."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pagestream.settings import settings_markdown

from .docs import make_pdf
from .server import ROOT, Server

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_the_settings_table_is_the_code() -> None:
    assert settings_markdown() in README, "regenerate the table: python -m pagestream.settings"


def test_the_two_commands_are_there() -> None:
    blocks = shell_blocks(section("The two commands"))
    assert blocks[0].strip().endswith("pagestream serve")
    assert blocks[1].strip() == "tests/run"
    assert "tests/run" in (ROOT / ".ci" / "run").read_text()


def test_the_curl_walkthrough_runs_as_written(server: Server, tmp_path: Path) -> None:
    (tmp_path / "document.pdf").write_bytes(make_pdf([f"walkthrough page {i}" for i in range(1, 6)]))
    (tmp_path / "notes.md").write_text("# Notes\n\nsome *markdown*\n")
    script = "\n".join(shell_blocks(section("Try it with curl"))).replace("http://127.0.0.1:8000", server.url)
    run = subprocess.run(["bash", "-eu", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    job = re.search(r"^job ([0-9a-f]{16})$", out, re.M)
    assert job, out
    # The first stream: the snapshot, then the log from id 1 to the terminal event.
    first = out[: out.index("event: completed") + 1]
    assert "event: snapshot" in first and "id: 1\nevent: queued" in first
    assert first.count("event: page") == 5
    ids = [int(i) for i in re.findall(r"^id: (\d+)$", out, re.M)]
    run_one = ids[: ids.index(max(ids)) + 1]
    assert run_one == list(range(1, len(run_one) + 1))
    # The resumed stream starts after id 3, and carries the text.
    resumed = out[out.index("event: completed") + 1:]
    assert re.findall(r"^id: (\d+)$", resumed, re.M)[0] == "4"
    assert '"text":"walkthrough page 2' in resumed
    # The text result.
    assert "walkthrough page 1" in out and "walkthrough page 5" in out
    assert '"number": 1' in out  # the JSON result, pretty-printed
