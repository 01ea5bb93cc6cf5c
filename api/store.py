"""The model store: one directory per model and an SQLite index, both crash-safe.

Layout under the store root::

    index.sqlite             one row per model: id, name, kind, task, status, error, times, info JSON
    models/<id>/meta.json    the model's description (written last inside the directory)
    models/<id>/estimator/   the saved estimator (tabfm.load reads it)
    models/<id>/model.onnx   the ONNX file onnxruntime serves (absent when export failed)
    models/.tmp-<id>-*/      a model being written; renamed into place only when complete

A model's directory appears by one ``os.replace`` of a complete temporary directory, so a crash
leaves either nothing or a whole model. The index row is written first (status "training") and
updated to "ready" after the rename; :meth:`ModelStore.recover` (run when the store opens)
reconciles the two after a crash: complete directories win, temporary ones are removed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
ESTIMATOR_DIR = "estimator"
ONNX_FILE = "model.onnx"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
INTERRUPTED = "interrupted by a server restart before the model was written; create it again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    info TEXT NOT NULL DEFAULT '{}'
)
"""


@dataclass
class ModelRecord:
    """One row of the index."""

    id: str
    name: str
    kind: str
    task: str
    status: str  # "training", "ready" or "failed"
    error: str | None
    created: float
    updated: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ModelRecord:
        return cls(
            id=row["id"], name=row["name"], kind=row["kind"], task=row["task"], status=row["status"],
            error=row["error"], created=row["created"], updated=row["updated"], info=json.loads(row["info"]),
        )


class ModelStore:
    """Models on disk under ``root``; safe to use from several threads.

    Parameters
    ----------
    root : path
        Directory of the store (created when absent).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.sqlite"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
        self.recover()

    # -- index -----------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per operation: sqlite3 connections are not shared across threads.
        db = sqlite3.connect(self.index_path, timeout=30.0)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def new_id(self) -> str:
        """A fresh model id."""
        return uuid.uuid4().hex[:16]

    def add(self, record: ModelRecord) -> None:
        """Insert the index row of a model about to be written."""
        with self._connect() as db:
            db.execute(
                "INSERT INTO models (id, name, kind, task, status, error, created, updated, info) VALUES (?,?,?,?,?,?,?,?,?)",
                (record.id, record.name, record.kind, record.task, record.status, record.error,
                 record.created, record.updated, json.dumps(record.info)),
            )

    def get(self, model_id: str) -> ModelRecord | None:
        """The record of ``model_id``, or None."""
        if not ID_PATTERN.match(model_id):
            return None
        with self._connect() as db:
            row = db.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        return None if row is None else ModelRecord.from_row(row)

    def list(self) -> list[ModelRecord]:
        """Every model, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM models ORDER BY created, id").fetchall()
        return [ModelRecord.from_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """Number of models per status."""
        with self._connect() as db:
            rows = db.execute("SELECT status, COUNT(*) AS n FROM models GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}

    def set_failed(self, model_id: str, reason: str) -> None:
        """Mark a model as failed with ``reason`` (shown to clients)."""
        with self._connect() as db:
            db.execute(
                "UPDATE models SET status = 'failed', error = ?, updated = ? WHERE id = ?",
                (reason[:2000], time.time(), model_id),
            )

    def _set_ready(self, model_id: str, info: dict[str, Any]) -> bool:
        with self._connect() as db:
            return bool(db.execute(
                "UPDATE models SET status = 'ready', error = NULL, updated = ?, info = ? WHERE id = ?",
                (time.time(), json.dumps(info), model_id),
            ).rowcount)

    def healthy(self) -> bool:
        """The index answers and the models directory is writable."""
        try:
            with self._connect() as db:
                db.execute("SELECT 1").fetchone()
            return os.access(self.models_dir, os.W_OK)
        except sqlite3.Error:
            return False

    # -- directories -----------------------------------------------------------------------------

    def model_dir(self, model_id: str) -> Path:
        """Directory of a written model."""
        return self.models_dir / model_id

    def write(self, model_id: str, writer: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
        """Write a model's directory atomically and mark it ready.

        ``writer(tmp_dir)`` writes the estimator and ONNX file into ``tmp_dir`` and returns the
        model's info; the info goes to ``meta.json`` last, then the directory is renamed into
        place and the index row becomes "ready". Any exception leaves no directory behind.
        """
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{model_id}-", dir=self.models_dir))
        try:
            info = writer(tmp)
            _write_json_durably(tmp / META_FILE, {"id": model_id, **info})
            os.replace(tmp, self.model_dir(model_id))
            _fsync_dir(self.models_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if not self._set_ready(model_id, info):  # deleted while it was being trained
            shutil.rmtree(self.model_dir(model_id), ignore_errors=True)
        return info

    def delete(self, model_id: str) -> bool:
        """Remove a model (index row first, then its directory); False when unknown."""
        if not ID_PATTERN.match(model_id):
            return False
        with self._connect() as db:
            deleted = db.execute("DELETE FROM models WHERE id = ?", (model_id,)).rowcount
        directory = self.model_dir(model_id)
        if directory.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".tmp-del-{model_id}-", dir=self.models_dir))
            os.replace(directory, trash / "x")
            shutil.rmtree(trash, ignore_errors=True)
        return bool(deleted)

    def recover(self) -> None:
        """Reconcile the index and the directories after a crash or restart."""
        for path in self.models_dir.glob(".tmp-*"):
            logger.info("removing incomplete model directory %s", path.name)
            shutil.rmtree(path, ignore_errors=True)
        known = {r.id: r for r in self.list()}
        for record in known.values():
            complete = (self.model_dir(record.id) / META_FILE).is_file()
            if record.status == "training":
                if complete:  # renamed into place, index update lost: the directory wins
                    meta = json.loads((self.model_dir(record.id) / META_FILE).read_text())
                    meta.pop("id", None)
                    self._set_ready(record.id, meta)
                else:
                    self.set_failed(record.id, INTERRUPTED)
            elif record.status == "ready" and not complete:
                self.set_failed(record.id, "the model's files are missing from the store")
        for path in self.models_dir.iterdir():
            if path.is_dir() and not path.name.startswith(".") and path.name not in known:
                logger.info("removing model directory %s that has no index row", path.name)
                shutil.rmtree(path, ignore_errors=True)


def _write_json_durably(path: Path, document: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
