"""``tabfm serve``: the prediction service (``api.create_app``) under uvicorn."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the REST prediction service",
        description="Run the REST prediction service. Every setting also reads TABFM_* environment "
        "variables (TABFM_API_KEYS, TABFM_MAX_BODY_BYTES, ...); the options below win over them.",
    )
    parser.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default 8000)")
    parser.add_argument("--store", default=None, help="model store directory (default ./tabfm-store)")
    parser.add_argument("--log-level", default=None, help="debug, info, warning or error (default info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    # The service is imported here: api depends on tabfm, never the other way at import time.
    from api.app import create_app
    from api.logs import configure_logging
    from api.settings import Settings

    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "store": args.store, "log_level": args.log_level}.items() if v is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,  # the app logs each request as JSON with its route and latency
        timeout_graceful_shutdown=10,
    )
    return 0
