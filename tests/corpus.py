"""Where the shared corpus of real documents lives, and the rule for tests that need it.

CI always has the corpus (at ``../shared/corpus`` from the repository), so there a missing
corpus is a failure; on a developer's machine without it, corpus tests are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def unavailable(message: str, *, module: bool = False) -> NoReturn:
    """A test group cannot run here: in CI (``CI=true``) that is a failure, elsewhere a skip
    (of the whole module when ``module``, called at import)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message, allow_module_level=module)


def require_corpus() -> Path:
    """The corpus folder; fails the test in CI if it is missing, else skips it."""
    if CORPUS.is_dir():
        return CORPUS
    unavailable(f"the corpus is missing at {CORPUS}")
