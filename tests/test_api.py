"""The prediction service over HTTP (FastAPI TestClient): every route and every client error.

TabFM runs tiny random checkpoints and TabM/TabR train for two epochs, so the tests exercise the
real code paths (fit, save, ONNX export, onnxruntime) in seconds; quality is tested elsewhere.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from api.app import create_app
from api.settings import Settings
from models.icl import ICLConfig, ICLTransformer
from tabfm.checkpoint import save_checkpoint

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

TINY = {
    "d_model": 16, "d_cell": 8, "d_cell_ffn": 16, "n_cell_heads": 2, "n_col_inducing": 4,
    "n_row_blocks": 1, "n_cls": 2, "n_icl_blocks": 2, "d_ffn": 32, "n_thinking_rows": 2,
}
TABM_PARAMS = {"max_epochs": 2, "k": 4, "d_block": 16, "random_state": 0}
TABR_PARAMS = {"max_epochs": 2, "d_main": 16, "context_size": 8, "random_state": 0}
CSV = {"content-type": "text/csv"}


def tiny_checkpoints(directory: Path) -> dict[str, Path]:
    """Random tiny TabFM checkpoints for both tasks (what the tests point the service at)."""
    out = {}
    for task, n_outputs in (("classification", 10), ("regression", 16)):
        torch.manual_seed(0)
        config = ICLConfig(task=task, n_outputs=n_outputs, attention={"kind": "inducing", "n_heads": 2, "n_inducing": 4}, **TINY)
        out[task] = save_checkpoint(directory / f"tiny-{task}.safetensors", ICLTransformer(config), dtype=torch.float32)
    return out


def make_settings(store: Path, checkpoints: dict[str, Path], **overrides: Any) -> Settings:
    return Settings(
        store=store,
        tabfm_classification_checkpoint=checkpoints["classification"],
        tabfm_regression_checkpoint=checkpoints["regression"],
        device="cpu",
        ort_threads=1,
        **overrides,
    )


def training_frame(n: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=n).round(3),
        "x2": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n).round(3)),
        "colour": rng.choice(["red", "green", "blue"], size=n),
    })
    frame["label"] = np.where(frame["x1"] + (frame["colour"] == "red") > 0.5, "yes", "no")
    frame["value"] = (2 * frame["x1"] - frame["x2"].fillna(0) + rng.normal(scale=0.1, size=n)).round(4)
    return frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


def arrow_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def wait_ready(client: Any, model_id: str, timeout: float = 120.0) -> dict[str, Any]:
    client.app.state.worker.wait_idle(timeout)
    return client.get(f"/v1/models/{model_id}").json()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return training_frame()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, checkpoints: dict[str, Path]) -> Iterator[Any]:
    settings = make_settings(tmp_path_factory.mktemp("store"), checkpoints, max_rows=500, max_training_rows=1000, max_body_bytes=200_000)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def models(client: Any, frame: pd.DataFrame) -> dict[str, str]:
    """One ready model per kind and task: {"tabfm": id, "tabfm-reg": id, "tabm": id, "tabr": id}."""
    train = frame.drop(columns="value")
    ids = {}
    r = client.post("/v1/models?target=label&kind=tabfm&name=churn", content=train.to_csv(index=False), headers=CSV)
    assert r.status_code == 201, r.text
    ids["tabfm"] = r.json()["id"]
    r = client.post("/v1/models?target=value&kind=tabfm", content=parquet_bytes(frame.drop(columns="label")),
                    headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 201, r.text
    ids["tabfm-reg"] = r.json()["id"]
    for kind, params in (("tabm", TABM_PARAMS), ("tabr", TABR_PARAMS)):
        r = client.post("/v1/models", params={"target": "label", "kind": kind, "params": json.dumps(params)},
                        content=train.to_csv(index=False), headers=CSV)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "training"
        ids[kind] = r.json()["id"]
    for kind in ("tabm", "tabr"):
        info = wait_ready(client, ids[kind])
        assert info["status"] == "ready", info
    return ids


def features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["label", "value"])


# -- models ----------------------------------------------------------------------------------------


def test__create_tabfm__csv__ready_with_schema_and_metrics(client: Any, models: dict[str, str]) -> None:
    info = client.get(f"/v1/models/{models['tabfm']}").json()
    assert info["status"] == "ready" and info["kind"] == "tabfm" and info["task"] == "classification"
    assert info["name"] == "churn"
    assert [c["name"] for c in info["schema"]] == ["x1", "x2", "colour"]
    assert info["schema"][2] == {"name": "colour", "kind": "categorical", "categories": ["blue", "green", "red"]}
    assert info["classes"] == ["no", "yes"]
    assert info["metrics"]["n_train_rows"] == 60
    assert info["runtime"] == "onnxruntime"


def test__create__float_target__regression_inferred(client: Any, models: dict[str, str]) -> None:
    info = client.get(f"/v1/models/{models['tabfm-reg']}").json()
    assert info["task"] == "regression" and info["classes"] is None


def test__create_tabm_tabr__background__ready_with_training_metrics(client: Any, models: dict[str, str]) -> None:
    for kind in ("tabm", "tabr"):
        info = client.get(f"/v1/models/{models[kind]}").json()
        assert info["kind"] == kind and info["params"]["max_epochs"] == 2
        assert info["metrics"]["training"]["n_epochs"] <= 2


def test__list_models__all_listed(client: Any, models: dict[str, str]) -> None:
    listed = {m["id"] for m in client.get("/v1/models").json()["models"]}
    assert set(models.values()) <= listed


def test__create__multipart_form__fields_and_file(client: Any, frame: pd.DataFrame) -> None:
    train = frame.drop(columns="value")
    r = client.post("/v1/models", files={"file": ("train.parquet", parquet_bytes(train), "application/octet-stream")},
                    data={"target": "label", "kind": "tabfm", "params": json.dumps({"n_estimators": 1})})
    assert r.status_code == 201, r.text
    assert r.json()["params"] == {"n_estimators": 1}


def test__create__task_override__integer_target_as_regression(client: Any, frame: pd.DataFrame) -> None:
    train = features(frame).assign(count=np.arange(len(frame)) % 3)
    r = client.post("/v1/models?target=count&kind=tabfm", json=json.loads(train.to_json(orient="records")))
    assert r.status_code == 201 and r.json()["task"] == "classification"
    r = client.post("/v1/models?target=count&kind=tabfm&task=regression", json=json.loads(train.to_json(orient="records")))
    assert r.status_code == 201 and r.json()["task"] == "regression"


def test__delete__then_404(client: Any, frame: pd.DataFrame) -> None:
    r = client.post("/v1/models?target=label&kind=tabfm", content=frame.drop(columns="value").to_csv(index=False), headers=CSV)
    model_id = r.json()["id"]
    assert client.post(f"/v1/models/{model_id}/predict", json=json.loads(features(frame).head(2).to_json(orient="records"))).status_code == 200
    assert client.delete(f"/v1/models/{model_id}").status_code == 204
    assert client.get(f"/v1/models/{model_id}").status_code == 404
    assert client.post(f"/v1/models/{model_id}/predict", json=json.loads(features(frame).head(2).to_json(orient="records"))).status_code == 404
    assert client.delete(f"/v1/models/{model_id}").status_code == 404
    assert not (client.app.state.store.model_dir(model_id)).exists()


def test__training_failure__status_failed_with_reason(client: Any, frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    import api.routes.models as routes

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("the training table was rejected by the model")

    monkeypatch.setattr(routes, "fit_and_store", broken)
    r = client.post("/v1/models", params={"target": "label", "kind": "tabm", "params": json.dumps(TABM_PARAMS)},
                    content=frame.drop(columns="value").to_csv(index=False), headers=CSV)
    assert r.status_code == 202
    info = wait_ready(client, r.json()["id"])
    assert info["status"] == "failed" and "rejected by the model" in info["error"]
    r = client.post(f"/v1/models/{info['id']}/predict", json=json.loads(features(frame).head(1).to_json(orient="records")))
    assert r.status_code == 409 and "failed" in r.json()["detail"]


# -- predict ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tabfm", "tabm", "tabr"])
def test__predict__every_format__same_output(client: Any, models: dict[str, str], frame: pd.DataFrame, kind: str) -> None:
    rows = features(frame).head(7)
    url = f"/v1/models/{models[kind]}/predict"
    by_json = client.post(url, json=json.loads(rows.to_json(orient="records"))).json()
    assert len(by_json["predictions"]) == 7 and by_json["classes"] == ["no", "yes"]
    proba = np.asarray(by_json["probabilities"])
    assert proba.shape == (7, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert by_json["predictions"] == [by_json["classes"][i] for i in proba.argmax(axis=1)]
    others = [
        client.post(url, content=rows.to_csv(index=False), headers=CSV),
        client.post(url, content=parquet_bytes(rows), headers={"content-type": "application/vnd.apache.parquet"}),
        client.post(url, content=arrow_bytes(rows), headers={"content-type": "application/vnd.apache.arrow.stream"}),
        client.post(url, files={"file": ("rows.csv", rows.to_csv(index=False).encode(), "text/csv")}),
    ]
    for r in others:
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == by_json["predictions"]
        np.testing.assert_allclose(r.json()["probabilities"], proba, atol=1e-6)


def test__predict__matches_saved_estimator(client: Any, models: dict[str, str], frame: pd.DataFrame) -> None:
    import tabfm

    estimator = tabfm.load(client.app.state.store.model_dir(models["tabfm"]) / "estimator", device="cpu")
    rows = features(frame).head(10)
    served = client.post(f"/v1/models/{models['tabfm']}/predict", json=json.loads(rows.to_json(orient="records"))).json()
    expected = estimator.predict_proba(pa.Table.from_pandas(rows, preserve_index=False))
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-4)


def test__predict_regression__values_without_probabilities(client: Any, models: dict[str, str], frame: pd.DataFrame) -> None:
    r = client.post(f"/v1/models/{models['tabfm-reg']}/predict", json=json.loads(features(frame).head(4).to_json(orient="records")))
    body = r.json()
    assert r.status_code == 200 and len(body["predictions"]) == 4
    assert all(isinstance(v, float) for v in body["predictions"])
    assert "probabilities" not in body


def test__predict__accept_arrow__arrow_stream_out(client: Any, models: dict[str, str], frame: pd.DataFrame) -> None:
    rows = json.loads(features(frame).head(5).to_json(orient="records"))
    url = f"/v1/models/{models['tabfm']}/predict"
    r = client.post(url, json=rows, headers={"accept": "application/vnd.apache.arrow.stream"})
    assert r.headers["content-type"].startswith("application/vnd.apache.arrow.stream")
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["prediction", "proba_no", "proba_yes"]
    assert table.column("prediction").to_pylist() == client.post(url, json=rows).json()["predictions"]


def test__predict__missing_values_and_unseen_category__accepted(client: Any, models: dict[str, str]) -> None:
    rows = [{"x1": None, "x2": 1.0, "colour": "purple"}, {"x1": 0.5, "colour": None}]
    r = client.post(f"/v1/models/{models['tabfm']}/predict", json=rows)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 2


def test__one_shot__json__predicts_without_storing(client: Any, frame: pd.DataFrame) -> None:
    before = len(client.get("/v1/models").json()["models"])
    train = json.loads(frame.drop(columns="value").to_json(orient="records"))
    test = json.loads(features(frame).head(3).to_json(orient="records"))
    r = client.post("/v1/predict", json={"train": train, "test": test, "target": "label", "params": {"n_estimators": 2}})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3 and r.json()["classes"] == ["no", "yes"]
    assert len(client.get("/v1/models").json()["models"]) == before


def test__one_shot__multipart__regression(client: Any, frame: pd.DataFrame) -> None:
    files = {
        "train": ("train.csv", frame.drop(columns="label").to_csv(index=False).encode(), "text/csv"),
        "test": ("test.parquet", parquet_bytes(features(frame).head(4)), "application/vnd.apache.parquet"),
    }
    r = client.post("/v1/predict", files=files, data={"target": "value"})
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 4 and "probabilities" not in r.json()


# -- client errors: never a 5xx --------------------------------------------------------------------


def _detail(r: Any) -> str:
    return json.dumps(r.json()["detail"])


def test__unknown_model__404_everywhere(client: Any) -> None:
    assert client.get("/v1/models/nope").status_code == 404
    assert client.post("/v1/models/nope/predict", json=[{"x1": 1}]).status_code == 404
    assert client.get("/v2/models/nope").status_code == 404
    assert client.post("/v2/models/nope/infer", json={"inputs": []}).status_code == 404
    assert client.get("/v1/models/..%2F..%2Fetc").status_code == 404


def test__predict__missing_column__422_names_it(client: Any, models: dict[str, str]) -> None:
    r = client.post(f"/v1/models/{models['tabfm']}/predict", json=[{"x1": 1.0, "x2": 2.0}])
    assert r.status_code == 422 and "colour" in _detail(r)


def test__predict__extra_column__422_names_it(client: Any, models: dict[str, str]) -> None:
    r = client.post(f"/v1/models/{models['tabm']}/predict", json=[{"x1": 1.0, "x2": 2.0, "colour": "red", "shoe": 3}])
    assert r.status_code == 422 and "shoe" in _detail(r)


def test__predict__string_in_numeric_column__422_names_it(client: Any, models: dict[str, str]) -> None:
    r = client.post(f"/v1/models/{models['tabr']}/predict", content="x1,x2,colour\nabc,1.0,red\n", headers=CSV)
    assert r.status_code == 422 and "x1" in _detail(r)


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("[]", {"content-type": "application/json"}),
        ("", CSV),
        ("x1,x2,colour\n", CSV),
        ("{\"x1\": 1}", {"content-type": "application/json"}),
        ("[1, 2]", {"content-type": "application/json"}),
        ("not json", {"content-type": "application/json"}),
        ("garbage", {"content-type": "application/vnd.apache.parquet"}),
        ("garbage", {"content-type": "application/vnd.apache.arrow.stream"}),
        ('[{"x1": [1, 2]}]', {"content-type": "application/json"}),
        ('[{"x1": 1, "x2": 2, "colour": "red"}, {"x1": "a"}]', {"content-type": "application/json"}),
    ],
)
def test__predict__empty_or_malformed_table__422(client: Any, models: dict[str, str], body: str, headers: dict[str, str]) -> None:
    r = client.post(f"/v1/models/{models['tabfm']}/predict", content=body, headers=headers)
    assert r.status_code == 422, r.text


def test__predict__unsupported_content_type__415(client: Any, models: dict[str, str]) -> None:
    r = client.post(f"/v1/models/{models['tabfm']}/predict", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415


def test__create__unknown_kind__422(client: Any, frame: pd.DataFrame) -> None:
    r = client.post("/v1/models?target=label&kind=xgboost", content=frame.to_csv(index=False), headers=CSV)
    assert r.status_code == 422 and "kind" in _detail(r) and "xgboost" in _detail(r)


def test__create__absent_target__422_names_field(client: Any, frame: pd.DataFrame) -> None:
    r = client.post("/v1/models?kind=tabfm", content=frame.to_csv(index=False), headers=CSV)
    assert r.status_code == 422 and "target" in _detail(r)
    r = client.post("/v1/models?kind=tabfm&target=churned", content=frame.to_csv(index=False), headers=CSV)
    assert r.status_code == 422 and "churned" in _detail(r)


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [("tabm", {"max_epochs": 0}, "max_epochs"), ("tabfm", {"checkpoint": "/etc/passwd"}, "checkpoint"),
     ("tabr", {"device": "cuda"}, "device"), ("tabfm", [1], "params"),
     ("tabfm", {"numeric_transform": "log"}, "numeric_transform"), ("tabfm", {"categorical_transform": "ordinal"}, "categorical_transform"),
     ("tabfm", {"max_context_rows": 20_000}, "max_context_rows"), ("tabfm", {"max_context_rows": None}, "max_context_rows"),
     ("tabfm", {"context": "nearest"}, "context"), ("tabfm", {"local_rows": 4}, "local_rows"),
     ("tabfm", {"linear_feature": "yes"}, "linear_feature"), ("tabfm", {"linear_basis": "spline"}, "linear_basis"),
     ("tabfm", {"local_anchor_rows": 0}, "local_anchor_rows"), ("tabfm", {"local_anchor_rows": "all"}, "local_anchor_rows"),
     ("tabfm", {"local_metric": "cosine"}, "local_metric"), ("tabfm", {"local_rows_min": 0}, "local_rows_min")],
)
def test__create__bad_params__422_names_field(client: Any, frame: pd.DataFrame, kind: str, params: Any, field: str) -> None:
    r = client.post("/v1/models", params={"target": "label", "kind": kind, "params": json.dumps(params)},
                    content=frame.to_csv(index=False), headers=CSV)
    assert r.status_code == 422 and field in _detail(r)


def test__create__single_class_or_missing_target__422(client: Any, frame: pd.DataFrame) -> None:
    one_class = frame.assign(label="yes").drop(columns="value")
    for kind in ("tabfm", "tabm"):
        r = client.post(f"/v1/models?target=label&kind={kind}", content=one_class.to_csv(index=False), headers=CSV)
        assert r.status_code == 422 and "class" in _detail(r)
    holes = frame.drop(columns="label").assign(value=[None] + [1.0] * (len(frame) - 1))
    r = client.post("/v1/models?target=value&kind=tabfm", json=json.loads(holes.to_json(orient="records")))
    assert r.status_code == 422 and "value" in _detail(r)


def test__too_many_rows__413(client: Any, models: dict[str, str], frame: pd.DataFrame) -> None:
    rows = pd.concat([features(frame)] * 10)  # 600 rows > max_rows=500
    r = client.post(f"/v1/models/{models['tabfm']}/predict", content=rows.to_csv(index=False), headers=CSV)
    assert r.status_code == 413 and "500" in _detail(r)
    big = pd.concat([frame.drop(columns="value")] * 20)  # 1200 > max_training_rows=1000
    r = client.post("/v1/models?target=label&kind=tabfm", content=parquet_bytes(big), headers={"content-type": "application/vnd.apache.parquet"})
    assert r.status_code == 413


def test__body_over_limit__413_by_header_and_by_stream(client: Any, models: dict[str, str]) -> None:
    url = f"/v1/models/{models['tabfm']}/predict"
    r = client.post(url, content=b"x" * 300_000, headers=CSV)
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for _ in range(30):
            yield b"x" * 10_000

    r = client.post(url, content=chunks(), headers=CSV)
    assert r.status_code == 413


def test__api_keys__401_without_or_with_wrong_key(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    settings = make_settings(tmp_path, checkpoints, api_keys=["s3cret", "other"])
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"authorization": "Basic s3cret"}).status_code == 401
        assert c.get("/v2/models/x").status_code == 401
        assert c.get("/v1/models", headers={"authorization": "Bearer other"}).status_code == 200
        assert c.get("/health").status_code == 200  # probes stay open
        assert c.get("/v2/health/live").status_code == 200


def test__settings__keys_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TABFM_API_KEYS", "a, b")
    monkeypatch.setenv("TABFM_MAX_ROWS", "7")
    settings = Settings()
    assert settings.api_keys == ["a", "b"] and settings.max_rows == 7


# -- operations -------------------------------------------------------------------------------------


def test__health__store_provider_models(client: Any, models: dict[str, str]) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["store"] and body["onnx"]
    assert "CPUExecutionProvider" in body["providers"]
    assert body["models_loaded"] >= 1 and body["models"]["ready"] >= 4
    assert body["runtimes"].get("onnxruntime:CPUExecutionProvider", 0) >= 1


def test__metrics__prometheus_counts_latency_models_jobs(client: Any, models: dict[str, str]) -> None:
    client.get("/v1/models/does-not-exist")
    text = client.get("/metrics").text
    assert 'tabfm_http_requests_total{route="/v1/models/{model_id}",method="GET",status="404"}' in text
    assert 'tabfm_http_request_duration_seconds_bucket{route="/v1/models/{model_id}/predict",method="POST",le="+Inf"}' in text
    assert 'tabfm_models{status="ready"}' in text
    assert 'tabfm_training_jobs{state="completed"}' in text


def test__openapi__lists_every_route(client: Any) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ["/health", "/metrics", "/v1/models", "/v1/models/{model_id}", "/v1/models/{model_id}/predict",
                 "/v1/predict", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_id}",
                 "/v2/models/{model_id}/ready", "/v2/models/{model_id}/infer"]:
        assert path in paths
    assert "text/csv" in paths["/v1/models"]["post"]["requestBody"]["content"]


# -- Open Inference Protocol v2 -----------------------------------------------------------------------


def test__v2_health_and_model_ready(client: Any, models: dict[str, str]) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get(f"/v2/models/{models['tabm']}/ready").json() == {"name": models["tabm"], "ready": True}


def test__v2_metadata__inputs_per_column(client: Any, models: dict[str, str]) -> None:
    meta = client.get(f"/v2/models/{models['tabfm']}").json()
    assert meta["name"] == models["tabfm"]
    assert meta["inputs"] == [
        {"name": "x1", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "x2", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "colour", "datatype": "BYTES", "shape": [-1, 1]},
    ]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"predictions": "BYTES", "probabilities": "FP64"}


@pytest.mark.parametrize("kind", ["tabfm", "tabm", "tabr"])
def test__v2_infer__columns_and_matrix__same_as_v1(client: Any, models: dict[str, str], frame: pd.DataFrame, kind: str) -> None:
    rows = features(frame).head(6)
    v1 = client.post(f"/v1/models/{models[kind]}/predict", json=json.loads(rows.to_json(orient="records"))).json()
    inputs = [
        {"name": "x1", "datatype": "FP32", "shape": [6, 1], "data": rows["x1"].tolist()},
        {"name": "x2", "datatype": "FP64", "shape": [6], "data": [None if np.isnan(v) else v for v in rows["x2"]]},
        {"name": "colour", "datatype": "BYTES", "shape": [6, 1], "data": rows["colour"].tolist()},
    ]
    r = client.post(f"/v2/models/{models[kind]}/infer", json={"id": "r1", "inputs": inputs})
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert r.json()["id"] == "r1"
    assert out["predictions"]["data"] == v1["predictions"]
    assert out["probabilities"]["shape"] == [6, 2]
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (6, 2)), v1["probabilities"], atol=1e-5)
    codes = {"blue": 2, "green": 3, "red": 4}
    matrix = np.column_stack([rows["x1"], rows["x2"], rows["colour"].map(codes)]).astype(np.float32)
    r = client.post(f"/v2/models/{models[kind]}/infer", json={"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [6, 3], "data": [None if np.isnan(v) else float(v) for v in matrix.ravel()]}]})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == v1["predictions"]


def test__v2_infer__binary_extension_both_ways(client: Any, models: dict[str, str], frame: pd.DataFrame) -> None:
    import struct

    rows = features(frame).head(3)
    x1 = rows["x1"].to_numpy(np.float32).tobytes()
    x2 = rows["x2"].to_numpy(np.float32).tobytes()
    colour = b"".join(struct.pack("<I", len(s)) + s.encode() for s in rows["colour"])
    header = json.dumps({
        "inputs": [
            {"name": "x1", "datatype": "FP32", "shape": [3, 1], "parameters": {"binary_data_size": len(x1)}},
            {"name": "x2", "datatype": "FP32", "shape": [3, 1], "parameters": {"binary_data_size": len(x2)}},
            {"name": "colour", "datatype": "BYTES", "shape": [3, 1], "parameters": {"binary_data_size": len(colour)}},
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }).encode()
    r = client.post(f"/v2/models/{models['tabfm']}/infer", content=header + x1 + x2 + colour,
                    headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    document = json.loads(r.content[:n])
    assert [o["name"] for o in document["outputs"]] == ["probabilities"]
    proba = np.frombuffer(r.content[n:], dtype="<f8").reshape(3, 2)
    v1 = client.post(f"/v1/models/{models['tabfm']}/predict", json=json.loads(rows.to_json(orient="records"))).json()
    np.testing.assert_allclose(proba, v1["probabilities"], atol=1e-5)


@pytest.mark.parametrize(
    "request_body",
    [
        {"inputs": [{"name": "x1", "datatype": "FP32", "shape": [1], "data": [1.0]}]},  # columns missing
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},  # wrong width
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 9.0]}]},  # bad code
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 3], "data": [1.0]}]},  # count != shape
        {"inputs": [{"name": "X", "datatype": "COMPLEX", "shape": [1, 3], "data": [1, 2, 3]}]},
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}]},
        {"inputs": [{"name": "x1", "datatype": "BYTES", "shape": [1], "data": ["a"]},
                    {"name": "x2", "datatype": "FP32", "shape": [1], "data": [1]},
                    {"name": "colour", "datatype": "BYTES", "shape": [1], "data": ["red"]}]},  # string for numeric
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 2]}], "outputs": [{"name": "nope"}]},
        {"inputs": "x"},
    ],
)
def test__v2_infer__bad_request__422(client: Any, models: dict[str, str], request_body: Any) -> None:
    r = client.post(f"/v2/models/{models['tabfm']}/infer", json=request_body)
    assert r.status_code == 422, r.text


def test__restart__models_survive_with_identical_predictions(tmp_path: Path, checkpoints: dict[str, Path], frame: pd.DataFrame) -> None:
    settings = make_settings(tmp_path, checkpoints)
    rows = json.loads(features(frame).head(5).to_json(orient="records"))
    with TestClient(create_app(settings)) as c:
        model_id = c.post("/v1/models?target=label&kind=tabfm", content=frame.drop(columns="value").to_csv(index=False), headers=CSV).json()["id"]
        before = c.post(f"/v1/models/{model_id}/predict", json=rows).json()
    with TestClient(create_app(settings)) as c:
        assert c.get("/health").json()["models_loaded"] == 1  # warmed at start-up
        after = c.post(f"/v1/models/{model_id}/predict", json=rows).json()
    assert after == before


def test__create_tabfm__local_context__served_by_torch_with_reason(client: Any, frame: pd.DataFrame) -> None:
    params = json.dumps({"context": "mixed", "local_rows": 16, "local_anchor_rows": 5, "n_estimators": 2})
    r = client.post("/v1/models", params={"target": "label", "kind": "tabfm", "params": params},
                    content=frame.drop(columns="value").to_csv(index=False), headers=CSV)
    assert r.status_code == 201, r.text
    info = client.get(f"/v1/models/{r.json()['id']}").json()
    assert info["runtime"] == "torch"  # the ONNX graph holds global contexts only
    rows = json.loads(features(frame).head(5).to_json(orient="records"))
    p = client.post(f"/v1/models/{r.json()['id']}/predict", json=rows)
    assert p.status_code == 200, p.text


def test__onnx_export_fails__estimator_serves_and_health_says_so(tmp_path: Path, checkpoints: dict[str, Path], frame: pd.DataFrame,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tabfm.base import TabularEstimator

    def no_export(self: Any, path: Any) -> None:
        raise RuntimeError("operator not supported by this exporter")

    monkeypatch.setattr(TabularEstimator, "to_onnx", no_export)
    with TestClient(create_app(make_settings(tmp_path, checkpoints))) as c:
        r = c.post("/v1/models?target=label&kind=tabfm", content=frame.drop(columns="value").to_csv(index=False), headers=CSV)
        assert r.status_code == 201 and r.json()["runtime"] == "torch"
        assert not (c.app.state.store.model_dir(r.json()["id"]) / "model.onnx").exists()
        rows = json.loads(features(frame).head(3).to_json(orient="records"))
        assert c.post(f"/v1/models/{r.json()['id']}/predict", json=rows).status_code == 200
        assert c.get("/health").json()["runtimes"] == {"torch": 1}


@pytest.mark.parametrize(("name", "task", "given", "expected"),
                         [("linear_basis", "regression", None, "auto"), ("linear_basis", "classification", None, "linear"),
                          ("linear_basis", "classification", "hinge", "hinge"),
                          ("local_metric", "regression", None, "relevance"), ("local_metric", "classification", None, "uniform"),
                          ("local_metric", "regression", "uniform", "uniform")])
def test__make_estimator__null_or_omitted_option__the_library_default_for_the_task(
    tmp_path: Path, name: str, task: str, given: str | None, expected: str
) -> None:
    from api.builder import make_estimator, parse_params

    settings = make_settings(tmp_path / "store", tiny_checkpoints(tmp_path))
    for params in ({name: given}, {} if given is None else {name: given}):
        assert getattr(make_estimator("tabfm", task, parse_params("tabfm", json.dumps(params)), settings), name) == expected


def test__local_rows_min__classification_default_null_or_value_and_refused_for_regression(
    client: Any, frame: pd.DataFrame, tmp_path: Path
) -> None:
    from api.builder import make_estimator, parse_params

    settings = make_settings(tmp_path / "store", tiny_checkpoints(tmp_path))

    def build(task: str, params: dict) -> Any:
        return make_estimator("tabfm", task, parse_params("tabfm", json.dumps(params)), settings)

    assert build("classification", {}).local_rows_min == 32  # the library's default
    assert build("classification", {"local_rows_min": None}).local_rows_min is None
    assert build("classification", {"local_rows_min": 16}).local_rows_min == 16
    r = client.post("/v1/models", params={"target": "value", "kind": "tabfm", "params": json.dumps({"local_rows_min": 16})},
                    content=frame.drop(columns="label").to_csv(index=False), headers=CSV)
    assert r.status_code == 422 and "local_rows_min applies to classification only" in _detail(r)
