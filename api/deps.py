"""Dependencies shared by the routers: state, the key check, the model lookup, the raw body."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

import pyarrow as pa
from fastapi import Depends, HTTPException, Path, Request

from api.jobs import TrainingWorker
from api.metrics import Metrics
from api.runtime import ModelCache
from api.settings import Settings
from api.store import ModelRecord, ModelStore
from api.tables import CSV, JSON, MULTIPART, media_type, media_type_of_file, read_table
from tabfm.errors import TabFMValidationError


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> ModelStore:
    return request.app.state.store


def get_cache(request: Request) -> ModelCache:
    return request.app.state.cache


def get_worker(request: Request) -> TrainingWorker:
    return request.app.state.worker


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[ModelStore, Depends(get_store)]
CacheDep = Annotated[ModelCache, Depends(get_cache)]
WorkerDep = Annotated[TrainingWorker, Depends(get_worker)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def require_key(request: Request) -> None:
    """401 unless the request carries one of the configured keys (no keys configured: open)."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token and any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
        return
    raise HTTPException(
        status_code=401,
        detail="missing or wrong API key: send the header 'Authorization: Bearer KEY'",
        headers={"WWW-Authenticate": "Bearer"},
    )


ModelId = Annotated[str, Path(description="model id, as returned when the model was created", max_length=64)]


def get_record(model_id: ModelId, store: StoreDep) -> ModelRecord:
    """The index record of ``model_id`` (404 when unknown)."""
    record = store.get(model_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"no model with id {model_id!r}")
    return record


RecordDep = Annotated[ModelRecord, Depends(get_record)]


def get_ready_record(record: RecordDep) -> ModelRecord:
    """The record of a model that can predict (409 while training, or when it failed)."""
    if record.status == "training":
        raise HTTPException(status_code=409, detail=f"model {record.id!r} is still training; poll GET /v1/models/{record.id}")
    if record.status == "failed":
        raise HTTPException(status_code=409, detail=f"model {record.id!r} failed: {record.error}")
    return record


ReadyRecordDep = Annotated[ModelRecord, Depends(get_ready_record)]


@dataclass
class RawBody:
    """A request body as sent: bytes and type, or the files and fields of a multipart form."""

    content_type: str | None
    data: bytes = b""
    files: dict[str, tuple[bytes, str | None, str | None]] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def multipart(self) -> bool:
        return media_type(self.content_type) == MULTIPART

    def table(self, part: str = "file", *, what: str = "body") -> pa.Table:
        """The table in the body, or in the multipart file ``part``."""
        if not self.multipart:
            return read_table(self.data, self.content_type, what=what)
        if part not in self.files and part in self.fields:  # sent as a text field: CSV or JSON text
            text = self.fields[part].encode()
            return read_table(text, JSON if text.lstrip()[:1] == b"[" else CSV, what=f"field {part!r}")
        if part not in self.files:
            raise TabFMValidationError(f"the multipart form has no file field {part!r} (fields: {sorted([*self.files, *self.fields])})")
        data, content_type, filename = self.files[part]
        return read_table(data, media_type_of_file(content_type, filename), what=f"file {part!r}")

    def field(self, name: str, query: Any = None) -> Any:
        """A form field, else the query parameter of the same name."""
        value = self.fields.get(name)
        return query if value is None or value == "" else value


async def read_body(request: Request) -> RawBody:
    """Read the body (its size is bounded by the body-limit middleware while it streams in)."""
    content_type = request.headers.get("content-type")
    if media_type(content_type) != MULTIPART:
        return RawBody(content_type, await request.body())
    limit = request.app.state.settings.max_body_bytes  # text fields may hold a whole CSV or JSON table
    form = await request.form(max_files=4, max_fields=16, max_part_size=limit)
    body = RawBody(content_type)
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                body.fields[name] = value
            else:
                body.files[name] = (await value.read(), value.content_type, value.filename)
    finally:
        await form.close()
    return body


BodyDep = Annotated[RawBody, Depends(read_body)]
