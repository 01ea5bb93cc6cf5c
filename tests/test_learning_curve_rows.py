"""The score-against-rows benchmark on the tiny datasets of conftest.py."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks import learning_curve_rows as lcr


def test_learning_curve_rows__sizes_models_and_gain_from_smallest_to_largest(tiny_dir: Path, tmp_path: Path) -> None:
    out, csv, png = tmp_path / "curve.md", tmp_path / "curve.csv", tmp_path / "curve.png"
    argv = ["--data-dir", str(tiny_dir), "--datasets", "tiny_binary,tiny_regression", "--rows", "20,40",
            "--models", "linear,lightgbm", "--seeds", "0,1", "--csv", str(csv), "--out", str(out), "--plot", str(png)]
    assert lcr.main(argv) == 0
    rows = pd.read_csv(csv)
    assert len(rows) == 2 * 2 * 2 * 2  # datasets x seeds x sizes x models
    assert set(rows["rows"]) == {20, 40} and set(rows["model"]) == {"linear", "lightgbm"}
    # The markdown's gain is the largest size's mean score over seeds minus the smallest's.
    mean = rows.groupby(["dataset", "model", "rows"]).score.mean()
    gain = mean.xs(40, level="rows") - mean.xs(20, level="rows")
    text = out.read_text()
    for (dataset, model), value in gain.items():
        assert f"| {dataset} |" in text and f"| {model} |" in text
        assert f"{value:+.4f} |" in text
    assert png.stat().st_size > 10_000

    # A row's score is that of the benchmark's split, with a seeded subsample of its training rows.
    import numpy as np

    from benchmarks import data as bdata
    from benchmarks.icl_attention_options import _score
    from benchmarks.models import make_model

    entry = bdata.local_datasets(tiny_dir, ["tiny_regression"])[0]
    split = bdata.make_split(entry.load(), 1, max_train_rows=40, max_test_rows=1000)
    keep, _ = bdata.seeded_subset(np.arange(len(split.y_train)), 20, None, 1)
    model = make_model("linear", "regression", 1).fit(split.X_train.iloc[keep], split.y_train[keep])
    written = rows.query("dataset == 'tiny_regression' and seed == 1 and rows == 20 and model == 'linear'").score
    assert written.item() == pytest.approx(_score(model, "regression", split.X_test, split.y_test))


def test_learning_curve_rows__sizes_beyond_the_training_rows__left_blank(tiny_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "curve.csv"
    argv = ["--data-dir", str(tiny_dir), "--datasets", "tiny_regression", "--rows", "20,5000",
            "--models", "linear", "--seeds", "0", "--csv", str(csv)]
    assert lcr.main(argv) == 0
    assert list(pd.read_csv(csv)["rows"]) == [20]


@pytest.mark.parametrize("rows", ["100", "a,b", "1,50"])
def test_learning_curve_rows__bad_sizes__usage_error(tiny_dir: Path, rows: str) -> None:
    with pytest.raises(SystemExit) as exc:
        lcr.main(["--data-dir", str(tiny_dir), "--datasets", "tiny_regression", "--rows", rows])
    assert exc.value.code == 2
