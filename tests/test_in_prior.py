"""The in-prior check samples fresh prior tables and pairs every model with LightGBM on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.in_prior import main, paired_table, sample_tables


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_sample_tables__reproducible_with_categoricals_as_pandas_categories(task: str) -> None:
    first = list(sample_tables(task, 4, 60, 40, seed=3))
    again = list(sample_tables(task, 4, 60, 40, seed=3))
    other = list(sample_tables(task, 4, 60, 40, seed=4))
    for (fam_a, X_a, y_a), (fam_b, X_b, y_b) in zip(first, again, strict=True):
        assert fam_a == fam_b
        pd.testing.assert_frame_equal(X_a, X_b)
        np.testing.assert_array_equal(y_a, y_b)
        assert len(X_a) == len(y_a) == 100
        assert 2 <= X_a.shape[1] <= 30
    assert any(not np.array_equal(a[2], b[2]) for a, b in zip(first, other, strict=True))
    if task == "classification":  # every class occurs in the training rows
        for _, _, y in first:
            assert set(np.unique(y[60:])) <= set(np.unique(y[:60]))


def test_paired_table__difference_standard_error_and_share_won() -> None:
    scores = pd.DataFrame({"tabfm": [0.5, 0.7, 0.9], "lightgbm": [0.6, 0.6, 0.6]})
    table = paired_table(scores, "lightgbm")
    assert table.loc["tabfm", "mean"] == pytest.approx(0.7)
    assert table.loc["tabfm", "minus_lightgbm"] == pytest.approx(0.1)
    assert table.loc["tabfm", "se"] == pytest.approx(0.2 / np.sqrt(3))
    assert table.loc["tabfm", "won"] == pytest.approx(2 / 3)
    assert table.loc["tabfm", "median_diff"] == pytest.approx(0.1)
    assert table.loc["lightgbm", "minus_lightgbm"] == 0


def test_main__shipped_checkpoint_on_two_small_tables__writes_scores_and_summary(tmp_path: Path) -> None:
    out, rows = tmp_path / "summary.md", tmp_path / "rows.csv"
    assert main(["--task", "regression", "--n", "2", "--train-rows", "80", "--test-rows", "40",
                 "--out", str(out), "--csv", str(rows)]) == 0  # fmt: skip
    frame = pd.read_csv(rows)
    tabfm = [c for c in frame.columns if c.startswith("tabfm@")]
    assert len(frame) == 2 and len(tabfm) == 1
    assert frame[[*tabfm, "lightgbm"]].notna().all().all()
    text = out.read_text()
    assert "## Per prior family" in text and "| lightgbm |" in text
    # Summarising the CSV again gives the same tables.
    again = tmp_path / "again.md"
    assert main(["--task", "regression", "--from-csv", str(rows), "--out", str(again)]) == 0
    assert again.read_text().split("## All tables")[1] == text.split("## All tables")[1]


def test_undefined_r2__constant_test_target_relative_to_the_training_scale() -> None:
    from benchmarks.in_prior import undefined_r2

    rng = np.random.default_rng(0)
    y_train = rng.normal(size=50)
    assert undefined_r2(y_train, np.full(20, 0.3) + 1e-12 * rng.normal(size=20))
    assert not undefined_r2(y_train, 0.01 * rng.normal(size=20))  # small spread, still defined
    assert undefined_r2(np.zeros(50), np.zeros(20))


def test_summary__tables_without_test_spread__left_out_and_counted(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "table": [0, 1, 2], "family": ["smooth", "mlp_scm", "smooth"], "n_features": [3, 4, 5],
        "n_train": 80, "n_test": 40, "tabfm@1": [0.5, np.nan, 0.9], "lightgbm": [0.4, np.nan, 0.8],
    })
    frame.to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "summary.md"
    assert main(["--task", "regression", "--from-csv", str(tmp_path / "rows.csv"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "1 of the tables left out" in text
    all_tables = text.split("## All tables")[1].split("##")[0]
    assert "| tabfm@1 | 2 | 0.7000 | +0.1000 | 0.0000 | +0.1000 | 1.00 |" in all_tables


def test_main__several_training_sizes__one_set_of_tables_each_and_a_table_per_size(tmp_path: Path) -> None:
    out, rows = tmp_path / "summary.md", tmp_path / "rows.csv"
    assert main(["--task", "classification", "--n", "2", "--train-rows", "40,80", "--test-rows", "30",
                 "--out", str(out), "--csv", str(rows)]) == 0  # fmt: skip
    frame = pd.read_csv(rows)
    assert sorted(frame["n_train"]) == [40, 40, 80, 80]
    text = out.read_text()
    assert "- 2 tables of the `default` prior (seed 0), 40 or 80 training" in text
    by_size = text.split("## By training rows")[1].split("\n# 40 training rows")[0]
    assert "### 40 training rows" in by_size and "### 80 training rows" in by_size
    with pytest.raises(SystemExit):
        main(["--task", "classification", "--train-rows", "40,x"])
