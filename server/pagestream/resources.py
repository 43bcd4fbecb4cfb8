"""Where the bundled UI (``web/``) and the contract (``shared_schemas/``) are.

A wheel carries them inside the package (``pagestream/_bundled/``); a source checkout or an
editable install finds them at the top of the repository, two folders above this file.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / "_bundled" / name, _PACKAGE.parent.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is neither bundled in {_PACKAGE} nor in the source tree")


def web_dir() -> Path:
    return _find("web")


def schemas_dir() -> Path:
    return _find("shared_schemas")
