"""ONNX export and the onnxruntime predictor: parity with torch for every family and task.

Tiny networks (a random TabFM checkpoint, TabM/TabR with small widths and two epochs) keep the
tests fast; the parity does not depend on the weights being good.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from models.icl import ICLConfig, ICLTransformer
from tabfm.checkpoint import save_checkpoint
from tabfm.errors import TabFMValidationError
from tabfm.icl import TabFMClassifier, TabFMRegressor
from tabfm.onnx_export import ColumnInterp, QuantileNormal, export_estimator, ndtri
from tabfm.onnx_predictor import OnnxPredictor, choose_providers
from tabfm.preprocessing import NumericScaler, TablePreprocessor
from tabfm.tabm import TabMClassifier, TabMRegressor
from tabfm.tabr import TabRClassifier, TabRRegressor

TOL = 1e-4
TINY_ICL = {
    "d_model": 16, "d_cell": 8, "d_cell_ffn": 16, "n_cell_heads": 2, "n_col_inducing": 4,
    "n_row_blocks": 1, "n_cls": 2, "n_icl_blocks": 2, "d_ffn": 32, "n_thinking_rows": 2,
}
PER_DATASET = {"max_epochs": 2, "random_state": 0, "device": "cpu"}


def _tiny_checkpoint(
    directory: Path, task: str, n_outputs: int, kind: str = "inducing", length_scale_ref: int | None = None, n_exact_blocks: int = 0
) -> Path:
    torch.manual_seed(0)
    attention = {"kind": kind, "n_heads": 2, "n_inducing": 4, "length_scale_ref": length_scale_ref}
    config = ICLConfig(task=task, n_outputs=n_outputs, attention=attention, n_exact_blocks=n_exact_blocks, **TINY_ICL)
    name = f"tiny-{task}-{n_outputs}-{kind}-{length_scale_ref}-{n_exact_blocks}.safetensors"
    return save_checkpoint(directory / name, ICLTransformer(config), dtype=torch.float32)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("ckpt")
    return {
        "classification": _tiny_checkpoint(directory, "classification", 10),
        "classification-3": _tiny_checkpoint(directory, "classification", 3),
        "classification-full": _tiny_checkpoint(directory, "classification", 10, kind="full"),
        # Inducing blocks with an exact last one.
        "classification-hybrid": _tiny_checkpoint(directory, "classification", 10, n_exact_blocks=1),
        # 160 training rows + 2 thinking rows > 16: the scalable softmax is active.
        "classification-full-scaled": _tiny_checkpoint(directory, "classification", 10, kind="full", length_scale_ref=16),
        "regression-scaled": _tiny_checkpoint(directory, "regression", 16, length_scale_ref=16),
        "regression": _tiny_checkpoint(directory, "regression", 16),
    }


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=n),
        "x2": np.where(rng.random(n) < 0.15, np.nan, rng.exponential(size=n)),
        "colour": pd.Categorical(rng.choice(["red", "green", "blue"], size=n)),
        "level": rng.integers(0, 4, n).astype(float),  # ties in the quantile maps
        "shop": rng.choice(["a", "b", None], size=n).astype(object),
    })
    frame.loc[::17, "colour"] = np.nan
    return frame


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    X = _table(160)
    y_cls = np.where(X["x1"] + (X["colour"] == "red") > 0.3, "yes", np.where(X["level"] > 1, "maybe", "no"))
    y_reg = 50.0 * X["x1"].to_numpy() + 3.0 * X["level"].to_numpy() + 20.0
    X_test = _table(37, seed=1)
    X_test["colour"] = X_test["colour"].cat.add_categories(["pink"])
    X_test.loc[2, "colour"] = "pink"  # unseen category
    X_test.loc[3, "shop"] = "zzz"  # unseen category
    X_test.loc[4, "x1"] = 40.0  # far beyond the training range
    X_test.loc[5, ["x1", "x2", "level"]] = np.nan
    return {"X": X, "y_cls": y_cls, "y_reg": y_reg, "X_test": X_test}


def _make(name: str, checkpoints: dict[str, Path]) -> Any:
    return {
        "tabfm-cls": lambda: TabFMClassifier(checkpoint=checkpoints["classification"], n_estimators=3, max_features=4, device="cpu"),
        "tabfm-reg": lambda: TabFMRegressor(checkpoint=checkpoints["regression"], n_estimators=3, context="global", device="cpu"),
        "tabm-cls": lambda: TabMClassifier(k=4, d_block=32, n_bins=8, **PER_DATASET),
        "tabm-reg": lambda: TabMRegressor(k=4, d_block=32, arch="tabm-mini", d_embedding=0, **PER_DATASET),
        "tabr-cls": lambda: TabRClassifier(d_main=16, context_size=8, **PER_DATASET),
        "tabr-reg": lambda: TabRRegressor(d_main=16, context_size=8, d_embedding=4, n_bins=8, **PER_DATASET),
    }[name]()


FAMILIES = ["tabfm-cls", "tabfm-reg", "tabm-cls", "tabm-reg", "tabr-cls", "tabr-reg"]


@pytest.fixture(scope="module")
def exported(checkpoints: dict[str, Path], data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in FAMILIES:
        est = _make(name, checkpoints)
        est.fit(data["X"], data["y_cls"] if name.endswith("cls") else data["y_reg"])
        out[name] = (est, est.to_onnx(directory / f"{name}.onnx"))
    return out


# -- provider choice ---------------------------------------------------------------------------


def test__choose_providers__cuda_available__cuda_first_then_cpu() -> None:
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test__choose_providers__cpu_only__cpu() -> None:
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test__choose_providers__requested_cuda_missing__error_names_available() -> None:
    with pytest.raises(TabFMValidationError, match="AzureExecutionProvider"):
        choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider"])


def test__choose_providers__requested_cpu_with_cuda_present__cpu_only() -> None:
    available = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(available, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test__predictor__this_machine__reports_the_provider_in_use(exported: dict[str, Any]) -> None:
    import onnxruntime as ort

    predictor = OnnxPredictor(exported["tabm-cls"][1])
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() else "CPUExecutionProvider"
    assert predictor.provider == expected


# -- exportable numeric pieces ---------------------------------------------------------------------


def test__ndtri__float64__matches_scipy() -> None:
    from scipy.special import ndtri as scipy_ndtri

    p = np.concatenate([np.linspace(1e-7, 1 - 1e-7, 20001), [1e-12, 1e-30, 1 - 1e-12, 0.075, 0.925]])
    np.testing.assert_allclose(ndtri(torch.tensor(p)).numpy(), scipy_ndtri(p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_knots", [1, 2, 5, 300, 1000])
def test__column_interp__ties_and_float32_neighbours__equals_numpy(n_knots: int) -> None:
    rng = np.random.default_rng(n_knots)
    smooth = np.sort(rng.normal(size=n_knots))
    ties = np.sort(rng.integers(0, 4, n_knots).astype(np.float64))
    ties[ties == 2] += 4e-16  # float64 knots between float32 values
    xp = np.c_[smooth, ties]
    fp = np.linspace(0.0, 1.0, n_knots)
    x = np.r_[rng.normal(size=(200, 2)) * 2, xp, np.nextafter(xp.astype(np.float32), np.float32(np.inf))]
    x = x.astype(np.float32)
    got = ColumnInterp(xp, fp)(torch.as_tensor(x)).numpy()
    want = np.stack([np.interp(x[:, j].astype(np.float64), xp[:, j], fp) for j in range(2)], axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n_quantiles", [1000, 7])
def test__quantile_normal__ties_nan_and_out_of_range__equals_numeric_scaler(n_quantiles: int) -> None:
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=300), rng.integers(0, 5, 300), np.where(rng.random(300) < 0.2, np.nan, rng.exponential(size=300))]
    X = X.astype(np.float32)
    scaler = NumericScaler("quantile", n_quantiles=n_quantiles).fit(X)
    probe = np.r_[X, [[-10, -1, 100], [10, 7, -3], [0, 4, 0], [0, 0, np.nan]]].astype(np.float32)
    want = scaler.transform(probe)
    got = QuantileNormal(scaler.quantiles_, scaler.references_)(torch.as_tensor(probe)).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, atol=1e-6)


# -- parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test__onnx_predictor__categorical_missing_unseen__equals_torch(name: str, exported: dict[str, Any], data: dict[str, Any]) -> None:
    est, path = exported[name]
    predictor = OnnxPredictor(path)
    X_test = data["X_test"]
    if name.endswith("cls"):
        want = est.predict_proba(X_test)
        got = predictor.predict_proba(X_test)
        assert got.shape == (len(X_test), 3)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
        np.testing.assert_array_equal(predictor.predict(X_test), est.predict(X_test))
        np.testing.assert_array_equal(predictor.classes_, est.classes_)
    else:
        want = est.predict(X_test)
        got = predictor.predict(X_test)
        assert got.shape == (len(X_test),)
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


@pytest.mark.parametrize("name", ["tabfm-cls", "tabm-reg", "tabr-cls"])
@pytest.mark.parametrize("n_rows", [1, 2, 600])
def test__onnx_graph__rows_unlike_the_tracing_example__equals_torch(name: str, n_rows: int, exported: dict[str, Any], data: dict[str, Any]) -> None:
    est, path = exported[name]
    X_test = pd.concat([data["X_test"]] * (n_rows // len(data["X_test"]) + 1), ignore_index=True).iloc[:n_rows]
    predictor = OnnxPredictor(path, batch_rows=4096)
    if name.endswith("cls"):
        np.testing.assert_allclose(predictor.predict_proba(X_test), est.predict_proba(X_test), atol=TOL, rtol=0)
    else:
        np.testing.assert_allclose(predictor.predict(X_test), est.predict(X_test), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


def test__onnx_predictor__polars_pyarrow_numpy__same_as_pandas(exported: dict[str, Any], data: dict[str, Any]) -> None:
    import polars as pl
    import pyarrow as pa

    _est, path = exported["tabm-cls"]
    predictor = OnnxPredictor(path)
    X_test = data["X_test"]
    want = predictor.predict_proba(X_test)
    np.testing.assert_allclose(predictor.predict_proba(pl.from_pandas(X_test)), want, atol=1e-7)
    np.testing.assert_allclose(predictor.predict_proba(pa.Table.from_pandas(X_test, preserve_index=False)), want, atol=1e-7)
    with pytest.warns(UserWarning, match="feature names"):
        np.testing.assert_allclose(predictor.predict_proba(X_test.to_numpy(dtype=object)), want, atol=1e-7)


def test__tabfm_classifier__more_classes_than_outputs__equals_torch(checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    X = data["X"]
    y = np.digitize(X["x1"].to_numpy(), [-1.0, -0.3, 0.3, 1.0])  # 5 classes for a 3-output network
    est = TabFMClassifier(checkpoint=checkpoints["classification-3"], n_estimators=2, device="cpu").fit(X, y)
    assert len(est.members_) > 2  # the output-code members
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "grouped.onnx"))
    np.testing.assert_allclose(predictor.predict_proba(data["X_test"]), est.predict_proba(data["X_test"]), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["classification-full", "classification-full-scaled", "classification-hybrid"])
def test__tabfm_exact_blocks__export__equals_torch(name: str, checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    est = TabFMClassifier(checkpoint=checkpoints[name], n_estimators=2, context="global", device="cpu").fit(data["X"], data["y_cls"])
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "full.onnx"))
    np.testing.assert_allclose(predictor.predict_proba(data["X_test"]), est.predict_proba(data["X_test"]), atol=TOL, rtol=0)


def test__tabfm_regressor_length_scale__export__equals_torch(checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    est = TabFMRegressor(checkpoint=checkpoints["regression-scaled"], n_estimators=2, context="global", device="cpu").fit(data["X"], data["y_reg"])
    plain = TabFMRegressor(checkpoint=checkpoints["regression"], n_estimators=2, context="global", device="cpu").fit(data["X"], data["y_reg"])
    assert np.abs(est.predict(data["X_test"]) - plain.predict(data["X_test"])).max() > 1e-6  # the scale is active
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "reg.onnx"))
    np.testing.assert_allclose(predictor.predict(data["X_test"]), est.predict(data["X_test"]), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


def test__tabfm_regressor_mixed_transform__export__equals_torch(checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    est = TabFMRegressor(checkpoint=checkpoints["regression"], n_estimators=2, numeric_transform="mixed", context="global", device="cpu")
    est.fit(data["X"], data["y_reg"])
    assert [m.quantile for m in est.members_] == [False, True]
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "mixed.onnx"))
    np.testing.assert_allclose(predictor.predict(data["X_test"]), est.predict(data["X_test"]), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test__tabfm_onehot_members__export__equals_torch(task: str, checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    # Members 2 and 3 see the categorical columns one-hot: wider tables, padded in the graph's batch;
    # X_test holds missing and unseen levels, which are 0 in every indicator.
    cls = TabFMClassifier if task == "classification" else TabFMRegressor
    est = cls(checkpoint=checkpoints[task], n_estimators=4, categorical_transform="mixed", context="global", device="cpu")
    est.fit(data["X"], data["y_cls"] if task == "classification" else data["y_reg"])
    assert [m.onehot is not None for m in est.members_] == [False, False, True, True]
    assert est.members_[2].width() > len(est.members_[2].features)
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "onehot.onnx"))
    if task == "classification":
        np.testing.assert_allclose(predictor.predict_proba(data["X_test"]), est.predict_proba(data["X_test"]), atol=TOL, rtol=0)
    else:
        np.testing.assert_allclose(predictor.predict(data["X_test"]), est.predict(data["X_test"]), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


@pytest.mark.parametrize("basis", ["linear", "hinge"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test__tabfm_linear_members__export__equals_torch(task: str, basis: str, checkpoints: dict[str, Path], data: dict[str, Any], tmp_path: Path) -> None:
    # Members 0 and 2 end in the ridge feature's columns (one-hot members 2 and 3 are wider): the graph
    # recomputes the ridge design from the encoded rows, with missing, unseen and out-of-range cells.
    cls = TabFMClassifier if task == "classification" else TabFMRegressor
    est = cls(checkpoint=checkpoints[task], n_estimators=4, linear_feature="mixed", linear_basis=basis, context="global", device="cpu")
    est.fit(data["X"], data["y_cls"] if task == "classification" else data["y_reg"])
    assert [m.linear for m in est.members_] == [True, False, True, False]
    assert est.ridge_.hinge_ == (basis == "hinge")
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "linear.onnx"))
    if task == "classification":
        np.testing.assert_allclose(predictor.predict_proba(data["X_test"]), est.predict_proba(data["X_test"]), atol=TOL, rtol=0)
    else:
        np.testing.assert_allclose(predictor.predict(data["X_test"]), est.predict(data["X_test"]), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test__numpy_table_of_one_kind__every_family__equals_torch(kind: str, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    if kind == "numeric":
        X = rng.normal(size=(80, 3))
        X[::7, 1] = np.nan
    else:
        X = rng.choice(["a", "b", "c"], size=(80, 2)).astype(object)
    y = rng.integers(0, 2, 80)
    models = [
        TabFMClassifier(checkpoint=checkpoints["classification"], n_estimators=2, device="cpu"),
        TabMClassifier(k=2, d_block=16, **PER_DATASET),
    ]
    if kind == "numeric":  # two categorical columns repeat rows: TabR ties, see the test below
        models.append(TabRClassifier(d_main=8, context_size=4, **PER_DATASET))
    for est in models:
        est.fit(X, y)
        predictor = OnnxPredictor(est.to_onnx(tmp_path / f"{type(est).__name__}.onnx"))
        np.testing.assert_allclose(predictor.predict_proba(X[:20]), est.predict_proba(X[:20]), atol=TOL, rtol=0)


def _duplicated_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.choice(["a", "b", "c"], size=(80, 2)).astype(object), rng.integers(0, 2, 80)


def test__tabr_duplicate_training_rows__graph_takes_lowest_index_neighbours(tmp_path: Path) -> None:
    """Equal keys tie in the retrieval: the graph keeps the lowest candidate indices, in torch and onnxruntime."""
    from tabfm.onnx_export import build_graph

    X, y = _duplicated_rows()
    est = TabRClassifier(d_main=8, context_size=4, **PER_DATASET).fit(X, y)
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "ties.onnx"))
    encoded = predictor.encode(X)
    with torch.no_grad():
        want = build_graph(est)(torch.as_tensor(encoded)).numpy()
    np.testing.assert_allclose(predictor.run_encoded(encoded)["probabilities"], want, atol=1e-6)


def test__tabr_duplicate_training_rows__onnx_equals_estimator(tmp_path: Path) -> None:
    X, y = _duplicated_rows()
    est = TabRClassifier(d_main=8, context_size=4, **PER_DATASET).fit(X, y)
    predictor = OnnxPredictor(est.to_onnx(tmp_path / "ties.onnx"))
    np.testing.assert_allclose(predictor.predict_proba(X), est.predict_proba(X), atol=TOL, rtol=0)


# -- the file ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test__onnx_file__checked__opset_dynamic_rows_no_rng_no_sort(name: str, exported: dict[str, Any]) -> None:
    model = onnx.load(str(exported[name][1]))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (graph_input,) = model.graph.input
    assert graph_input.name == "X"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "rows"
    ops = {node.op_type for node in model.graph.node}
    assert not ops & {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
    assert "TopK" not in ops or name.startswith("tabr")  # retrieval is the only sort-like step
    assert ("TopK" in ops) == name.startswith("tabr")


def test__onnx_metadata__preprocessor_json__reproduces_the_encoding(exported: dict[str, Any], data: dict[str, Any]) -> None:
    est, path = exported["tabr-cls"]
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["tabfm.family"] == "tabr" and meta["tabfm.task"] == "classification"
    assert json.loads(meta["tabfm.classes"])["values"] == ["maybe", "no", "yes"]
    rebuilt = TablePreprocessor.from_dict(json.loads(meta["tabfm.preprocessor"]))
    np.testing.assert_array_equal(rebuilt.transform(data["X_test"]), est.preprocessor_.transform(data["X_test"]))


def test__onnx_predictor__schema_and_attributes__describe_the_columns(exported: dict[str, Any]) -> None:
    predictor = OnnxPredictor(exported["tabfm-reg"][1])
    assert predictor.task == "regression" and predictor.classes_ is None
    assert predictor.n_features_in_ == 5
    assert predictor.feature_names_in_ == ["x1", "x2", "colour", "level", "shop"]
    schema = {column["name"]: column for column in predictor.input_schema}
    assert schema["x1"] == {"name": "x1", "kind": "numeric", "categories": None}
    assert schema["colour"]["kind"] == "categorical" and schema["colour"]["categories"] == ["blue", "green", "red"]


@pytest.mark.slow
def test__tabfm_graph__training_rows_grow__file_size_does_not(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    sizes = []
    for n in (1100, 4000):  # both above the 1000 quantiles of the numeric map
        X = _table(n, seed=n)
        y = (X["x1"] > 0).to_numpy()
        est = TabFMClassifier(checkpoint=checkpoints["classification"], n_estimators=2, device="cpu").fit(X, y)
        sizes.append(est.to_onnx(tmp_path / f"n{n}.onnx").stat().st_size)
    assert abs(sizes[1] - sizes[0]) < 2000, sizes


def test__onnx_predictor__misuse__actionable_errors(exported: dict[str, Any], data: dict[str, Any], tmp_path: Path) -> None:
    predictor = OnnxPredictor(exported["tabm-reg"][1])
    with pytest.raises(TabFMValidationError, match="classifier"):
        predictor.predict_proba(data["X_test"])
    with pytest.raises(TabFMValidationError, match=r"\(n_rows, 5\)"):
        predictor.run_encoded(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(TabFMValidationError, match="missing now"):
        predictor.predict(data["X_test"].drop(columns=["x2"]))
    with pytest.raises(FileNotFoundError):
        OnnxPredictor(tmp_path / "absent.onnx")


def test__run_encoded__raw_outputs__named_like_the_graph(exported: dict[str, Any], data: dict[str, Any]) -> None:
    _est, path = exported["tabfm-cls"]
    predictor = OnnxPredictor(path)
    outputs = predictor.run_encoded(predictor.encode(data["X_test"]))
    assert list(outputs) == ["probabilities"]
    assert outputs["probabilities"].dtype == np.float32 and outputs["probabilities"].shape == (len(data["X_test"]), 3)


def test__export_unfitted__not_fitted_error(tmp_path: Path) -> None:
    from tabfm.errors import NotFittedError

    with pytest.raises(NotFittedError):
        export_estimator(TabMClassifier(), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# -- command line ----------------------------------------------------------------------------------


def test__cli_export__saved_estimator__onnx_predicts_like_it(exported: dict[str, Any], data: dict[str, Any], tmp_path: Path) -> None:
    from tabfm.cli import main

    est, _ = exported["tabr-reg"]
    est.save(tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out" / "model.onnx")]) == 0
    predictor = OnnxPredictor(tmp_path / "out" / "model.onnx")
    np.testing.assert_allclose(predictor.predict(data["X_test"]), est.predict(data["X_test"]), rtol=TOL, atol=TOL * float(np.std(data["y_reg"])))


def test__cli_export__missing_model__exit_code_2(tmp_path: Path) -> None:
    from tabfm.cli import main

    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert not (tmp_path / "m.onnx").exists()
