"""End to end: ``tabfm serve`` as a real process on 127.0.0.1, a real client, a schema fuzzer.

* every model kind from CSV and from Parquet, predictions before and after a server restart;
* ``tritonclient[http]`` reads a model's metadata and runs ``infer`` like against Triton;
* schemathesis fuzzes every operation of ``/openapi.json`` and must find no 5xx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from test_api import TABM_PARAMS, TABR_PARAMS, parquet_bytes, tiny_checkpoints, training_frame

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command() -> list[str]:
    script = Path(sys.executable).with_name("tabfm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tabfm.cli"]


@contextmanager
def serve(store: Path, checkpoints: dict[str, Path], **env: str) -> Iterator[str]:
    """Run ``tabfm serve`` on a free port until the block ends; yields the base URL."""
    port = free_port()
    environment = {
        **os.environ,
        "TABFM_TABFM_CLASSIFICATION_CHECKPOINT": str(checkpoints["classification"]),
        "TABFM_TABFM_REGRESSION_CHECKPOINT": str(checkpoints["regression"]),
        "TABFM_DEVICE": "cpu",
        "TABFM_ORT_THREADS": "1",
        **env,
    }
    log = open(store.parent / f"serve-{port}.log", "w")
    process = subprocess.Popen(
        [*_serve_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--store", str(store)],
        cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"tabfm serve exited with {process.returncode}: {(store.parent / f'serve-{port}.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("tabfm serve did not become ready in 120 s")
            time.sleep(0.3)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_ready(http: httpx.Client, model_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = http.get(f"/v1/models/{model_id}").json()
        if info["status"] != "training":
            return info
        time.sleep(0.5)
    raise TimeoutError(f"model {model_id} still training after {timeout} s")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.mktemp("ckpt"))


def test__serve__every_kind_csv_and_parquet__identical_after_restart(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    frame = training_frame(80)
    train_cls = frame.drop(columns="value")
    rows = json.loads(frame.drop(columns=["label", "value"]).head(9).to_json(orient="records"))
    store = tmp_path / "store"
    params = {"tabfm": {"n_estimators": 2}, "tabm": TABM_PARAMS, "tabr": TABR_PARAMS}
    ids: dict[str, str] = {}
    with serve(store, checkpoints) as url, httpx.Client(base_url=url, timeout=120) as http:
        for kind in ("tabfm", "tabm", "tabr"):
            query = {"target": "label", "kind": kind, "params": json.dumps(params[kind])}
            r = http.post("/v1/models", params=query, content=train_cls.to_csv(index=False), headers={"content-type": "text/csv"})
            assert r.status_code in (201, 202), r.text
            ids[f"{kind}-csv"] = r.json()["id"]
            query = {**query, "target": "value"}  # Parquet: the regression side
            r = http.post("/v1/models", params=query, content=parquet_bytes(frame.drop(columns="label")),
                          headers={"content-type": "application/vnd.apache.parquet"})
            assert r.status_code in (201, 202), r.text
            ids[f"{kind}-parquet"] = r.json()["id"]
        assert {ids_kind: wait_ready(http, i)["status"] for ids_kind, i in ids.items()} == dict.fromkeys(ids, "ready")
        before = {name: http.post(f"/v1/models/{i}/predict", json=rows).json() for name, i in ids.items()}
        for name, body in before.items():
            assert len(body["predictions"]) == 9, (name, body)
            assert ("probabilities" in body) == name.endswith("-csv")
        assert http.get("/health").json()["runtimes"] == {"onnxruntime:CPUExecutionProvider": 6}
    with serve(store, checkpoints) as url, httpx.Client(base_url=url, timeout=120) as http:
        health = http.get("/health").json()
        assert health["models_loaded"] == 6 and health["models"] == {"ready": 6}
        after = {name: http.post(f"/v1/models/{i}/predict", json=rows).json() for name, i in ids.items()}
    assert after == before


def test__tritonclient__metadata_and_infer__same_as_v1(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    import tritonclient.http as triton

    frame = training_frame(80)
    rows = frame.drop(columns=["label", "value"]).head(5)
    with serve(tmp_path / "store", checkpoints) as url, httpx.Client(base_url=url, timeout=120) as http:
        r = http.post("/v1/models?target=label&kind=tabfm", content=frame.drop(columns="value").to_csv(index=False),
                      headers={"content-type": "text/csv"})
        model_id = r.json()["id"]
        v1 = http.post(f"/v1/models/{model_id}/predict", json=json.loads(rows.to_json(orient="records"))).json()
        client = triton.InferenceServerClient(url=url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model_id)
        metadata = client.get_model_metadata(model_id)
        inputs = []
        for spec in metadata["inputs"]:
            column = rows[spec["name"]]
            array = (column.astype(object).to_numpy() if spec["datatype"] == "BYTES" else column.to_numpy(np.float32)).reshape(-1, 1)
            tensor = triton.InferInput(spec["name"], list(array.shape), spec["datatype"])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(model_id, inputs)  # binary tensors both ways, as against Triton
        labels = [v.decode() for v in result.as_numpy("predictions").ravel()]
        assert labels == v1["predictions"]
        np.testing.assert_allclose(result.as_numpy("probabilities"), v1["probabilities"], atol=1e-6)
        json_result = client.infer(model_id, inputs, outputs=[triton.InferRequestedOutput("probabilities", binary_data=False)])
        np.testing.assert_allclose(json_result.as_numpy("probabilities"), v1["probabilities"], atol=1e-6)
        client.close()


def test__schemathesis__openapi__no_server_errors(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    st = Path(sys.executable).with_name("st")
    if not st.exists() and shutil.which("st") is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    command = [str(st) if st.exists() else "st"]
    options = ["--checks", "not_a_server_error", "--workers", "1", "--seed", "1", "--generation-database", "none",
               "--request-timeout", "60", "--phases", "examples,coverage,fuzzing"]
    with serve(tmp_path / "store", checkpoints, TABFM_MAX_EPOCHS="2", TABFM_MAX_TRAINING_ROWS="2000") as url:
        r = httpx.post(f"{url}/v1/models?target=label&kind=tabfm", content=training_frame(40).drop(columns="value").to_csv(index=False),
                       headers={"content-type": "text/csv"}, timeout=120)
        config = tmp_path / "schemathesis.toml"  # every {model_id} is a real model: fuzz past the 404
        model_id = r.json()["id"]
        config.write_text(f'[parameters]\n"path.model_id" = "{model_id}"\n')
        runs = [
            [*command, "--config-file", str(config), "run", f"{url}/openapi.json", *options, "--max-examples", "20",
             "--max-time", "90", "--exclude-method", "DELETE"],
            [*command, "run", f"{url}/openapi.json", *options, "--max-examples", "10", "--max-time", "45"],
        ]
        results = [subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600) for run in runs]
    for result in results:
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "generated" in result.stdout, result.stdout[-2000:]
        print(next(line.strip() for line in result.stdout.splitlines() if re.search(r"\d+ generated", line)))
