"""pagestream: a self-hosted document job server that streams every page's text over SSE."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
