"""The model store: a crash mid-write leaves no half model, and the index survives reopening."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from api.store import INTERRUPTED, META_FILE, ModelRecord, ModelStore


def _record(store: ModelStore, status: str = "training") -> ModelRecord:
    now = time.time()
    record = ModelRecord(store.new_id(), "m", "tabfm", "classification", status, None, now, now, {"target": "y"})
    store.add(record)
    return record


def _writer(directory: Path) -> dict:
    (directory / "estimator").mkdir()
    (directory / "estimator" / "estimator.json").write_text("{}")
    (directory / "model.onnx").write_bytes(b"onnx")
    return {"schema": [{"name": "a", "kind": "numeric", "categories": None}]}


def test__write__complete__ready_and_survives_reopen(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    record = _record(store)
    store.write(record.id, _writer)
    reopened = ModelStore(tmp_path)
    got = reopened.get(record.id)
    assert got is not None and got.status == "ready" and got.info["schema"][0]["name"] == "a"
    assert json.loads((reopened.model_dir(record.id) / META_FILE).read_text())["id"] == record.id


def test__write__exception_mid_write__no_directory_left(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    record = _record(store)

    def failing(directory: Path) -> dict:
        _writer(directory)
        raise RuntimeError("disk full while writing the ONNX file")

    with pytest.raises(RuntimeError, match="disk full"):
        store.write(record.id, failing)
    assert list(store.models_dir.iterdir()) == []
    reopened = ModelStore(tmp_path)
    assert reopened.get(record.id).status == "failed"
    assert reopened.get(record.id).error == INTERRUPTED


def test__process_killed_mid_write__reopen_cleans_up(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from api.store import ModelRecord, ModelStore
        store = ModelStore({str(tmp_path)!r})
        store.add(ModelRecord("killed", "m", "tabm", "regression", "training", None, time.time(), time.time(), {{}}))
        def writer(directory):
            (directory / "model.onnx").write_bytes(b"half")
            os._exit(9)  # the process dies with the model half written
        store.write("killed", writer)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[1], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()
    assert any(p.name.startswith(".tmp-killed") for p in (tmp_path / "models").iterdir())
    store = ModelStore(tmp_path)
    assert list(store.models_dir.iterdir()) == []
    assert store.get("killed").status == "failed"
    assert store.list()[0].id == "killed"


def test__crash_after_rename_before_index__directory_wins(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    record = _record(store)
    directory = store.model_dir(record.id)
    directory.mkdir()
    _writer(directory)
    (directory / META_FILE).write_text(json.dumps({"id": record.id, "schema": [], "runtime": "onnxruntime"}))
    reopened = ModelStore(tmp_path)
    assert reopened.get(record.id).status == "ready"
    assert reopened.get(record.id).info["runtime"] == "onnxruntime"


def test__orphan_directory_without_row__removed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    orphan = store.models_dir / "deadbeef"
    orphan.mkdir()
    (orphan / META_FILE).write_text("{}")
    ModelStore(tmp_path)
    assert not orphan.exists()


def test__ready_row_with_files_missing__marked_failed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    record = _record(store)
    store.write(record.id, _writer)
    import shutil

    shutil.rmtree(store.model_dir(record.id))
    assert ModelStore(tmp_path).get(record.id).status == "failed"


def test__ids__path_like_ids_rejected(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    assert store.get("../index") is None
    assert store.delete("../../etc") is False
