"""The ``pagestream`` command.

``pagestream serve`` runs the server; every setting of :mod:`pagestream.settings` is also a
flag (``--max-upload-mb 50``), and a flag wins over its environment variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from . import __version__
from .settings import Settings, settings_table


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the server (API, UI and worker)",
                           description="Run the server. Every flag can also be set by its environment variable.")
    _settings_flags(serve)
    serve.add_argument("--no-worker", action="store_true", help="serve the API only; do not run the queue's worker")
    worker = sub.add_parser(
        "worker", help="run only the queue's worker",
        description="Run only the queue's consumer, without HTTP. On a PostgreSQL store run it on several "
                    "machines: one holds the lease and works, the others wait and take over when it goes.")
    _settings_flags(worker)


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for name, env, default, help_text in settings_table():
        kind = type(fields[name].default)
        flag, help_text = f"--{name.replace('_', '-')}", f"{help_text} [{env}; default: {default!r}]"
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
                                help=help_text)


def _settings(args: argparse.Namespace) -> Settings | None:
    overrides = {name: getattr(args, name) for name, *_ in settings_table()}
    try:
        settings = Settings.from_env(**overrides)
    except ValueError as exc:
        print(f"pagestream: {exc}", file=sys.stderr)
        return None
    from .logs import configure

    configure(settings.log_level, settings.log_format)
    return settings


def serve(args: argparse.Namespace, *, api: bool = True) -> int:
    """``serve`` (API, UI and worker), ``serve --no-worker`` (API replicas), ``worker`` (the consumer only)."""
    import uvicorn

    from .app import create_app
    from .database import redacted

    settings = _settings(args)
    if settings is None:
        return 2
    try:
        app = create_app(settings, run_worker=not getattr(args, "no_worker", False), api=api)
    except (ValueError, OSError) as exc:  # a bad or missing key file, listening in the open without keys…
        print(f"pagestream: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on",
        loop="auto", http="auto", timeout_graceful_shutdown=int(settings.shutdown_grace) + 5, access_log=False,
        log_config=None,  # logs.configure() has set up the one format
    )
    server = uvicorn.Server(config)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    what = "serving" if api else "worker, health and metrics on"
    print(f"pagestream {__version__} {what} http://{host}:{settings.port}/  (store: {redacted(settings.store_url)})",
          flush=True)
    server.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pagestream", description="A document job server that streams every page.")
    parser.add_argument("--version", action="version", version=f"pagestream {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "worker":
        return serve(args, api=False)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
