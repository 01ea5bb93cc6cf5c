"""The benchmark runner end to end on two tiny datasets written here, plus its metric helpers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# benchmarks/ is not installed; it runs from the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import data as bdata
from benchmarks import models as bmodels
from benchmarks import run as brun


def _argv(data_dir: Path, out: Path, models: str, *extra: str) -> list[str]:
    return ["--data-dir", str(data_dir), "--models", models, "--seeds", "2", "--max-train-rows", "50",
            "--out", str(out), "--no-progress", *extra]  # fmt: skip


def _failing(task: str, seed: int):
    class Failing:
        def fit(self, X, y):
            raise RuntimeError("deliberate failure in fit")

    return Failing()


@pytest.mark.slow
def test_run__two_tiny_datasets__one_row_per_fit_and_errors_recorded(
    tiny_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(bmodels.MODELS, "failing", _failing)
    out = tmp_path / "results.csv"
    argv = _argv(tiny_dir, out, "linear,lightgbm,failing,no_such_model", "--summary", str(tmp_path / "s.md"),
                 "--plot", str(tmp_path / "s.png"))  # fmt: skip
    assert brun.main(argv) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == brun.COLUMNS
    assert len(df) == 2 * 4 * 2  # datasets × models × seeds
    assert not df.duplicated(["dataset", "model", "seed"]).any()

    good = df[df.model.isin(["linear", "lightgbm"])]
    assert good.error.isna().all(), good.error.dropna().tolist()
    cls, reg = good[good.task == "binary"], good[good.task == "regression"]
    assert cls.roc_auc.between(0.5, 1).all() and cls.log_loss.gt(0).all()
    assert cls.rmse.isna().all() and reg.roc_auc.isna().all() and reg.accuracy.isna().all()
    assert reg.r2.gt(0.5).all()  # the regression target is nearly linear
    assert (good.n_train <= 50).all() and (good.n_train + good.n_test <= 90).all()
    assert (cls.n_features == 3).all() and (reg.n_features == 2).all()

    errors = df.set_index("model").error
    assert errors.loc["failing"].str.startswith("RuntimeError: deliberate failure").all()
    assert errors.loc["no_such_model"].str.startswith("KeyError").all()

    printed = capsys.readouterr().out
    assert "mean_rank" in printed and "lightgbm" in printed
    assert "| linear |" in (tmp_path / "s.md").read_text()
    assert (tmp_path / "s.png").stat().st_size > 10_000


@pytest.mark.slow
def test_run__resume__adds_no_rows_and_keeps_them(tiny_dir, tmp_path):
    out = tmp_path / "results.csv"
    assert brun.main(_argv(tiny_dir, out, "linear")) == 0
    before = out.read_text()
    assert brun.main(_argv(tiny_dir, out, "linear", "--resume")) == 0
    assert out.read_text() == before
    # A new model on resume adds only its own rows.
    assert brun.main(_argv(tiny_dir, out, "linear,lightgbm", "--resume")) == 0
    df = pd.read_csv(out)
    assert sorted(df.model.value_counts().items()) == [("lightgbm", 4), ("linear", 4)]


def test_run__same_split_for_every_model(tiny_dir, tmp_path):
    out = tmp_path / "results.csv"
    brun.main(_argv(tiny_dir, out, "linear,lightgbm"))
    df = pd.read_csv(out)
    sizes = df.groupby(["dataset", "seed"])[["n_train", "n_test"]].nunique()
    assert (sizes == 1).all().all()


def test_run__first_seed__other_splits_added_and_summarised_apart(tiny_dir, tmp_path):
    out = tmp_path / "results.csv"
    assert brun.main(_argv(tiny_dir, out, "linear")) == 0  # seeds 0, 1
    assert brun.main(_argv(tiny_dir, out, "linear", "--resume", "--first-seed", "2")) == 0  # seeds 2, 3
    df = pd.read_csv(out)
    assert sorted(df.seed.unique()) == [0, 1, 2, 3]
    first = df[df.seed == 0].set_index("dataset")
    other = df[df.seed == 2].set_index("dataset")
    assert (first.n_train > 0).all() and not first.r2.fillna(first.roc_auc).equals(other.r2.fillna(other.roc_auc))
    # The summary of seeds 2-3 reads only their rows.
    summary = tmp_path / "s.md"
    argv = _argv(tiny_dir, out, "linear", "--resume", "--first-seed", "2", "--summary-only", "--summary", str(summary))
    assert brun.main(argv) == 0
    assert "- Rows: 4 (dataset × model × seed)" in summary.read_text()


def test_run__parameterised_model__runs_beside_the_default_under_its_own_name(tiny_dir, tmp_path):
    out = tmp_path / "results.csv"
    spec = "lightgbm[n_estimators=3; learning_rate=0.5]"
    assert brun.main(_argv(tiny_dir, out, f"lightgbm,{spec}")) == 0
    df = pd.read_csv(out)
    assert sorted(df.model.value_counts().items()) == [("lightgbm", 4), (spec, 4)]
    assert df.error.isna().all(), df.error.dropna().tolist()
    # Three trees at a large step predict differently from the default hundred.
    scores = df.pivot_table(index=["dataset", "seed"], columns="model", values="log_loss")
    assert not np.allclose(scores["lightgbm"].dropna(), scores[spec].dropna())


def test_parse_model_spec__literals_words_and_errors():
    assert bmodels.parse_model_spec("tabfm") == ("tabfm", {})
    name, params = bmodels.parse_model_spec("tabfm[n_estimators=2; device=cpu; softmax_temperature=0.9]")
    assert name == "tabfm" and params == {"n_estimators": 2, "device": "cpu", "softmax_temperature": 0.9}
    for bad in ("tabfm[n_estimators]", "tabfm[2=3]", "tab fm", "tabfm[a=1"):
        with pytest.raises(ValueError, match="model"):
            bmodels.parse_model_spec(bad)
    with pytest.raises(ValueError):  # scikit-learn names the parameter the estimator lacks
        bmodels.make_model("tabfm[no_such_parameter=1]", "binary", 0)
    assert brun._split_list("lightgbm, tabfm[a=1; b=2],xgboost") == ["lightgbm", "tabfm[a=1; b=2]", "xgboost"]


def test_suite__openml_unreachable__fails_within_seconds(tmp_path, monkeypatch):
    openml = pytest.importorskip("openml")
    # A TEST-NET address never answers, so this exercises the connect timeout online or offline.
    monkeypatch.setattr(openml.config, "server", "https://192.0.2.1/api/v1/xml")
    start = time.monotonic()
    code = brun.main(["--suite", "openml:99", "--cache-dir", str(tmp_path / "cache"),
                      "--out", str(tmp_path / "r.csv"), "--no-progress"])  # fmt: skip
    assert code == 2
    assert time.monotonic() - start < 10


def test_check_online__closed_port__raises_connection_error():
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the OpenML server"):
        bdata.check_online("http://127.0.0.1:9", timeout_s=3)
    assert time.monotonic() - start < 5


def test_macro_ovr_auc__class_absent_from_test__averages_present_classes():
    y = np.array([0, 0, 1, 1])  # class 2 absent
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    assert brun.macro_ovr_auc(y, proba) == pytest.approx(1.0)
    assert np.isnan(brun.macro_ovr_auc(np.zeros(3, int), np.full((3, 2), 0.5)))


def test_evaluate__class_missing_from_training__scores_all_classes():
    X = pd.DataFrame({"x": np.arange(12, dtype=float)})
    split = bdata.Split(X.iloc[:8], X.iloc[8:], np.array([0, 1] * 4), np.array([0, 1, 2, 2]))
    row = brun.evaluate("linear", "multiclass", 0, split, 3)
    assert np.isfinite(row["log_loss"]) and 0 <= row["accuracy"] <= 0.5


def test_make_split__singleton_class__falls_back_with_note():
    X = pd.DataFrame({"x": np.arange(20.0)})
    y = np.array([0] * 10 + [1] * 9 + [2])
    split = bdata.make_split(bdata.Dataset("d", "multiclass", X, y), 0, max_train_rows=10)
    assert "unstratified" in split.note
    assert len(split.y_train) == 10 and len(split.y_test) == 6


def test_catboost__large_multiclass__skips_with_reason():
    model = bmodels.CatBoostNative(task="multiclass", seed=0, max_multiclass_work=10)
    X = pd.DataFrame({"x": np.arange(6.0)})
    with pytest.raises(bmodels.ModelSkipped, match="3 classes × 6 rows × 1 features"):
        model.fit(X, np.array([0, 1, 2, 0, 1, 2]))


def test_catboost__fit_over_time_budget__skips_with_reason():
    pytest.importorskip("catboost")
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"x": rng.normal(size=200)})
    model = bmodels.CatBoostNative(task="binary", seed=0, max_fit_s=1e-6)
    with pytest.raises(bmodels.ModelSkipped, match="budget at iteration"):
        model.fit(X, (X.x > 0).to_numpy(dtype=int))


@pytest.mark.slow
def test_run__timeout__worker_scores_or_records_timeout(tiny_dir, tmp_path):
    out = tmp_path / "r.csv"
    argv = ["--datasets", "tiny_regression", "--seeds", "1"]
    assert brun.main([*_argv(tiny_dir, out, "linear,nope", "--timeout-s", "60"), *argv]) == 0
    df = pd.read_csv(out).set_index("model")
    assert df.loc["linear", "r2"] > 0.5
    assert df.loc["nope", "error"].startswith("KeyError: ")
    assert brun.main([*_argv(tiny_dir, out, "linear", "--timeout-s", "0.001"), *argv]) == 0
    assert pd.read_csv(out).error.iloc[0].startswith("TimeoutError")


def test_run__summary_only__fits_nothing_and_summarises_existing_rows(tiny_dir, tmp_path):
    out = tmp_path / "results.csv"
    assert brun.main(_argv(tiny_dir, out, "linear")) == 0
    before = out.read_text()
    summary = tmp_path / "s.md"
    # lightgbm has no rows: nothing is fitted, the summary shows it with no datasets.
    argv = _argv(tiny_dir, out, "linear,lightgbm", "--summary-only", "--summary", str(summary))
    assert brun.main(argv) == 0
    assert out.read_text() == before
    text = summary.read_text()
    assert "| linear | 2 |" in text and "| lightgbm | 0 |" in text


def test_evaluate__torch_threads__sets_torch_threads(monkeypatch):
    torch = pytest.importorskip("torch")
    seen = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=40)})
    y = (X["a"] > 0).to_numpy().astype(np.int64)
    split = bdata.Split(X[:30], X[30:], y[:30], y[30:])
    brun.evaluate("linear", "binary", 0, split, 2, 1)
    assert seen == [1]


def _tiny_checkpoints(folder: Path) -> Path:
    import torch

    from models.icl import ICLConfig, ICLTransformer
    from tabfm.checkpoint import save_checkpoint

    folder.mkdir()
    torch.manual_seed(0)
    tiny = {"d_model": 16, "d_cell": 8, "d_cell_ffn": 16, "n_cell_heads": 2, "n_col_inducing": 4, "n_row_blocks": 1,
            "n_cls": 2, "n_icl_blocks": 1, "d_ffn": 32, "n_thinking_rows": 2, "attention": {"kind": "full", "n_heads": 2}}  # fmt: skip
    for task, n_out, step in (("classification", 10, 123), ("regression", 16, 456)):
        card = {"pretraining": {"steps": step}, "validation": {"metric": "score", "mean": 0.5}}
        net = ICLTransformer(ICLConfig(task=task, n_outputs=n_out, **tiny))
        save_checkpoint(folder / f"tabfm-{task}.safetensors", net, card=card, dtype=torch.float32)
    return folder


def test_run__tabfm_checkpoints__rows_use_them_and_summary_names_them(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TABFM_CHECKPOINT_DIR", "")  # empty means the shipped files; restored after the run sets it
    folder = _tiny_checkpoints(tmp_path / "frozen")
    out, summary = tmp_path / "results.csv", tmp_path / "s.md"
    argv = _argv(tiny_dir, out, "tabfm", "--tabfm-checkpoints", str(folder), "--summary", str(summary))
    assert brun.main(argv) == 0
    rows = pd.read_csv(out)
    assert rows["error"].isna().all(), rows["error"].tolist()
    text = summary.read_text()
    assert "classification step 123" in text and "regression step 456" in text
    from tabfm import TabFMRegressor

    # The rows came from the frozen folder: the same fit on the tiny network scores what the CSV says.
    split = bdata.make_split(bdata.local_datasets(tiny_dir, ["tiny_regression"])[0].load(), 0, max_train_rows=50)
    reg = TabFMRegressor(random_state=0, checkpoint=folder / "tabfm-regression.safetensors")
    pred = reg.fit(split.X_train, split.y_train).predict(split.X_test)
    expected = brun.regression_metrics(split.y_test, pred)["r2"]
    got = rows[(rows.dataset == "tiny_regression") & (rows.seed == 0)]["r2"].item()
    assert got == pytest.approx(expected, abs=1e-5)


def test_parse_args__tabfm_checkpoints_without_files__exits_with_usage_error(tiny_dir, tmp_path):
    with pytest.raises(SystemExit) as info:
        brun.parse_args(_argv(tiny_dir, tmp_path / "r.csv", "tabfm", "--tabfm-checkpoints", str(tmp_path)))
    assert info.value.code == 2
