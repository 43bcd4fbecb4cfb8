"""The code's own checks, as configured in pyproject.toml: ruff over the server and the tests,
mypy (strict) over the server package."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .server import ROOT


@pytest.mark.parametrize("command", [["ruff", "check", "server", "tests"], ["mypy"]], ids=["ruff", "mypy"])
def test_the_code_passes_its_own_checks(command: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
