"""pagestream: a self-hosted document job server that streams every page's text over SSE.

The package is the server and its Python client. The client's names are exported here
(``from pagestream import Client``) and imported on first use, so that the server — and its
extraction child, which imports this package too — never loads httpx for nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._client_errors import (
        ApiError,
        BadRequest,
        Conflict,
        ConnectionFailed,
        Forbidden,
        NotFound,
        PagestreamError,
        ProtocolError,
        QueueFull,
        ServerError,
        StreamGaveUp,
        TooLarge,
        Unauthorized,
        UnsupportedType,
        WaitTimeout,
    )
    from ._client_streams import Reconnect
    from .client import AsyncClient, AsyncEventStream, Client, EventStream

_CLIENT_EXPORTS = {
    "Client": "client", "AsyncClient": "client", "EventStream": "client", "AsyncEventStream": "client",
    "Reconnect": "_client_streams",
    "PagestreamError": "_client_errors", "ApiError": "_client_errors", "BadRequest": "_client_errors",
    "NotFound": "_client_errors", "Conflict": "_client_errors", "TooLarge": "_client_errors",
    "UnsupportedType": "_client_errors", "QueueFull": "_client_errors", "ServerError": "_client_errors",
    "ConnectionFailed": "_client_errors", "StreamGaveUp": "_client_errors", "ProtocolError": "_client_errors",
    "WaitTimeout": "_client_errors", "Unauthorized": "_client_errors", "Forbidden": "_client_errors",
}

__all__ = [
    "ApiError", "AsyncClient", "AsyncEventStream", "BadRequest", "Client", "Conflict", "ConnectionFailed",
    "EventStream", "Forbidden", "NotFound", "PagestreamError", "ProtocolError", "QueueFull", "Reconnect",
    "ServerError", "StreamGaveUp", "TooLarge", "Unauthorized", "UnsupportedType", "WaitTimeout", "__version__",
]


def __getattr__(name: str) -> Any:
    module = _CLIENT_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pagestream' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
