"""The application factory: settings in, a FastAPI app out (store, models, worker in its lifespan)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tabfm
from api.builder import CheckpointMissing
from api.jobs import QueueFull, TrainingWorker
from api.metrics import Metrics
from api.routes import health, models, predict, v2
from api.runtime import ModelCache
from api.settings import Settings
from api.store import ModelStore
from api.tables import TooLarge, UnsupportedMediaType
from tabfm.errors import TabFMUserError

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("api.access")


class BodyTooLarge(Exception):
    """The body streamed in is larger than the limit (413)."""


class BodyLimitMiddleware:
    """413 for bodies over ``max_bytes``: at once from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _send_json(send, 400, {"detail": f"Content-Length is not an integer: {length[:40]!r}"})
                return
            if declared > self.max_bytes:
                await _send_json(send, 413, {"detail": _too_large(self.max_bytes, declared)})
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(_too_large(self.max_bytes, received))
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int, size: int) -> str:
    return f"request body of {size} bytes or more is over the limit of {limit} bytes"


async def _send_json(send: Send, status: int, content: Any) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class MetricsMiddleware:
    """Counts and times every request by route template, and logs it as one JSON line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            seconds = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(route, scope["method"], status, seconds)
            if access_logger.isEnabledFor(logging.INFO):
                access_logger.info(
                    "request",
                    extra={"fields": {"method": scope["method"], "path": scope["path"], "route": route,
                                      "status": status, "ms": round(seconds * 1000, 3)}},
                )


def _error(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": detail}, headers=headers)


def _register_handlers(app: FastAPI) -> None:
    @app.exception_handler(TooLarge)
    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: Exception) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(UnsupportedMediaType)
    async def unsupported(request: Request, exc: Exception) -> JSONResponse:
        return _error(415, str(exc))

    @app.exception_handler(ValidationError)
    async def invalid_model(request: Request, exc: ValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return _error(422, errors)

    @app.exception_handler(TabFMUserError)
    @app.exception_handler(ValueError)
    async def user_error(request: Request, exc: Exception) -> JSONResponse:
        # Parsing and validation of client data raise these; the message names the column or field.
        return _error(422, str(exc))

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: Exception) -> JSONResponse:
        return _error(429, str(exc), headers={"Retry-After": "30"})

    @app.exception_handler(CheckpointMissing)
    async def no_checkpoint(request: Request, exc: Exception) -> JSONResponse:
        return _error(503, str(exc))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service.

    Parameters
    ----------
    settings : Settings, optional
        Default: read from the environment (``TABFM_*``).

    Returns
    -------
    FastAPI
        The app; its lifespan opens the store, starts the training worker and loads the stored
        models (so run it under a server, or ``with TestClient(app)``).
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await run_in_threadpool(ModelStore, settings.store)
        worker = TrainingWorker(maxsize=settings.training_queue_size)
        cache = ModelCache(
            store, ort_threads=settings.ort_threads, device=settings.device, max_concurrent=settings.max_concurrent_predictions
        )
        app.state.store, app.state.worker, app.state.cache = store, worker, cache
        worker.start()
        n = await run_in_threadpool(cache.warm)
        logger.info("tabfm service ready", extra={"fields": {"store": str(settings.store), "models_loaded": n}})
        try:
            yield
        finally:
            worker.stop()

    app = FastAPI(
        title="tabfm",
        version=tabfm.__version__,
        summary="Tabular foundation models over HTTP: create models from tables, predict through onnxruntime.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _register_handlers(app)
    for router in (health.router, models.router, predict.router, v2.router):
        app.include_router(router)
    return app
