"""Where the shared corpus of real documents lives, and the rule for tests that need it.

CI always has the corpus (at ``../shared/corpus`` from the repository), so there a missing
corpus is a failure; on a developer's machine without it, corpus tests are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def require_corpus() -> Path:
    """The corpus folder; fails the test in CI (``CI=true``) if it is missing, else skips it."""
    if CORPUS.is_dir():
        return CORPUS
    if os.environ.get("CI") == "true":
        pytest.fail(f"the corpus is missing at {CORPUS}; CI must provide it")
    pytest.skip(f"no corpus at {CORPUS}")
